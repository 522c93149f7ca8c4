"""Table tests for the prompt post-processing converters (SillyTavern's ``mergeMessages``)."""

from __future__ import annotations

import pytest

from apps.providers.postprocess import POSTPROCESS_MODES, postprocess
from apps.providers.types import ChatMessage

PH = "[Start a new chat]"


def S(content: str, name: str | None = None) -> ChatMessage:
    return ChatMessage("system", content, name)


def U(content: str, name: str | None = None) -> ChatMessage:
    return ChatMessage("user", content, name)


def A(content: str, name: str | None = None) -> ChatMessage:
    return ChatMessage("assistant", content, name)


EXAMPLES = [S("[Example Chat]"), S("Hello", "example_user"), S("Hi there", "example_assistant")]
NAMES = {"char_name": "Alice", "user_name": "Bob"}

# (id, mode, messages, keyword arguments, expected)
CASES: list[tuple[str, str, list[ChatMessage], dict[str, object], list[ChatMessage]]] = [
    # --- none: untouched ---
    ("none-empty", "none", [], {}, []),
    (
        "none-untouched",
        "none",
        [S("s"), S("s2"), U("u", "Bob"), U("u2"), A("")],
        {},
        [S("s"), S("s2"), U("u", "Bob"), U("u2"), A("")],
    ),
    # --- merge ---
    ("merge-empty-gets-placeholder", "merge", [], {}, [U(PH)]),
    (
        "merge-custom-placeholder",
        "merge",
        [],
        {"placeholder": "Let's get started."},
        [U("Let's get started.")],
    ),
    ("merge-only-system", "merge", [S("s")], {}, [S("s")]),
    ("merge-consecutive-system", "merge", [S("a"), S("b"), U("u")], {}, [S("a\n\nb"), U("u")]),
    ("merge-consecutive-user", "merge", [U("a"), U("b"), A("c")], {}, [U("a\n\nb"), A("c")]),
    (
        "merge-consecutive-assistant",
        "merge",
        [U("u"), A("a"), A("b"), A("c")],
        {},
        [U("u"), A("a\n\nb\n\nc")],
    ),
    (
        "merge-alternating-untouched",
        "merge",
        [S("s"), U("u"), A("a"), U("u2")],
        {},
        [S("s"), U("u"), A("a"), U("u2")],
    ),
    (
        "merge-names-folded",
        "merge",
        [U("hi", "Bob"), A("hello", "Alice")],
        {},
        [U("Bob: hi"), A("Alice: hello")],
    ),
    ("merge-name-already-prefixed", "merge", [U("Bob: hi", "Bob")], {}, [U("Bob: hi")]),
    ("merge-name-prefix-needs-space", "merge", [U("Bob:hi", "Bob")], {}, [U("Bob: Bob:hi")]),
    ("merge-names-then-squash", "merge", [U("hi", "Bob"), U("yo", "Carl")], {}, [U("Bob: hi\n\nCarl: yo")]),
    ("merge-system-name-not-folded", "merge", [S("note", "narrator")], {}, [S("note")]),
    (
        "merge-examples-with-names",
        "merge",
        EXAMPLES,
        NAMES,
        [S("[Example Chat]\n\nBob: Hello\n\nAlice: Hi there")],
    ),
    ("merge-examples-without-names", "merge", EXAMPLES, {}, [S("[Example Chat]\n\nHello\n\nHi there")]),
    (
        "merge-example-already-prefixed",
        "merge",
        [S("Alice: Hi", "example_assistant"), S("Bob: Yo", "example_user")],
        NAMES,
        [S("Alice: Hi\n\nBob: Yo")],
    ),
    (
        "merge-example-group-member-not-prefixed",
        "merge",
        [S("Carl: hey", "example_assistant"), S("hey", "example_assistant")],
        {**NAMES, "group_names": ["Carl", "Dana"]},
        [S("Carl: hey\n\nAlice: hey")],
    ),
    ("merge-empty-message-not-merged", "merge", [U("a"), U(""), U("b")], {}, [U("a"), U("\n\nb")]),
    ("merge-all-empty", "merge", [U(""), U("")], {}, [U(""), U("")]),
    ("merge-leading-empty", "merge", [U(""), A("x")], {}, [U(""), A("x")]),
    (
        "merge-system-in-middle-stays",
        "merge",
        [S("s"), U("u"), S("mid"), A("a")],
        {},
        [S("s"), U("u"), S("mid"), A("a")],
    ),
    ("merge-leading-assistant-stays", "merge", [A("a"), U("u")], {}, [A("a"), U("u")]),
    # --- semi-strict ---
    ("semi-empty", "semi-strict", [], {}, [U(PH)]),
    ("semi-only-system", "semi-strict", [S("s")], {}, [S("s")]),
    (
        "semi-system-in-middle-becomes-user",
        "semi-strict",
        [S("s"), U("u"), S("mid"), A("a")],
        {},
        [S("s"), U("u\n\nmid"), A("a")],
    ),
    ("semi-leading-systems-merged", "semi-strict", [S("a"), S("b"), U("u")], {}, [S("a\n\nb"), U("u")]),
    (
        "semi-system-after-assistant-joins-next-user",
        "semi-strict",
        [S("s"), U("u"), A("a"), S("note"), U("u2")],
        {},
        [S("s"), U("u"), A("a"), U("note\n\nu2")],
    ),
    (
        "semi-trailing-system",
        "semi-strict",
        [S("s"), U("u"), A("a"), S("post")],
        {},
        [S("s"), U("u"), A("a"), U("post")],
    ),
    ("semi-user-first-then-system", "semi-strict", [U("u"), S("s")], {}, [U("u\n\ns")]),
    ("semi-leading-assistant-no-placeholder", "semi-strict", [A("a"), U("u")], {}, [A("a"), U("u")]),
    ("semi-system-then-assistant", "semi-strict", [S("s"), A("a")], {}, [S("s"), A("a")]),
    ("semi-names-folded", "semi-strict", [S("s"), U("u", "Bob")], {}, [S("s"), U("Bob: u")]),
    # --- strict ---
    ("strict-empty", "strict", [], {}, [U(PH)]),
    ("strict-only-system", "strict", [S("s")], {}, [S("s"), U(PH)]),
    ("strict-system-then-assistant", "strict", [S("s"), A("a"), U("u")], {}, [S("s"), U(PH), A("a"), U("u")]),
    ("strict-leading-assistant", "strict", [A("a"), U("u")], {}, [U(PH), A("a"), U("u")]),
    ("strict-system-user-untouched", "strict", [S("s"), U("u"), A("a")], {}, [S("s"), U("u"), A("a")]),
    ("strict-user-first-untouched", "strict", [U("u"), A("a")], {}, [U("u"), A("a")]),
    (
        "strict-system-in-middle-and-placeholder",
        "strict",
        [S("s"), A("a"), S("mid")],
        {},
        [S("s"), U(PH), A("a"), U("mid")],
    ),
    (
        "strict-leading-systems-merged-then-placeholder",
        "strict",
        [S("a"), S("b"), A("x")],
        {},
        [S("a\n\nb"), U(PH), A("x")],
    ),
    (
        "strict-custom-placeholder",
        "strict",
        [A("a")],
        {"placeholder": "Let's get started."},
        [U("Let's get started."), A("a")],
    ),
    ("strict-empty-user-counts-as-user", "strict", [S("s"), U(""), A("a")], {}, [S("s"), U(""), A("a")]),
    ("strict-names-folded", "strict", [S("s"), A("hi", "Alice")], {}, [S("s"), U(PH), A("Alice: hi")]),
    ("strict-assistant-then-system", "strict", [A("a"), S("note")], {}, [U(PH), A("a"), U("note")]),
    (
        "strict-consecutive-users-squashed",
        "strict",
        [S("s"), U("u1"), U("u2"), A("a"), A("b")],
        {},
        [S("s"), U("u1\n\nu2"), A("a\n\nb")],
    ),
    # --- single-user ---
    ("single-empty", "single-user", [], {}, [U(PH)]),
    ("single-only-system", "single-user", [S("s")], {}, [U("s")]),
    ("single-basic", "single-user", [S("s"), U("u"), A("a"), U("u2")], {}, [U("s\n\nu\n\na\n\nu2")]),
    ("single-with-names", "single-user", [S("s"), U("u"), A("a")], NAMES, [U("s\n\nBob: u\n\nAlice: a")]),
    (
        "single-already-prefixed",
        "single-user",
        [A("Alice: a"), U("Bob: u")],
        NAMES,
        [U("Alice: a\n\nBob: u")],
    ),
    ("single-message-name-then-char", "single-user", [A("hi", "Carl")], NAMES, [U("Alice: Carl: hi")]),
    (
        "single-message-name-of-group-member",
        "single-user",
        [A("hi", "Carl")],
        {**NAMES, "group_names": ["Carl"]},
        [U("Carl: hi")],
    ),
    ("single-examples", "single-user", EXAMPLES[1:], NAMES, [U("Bob: Hello\n\nAlice: Hi there")]),
    ("single-leading-empty", "single-user", [U(""), A("a")], {}, [U("\n\na")]),
    ("single-leading-assistant-no-placeholder", "single-user", [A("a")], {}, [U("a")]),
]


@pytest.mark.parametrize(
    ("mode", "messages", "kwargs", "expected"),
    [pytest.param(*case[1:], id=case[0]) for case in CASES],
)
def test_postprocess(
    mode: str, messages: list[ChatMessage], kwargs: dict[str, object], expected: list[ChatMessage]
) -> None:
    # given
    before = list(messages)
    # when
    result = postprocess(messages, mode, **kwargs)  # type: ignore[arg-type]
    # then
    assert result == expected
    assert messages == before  # the input list is not modified
    if mode != "none":
        assert all(message.name is None for message in result)


def test_every_mode_is_covered_by_the_table() -> None:
    assert {case[1] for case in CASES} == set(POSTPROCESS_MODES)


def test_modes() -> None:
    assert POSTPROCESS_MODES == ("none", "merge", "semi-strict", "strict", "single-user")


def test_none_returns_a_new_list() -> None:
    messages = [U("u")]
    result = postprocess(messages, "none")
    assert result == messages
    assert result is not messages


@pytest.mark.parametrize("mode", ["", "semi", "single", "Strict", "merge_tools", "claude"])
def test_unknown_mode(mode: str) -> None:
    with pytest.raises(ValueError, match="unknown prompt post-processing mode"):
        postprocess([U("u")], mode)


@pytest.mark.parametrize("mode", POSTPROCESS_MODES[1:])
def test_idempotent(mode: str) -> None:
    # given a conversation exercising names, system in the middle and a leading assistant
    messages = [S("s"), A("a", "Alice"), S("mid"), U("u"), U("u2", "Bob"), A("b")]
    # when
    once = postprocess(messages, mode, placeholder=PH)
    twice = postprocess(once, mode, placeholder=PH)
    # then
    assert twice == once
