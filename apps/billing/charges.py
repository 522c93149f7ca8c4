"""Charge arithmetic for character-based billing (字数消耗), SPEC §9 — pure, no Django.

Everything here is integer arithmetic. A ratio is a :class:`~decimal.Decimal` (≥ 0.01) read as an
exact fraction ``p / q`` (``Decimal.as_integer_ratio``), so ``⌈chars / ratio⌉`` is computed as
``⌈chars × q / p⌉`` on integers: no float, no Decimal context precision, no rounding surprises.

Rules (see ``docs/billing.md`` for worked examples):

* ``input_cost = ⌈input_chars / input_ratio⌉``, but **0 when input_chars < input_free_threshold**
  (threshold 10000: 9,999 → 0; 10,000 → charged in full).
* ``output_cost = ⌈output_chars / output_ratio⌉``, but **0 for an active member**.
* ``member_benefit_applied`` is true exactly when the member rule waived the output charge: the user is
  a member **and** the model is not free — also when ``output_chars`` is 0 (the benefit was in force;
  nothing depends on how much it saved). Free models never set it.
* Free models cost 0 for input and output and consume nothing.
* ``total_cost = input_cost + output_cost``; paid from the daily free quota first, then the paid balance.
* Holds are metered (:func:`plan_hold`): a call is refused only when not even its input cost plus the
  cost of one output character can be paid (members and free models: the input cost); otherwise it
  holds ``input_cost + min(worst-case output cost, what is left)``, where the worst case is the
  output cost of ``max_tokens × hold_chars_per_token`` characters (:func:`hold_amount`). The output is
  metered against the hold (:func:`affordable_output_chars`) and the hold grows in steps
  (:func:`extension_request`) until nothing more can be held.

Characters are Unicode code points (:func:`count_chars`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from decimal import Decimal

MIN_RATIO = Decimal("0.01")


@dataclass(frozen=True, slots=True)
class Charge:
    input_cost: int
    output_cost: int
    total_cost: int
    member_benefit_applied: bool


@dataclass(frozen=True, slots=True)
class Split:
    used_daily_free: int
    used_paid: int


def count_chars(text: str) -> int:
    """Billing characters: Unicode code points (an emoji or a CJK character counts 1)."""
    return len(text)


def _check_count(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")


def _ratio_fraction(name: str, ratio: Decimal | int) -> tuple[int, int]:
    """The ratio as an exact fraction ``(numerator, denominator)``, validated (≥ 0.01, finite)."""
    if isinstance(ratio, bool) or not isinstance(ratio, Decimal | int):
        # floats are refused: Decimal(0.1) is 0.1000000000000000055511151231257827…
        raise TypeError(f"{name} must be a Decimal (or int), got {type(ratio).__name__}")
    if isinstance(ratio, Decimal) and ratio.is_snan():  # unhashable: refused before the cache
        raise ValueError(f"{name} must be a finite number, got {ratio}")
    return _checked_fraction(name, ratio)


@functools.lru_cache(maxsize=1024, typed=True)
def _checked_fraction(name: str, ratio: Decimal | int) -> tuple[int, int]:
    """`_ratio_fraction` once its type is known; remembered (a deployment has a few ratios, and each
    call prices with them several times)."""
    value = Decimal(ratio)
    if not value.is_finite():
        raise ValueError(f"{name} must be a finite number, got {value}")
    if value < MIN_RATIO:
        raise ValueError(f"{name} must be >= {MIN_RATIO}, got {value}")
    return value.as_integer_ratio()


def _ceil_div_by_ratio(chars: int, fraction: tuple[int, int]) -> int:
    """⌈chars / (p / q)⌉ = ⌈chars × q / p⌉, exactly."""
    numerator, denominator = fraction
    return -(-chars * denominator // numerator)


def compute_charge(
    *,
    input_chars: int,
    output_chars: int,
    input_ratio: Decimal,
    output_ratio: Decimal,
    is_free_model: bool,
    is_member: bool,
    input_free_threshold: int,
) -> Charge:
    """The consumption of one generation (SPEC §9)."""
    _check_count("input_chars", input_chars)
    _check_count("output_chars", output_chars)
    _check_count("input_free_threshold", input_free_threshold)
    input_fraction = _ratio_fraction("input_ratio", input_ratio)
    output_fraction = _ratio_fraction("output_ratio", output_ratio)

    if is_free_model:
        return Charge(input_cost=0, output_cost=0, total_cost=0, member_benefit_applied=False)

    input_cost = 0 if input_chars < input_free_threshold else _ceil_div_by_ratio(input_chars, input_fraction)
    output_cost = 0 if is_member else _ceil_div_by_ratio(output_chars, output_fraction)
    return Charge(
        input_cost=input_cost,
        output_cost=output_cost,
        total_cost=input_cost + output_cost,
        member_benefit_applied=is_member,
    )


def split_payment(*, total_cost: int, daily_free_remaining: int) -> Split:
    """Pay ``total_cost`` from the daily free quota first, the rest from the paid balance."""
    _check_count("total_cost", total_cost)
    _check_count("daily_free_remaining", daily_free_remaining)
    used_daily_free = min(total_cost, daily_free_remaining)
    return Split(used_daily_free=used_daily_free, used_paid=total_cost - used_daily_free)


def hold_amount(
    *,
    input_chars: int,
    max_tokens: int,
    hold_chars_per_token: int,
    input_ratio: Decimal,
    output_ratio: Decimal,
    is_free_model: bool,
    is_member: bool,
    input_free_threshold: int,
) -> int:
    """The most a call can cost: input cost + output cost of ``max_tokens × hold_chars_per_token`` chars.

    The same rules as :func:`compute_charge` (threshold, member waiver, free model), so settling a
    generation whose output stays within ``max_tokens × hold_chars_per_token`` characters never costs
    more than its hold.
    """
    _check_count("max_tokens", max_tokens)
    _check_count("hold_chars_per_token", hold_chars_per_token)
    return compute_charge(
        input_chars=input_chars,
        output_chars=max_tokens * hold_chars_per_token,
        input_ratio=input_ratio,
        output_ratio=output_ratio,
        is_free_model=is_free_model,
        is_member=is_member,
        input_free_threshold=input_free_threshold,
    ).total_cost


# --- metering -----------------------------------------------------------------------------------


def output_cost(*, output_chars: int, output_ratio: Decimal, is_member: bool, is_free_model: bool) -> int:
    """The output part of :func:`compute_charge` alone: ``⌈output_chars / output_ratio⌉`` (0 for a
    member or a free model)."""
    _check_count("output_chars", output_chars)
    fraction = _ratio_fraction("output_ratio", output_ratio)
    if is_member or is_free_model:
        return 0
    return _ceil_div_by_ratio(output_chars, fraction)


def one_char_cost(*, output_ratio: Decimal, is_member: bool, is_free_model: bool) -> int:
    """What the first output character costs: ``⌈1 / output_ratio⌉`` (1 for ratio ≥ 1, 2 for 0.5; 0 for
    a member or a free model)."""
    return output_cost(output_chars=1, output_ratio=output_ratio, is_member=is_member, is_free_model=is_free_model)


def affordable_output_chars(*, budget: int, output_ratio: Decimal) -> int:
    """The most output characters whose cost fits in ``budget``: the largest ``c`` with
    ``⌈c × q / p⌉ ≤ budget`` for the ratio ``p / q``, i.e. ``c ≤ budget × p / q`` (the right side of
    ``⌈x⌉ ≤ n`` being an integer), so ``⌊budget × p / q⌋``; 0 for a budget ≤ 0."""
    if isinstance(budget, bool) or not isinstance(budget, int):
        raise TypeError(f"budget must be an int, got {type(budget).__name__}")
    numerator, denominator = _ratio_fraction("output_ratio", output_ratio)
    return max(0, budget) * numerator // denominator


@dataclass(frozen=True, slots=True)
class HoldPlan:
    """What to reserve for a call, or why not: ``amount`` is 0 and ``refused`` is true when not even
    ``required`` (the input cost plus one output character's cost) fits in what is available."""

    amount: int
    required: int
    covers_worst: bool
    refused: bool = False


def plan_hold(*, input_cost: int, worst_output_cost: int, one_char_cost: int, available: int) -> HoldPlan:
    """Hold what can be paid, not the worst case (SPEC §9).

    ``required = input_cost + one_char_cost`` when output is charged (``worst_output_cost > 0``), else
    ``input_cost``. Refused when ``required > available``; otherwise the hold is
    ``input_cost + min(worst_output_cost, available − input_cost)`` and ``covers_worst`` says whether
    that is the whole worst case (a user with enough funds sees no difference from a worst-case hold).
    """
    for name, value in (
        ("input_cost", input_cost),
        ("worst_output_cost", worst_output_cost),
        ("one_char_cost", one_char_cost),
        ("available", available),
    ):
        _check_count(name, value)
    required = input_cost + (one_char_cost if worst_output_cost > 0 else 0)
    if required > available:
        return HoldPlan(amount=0, required=required, covers_worst=False, refused=True)
    output = min(worst_output_cost, available - input_cost)
    return HoldPlan(amount=input_cost + output, required=required, covers_worst=output == worst_output_cost)


def extension_request(*, shortfall: int, output_budget: int, min_step: int) -> int:
    """How much more to ask for when the metered output needs ``shortfall`` more than the hold's
    ``output_budget``: at least the shortfall, and at least the budget again (doubling it, so a long
    reply takes a handful of extensions, not one per chunk) or ``min_step``."""
    for name, value in (("shortfall", shortfall), ("output_budget", output_budget), ("min_step", min_step)):
        _check_count(name, value)
    return max(shortfall, output_budget, min_step)
