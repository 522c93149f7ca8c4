"""The activation loop (ST ``checkWorldInfo``) with an activation trace. See docs/worldinfo.md.

:func:`activate` runs one :class:`_Run`: the per-call gates (triggers, character filter, timed
effects, decorators), then the scan steps (key matching over the chat, extra sources, injections and
the recursion buffer; delays, exclusions, probability and the token budget) until nothing new
activates. The entry set comes compiled and cached from :mod:`.compile`; inclusion groups are decided
in :mod:`.groups`, and the result is built in :mod:`.output`.
"""

from __future__ import annotations

import bisect
import math
import random
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from functools import partial
from typing import Any, cast

from apps.providers.tokens import estimate_length, estimate_tokens

from .compile import (
    Key,
    Prep,
    Scanner,
    as_int,
    as_number,
    as_strings,
    compiled_set,
    index_keys,
    prepare_key,
)
from .decorators import int_arg
from .groups import Candidate, filter_groups
from .matching import SUB, WORD, RegexKey, RegexLimits, default_limits, fold_case, max_width, plain_matcher
from .model import (
    MAX_SCAN_DEPTH,
    ActivationResult,
    ActivationSettings,
    ChatLine,
    Entry,
    InsertionStrategy,
    MatchedIn,
    SelectiveLogic,
)
from .output import Activation, Hit, result, trace
from .timed import TimedEffects

# Scan states (ST ``scan_state``).
NONE, INITIAL, RECURSION, MIN_ACTIVATIONS = 0, 1, 2, 3

MATCHER = "\x01"
JOINER = "\n\x01"

_EXTRA_ALIASES = {
    "personaDescription": "persona_description",
    "characterDescription": "character_description",
    "characterPersonality": "character_personality",
    "characterDepthPrompt": "character_depth_prompt",
    "creatorNotes": "creator_notes",
}

# Reason strength: a later reason replaces an earlier one only if at least as strong.
_WEAK, _KEYS, _GROUP = 0, 1, 2

_MAX_BUDGET = 10**12


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:g} ms"


def _js_round(value: float) -> int:
    """JS ``Math.round`` (half up), clamped to a sane range."""
    if not math.isfinite(value):
        return _MAX_BUDGET if value > 0 else 0
    return max(-_MAX_BUDGET, min(_MAX_BUDGET, math.floor(value + 0.5)))


# Only a text holding one of these can change under macro substitution (``{{…}}``, ``<USER>``).
_MARKERS = ("{{", "<")


def _normalize_chat(chat: Iterable[Any], include_names: bool) -> list[str]:
    """Scanned messages, newest first: ``Name: text`` (or the text), trimmed; hidden/system skipped."""
    lines: list[str] = []
    for item in chat or ():
        if isinstance(item, ChatLine):
            name, content, role, hidden = item.name, item.content, item.role, item.hidden
        elif isinstance(item, Mapping):
            name, content = item.get("name", ""), item.get("content", "")
            role, hidden = item.get("role", "user"), bool(item.get("hidden", False))
        else:
            continue
        if hidden or role == "system":
            continue
        name = name if isinstance(name, str) else ""
        content = content if isinstance(content, str) else ""
        lines.append((f"{name}: {content}" if include_names else content).strip())
    lines.reverse()
    return lines


def activate(
    entries: Iterable[Entry],
    chat: Sequence[ChatLine],
    *,
    settings: ActivationSettings | None = None,
    max_context: int,
    generation_type: str = "normal",
    timed_state: Mapping[str, Any] | None = None,
    rng: random.Random | None = None,
    substitute: Callable[[str], str] | None = None,
    extra_scan: Mapping[str, str] | None = None,
    chat_length: int | None = None,
    scan_injections: Sequence[str] = (),
    character_name: str | None = None,
    character_tags: Iterable[str] | None = None,
    count_tokens: Callable[[str], int] | None = None,
    regex_limits: RegexLimits | None = None,
) -> ActivationResult:
    """Run world-info activation for one generation. See the package docstring for the contract."""
    return _Run(
        entries,
        chat,
        settings=settings or ActivationSettings(),
        max_context=max_context,
        generation_type=generation_type,
        timed_state=timed_state,
        rng=rng if rng is not None else random.Random(),
        substitute=substitute,
        extra_scan=extra_scan,
        chat_length=chat_length,
        scan_injections=scan_injections,
        character_name=character_name,
        character_tags=character_tags,
        count_tokens=count_tokens,
        regex_limits=regex_limits or default_limits(),
    ).run()


class _Run:
    def __init__(
        self,
        entries: Iterable[Entry],
        chat: Sequence[ChatLine],
        *,
        settings: ActivationSettings,
        max_context: Any,
        generation_type: Any,
        timed_state: Any,
        rng: random.Random,
        substitute: Callable[[str], str] | None,
        extra_scan: Mapping[str, str] | None,
        chat_length: int | None,
        scan_injections: Sequence[str],
        character_name: str | None,
        character_tags: Iterable[str] | None,
        count_tokens: Callable[[str], int] | None,
        regex_limits: RegexLimits,
    ) -> None:
        s = settings
        self.rng = rng
        self.regex_timeout = max(0.0, as_number(regex_limits.timeout, 0.0))
        self.regex_left = max(0.0, as_number(regex_limits.budget, 0.0))
        self.regex_budget = self.regex_left
        self.regex_dead: set[str] = set()  # keys that timed out: not tried again in this activation
        self.regex_notes: dict[int, tuple[str, str]] = {}  # prep index -> (reason, detail) this check
        self.substitute = substitute
        self.count_tokens = count_tokens
        self.generation_type = str(generation_type or "normal").strip().lower()
        self.include_names = bool(s.include_names)
        self.recursive = bool(s.recursive)
        self.global_scoring = bool(s.use_group_scoring)
        self.scan_depth = as_int(s.scan_depth, 2)
        self.min_activations = max(0, as_int(s.min_activations, 0))
        self.min_depth_max = max(0, as_int(s.min_activations_depth_max, 0))
        self.max_steps = max(0, as_int(s.max_recursion_steps, 0))
        budget = _js_round(as_number(s.budget_percent, 25) * as_number(max_context, 0) / 100) or 1
        cap = as_int(s.budget_cap, 0)
        if cap > 0 and budget > cap:
            budget = cap
        self.budget = budget

        self.raw_messages = _normalize_chat(chat, self.include_names)
        self.chat_length = (
            chat_length
            if isinstance(chat_length, int) and not isinstance(chat_length, bool) and chat_length >= 0
            else len(self.raw_messages)
        )
        self.extras: dict[str, str] = {}
        for name, text in (extra_scan or {}).items():
            if isinstance(name, str) and isinstance(text, str):
                self.extras[_EXTRA_ALIASES.get(name, name)] = text
        self.injections = [t for t in scan_injections or () if isinstance(t, str) and t]
        self.character_name = character_name
        self.character_tags = None if character_tags is None else {t for t in character_tags if isinstance(t, str)}
        self._sub_cache: dict[str, str] = {}
        self.custom_used = 0
        # for the trace: prep index -> (index of the matched primary key, regex match position, scan
        # depth, recursion buffer scanned) — turned into a :class:`Hit` only for the entries the trace
        # reports it for — and prep index -> (its tokens, the running total compared with the budget)
        self.hits: dict[int, tuple[int, int, int, bool]] = {}
        self.costs: dict[int, tuple[int, int]] = {}

        compiled = compiled_set(entries, bool(s.case_sensitive), bool(s.match_whole_words), self.global_scoring)
        self.preps: list[Prep] = list(compiled.preps)
        items, owners = compiled.frozen_items, compiled.owners
        if substitute is not None and compiled.dynamic:
            extra_items: dict[bool, set] = {False: set(), True: set()}
            changed = []
            for i in compiled.dynamic:
                prep = self.preps[i]
                prep = replace(
                    prep,
                    primary=[prepare_key(self._subst(k), prep.cs, prep.whole_words) for k in prep.raw_primary],
                    secondary=[prepare_key(self._subst(k), prep.cs, prep.whole_words) for k in prep.raw_secondary],
                    exclude=[prepare_key(self._subst(k), prep.cs, prep.whole_words) for k in prep.raw_exclude],
                    items=None,
                    owner_items=None,
                    trace=None,
                )
                prep.has_regex = any(k[0] == "r" for k in (*prep.primary, *prep.secondary, *prep.exclude))
                prep.simple = (
                    bool(prep.primary)
                    and all(k[0] != "r" or k[1].literal is not None for k in prep.primary)
                    and not (prep.entry.constant is True or prep.decorators or prep.delay_level)
                )
                self.preps[i] = prep
                changed.append(prep)
            owners = {k: list(v) for k, v in owners.items()}
            index_keys(changed, extra_items, owners)
            items = {cs: items[cs] | extra_items[cs] for cs in (False, True)}
        self.items, self.owners = items, owners
        self.ordering = ordering = compiled.order(as_int(s.insertion_strategy, InsertionStrategy.CHARACTER_FIRST))
        self.dynamic = compiled.dynamic if substitute is not None else []
        self.order = ordering.order
        self.duplicates = [self.preps[i].entry for i in ordering.dupes]
        self.rank = ordering.rank
        self.reasons: dict[int, list[Any]] = {}
        self.timed = TimedEffects(timed_state, self.chat_length, ordering.by_key)

    # ---------------------------------------------------------------------------------- preparation

    def _subst(self, text: str) -> str:
        if self.substitute is None or ("{{" not in text and "<" not in text):  # _MARKERS
            return text
        cached = self._sub_cache.get(text)
        if cached is None:
            try:
                cached = self.substitute(text)
            except Exception:  # a broken macro must not break activation
                cached = text
            if not isinstance(cached, str):
                cached = text
            self._sub_cache[text] = cached
        return cached

    # ------------------------------------------------------------------------------------- tracing

    def _reason(self, prep: Prep, reason: str, detail: str, step: int, strength: int) -> None:
        current = self.reasons.get(prep.index)
        # a later reason replaces an earlier one if stronger, or as strong — except that the first group
        # decision is kept (later steps only repeat it as "group already active")
        if current is None or strength > current[3] or (strength == current[3] and strength != _GROUP):
            self.reasons[prep.index] = [reason, detail, step, strength]

    # ------------------------------------------------------------------------------------- matching

    def _setup_scanners(self) -> None:
        self.scanners: dict[bool, Scanner] = {}
        for cs, keyset in self.items.items():
            if not keyset:
                continue
            matcher = plain_matcher(keyset if isinstance(keyset, frozenset) else frozenset(keyset))
            extras = self.extras if cs else {k: fold_case(v) for k, v in self.extras.items()}
            injections = self.injections if cs else [fold_case(t) for t in self.injections]
            self.scanners[cs] = Scanner(matcher, self.raw_messages, extras, injections, None if cs else fold_case)
        self.recursion_texts: list[str] = []
        self._rec_joined = ""
        self._rec_count = 0
        # each content of the recursion buffer: the entry it comes from and where it starts in the joined
        # buffer (``JOINER`` between steps, ``\n`` between the contents of one step) — for the trace
        self.rec_owners: list[Prep] = []
        self.rec_starts: list[int] = []
        self.rec_length = 0
        self.hit_pos = -1  # where the last successful regex search matched
        self._hay_cache: dict[tuple[int, tuple[str, ...], bool], str] = {}

    def _depth_of(self, prep: Prep) -> int:
        depth = prep.scan_depth if prep.scan_depth is not None else self.scan_depth + self.skew
        return min(depth, MAX_SCAN_DEPTH)

    def _haystack(self, depth: int, extras: tuple[str, ...], use_recursion: bool) -> str:
        """The ST scan text for regex keys: ``\\x01`` + newest-first messages joined by ``\\n\\x01`` …"""
        cache_key = (depth, extras, use_recursion)
        text = self._hay_cache.get(cache_key)
        if text is not None:
            return text
        parts: list[str] = []
        if depth > 0:
            parts.append(MATCHER + JOINER.join(self.raw_messages[:depth]))
        for name in extras:
            value = self.extras.get(name)
            if value:
                parts.append(value)
        if self.injections:
            parts.append(JOINER.join(self.injections))
        if use_recursion and self.recursion_texts:
            parts.append(self._recursion_buffer())
        text = parts[0] if parts else ""
        for part in parts[1:]:
            text += JOINER + part
        self._hay_cache[cache_key] = text
        return text

    def _recursion_buffer(self) -> str:
        """The recursion texts joined by ``\n\x01``, extended by the texts added since the last call."""
        done = self._rec_count
        if done != len(self.recursion_texts):
            new = self.recursion_texts[done:]
            self._rec_joined = JOINER.join([self._rec_joined, *new] if done else new)
            self._rec_count = len(self.recursion_texts)
        return self._rec_joined

    def _match(self, prep: Prep, key: Key, state: int) -> bool:
        tag = key[0]
        if tag == "x":
            return False
        use_recursion = state != MIN_ACTIVATIONS
        depth = self._depth_of(prep)
        if tag == "p":
            _, kind, cs, text = key
            scanner = self.scanners.get(cs)
            return scanner is not None and scanner.has(kind, text, depth, prep.extras, use_recursion)
        regex: RegexKey = key[1]
        if regex.pattern is None:
            return False
        if regex.literal is not None:
            scanner = self.scanners.get(not regex.ci)
            if scanner is None or not scanner.has(SUB, regex.literal, depth, prep.extras, use_recursion):
                return False
        if not self._may_search(prep, regex):
            return False
        began = time.perf_counter()
        compiled = regex.compiled  # compiled on first use (cached), counted in the regex budget
        self.regex_left -= time.perf_counter() - began
        if compiled is None:
            return False
        haystack = self._haystack(depth, prep.extras, use_recursion)
        if not regex.sticky and use_recursion and self.recursion_texts:
            # Recursion: the newest content (last in the scan text) usually holds the match that made
            # this entry a candidate. A match whose required literal lies in that content starts at most
            # ``width`` characters before it, so try from there first (lookbehinds and anchors behave as
            # in a full search); only when that fails is the whole text searched. Keeps a long chain of
            # regex-keyed entries linear instead of searching the growing buffer at every step.
            width = max_width(regex.pattern, regex.flags) if regex.literal is not None else None
            if width is not None:
                start = len(haystack) - len(self.recursion_texts[-1]) - width
                if start > 0 and self._search(prep, regex, compiled, haystack, start):
                    return True
        return self._search(prep, regex, compiled, haystack, 0)

    def _search(self, prep: Prep, key: RegexKey, compiled: Any, haystack: str, start: int) -> bool:
        """One bounded search (a match at 0 for sticky keys): at most the per-search timeout and what is
        left of the activation's regex budget. A timeout or a spent budget is no match, noted for the
        trace; a key that timed out is not tried again in this activation."""
        if not self._may_search(prep, key):
            return False
        source = key.source
        left = self.regex_left
        timeout: float | None = self.regex_timeout or None
        stopped_by_budget = False
        if self.regex_budget > 0 and (timeout is None or left < timeout):
            timeout, stopped_by_budget = left, True
        began = time.perf_counter()
        try:
            if key.sticky:
                found = compiled.match(haystack, timeout=timeout)
            else:
                found = compiled.search(haystack, start, timeout=timeout)
            if found is None:
                return False
            self.hit_pos = found.start()
            return True
        except TimeoutError:
            if stopped_by_budget:
                self._regex_note(
                    prep,
                    "regex_budget",
                    f"key '{source}' stopped: the regex time budget of {_ms(self.regex_budget)} is spent",
                )
            else:
                self.regex_dead.add(source)
                self._regex_note(prep, "regex_timeout", f"key '{source}' timed out after {_ms(self.regex_timeout)}")
            return False
        finally:
            self.regex_left = left - (time.perf_counter() - began)

    def _may_search(self, prep: Prep, key: RegexKey) -> bool:
        """False (noted for the trace) when the key timed out before or the regex budget is spent."""
        if key.source in self.regex_dead:
            self._regex_note(
                prep,
                "regex_timeout",
                f"key '{key.source}' timed out after {_ms(self.regex_timeout)} earlier in this activation",
            )
            return False
        if self.regex_budget > 0 and self.regex_left <= 0:
            self._regex_note(
                prep,
                "regex_budget",
                f"key '{key.source}' not tried: the regex time budget of {_ms(self.regex_budget)} is spent",
            )
            return False
        return True

    def _regex_note(self, prep: Prep, reason: str, detail: str) -> None:
        self.regex_notes.setdefault(prep.index, (reason, detail + " (counted as no match)"))

    def _primary_match(self, prep: Prep, state: int) -> str | None:
        found = self._primary_index(prep, state)
        return None if found is None else prep.raw_primary[found]

    def _primary_index(self, prep: Prep, state: int) -> int | None:
        for i, key in enumerate(prep.primary):
            if self._match(prep, key, state):
                return i
        return None

    # ------------------------------------------------------------------------------------ the trace

    def _hit(self, index: int) -> Hit | None:
        """The matched primary key of entry ``index`` as written, after macros, and where it matched —
        worked out when the trace is built, only for the entries it reports (the scan records four
        numbers per match)."""
        recorded = self.hits.get(index)
        if recorded is None:
            return None
        hit, pos, depth, use_recursion = recorded
        prep = self.preps[index]
        raw = prep.raw_primary[hit]
        return Hit(raw, self._subst(raw).strip(), self._located(prep, prep.primary[hit], depth, use_recursion, pos))

    def _located(self, prep: Prep, key: Key, depth: int, use_recursion: bool, pos: int) -> MatchedIn | None:
        """Where a matched primary key was found, in ST's scan-text order. Exact after the scan too:
        what it reads (first chat line of a key, the recursion contents and their offsets) only grows.
        ``pos``: the match position of a regex key in the scan text of its step."""
        if key[0] == "p":
            scanner = self.scanners.get(key[2])
            where = scanner.where(key[1], key[3], depth, prep.extras, use_recursion) if scanner else None
            if where is None:
                return None
            kind, value = where
            if kind == "recursion":
                return self._recursion_source(value)  # type: ignore[arg-type]
            if kind == "extra":
                return MatchedIn(value)  # type: ignore[arg-type]
            return MatchedIn(kind, value)  # type: ignore[arg-type]
        if pos < 0:
            return None
        # walk the parts as ``_haystack`` joins them (a part's span includes the separator in front of it)
        end, first = 0, True
        if depth > 0:
            end, first = len(MATCHER) - len(JOINER), False
            for i, line in enumerate(self.raw_messages[:depth]):
                end += len(JOINER) + len(line)
                if pos < end:
                    return MatchedIn("chat", i)
        texts = [(MatchedIn(name), self.extras.get(name) or "") for name in prep.extras]
        texts += [(MatchedIn("injection", i), text) for i, text in enumerate(self.injections)]
        found = None
        for part, text in texts:
            if text:
                end += (0 if first else len(JOINER)) + len(text)
                first = False
                found = part
                if pos < end:
                    return part
        if use_recursion and self.rec_starts:
            offset = pos - (end if first else end + len(JOINER))  # into the recursion buffer
            return self._recursion_source(max(0, bisect.bisect_right(self.rec_starts, offset) - 1))
        return found

    def _recursion_source(self, number: int) -> MatchedIn | None:
        if number >= len(self.rec_owners):
            return None
        entry = self.rec_owners[number].entry
        return MatchedIn("recursion", None, entry.lorebook_id, entry.uid)

    def _secondary_ok(self, prep: Prep, state: int) -> tuple[bool, str]:
        logic = prep.entry.selective_logic
        results = [self._match(prep, key, state) for key in prep.secondary]
        any_match, all_match = any(results), all(results)
        if logic == SelectiveLogic.NOT_ALL:
            return not all_match, "NOT_ALL: every secondary key matched"
        if logic == SelectiveLogic.NOT_ANY:
            return not any_match, "NOT_ANY: a secondary key matched"
        if logic == SelectiveLogic.AND_ALL:
            return all_match, "AND_ALL: not every secondary key matched"
        return any_match, "AND_ANY: no secondary key matched"

    # ---------------------------------------------------------------------------------- static gates

    def _static_gate(self, prep: Prep) -> tuple[str, str] | None:
        entry = prep.entry
        if entry.disable is True:
            return "disabled", "entry is disabled"
        triggers = as_strings(entry.triggers)
        if triggers and self.generation_type not in {t.strip().lower() for t in triggers}:
            return "trigger_mismatch", f"generation type '{self.generation_type}' not in {list(triggers)}"
        cf = entry.character_filter
        if cf is not None:
            names = as_strings(getattr(cf, "names", ()))
            if names:
                included = self.character_name in names
                if included if cf.is_exclude else not included:
                    return "character_filter", "character filter (names) excludes this character"
            tags = as_strings(getattr(cf, "tags", ()))
            if tags and self.character_tags is not None:
                has_tag = any(t in self.character_tags for t in tags)
                if has_tag if cf.is_exclude else not has_tag:
                    return "character_filter", "character filter (tags) excludes this character"
        sticky = self.timed.is_sticky(prep.key)
        if self.timed.is_delayed(entry):
            return "delay", f"delayed until the chat has {entry.delay} messages (now {self.chat_length})"
        if self.timed.is_cooldown(prep.key) and not sticky:
            end = cast("Mapping[str, Any]", self.timed.state["cooldown"].get(prep.key, {})).get("end")
            return "cooldown", f"on cooldown until chat length {end}"
        after = int_arg(prep.decorators.get("activate_only_after"))
        if after is not None and self.chat_length < after:
            return "decorator_activate_only_after", f"@@activate_only_after {after}"
        every = int_arg(prep.decorators.get("activate_only_every"))
        if every is not None and every > 0 and self.chat_length % every != 0:
            return "decorator_activate_only_every", f"@@activate_only_every {every}"
        return None

    # ------------------------------------------------------------------------------------- the loop

    def run(self) -> ActivationResult:
        self.timed.check()
        self.skew = 0
        self._setup_scanners()
        preps = self.preps
        # Entries that pass the per-call gates. "Simple" ones (plain keys only, no constant, decorators,
        # recursion delay or sticky) are only looked at when one of their keys occurs somewhere.
        ordering = self.ordering
        simple_live = set(ordering.simple)
        non_simple = ordering.non_simple
        if self.dynamic:  # substituted keys may change whether an entry is simple
            in_order = set(self.rank)
            for i in self.dynamic:
                if i in in_order:
                    simple_live.discard(i)
                    if preps[i].simple:
                        simple_live.add(i)
            non_simple = [i for i in self.order if i not in simple_live]
        blocked: set[int] = set()
        for i in ordering.gated:
            gate = self._static_gate(preps[i])
            if gate is not None:
                self._reason(preps[i], gate[0], gate[1], 0, 99)
                blocked.add(i)
        timed = self.timed
        for key in timed.active["cooldown"]:
            if timed.is_sticky(key):
                continue
            end = cast("Mapping[str, Any]", timed.state["cooldown"].get(key, {})).get("end")
            for i in ordering.indices_by_key.get(key, ()):
                if i not in blocked:
                    self._reason(preps[i], "cooldown", f"on cooldown until chat length {end}", 0, 99)
                    blocked.add(i)
        extra_live = []
        for key in timed.active["sticky"]:
            for i in ordering.indices_by_key.get(key, ()):
                if i in simple_live and i not in blocked:
                    extra_live.append(i)  # sticky entries are looked at every step
        simple_live -= blocked
        simple_live.difference_update(extra_live)
        live: list[Prep] = [preps[i] for i in non_simple if i not in blocked]
        live += [preps[i] for i in extra_live]
        self.simple_live = simple_live
        self.cand_base: set[int] = set()
        self.cand_rec: set[int] = set()

        delay_levels = list(ordering.delay_levels)
        current_level = delay_levels.pop(0) if delay_levels else 0
        activated: dict[int, Activation] = {}
        group_holders: dict[str, Prep] = {}
        failed: set[int] = set()
        all_length = 0  # length of the text activated so far, ST's ``allActivatedText`` (only its size matters)
        overflowed = False
        state = INITIAL
        step = 0
        max_entry_depth = ordering.max_scan_depth
        rank = self.rank
        while state:
            if self.max_steps and self.max_steps <= step:
                break
            step += 1
            self._hay_cache.clear()
            use_recursion = state != MIN_ACTIVATIONS
            for scanner in self.scanners.values():
                scanner.ensure(min(max(self.scan_depth + self.skew, max_entry_depth), MAX_SCAN_DEPTH))
            candidates = [preps[i] for i in self._candidates(use_recursion)]
            live = [p for p in live if p.index not in activated and p.index not in failed]
            to_check = sorted((*live, *candidates), key=lambda p: rank[p.index])

            now: list[Candidate] = []
            dropped: set[int] = set()
            notes = self.regex_notes
            for prep in to_check:
                notes.pop(prep.index, None)
                sticky = self.timed.is_sticky(prep.key)
                if not sticky and prep.delay_level and (state != RECURSION or prep.delay_level > current_level):
                    matched = self._primary_match(prep, state) if prep.primary else None
                    where = "outside recursion" if state != RECURSION else f"at recursion level {current_level}"
                    self._reason(
                        prep,
                        "delay_until_recursion",
                        (f"key '{matched}' matched, but " if matched else "")
                        + f"the entry waits for recursion level {prep.delay_level} (scan {where})",
                        step,
                        _KEYS if matched else _WEAK,
                    )
                    continue
                if not sticky and state == RECURSION and self.recursive and prep.entry.exclude_recursion is True:
                    matched = self._primary_match(prep, state) if prep.primary else None
                    self._reason(
                        prep,
                        "exclude_recursion",
                        (f"key '{matched}' matched during recursion, but " if matched else "")
                        + "the entry cannot be activated by recursion",
                        step,
                        _KEYS if matched else _WEAK,
                    )
                    continue
                decorators = prep.decorators
                if "activate" in decorators:
                    now.append((prep, "decorator_activate", "@@activate", None))
                    continue
                if "dont_activate" in decorators:
                    self._reason(prep, "decorator_dont_activate", "@@dont_activate", step, 99)
                    dropped.add(prep.index)
                    continue
                if prep.entry.constant is True:
                    if self._excluded(prep, state, step):
                        continue
                    now.append((prep, "constant", "constant entry", None))
                    continue
                if sticky:
                    end = self.timed.state["sticky"][prep.key]["end"]
                    now.append((prep, "sticky", f"sticky until chat length {end}", None))
                    continue
                if not prep.primary:
                    self._reason(prep, "no_keys", "no primary keys", step, 99)
                    dropped.add(prep.index)
                    continue
                hit = self._primary_index(prep, state)
                if hit is None:
                    note = notes.get(prep.index)
                    if note is not None:  # a regex key timed out or was not tried
                        self._reason(prep, note[0], f"no primary key matched; {note[1]}", step, _KEYS)
                    else:
                        self._reason(prep, "no_key_match", "no primary key found in the scanned text", step, _KEYS)
                    continue
                matched, hit_pos = prep.raw_primary[hit], self.hit_pos
                if prep.entry.selective is True and prep.secondary:
                    ok, why = self._secondary_ok(prep, state)
                    if not ok:
                        note = notes.get(prep.index)
                        reason, detail = "secondary_logic", f"key '{matched}' matched; {why}"
                        if note is not None:
                            reason, detail = note[0], f"{detail}; {note[1]}"
                        self._reason(prep, reason, detail, step, _KEYS)
                        continue
                if self._excluded(prep, state, step):
                    continue
                self.hits[prep.index] = (hit, hit_pos, self._depth_of(prep), state != MIN_ACTIVATIONS)
                detail = f"key '{matched}' matched"
                note = notes.get(prep.index)
                if note is not None:
                    detail += f"; {note[1]}"
                now.append((prep, "key_match", detail, matched))
            if dropped:
                live = [p for p in live if p.index not in dropped]

            now.sort(key=lambda item: (0 if self.timed.is_sticky(item[0].key) else 1, rank[item[0].index]))
            if any(item[0].groups for item in now):  # most steps have none: skip the call (long chains)
                now, group_dropped = filter_groups(
                    now,
                    group_holders,
                    is_sticky=self.timed.is_sticky,
                    global_scoring=self.global_scoring,
                    match=partial(self._match, state=state),
                    rng=self.rng,
                )
                for prep, reason, detail in group_dropped:
                    self._reason(prep, reason, detail, step, _GROUP)

            # Budget: ST compares tokens(text activated in earlier steps) + tokens(this step's contents so
            # far, each + "\n") with the budget. The default estimate only needs lengths; a custom counter
            # is applied once per content and summed (no quadratic re-counting of growing text).
            custom = self.count_tokens is not None
            prev_tokens = self.custom_used if custom else estimate_length(all_length)
            new_length = 0
            new_tokens = 0
            loop_success: list[Activation] = []
            for prep, how, detail, matched_key in now:
                entry = prep.entry
                ignore_budget = entry.ignore_budget is True
                if overflowed and not ignore_budget:
                    self._reason(prep, "budget", f"budget of {self.budget} tokens exhausted", step, _GROUP)
                    continue
                sticky = self.timed.is_sticky(prep.key)
                if prep.use_probability and prep.probability != 100 and not sticky:
                    roll = self.rng.random() * 100
                    if roll > prep.probability:
                        failed.add(prep.index)
                        simple_live.discard(prep.index)
                        self._reason(
                            prep, "probability", f"rolled {roll:.2f} > probability {prep.probability:g}", step, 99
                        )
                        continue
                content = self._subst_content(prep.content)
                if custom:
                    piece_tokens = self._tokens(content + "\n")
                    new_tokens += piece_tokens
                else:
                    piece_tokens = estimate_length(len(content) + 1)
                    new_length += len(content) + 1
                    new_tokens = estimate_length(new_length)
                self.costs[prep.index] = (piece_tokens, prev_tokens + new_tokens)
                if not ignore_budget and prev_tokens + new_tokens >= self.budget:
                    overflowed = True
                    self._reason(
                        prep,
                        "budget",
                        f"would reach the budget of {self.budget} tokens ({prev_tokens + new_tokens} with its"
                        f" {piece_tokens})",
                        step,
                        _GROUP,
                    )
                    continue
                act = Activation(prep, how, detail, step, content, matched_key)
                if custom:
                    self.custom_used += piece_tokens
                activated[prep.index] = act
                simple_live.discard(prep.index)
                loop_success.append(act)
                for group in prep.groups:
                    group_holders.setdefault(group, prep)

            loop_length = sum(len(a.content) for a in loop_success) + len(loop_success) - 1
            if loop_length > 0:  # ST: allActivatedText = loopText + "\n" + allActivatedText
                all_length += loop_length + 1
            recursable = [a for a in loop_success if a.prep.entry.prevent_recursion is not True]

            next_state = NONE
            if self.recursive and not overflowed and recursable:
                next_state = RECURSION
            if self.recursive and not overflowed and state == MIN_ACTIVATIONS and any(t for t in self.recursion_texts):
                next_state = RECURSION
            if not next_state and not overflowed and self.min_activations and len(activated) < self.min_activations:
                depth_now = self.scan_depth + self.skew
                over = (self.min_depth_max > 0 and depth_now > self.min_depth_max) or depth_now > len(self.raw_messages)
                if not over and depth_now < MAX_SCAN_DEPTH:
                    next_state = MIN_ACTIVATIONS
                    self.skew += 1
            if not next_state and delay_levels:
                next_state = RECURSION
                current_level = delay_levels.pop(0)
            state = next_state
            if state:
                contents = [a.content for a in recursable]
                text = "\n".join(contents)
                if text:
                    self._add_recursion(recursable, text)
                    for scanner in self.scanners.values():
                        scanner.add_recursion(contents)

        for act in activated.values():
            self.timed.record(act.prep.key, act.prep.entry)
        return result(
            activated,
            trace=trace(
                activated,
                preps=self.preps,
                ordering=self.ordering,
                reasons=self.reasons,
                hit_of=self._hit,
                costs=self.costs,
                dynamic=self.dynamic,
                simple_live=self.simple_live,
                duplicates=self.duplicates,
            ),
            timed_state=self.timed.state,
            budget_limit=self.budget,
            budget_used=self.custom_used if self.count_tokens is not None else estimate_length(all_length),
            overflowed=overflowed,
            steps=step,
        )

    def _add_recursion(self, recursable: list[Activation], text: str) -> None:
        """``text`` (the step's recursable contents joined by ``\n``) joins the recursion buffer."""
        offset = self.rec_length + (len(JOINER) if self.recursion_texts else 0)
        self.recursion_texts.append(text)
        for act in recursable:
            self.rec_owners.append(act.prep)
            self.rec_starts.append(offset)
            offset += len(act.content) + 1
        self.rec_length = offset - 1

    def _excluded(self, prep: Prep, state: int, step: int) -> bool:
        for raw_key in prep.exclude:
            if self._match(prep, raw_key, state):
                self._reason(prep, "decorator_exclude_keys", "an @@exclude_keys key matched", step, _KEYS)
                return True
        return False

    def _candidates(self, use_recursion: bool) -> set[int]:
        """Live simple entries one of whose primary keys (or regex literals) occurs somewhere in the scan
        text (recursion buffer included if ``use_recursion``): a superset of those that can match.

        Incremental: only the keys first found since the previous step are looked up; entries leave the
        candidate sets when they leave ``simple_live`` (activated or failed their probability roll).
        """
        owners = self.owners
        simple_live = self.simple_live
        kinds = (SUB, WORD)
        for cs, scanner in self.scanners.items():
            for target, new in ((self.cand_base, scanner.new_base), (self.cand_rec, scanner.new_rec)):
                for slot, text in new:
                    ids = owners.get((cs, kinds[slot], text))
                    if ids:
                        target.update([i for i in ids if i in simple_live])
                new.clear()
        for target in (self.cand_base, self.cand_rec):
            dead = [i for i in target if i not in simple_live]
            if dead:
                target.difference_update(dead)
        return self.cand_base | self.cand_rec if use_recursion else set(self.cand_base)

    def _subst_content(self, content: str) -> str:
        if self.substitute is None or not content:
            return content
        try:
            result = self.substitute(content)
        except Exception:
            return content
        return result if isinstance(result, str) else content

    def _tokens(self, text: str) -> int:
        if not text:
            return 0
        if self.count_tokens is None:
            return estimate_tokens(text)
        try:
            return int(self.count_tokens(text))
        except Exception:
            return estimate_tokens(text)


__all__ = ["activate"]
