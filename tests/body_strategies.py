"""Hypothesis strategies for the parity tests of the fast request-body paths (a body checked without
DRF's fields must come out as DRF makes it): texts DRF refuses or trims, and values of every JSON type."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st


def texts(*samples: str) -> Any:
    """Short texts, and the ones a `CharField` trims, refuses (NUL, a lone surrogate) or finds too long."""
    return st.one_of(st.text(max_size=20), st.sampled_from(["", "  ", "a\x00b", "\ud800", *samples]))


def any_json(text: Any) -> Any:
    """Any JSON value (containers one level deep): what a hostile or careless client may send anywhere."""
    scalars = st.one_of(st.none(), st.booleans(), st.integers(-5, 2**63), st.floats(allow_nan=False), text)
    return st.one_of(scalars, st.lists(scalars, max_size=2), st.dictionaries(text, scalars, max_size=2))


def maybe(strategy: Any, other: Any) -> Any:
    """Mostly the field's own type (so that many bodies take the fast path), sometimes `other`."""
    return st.one_of(strategy, strategy, strategy, strategy, other)
