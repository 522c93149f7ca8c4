"""Inclusion groups: which of one scan step's candidates keep their place (docs/worldinfo.md §4).

:func:`filter_groups` takes the step's candidates (sticky first, then scan order) and returns those
that stay, with why each other one dropped, in the order decided:

1. a group with a sticky member keeps only its sticky members (``group_sticky``);
2. with group scoring (global, or any member's ``useGroupScoring``), members whose own scoring is on
   and whose :func:`score` is below the best drop (``group_scoring``);
3. a group that already has an active entry from an earlier step loses every candidate
   (``group_already_active``);
4. of several members, the ``groupOverride`` one with the highest ``order`` wins, else one is drawn by
   weight (``lost_group`` for the others).

Pure: the caller supplies stickiness, key matching and the random source, and records the reasons.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from typing import NamedTuple

from .compile import Key, Prep
from .model import SelectiveLogic

# A candidate of one step: (prep, how it activates, detail, the primary key that matched or None).
Candidate = tuple[Prep, str, str, str | None]


class Dropped(NamedTuple):
    """A candidate an inclusion group removed, with its trace reason and detail."""

    prep: Prep
    reason: str
    detail: str


def score(prep: Prep, match: Callable[[Prep, Key], bool]) -> int:
    """Group score: matching primary keys, plus matching secondary keys for AND_ANY, plus all secondary
    keys for AND_ALL when all match (0 for an entry without primary keys)."""
    if not prep.primary:
        return 0
    primary = sum(1 for key in prep.primary if match(prep, key))
    if prep.secondary:
        secondary = sum(1 for key in prep.secondary if match(prep, key))
        logic = prep.entry.selective_logic
        if logic == SelectiveLogic.AND_ANY:
            return primary + secondary
        if logic == SelectiveLogic.AND_ALL:
            return primary + secondary if secondary == len(prep.secondary) else primary
    return primary


def filter_groups(
    now: list[Candidate],
    holders: Mapping[str, Prep],
    *,
    is_sticky: Callable[[str], bool],
    global_scoring: bool,
    match: Callable[[Prep, Key], bool],
    rng: random.Random,
) -> tuple[list[Candidate], list[Dropped]]:
    """The candidates that keep their place, and the dropped ones (each once, in the order decided).

    ``holders`` maps a group name to the entry that took it in an earlier step; ``is_sticky`` is asked
    with an entry's timed-effect key; ``match`` tells whether one of an entry's keys matches in this
    step's scan; ``rng`` draws the weighted winners (one ``random()`` per contested group, in order).
    """
    grouped: dict[str, list[Prep]] = {}
    for prep, *_ in now:
        for group in prep.groups:
            grouped.setdefault(group, []).append(prep)
    if not grouped:
        return now, []
    removed: set[int] = set()
    dropped: list[Dropped] = []

    def remove(prep: Prep, reason: str, detail: str) -> None:
        if prep.index not in removed:
            removed.add(prep.index)
            dropped.append(Dropped(prep, reason, detail))

    sticky_groups: set[str] = set()
    for name, members in grouped.items():
        sticky_members = [m for m in members if is_sticky(m.key)]
        if sticky_members:
            sticky_groups.add(name)
            for member in members:
                if not is_sticky(member.key):
                    remove(member, "group_sticky", f"group '{name}' is held by sticky {sticky_members[0].label}")
            members[:] = sticky_members
    for name, members in grouped.items():
        if name in sticky_groups:
            continue
        if not (global_scoring or any(m.entry.use_group_scoring is True for m in members)):
            continue
        scores = [score(m, match) for m in members]
        best = max(scores)
        keep = []
        for member, member_score in zip(members, scores, strict=True):
            if member.scoring and member_score < best:
                remove(member, "group_scoring", f"score {member_score} < {best} in group '{name}'")
            else:
                keep.append(member)
        members[:] = keep
    for name, members in grouped.items():
        if name in sticky_groups:
            continue
        holder = holders.get(name)
        if holder is not None:
            for member in members:
                remove(member, "group_already_active", f"group '{name}' already has {holder.label}")
            continue
        if len(members) <= 1:
            continue
        prios = [m for m in members if m.entry.group_override is True]
        if prios:
            winner: Prep | None = sorted(prios, key=lambda m: -m.order)[0]
            how = "prioritized"
        else:
            total = sum(m.weight for m in members)
            roll = rng.random() * total
            cumulative = 0.0
            winner = None
            for member in members:
                cumulative += member.weight
                if roll <= cumulative:
                    winner = member
                    break
            how = f"weighted roll {roll:.2f} of {total:g}"
        for member in members:
            if member is not winner:
                to = winner.label if winner is not None else "nobody"
                remove(member, "lost_group", f"lost inclusion group '{name}' to {to} ({how})")
    return [item for item in now if item[0].index not in removed], dropped
