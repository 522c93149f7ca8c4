"""Dice formulas for ``{{roll}}`` (the droll subset ST accepts: ``NdS±M``, ``dS``, ``S``)."""

from __future__ import annotations

import random
import re
from collections.abc import Callable

from apps.macros.engine.context import MAX_DICE

_FORMULA = re.compile(r"(\d{1,9})?[dD](\d{1,9})(?:([+-])(\d{1,9}))?", re.A)
_DIGITS = re.compile(r"\d{1,9}", re.A)


def roll(formula: str, rng: random.Random, take: Callable[[int], bool] | None = None) -> str:
    """Total of the dice as text; ``''`` for an invalid formula (ST's behaviour), or when ``take(count)``
    (the evaluator's dice budget) refuses the dice. Each die is one ``randint``: O(count), whatever
    the number of sides."""
    text = formula.strip()
    if _DIGITS.fullmatch(text):
        text = "1d" + text
    m = _FORMULA.fullmatch(text)
    if m is None:
        return ""
    count = int(m.group(1)) if m.group(1) else 1
    sides = int(m.group(2))
    if count < 1 or sides < 1 or count > MAX_DICE:
        return ""
    if take is not None and not take(count):
        return ""
    total = sum(rng.randint(1, sides) for _ in range(count))
    if m.group(3):
        modifier = int(m.group(4))
        total += modifier if m.group(3) == "+" else -modifier
    return str(total)
