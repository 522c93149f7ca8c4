"""The pure entry schema's import coercions (the API tests cover validation through the service)."""

from __future__ import annotations

import pytest

from apps.worldviews.engine.entry_schema import uid_coerce


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (5, 5),
        ("12", 12),
        (" 12 ", 12),
        (-1, None),
        ("-1", None),
        ("¹", None),  # str.isdigit() is true, int() refuses it
        ("١٢", None),  # Arabic-Indic digits: not a JSON/JS number
        ("9" * 5000, None),  # longer than int() converts
        (None, None),
        (True, None),
    ],
)
def test_uid_coerce(raw: object, expected: int | None) -> None:
    assert uid_coerce(raw) == expected
