"""What activation returns, built from the loop's activations (docs/worldinfo.md, "Output" and "Trace").

* :class:`Activation`: one activated entry as the loop records it (how, at which step, its content
  after macro substitution).
* :func:`trace` completes the ordering's default trace with what happened to each entry.
* :func:`result` places the activations (ST ``checkWorldInfo``'s output lists: the eight positions,
  depth injections by ``(depth, role)``, outlets, one example block per EM entry) and makes the
  effective entry copies in prompt order.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, NamedTuple

from .compile import NO_MATCH, NOT_SCANNED, Ordering, Prep, trace_item
from .model import (
    POSITION_NAMES,
    ROLE_NAMES,
    ActivationResult,
    DepthInjection,
    Entry,
    MatchedIn,
    Position,
    Role,
    TimedState,
    TraceItem,
)

_VALID_POSITIONS = frozenset(int(p) for p in Position)


@dataclass(slots=True)
class Activation:
    prep: Prep
    how: str
    detail: str
    step: int
    content: str
    matched_key: str | None


class _Texts(NamedTuple):
    by_position: dict[str, str]
    depth_injections: list[DepthInjection]
    outlets: dict[str, str]
    examples_top: list[str]
    examples_bottom: list[str]


def result(
    activated: Mapping[int, Activation],
    *,
    trace: list[TraceItem],
    timed_state: TimedState,
    budget_limit: int,
    budget_used: int,
    overflowed: bool,
    steps: int,
) -> ActivationResult:
    """The :class:`ActivationResult` of a finished run; ``activated`` maps prep index → activation."""
    descending = sorted(activated.values(), key=lambda a: -a.prep.order)
    ascending = list(reversed(descending))
    texts = _texts(descending, ascending)
    return ActivationResult(
        activated=_effective_entries(ascending),
        by_position=texts.by_position,
        depth_injections=texts.depth_injections,
        outlets=texts.outlets,
        examples_top=texts.examples_top,
        examples_bottom=texts.examples_bottom,
        timed_state=timed_state,
        trace=trace,
        budget_limit=budget_limit,
        budget_used=budget_used,
        budget_overflowed=overflowed,
        steps=steps,
    )


def _texts(descending: list[Activation], ascending: list[Activation]) -> _Texts:
    """The activated contents placed: position lists in prompt order, depth injections, outlets, EM."""
    lists: dict[int, list[str]] = {int(p): [] for p in Position}
    depth_groups: dict[tuple[int, int], list[str]] = {}
    outlets: dict[str, list[str]] = {}
    for act in descending:
        content = act.content
        if not content:
            continue
        position = act.prep.position
        if position == Position.AT_DEPTH:
            role = act.prep.role if act.prep.role in ROLE_NAMES else Role.SYSTEM
            depth_groups.setdefault((act.prep.depth, role), []).insert(0, content)
        elif position == Position.OUTLET:
            name = act.prep.entry.outlet_name
            if isinstance(name, str) and name:
                outlets.setdefault(name, []).append(content)
        elif position in lists:
            lists[position].insert(0, content)
    examples_top = list(reversed(lists[Position.EM_TOP]))
    examples_bottom = lists[Position.EM_BOTTOM]
    by_position = {name: "" for name in POSITION_NAMES}
    for position in (Position.BEFORE, Position.AFTER, Position.AN_TOP, Position.AN_BOTTOM):
        by_position[position.st_name] = "\n".join(lists[position])
    by_position["EMTop"] = "\n".join(examples_top)
    by_position["EMBottom"] = "\n".join(examples_bottom)
    injections = [
        DepthInjection(depth=depth, role=ROLE_NAMES[Role(role)], content="\n".join(contents))
        for (depth, role), contents in depth_groups.items()
    ]
    by_position["atDepth"] = "\n".join(
        a.content for a in ascending if a.content and a.prep.position == Position.AT_DEPTH
    )
    outlet_text = {name: "\n".join(contents) for name, contents in outlets.items()}
    by_position["outlet"] = "\n".join(outlet_text.values())
    return _Texts(by_position, injections, outlet_text, examples_top, examples_bottom)


def _effective_entries(ascending: list[Activation]) -> list[Entry]:
    """Copies of the activated entries with their effective content, position, depth and role."""
    activated_entries = []
    for act in ascending:
        entry = act.prep.entry
        prep = act.prep
        if (entry.content, entry.position, entry.depth, entry.role) != (
            act.content,
            prep.position,
            prep.depth,
            prep.role,
        ):
            position = Position(prep.position) if prep.position in _VALID_POSITIONS else prep.position
            role = Role(prep.role) if prep.role in ROLE_NAMES else prep.role
            with contextlib.suppress(TypeError, ValueError):
                entry = replace(entry, content=act.content, position=position, depth=prep.depth, role=role)
        activated_entries.append(entry)
    return activated_entries


# Skip reasons decided after an entry's key matched: its trace item keeps the match (and the cost).
_AFTER_MATCH = frozenset(
    {"group_sticky", "group_scoring", "group_already_active", "lost_group", "probability", "budget"}
)


class Hit(NamedTuple):
    """The primary key that matched: as written, after macros, and where it was found."""

    key: str
    text: str
    where: MatchedIn | None


def trace(
    activated: Mapping[int, Activation],
    *,
    preps: Sequence[Prep],
    ordering: Ordering,
    reasons: Mapping[int, list[Any]],
    hit_of: Callable[[int], Hit | None],
    costs: Mapping[int, tuple[int, int]],
    dynamic: Iterable[int],
    simple_live: set[int],
    duplicates: Iterable[Entry],
) -> list[TraceItem]:
    """One item per entry in scan order (the ordering's default items, replaced for every entry that was
    activated, skipped for a reason or had its keys substituted), then one per duplicate.

    ``reasons`` maps prep index → ``[reason, detail, step, strength]`` for entries that were looked at
    and skipped; ``hit_of(index)`` the matched primary key of an entry (after macros) and where it matched;
    ``costs`` an entry's tokens and the running budget total when it reached the budget check (kept
    for activated entries and for those skipped after their key matched: group, probability, budget);
    ``dynamic`` are the entries whose keys were substituted (their default item may be
    stale); ``simple_live`` the simple entries still waiting for a key at the end; ``duplicates`` the
    entries dropped as already present from a higher-priority source.
    """
    items = list(ordering.default_trace)
    rank = ordering.rank
    touched = set(reasons) | set(activated) | set(dynamic)
    for index in touched:
        position_in_trace = rank.get(index)
        if position_in_trace is None:
            continue
        prep = preps[index]
        entry = prep.entry
        act = activated.get(index)
        if act is not None:
            detail = act.detail
            if not act.content:
                detail += "; empty content, nothing inserted"
            elif act.prep.position == Position.OUTLET and not entry.outlet_name:
                detail += "; outlet entry without outlet name, nothing inserted"
            elif act.prep.position not in _VALID_POSITIONS and act.prep.position not in (
                Position.AT_DEPTH,
                Position.OUTLET,
            ):
                detail += "; unknown position, nothing inserted"
            hit = hit_of(index) if act.matched_key is not None else None
            item = trace_item(entry, "activated", act.how, detail, act.step, act.matched_key, hit, costs.get(index))
        else:
            recorded = reasons.get(index)
            if recorded is None:
                if index in simple_live:
                    item = trace_item(entry, "skipped", "no_key_match", NO_MATCH, 1, None)
                else:
                    item = trace_item(entry, "skipped", "not_scanned", NOT_SCANNED, 0, None)
            else:
                reason = recorded[0]
                hit, cost = (hit_of(index), costs.get(index)) if reason in _AFTER_MATCH else (None, None)
                item = trace_item(entry, "skipped", reason, recorded[1], recorded[2], None, hit, cost)
        items[position_in_trace] = item
    for entry in duplicates:
        comment = entry.comment if isinstance(entry.comment, str) else ""
        items.append(
            TraceItem(
                entry.lorebook_id,
                entry.uid,
                "skipped",
                "duplicate",
                "same lorebook and uid already present from a higher-priority source",
                0,
                None,
                entry.source,
                comment,
            )
        )
    return items
