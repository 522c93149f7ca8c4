"""Table tests for the character-count token estimate (pure)."""

from __future__ import annotations

import pytest

from apps.providers.tokens import CHARS_PER_TOKEN_X100, estimate_messages_tokens, estimate_tokens
from apps.providers.types import ChatMessage


def test_ratio_constant() -> None:
    assert CHARS_PER_TOKEN_X100 == 335


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", 0),
        ("a", 1),
        ("abc", 1),  # 3 / 3.35 = 0.896 → 1
        ("abcd", 2),  # 4 / 3.35 = 1.194 → 2
        ("a" * 67, 20),  # 67 / 3.35 = 20 exactly: no rounding up
        ("a" * 68, 21),  # 20.298 → 21
        ("a" * 335, 100),  # exact
        ("a" * 336, 101),
        ("a" * 670, 200),  # exact
        ("a" * 1000, 299),  # 298.507 → 299
        ("a" * 10_000, 2986),  # 2985.07 → 2986
        ("a" * 100_000, 29851),  # 29850.74 → 29851
        ("a" * 1_000_000, 298508),  # 298507.46 → 298508
        ("中文", 1),  # CJK: one code point each → 2 / 3.35 → 1
        ("你好世界", 2),  # 4 → 1.194 → 2
        ("在繁华的都市中，程序员李明突然发现", 6),  # 17 code points → 5.07 → 6
        ("😀", 1),  # astral emoji: one code point (two UTF-16 units)
        ("😀" * 67, 20),  # 67 code points, not 134 UTF-16 units
        ("𠀀𠀁𠀂𠀃", 2),  # astral CJK Extension B: 4 code points
        ("e\u0301", 1),  # combining accent: 2 code points
        ("👨\u200d👩\u200d👧", 2),  # ZWJ family: 5 code points → 1.49 → 2
        ("\n\n\n\n", 2),  # whitespace counts
    ],
)
def test_estimate_tokens(text: str, expected: int) -> None:
    assert estimate_tokens(text) == expected


@pytest.mark.parametrize(
    ("messages", "expected"),
    [
        ([], 0),
        ([ChatMessage("user", "")], 0),
        ([ChatMessage("user", "abc")], 1),
        # per-message ceilings are summed: 1 + 1, not ⌈6 / 3.35⌉ = 2 … here equal
        ([ChatMessage("system", "abc"), ChatMessage("user", "abc")], 2),
        # 1 + 1 + 1 = 3, while the ceiling of the total (3 chars) would be 1
        ([ChatMessage("user", "a"), ChatMessage("assistant", "b"), ChatMessage("user", "c")], 3),
        # the name is not counted (content only)
        ([ChatMessage("user", "a" * 67, name="Somebody")], 20),
        ([ChatMessage("system", "a" * 335), ChatMessage("user", "中文😀")], 101),
    ],
)
def test_estimate_messages_tokens(messages: list[ChatMessage], expected: int) -> None:
    assert estimate_messages_tokens(messages) == expected


def test_estimate_messages_tokens_is_additive() -> None:
    # given
    first = [ChatMessage("system", "x" * 1234), ChatMessage("user", "y" * 77)]
    second = [ChatMessage("assistant", "z" * 999)]
    # then
    assert estimate_messages_tokens(first + second) == (
        estimate_messages_tokens(first) + estimate_messages_tokens(second)
    )
    assert estimate_messages_tokens(first + second) == 369 + 23 + 299
