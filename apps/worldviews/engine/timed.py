"""Timed effects (sticky / cooldown / delay), kept per chat as a JSON-serialisable dict.

Shape (as ST's ``chat_metadata.timedWorldInfo``)::

    {"sticky":   {"<lorebook_id>.<uid>": {"hash": "…", "start": 7, "end": 10, "protected": false}},
     "cooldown": {...}}

``start``/``end`` are chat lengths (number of scanned messages). The hash identifies the entry's
definition: an edited entry no longer owns its old effects. Rules (ST ``WorldInfoTimedEffects``):

* before a scan, an effect whose ``start`` is not behind the current chat length and that is not
  protected is dropped — the chat did not advance (swipe, regenerate, deleted message): the turn that
  started it is being redone;
* an effect whose entry is gone is dropped once its end has passed; one whose entry no longer has that
  effect configured is dropped;
* an effect whose end has come is dropped; a sticky ending so starts a *protected* cooldown at once
  (when the entry has a cooldown), active in this very scan;
* ``delay`` N blocks the entry while the chat has fewer than N messages (no state);
* after the scan, each activated entry with sticky/cooldown gets an effect unless it already has one
  (re-triggering does not extend it).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any, Literal

from .model import Entry, TimedEffect, TimedState
from .st_format import entry_to_st

EFFECT_TYPES: tuple[Literal["sticky", "cooldown"], ...] = ("sticky", "cooldown")


def entry_hash(entry: Entry) -> str:
    """Stable digest of the entry's definition (its ST JSON, keys sorted)."""
    try:
        payload = json.dumps(entry_to_st(entry), sort_keys=True, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        payload = repr(entry)
    return hashlib.blake2b(payload.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            return None
    return None


def normalize_state(raw: Any) -> TimedState:
    """A clean copy of a stored state; malformed parts are dropped, never raised on."""
    state: TimedState = {"sticky": {}, "cooldown": {}}
    if not isinstance(raw, Mapping):
        return state
    for kind in EFFECT_TYPES:
        effects = raw.get(kind)
        if not isinstance(effects, Mapping):
            continue
        for key, value in effects.items():
            if not isinstance(key, str) or not isinstance(value, Mapping):
                continue
            start, end = _as_int(value.get("start")), _as_int(value.get("end"))
            if start is None or end is None:
                continue
            state[kind][key] = TimedEffect(
                hash=str(value.get("hash", "")), start=start, end=end, protected=bool(value.get("protected"))
            )
    return state


def _effect_length(entry: Entry, kind: str) -> int:
    value = getattr(entry, kind, None)
    number = _as_int(value)
    return number if number is not None and number > 0 else 0


class TimedEffects:
    """Evaluates a stored state against the current entries and chat length."""

    def __init__(self, raw_state: Any, chat_length: int, entries_by_key: Mapping[str, Entry]) -> None:
        self.state = normalize_state(raw_state)
        self.chat_length = chat_length
        self.active: dict[str, set[str]] = {"sticky": set(), "cooldown": set()}
        self.ended_sticky: set[str] = set()
        self._entries = entries_by_key
        self._hashes: dict[str, str] = {}

    def _hash(self, key: str, entry: Entry) -> str:
        digest = self._hashes.get(key)
        if digest is None:
            digest = self._hashes[key] = entry_hash(entry)
        return digest

    def check(self) -> None:
        length = self.chat_length
        for kind in EFFECT_TYPES:
            effects = self.state[kind]
            for key, effect in list(effects.items()):
                entry = self._entries.get(key)
                if entry is not None and self._hash(key, entry) != effect["hash"]:
                    entry = None
                if length <= effect["start"] and not effect["protected"]:
                    del effects[key]
                    continue
                if entry is None:
                    if length >= effect["end"]:
                        del effects[key]
                    continue
                if not _effect_length(entry, kind):
                    del effects[key]
                    continue
                if length >= effect["end"]:
                    del effects[key]
                    if kind == "sticky":
                        self.ended_sticky.add(key)
                        cooldown = _effect_length(entry, "cooldown")
                        if cooldown:
                            self.state["cooldown"][key] = TimedEffect(
                                hash=effect["hash"], start=length, end=length + cooldown, protected=True
                            )
                            self.active["cooldown"].add(key)
                    continue
                self.active[kind].add(key)

    def is_sticky(self, key: str) -> bool:
        return key in self.active["sticky"]

    def is_cooldown(self, key: str) -> bool:
        return key in self.active["cooldown"]

    def is_delayed(self, entry: Entry) -> bool:
        delay = _effect_length(entry, "delay")
        return bool(delay) and self.chat_length < delay

    def record(self, key: str, entry: Entry) -> None:
        """Start the sticky/cooldown effects of an entry that just activated (unless already running)."""
        for kind in EFFECT_TYPES:
            length = _effect_length(entry, kind)
            if length and key not in self.state[kind]:
                self.state[kind][key] = TimedEffect(
                    hash=self._hash(key, entry),
                    start=self.chat_length,
                    end=self.chat_length + length,
                    protected=False,
                )
