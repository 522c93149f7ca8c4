"""Table tests (and properties) for the pure charge arithmetic, SPEC §9."""

from __future__ import annotations

import math
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from apps.billing.charges import (
    Charge,
    HoldPlan,
    Split,
    affordable_output_chars,
    compute_charge,
    count_chars,
    extension_request,
    hold_amount,
    one_char_cost,
    output_cost,
    plan_hold,
    split_payment,
)

D = Decimal
THRESHOLD = 10_000


# --- compute_charge ------------------------------------------------------------------------------


def _who(who: str) -> dict[str, bool]:
    """ "" = ordinary user on a paid model; "member"; "free" (free model); "free+member"."""
    return {"is_free_model": "free" in who, "is_member": "member" in who}


# (id, input_chars, output_chars, input_ratio, output_ratio, who, (input, output, total, benefit))
CHARGE_CASES = [
    ("below-threshold-9999", 9_999, 500, "1", "1", "", (0, 500, 500, False)),
    ("at-threshold-10000", 10_000, 500, "1", "1", "", (10_000, 500, 10_500, False)),
    ("above-threshold-10001", 10_001, 0, "1", "1", "", (10_001, 0, 10_001, False)),
    ("ratio-2-exact", 10_000, 1_000, "2", "2", "", (5_000, 500, 5_500, False)),
    ("ratio-2-rounds-up", 10_001, 1_001, "2", "2", "", (5_001, 501, 5_502, False)),
    ("ratio-0.5-doubles", 10_000, 1_000, "0.5", "0.5", "", (20_000, 2_000, 22_000, False)),
    ("ratio-3-rounds-up", 10_000, 1_000, "3", "3", "", (3_334, 334, 3_668, False)),
    ("ratio-3-exact", 12_000, 999, "3", "3", "", (4_000, 333, 4_333, False)),
    ("ratio-3-one-char", 0, 1, "3", "3", "", (0, 1, 1, False)),
    ("ratio-1.5-rounds-up", 10_000, 1_000, "1.5", "1.5", "", (6_667, 667, 7_334, False)),
    ("ratio-1.5-exact", 15_000, 3_000, "1.5", "1.5", "", (10_000, 2_000, 12_000, False)),
    ("ratio-0.01-min", 10_000, 7, "0.01", "0.01", "", (1_000_000, 700, 1_000_700, False)),
    ("mixed-ratios", 30_000, 1_234, "2", "0.5", "", (15_000, 2_468, 17_468, False)),
    # float would say 21 / 0.7 = 30.000000000000004 → 31; exact is 30
    ("exact-not-float-0.7", 0, 21, "1", "0.7", "", (0, 30, 30, False)),
    # float: 69 / 1.15 = 60.00000000000001 → 61; exact 60 (and 11_500 / 1.15 = 10_000)
    ("exact-not-float-1.15", 11_500, 69, "1.15", "1.15", "", (10_000, 60, 10_060, False)),
    ("exact-not-float-0.57", 0, 57, "1", "0.57", "", (0, 100, 100, False)),
    ("trailing-zeros-ratio", 10_000, 30, "2.00", "3.000", "", (5_000, 10, 5_010, False)),
    ("nothing-at-all", 0, 0, "1", "1", "", (0, 0, 0, False)),
    ("large", 10**9, 10**9, "3", "0.01", "", (333_333_334, 10**11, 100_333_333_334, False)),
    # members: output waived (flag set even with 0 output chars), input still charged
    ("member-output-waived", 20_000, 5_000, "1", "1", "member", (20_000, 0, 20_000, True)),
    ("member-zero-output", 100, 0, "1", "1", "member", (0, 0, 0, True)),
    ("member-below-threshold", 9_999, 8_000, "1", "1", "member", (0, 0, 0, True)),
    ("member-ratio-3", 10_000, 8_000, "3", "3", "member", (3_334, 0, 3_334, True)),
    # free models: nothing, and no member benefit reported
    ("free-model", 50_000, 5_000, "1", "1", "free", (0, 0, 0, False)),
    ("free-model-member", 50_000, 5_000, "1", "1", "free+member", (0, 0, 0, False)),
]


@pytest.mark.parametrize(
    ("input_chars", "output_chars", "input_ratio", "output_ratio", "who", "expected"),
    [pytest.param(*case[1:], id=case[0]) for case in CHARGE_CASES],
)
def test_compute_charge(
    input_chars: int,
    output_chars: int,
    input_ratio: str,
    output_ratio: str,
    who: str,
    expected: tuple[int, int, int, bool],
) -> None:
    charge = compute_charge(
        input_chars=input_chars,
        output_chars=output_chars,
        input_ratio=D(input_ratio),
        output_ratio=D(output_ratio),
        input_free_threshold=THRESHOLD,
        **_who(who),
    )
    assert charge == Charge(*expected)


@pytest.mark.parametrize(
    ("input_chars", "output_chars", "ratio", "threshold", "expected"),
    [
        pytest.param(1, 1, 1, 0, Charge(1, 1, 2, False), id="threshold-0-charges-1-char"),
        pytest.param(0, 0, 1, 0, Charge(0, 0, 0, False), id="threshold-0-nothing"),
        pytest.param(4_999, 0, 1, 5_000, Charge(0, 0, 0, False), id="threshold-5000-below"),
        pytest.param(5_000, 0, 1, 5_000, Charge(5_000, 0, 5_000, False), id="threshold-5000-at"),
        pytest.param(10_000, 10, 4, THRESHOLD, Charge(2_500, 3, 2_503, False), id="int-ratio-accepted"),
    ],
)
def test_compute_charge_threshold_and_int_ratio(
    input_chars: int, output_chars: int, ratio: int, threshold: int, expected: Charge
) -> None:
    charge = compute_charge(
        input_chars=input_chars,
        output_chars=output_chars,
        input_ratio=ratio,  # type: ignore[arg-type]  # int is accepted as well as Decimal
        output_ratio=ratio,  # type: ignore[arg-type]
        is_free_model=False,
        is_member=False,
        input_free_threshold=threshold,
    )
    assert charge == expected


def _charge_kwargs(**overrides: object) -> dict[str, object]:
    kwargs: dict[str, object] = {
        "input_chars": 10_000,
        "output_chars": 100,
        "input_ratio": D(1),
        "output_ratio": D(1),
        "is_free_model": False,
        "is_member": False,
        "input_free_threshold": THRESHOLD,
    }
    kwargs.update(overrides)
    return kwargs


@pytest.mark.parametrize(
    ("overrides", "error", "message"),
    [
        ({"input_chars": -1}, ValueError, "input_chars must be >= 0, got -1"),
        ({"output_chars": -5}, ValueError, "output_chars must be >= 0, got -5"),
        ({"input_free_threshold": -1}, ValueError, "input_free_threshold must be >= 0"),
        ({"input_ratio": D("0.009")}, ValueError, "input_ratio must be >= 0.01, got 0.009"),
        ({"output_ratio": D(0)}, ValueError, "output_ratio must be >= 0.01, got 0"),
        ({"output_ratio": D(-2)}, ValueError, "output_ratio must be >= 0.01, got -2"),
        ({"input_ratio": D("NaN")}, ValueError, "input_ratio must be a finite number"),
        ({"input_ratio": D("Infinity")}, ValueError, "input_ratio must be a finite number"),
        ({"input_ratio": 1.5}, TypeError, "input_ratio must be a Decimal (or int), got float"),
        ({"output_ratio": "2"}, TypeError, "output_ratio must be a Decimal (or int), got str"),
        ({"input_chars": 1.0}, TypeError, "input_chars must be an int, got float"),
        ({"output_chars": True}, TypeError, "output_chars must be an int, got bool"),
    ],
)
def test_compute_charge_rejects_invalid_input(
    overrides: dict[str, object], error: type[Exception], message: str
) -> None:
    with pytest.raises(error) as excinfo:
        compute_charge(**_charge_kwargs(**overrides))  # type: ignore[arg-type]
    assert str(excinfo.value).startswith(message)


def test_free_model_still_validates() -> None:
    with pytest.raises(ValueError, match="input_chars must be >= 0"):
        compute_charge(**_charge_kwargs(input_chars=-1, is_free_model=True))  # type: ignore[arg-type]


# --- split_payment -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("total_cost", "daily_free_remaining", "expected"),
    [
        pytest.param(0, 0, Split(0, 0), id="nothing-to-pay-no-quota"),
        pytest.param(0, 100, Split(0, 0), id="nothing-to-pay"),
        pytest.param(150, 200, Split(150, 0), id="free-covers-all"),
        pytest.param(150, 150, Split(150, 0), id="free-covers-exactly"),
        pytest.param(150, 100, Split(100, 50), id="free-covers-part"),
        pytest.param(150, 149, Split(149, 1), id="free-short-by-one"),
        pytest.param(150, 0, Split(0, 150), id="free-exhausted"),
        pytest.param(1, 0, Split(0, 1), id="one-paid"),
        pytest.param(10_500, 3_000, Split(3_000, 7_500), id="large"),
    ],
)
def test_split_payment(total_cost: int, daily_free_remaining: int, expected: Split) -> None:
    assert split_payment(total_cost=total_cost, daily_free_remaining=daily_free_remaining) == expected


@pytest.mark.parametrize(
    ("total_cost", "daily_free_remaining", "message"),
    [
        (-1, 0, "total_cost must be >= 0, got -1"),
        (10, -1, "daily_free_remaining must be >= 0, got -1"),
    ],
)
def test_split_payment_rejects_negative(total_cost: int, daily_free_remaining: int, message: str) -> None:
    with pytest.raises(ValueError) as excinfo:
        split_payment(total_cost=total_cost, daily_free_remaining=daily_free_remaining)
    assert str(excinfo.value) == message


# --- hold_amount ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("input_chars", "max_tokens", "hold_cpt", "input_ratio", "output_ratio", "free", "member", "expected"),
    [
        pytest.param(12_000, 2_048, 4, D(1), D(1), False, False, 20_192, id="input-and-output"),
        pytest.param(9_999, 2_048, 4, D(1), D(1), False, False, 8_192, id="input-below-threshold"),
        pytest.param(10_000, 2_048, 4, D(1), D(1), False, False, 18_192, id="input-at-threshold"),
        pytest.param(12_000, 2_048, 4, D(1), D(1), False, True, 12_000, id="member-output-not-held"),
        pytest.param(9_999, 2_048, 4, D(1), D(1), False, True, 0, id="member-below-threshold"),
        pytest.param(50_000, 2_048, 4, D(1), D(1), True, False, 0, id="free-model"),
        pytest.param(5_000, 1_000, 4, D(1), D(3), False, False, 1_334, id="output-ratio-3-rounds-up"),
        pytest.param(10_000, 100, 4, D("0.5"), D("0.5"), False, False, 20_800, id="ratio-0.5"),
        pytest.param(15_000, 1_000, 4, D("1.5"), D("1.5"), False, False, 12_667, id="ratio-1.5"),
        pytest.param(10_000, 2_048, 0, D(1), D(1), False, False, 10_000, id="zero-chars-per-token"),
        pytest.param(10_000, 0, 4, D(1), D(1), False, False, 10_000, id="zero-max-tokens"),
        pytest.param(0, 8_192, 4, D(1), D("0.01"), False, False, 3_276_800, id="min-ratio"),
    ],
)
def test_hold_amount(
    input_chars: int,
    max_tokens: int,
    hold_cpt: int,
    input_ratio: Decimal,
    output_ratio: Decimal,
    free: bool,
    member: bool,
    expected: int,
) -> None:
    hold = hold_amount(
        input_chars=input_chars,
        max_tokens=max_tokens,
        hold_chars_per_token=hold_cpt,
        input_ratio=input_ratio,
        output_ratio=output_ratio,
        is_free_model=free,
        is_member=member,
        input_free_threshold=THRESHOLD,
    )
    assert hold == expected


@pytest.mark.parametrize(
    ("max_tokens", "hold_cpt", "message"),
    [(-1, 4, "max_tokens must be >= 0, got -1"), (100, -4, "hold_chars_per_token must be >= 0, got -4")],
)
def test_hold_amount_rejects_negative(max_tokens: int, hold_cpt: int, message: str) -> None:
    with pytest.raises(ValueError) as excinfo:
        hold_amount(
            input_chars=0,
            max_tokens=max_tokens,
            hold_chars_per_token=hold_cpt,
            input_ratio=D(1),
            output_ratio=D(1),
            is_free_model=False,
            is_member=False,
            input_free_threshold=THRESHOLD,
        )
    assert str(excinfo.value) == message


# --- metering: plan_hold, affordable_output_chars, output costs, extension steps -------------------


@pytest.mark.parametrize(
    ("input_cost", "worst_output", "one_char", "available", "expected"),
    [
        pytest.param(0, 8_192, 1, 100_000, HoldPlan(8_192, 1, True), id="enough-funds-worst-case"),
        pytest.param(0, 8_192, 1, 1_956, HoldPlan(1_956, 1, False), id="seed-example-free-user"),
        pytest.param(0, 1_200, 1, 600, HoldPlan(600, 1, False), id="600-chars-maxtokens-300"),
        pytest.param(12_000, 8_192, 1, 20_192, HoldPlan(20_192, 12_001, True), id="exactly-worst-case"),
        pytest.param(12_000, 8_192, 1, 12_001, HoldPlan(12_001, 12_001, False), id="input-and-one-char"),
        pytest.param(12_000, 8_192, 1, 12_000, HoldPlan(0, 12_001, False, True), id="input-only-refused"),
        pytest.param(12_000, 8_192, 1, 11_999, HoldPlan(0, 12_001, False, True), id="input-does-not-fit"),
        pytest.param(0, 400, 2, 1, HoldPlan(0, 2, False, True), id="ratio-0.5-one-char-costs-2"),
        pytest.param(0, 400, 2, 2, HoldPlan(2, 2, False), id="ratio-0.5-two-available"),
        pytest.param(0, 1, 1, 0, HoldPlan(0, 1, False, True), id="nothing-available"),
        pytest.param(12_000, 0, 0, 12_000, HoldPlan(12_000, 12_000, True), id="member-input-fits"),
        pytest.param(12_000, 0, 0, 11_999, HoldPlan(0, 12_000, False, True), id="member-input-does-not-fit"),
        pytest.param(0, 0, 0, 0, HoldPlan(0, 0, True), id="free-model-nothing"),
    ],
)
def test_plan_hold(input_cost: int, worst_output: int, one_char: int, available: int, expected: HoldPlan) -> None:
    plan = plan_hold(input_cost=input_cost, worst_output_cost=worst_output, one_char_cost=one_char, available=available)
    assert plan == expected


@pytest.mark.parametrize("field", ["input_cost", "worst_output_cost", "one_char_cost", "available"])
def test_plan_hold_rejects_negative(field: str) -> None:
    kwargs = {"input_cost": 0, "worst_output_cost": 0, "one_char_cost": 0, "available": 0, field: -1}
    with pytest.raises(ValueError, match=f"^{field} must be >= 0, got -1$"):
        plan_hold(**kwargs)


@pytest.mark.parametrize(
    ("budget", "ratio", "expected"),
    [
        pytest.param(100, D(4), 400, id="ratio-4"),
        pytest.param(100, D(1), 100, id="ratio-1"),
        pytest.param(100, D("0.5"), 50, id="ratio-0.5"),
        pytest.param(100, D("1.5"), 150, id="ratio-1.5"),
        pytest.param(7, D("1.15"), 8, id="exact-fraction-1.15"),  # ⌈8 / 1.15⌉ = 7, ⌈9 / 1.15⌉ = 8
        pytest.param(1, D("0.5"), 0, id="one-unit-buys-nothing-at-0.5"),
        pytest.param(0, D(1), 0, id="zero"),
        pytest.param(-5, D(1), 0, id="negative-budget"),
    ],
)
def test_affordable_output_chars(budget: int, ratio: Decimal, expected: int) -> None:
    assert affordable_output_chars(budget=budget, output_ratio=ratio) == expected


@pytest.mark.parametrize(
    ("chars", "ratio", "member", "free", "cost", "first"),
    [
        pytest.param(400, D(4), False, False, 100, 1, id="ratio-4"),
        pytest.param(401, D(4), False, False, 101, 1, id="ratio-4-rounds-up"),
        pytest.param(3, D("0.5"), False, False, 6, 2, id="ratio-0.5"),
        pytest.param(400, D(1), True, False, 0, 0, id="member"),
        pytest.param(400, D(1), False, True, 0, 0, id="free-model"),
    ],
)
def test_output_cost_and_one_char_cost(
    chars: int, ratio: Decimal, member: bool, free: bool, cost: int, first: int
) -> None:
    terms = {"output_ratio": ratio, "is_member": member, "is_free_model": free}
    assert output_cost(output_chars=chars, **terms) == cost
    assert one_char_cost(**terms) == first


@pytest.mark.parametrize(
    ("shortfall", "budget", "min_step", "expected"),
    [
        pytest.param(3, 8_192, 1_000, 8_192, id="doubles-the-budget"),
        pytest.param(3, 10, 1_000, 1_000, id="at-least-the-minimum-step"),
        pytest.param(50_000, 8_192, 1_000, 50_000, id="at-least-the-shortfall"),
        pytest.param(0, 0, 0, 0, id="nothing"),
    ],
)
def test_extension_request(shortfall: int, budget: int, min_step: int, expected: int) -> None:
    assert extension_request(shortfall=shortfall, output_budget=budget, min_step=min_step) == expected


# --- count_chars ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", 0),
        ("hello", 5),
        ("在繁华的都市中", 7),
        ("😀", 1),
        ("𠀀a", 2),
        ("e\u0301", 2),
        ("a\r\nb", 4),
    ],
)
def test_count_chars(text: str, expected: int) -> None:
    assert count_chars(text) == expected


# --- properties ----------------------------------------------------------------------------------

ratios = st.decimals(min_value=D("0.01"), max_value=D(100), places=2)
counts = st.integers(min_value=0, max_value=2_000_000)


@given(total_cost=counts, daily_free_remaining=counts)
def test_split_sums_to_total_and_is_never_negative(total_cost: int, daily_free_remaining: int) -> None:
    split = split_payment(total_cost=total_cost, daily_free_remaining=daily_free_remaining)
    assert split.used_daily_free + split.used_paid == total_cost
    assert split.used_daily_free >= 0
    assert split.used_paid >= 0
    assert split.used_daily_free <= daily_free_remaining


@given(
    input_chars=counts,
    output_chars=counts,
    input_ratio=ratios,
    output_ratio=ratios,
    member=st.booleans(),
    threshold=st.integers(min_value=0, max_value=20_000),
)
def test_compute_charge_matches_fraction_oracle(
    input_chars: int,
    output_chars: int,
    input_ratio: Decimal,
    output_ratio: Decimal,
    member: bool,
    threshold: int,
) -> None:
    charge = compute_charge(
        input_chars=input_chars,
        output_chars=output_chars,
        input_ratio=input_ratio,
        output_ratio=output_ratio,
        is_free_model=False,
        is_member=member,
        input_free_threshold=threshold,
    )
    expected_input = 0 if input_chars < threshold else math.ceil(Fraction(input_chars) / Fraction(input_ratio))
    expected_output = 0 if member else math.ceil(Fraction(output_chars) / Fraction(output_ratio))
    assert charge == Charge(expected_input, expected_output, expected_input + expected_output, member)


@given(budget=st.integers(min_value=0, max_value=10_000_000), output_ratio=ratios)
def test_affordable_chars_cost_fits_and_one_more_does_not(budget: int, output_ratio: Decimal) -> None:
    chars = affordable_output_chars(budget=budget, output_ratio=output_ratio)
    terms = {"output_ratio": output_ratio, "is_member": False, "is_free_model": False}
    assert output_cost(output_chars=chars, **terms) <= budget  # type: ignore[arg-type]
    assert output_cost(output_chars=chars + 1, **terms) > budget  # type: ignore[arg-type]


@given(
    input_cost=st.integers(min_value=0, max_value=100_000),
    worst_output=st.integers(min_value=0, max_value=100_000),
    one_char=st.integers(min_value=0, max_value=100),
    available=st.integers(min_value=0, max_value=300_000),
)
def test_a_plan_never_holds_more_than_is_available_nor_more_than_the_worst_case(
    input_cost: int, worst_output: int, one_char: int, available: int
) -> None:
    assume(worst_output == 0 or worst_output >= one_char)  # the worst case is at least one character
    plan = plan_hold(input_cost=input_cost, worst_output_cost=worst_output, one_char_cost=one_char, available=available)
    if plan.refused:
        assert plan.amount == 0 and plan.required > available
    else:
        assert plan.required <= plan.amount <= min(available, input_cost + worst_output)
        assert plan.covers_worst == (plan.amount == input_cost + worst_output)


@given(
    input_chars=counts,
    output_chars=st.integers(min_value=0, max_value=40_000),
    max_tokens=st.integers(min_value=0, max_value=10_000),
    output_ratio=ratios,
    member=st.booleans(),
    free=st.booleans(),
)
def test_charge_never_exceeds_hold_when_output_within_hold(
    input_chars: int, output_chars: int, max_tokens: int, output_ratio: Decimal, member: bool, free: bool
) -> None:
    output_chars = min(output_chars, max_tokens * 4)
    common = {
        "input_ratio": D("1.3"),
        "output_ratio": output_ratio,
        "is_free_model": free,
        "is_member": member,
        "input_free_threshold": THRESHOLD,
    }
    charge = compute_charge(input_chars=input_chars, output_chars=output_chars, **common)  # type: ignore[arg-type]
    hold = hold_amount(input_chars=input_chars, max_tokens=max_tokens, hold_chars_per_token=4, **common)  # type: ignore[arg-type]
    assert 0 <= charge.total_cost <= hold
