"""What activation returns: the 8 positions and their order, depth injections, outlets, EM blocks."""

import random

import pytest

from apps.worldviews.engine import POSITION_NAMES, ChatLine, DepthInjection, Entry, Position, activate


def run(entries, text="dragon", **kwargs):
    kwargs.setdefault("max_context", 100_000)
    return activate(entries, [ChatLine("U", text)], rng=random.Random(0), **kwargs)


def const(uid, order, position=Position.BEFORE, **fields):
    return Entry(uid=uid, constant=True, order=order, position=position, content=f"o{order}", **fields)


def test_all_eight_positions_are_present():
    result = run([])
    assert list(result.by_position) == list(POSITION_NAMES)
    assert POSITION_NAMES == ("before", "after", "ANTop", "ANBottom", "atDepth", "EMTop", "EMBottom", "outlet")
    assert set(result.by_position.values()) == {""}


@pytest.mark.parametrize(
    "position",
    [Position.BEFORE, Position.AFTER, Position.AN_TOP, Position.AN_BOTTOM],
)
def test_ascending_order_within_a_position(position):
    result = run([const(1, 30, position), const(2, 10, position), const(3, 20, position)])
    assert result.by_position[position.st_name] == "o10\no20\no30"


def test_equal_order_comes_out_in_reverse_activation_order():
    entries = [
        Entry(uid=1, constant=True, content="first"),
        Entry(uid=2, constant=True, content="second"),
    ]
    assert run(entries).by_position["before"] == "second\nfirst"  # ST prepends each entry


def test_example_message_positions():
    entries = [const(1, 10, Position.EM_TOP), const(2, 20, Position.EM_TOP)]
    entries += [const(3, 10, Position.EM_BOTTOM), const(4, 20, Position.EM_BOTTOM)]
    result = run(entries)
    assert result.examples_top == ["o20", "o10"]  # each one is unshifted before the card's examples
    assert result.examples_bottom == ["o10", "o20"]
    assert result.by_position["EMTop"] == "o20\no10"
    assert result.by_position["EMBottom"] == "o10\no20"


def test_depth_injections_grouped_by_depth_and_role():
    entries = [
        const(1, 10, Position.AT_DEPTH, depth=2, role=0),
        const(2, 20, Position.AT_DEPTH, depth=2, role=0),
        const(3, 5, Position.AT_DEPTH, depth=4, role=1),
        const(4, 30, Position.AT_DEPTH, depth=2, role=2),
        const(5, 15, Position.AT_DEPTH, depth=0, role=0),
    ]
    result = run(entries)
    assert result.depth_injections == [
        DepthInjection(depth=2, role="assistant", content="o30"),
        DepthInjection(depth=2, role="system", content="o10\no20"),
        DepthInjection(depth=0, role="system", content="o15"),
        DepthInjection(depth=4, role="user", content="o5"),
    ]
    assert result.by_position["atDepth"] == "o5\no10\no15\no20\no30"


def test_outlets():
    entries = [
        const(1, 10, Position.OUTLET, outlet_name="weather"),
        const(2, 20, Position.OUTLET, outlet_name="weather"),
        const(3, 15, Position.OUTLET, outlet_name="Mood"),
        const(4, 25, Position.OUTLET),  # no outlet name: activated, not inserted
    ]
    result = run(entries)
    assert result.outlets == {"weather": "o20\no10", "Mood": "o15"}  # ST 1.15 keeps outlets descending
    unnamed = next(t for t in result.trace if t.uid == 4)
    assert unnamed.status == "activated"
    assert "without outlet name" in unnamed.detail


def test_activated_list_is_in_prompt_order_with_effective_fields():
    entries = [
        Entry(uid=1, key=("dragon",), order=50, content="@@depth 1\n@@role user\nDeep {{user}}"),
        Entry(uid=2, key=("dragon",), order=10, content="Shallow"),
    ]
    result = run(entries, substitute=lambda t: t.replace("{{user}}", "Alice"))
    assert [(e.uid, e.content, e.position, e.depth, e.role) for e in result.activated] == [
        (2, "Shallow", Position.BEFORE, 4, 0),
        (1, "Deep Alice", Position.AT_DEPTH, 1, 1),
    ]


def test_empty_content_is_activated_but_not_inserted():
    result = run([Entry(uid=1, constant=True, content=""), const(2, 100)])
    assert result.by_position["before"] == "o100"
    assert [t.status for t in result.trace] == ["activated", "activated"]
    assert "empty content" in result.trace[0].detail


def test_trace_covers_every_entry_once_in_scan_order():
    entries = [Entry(uid=i, key=(f"k{i}",), order=i, content="c") for i in range(10)]
    result = run(entries, text="k3 k7")
    assert [t.uid for t in result.trace] == list(range(9, -1, -1))
    assert {t.uid for t in result.trace if t.status == "activated"} == {3, 7}
    assert next(t for t in result.trace if t.uid == 3).matched_key == "k3"


def test_estimate_tokens_and_sort_entries():
    from apps.worldviews.engine import estimate_tokens, sort_entries

    assert [estimate_tokens(t) for t in ("", "a", "abc", "abcd", "x" * 335)] == [0, 1, 1, 2, 100]
    entries = [
        Entry(uid=1, order=5, source="global"),
        Entry(uid=2, order=9, source="character"),
        Entry(uid=3, order=1, source="chat"),
    ]
    assert [e.uid for e in sort_entries(entries)] == [3, 2, 1]


def test_equal_entries_rebuilt_give_the_same_result():
    from dataclasses import replace

    entries = [Entry(uid=i, key=(f"k{i}",), order=i, content=f"c{i}", lorebook_id="b") for i in range(20)]
    first = run(entries, text="k3 k5")
    again = run([replace(e) for e in entries], text="k3 k5")
    assert first.trace == again.trace
    changed = [replace(e, key=("zzz",)) if e.uid == 3 else replace(e) for e in entries]
    assert {t.uid for t in run(changed, text="k3 k5").trace if t.status == "activated"} == {5}
