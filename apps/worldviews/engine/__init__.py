"""World-info (lorebook) activation engine — pure Python, no Django.

Behaviour follows SillyTavern 1.15's ``checkWorldInfo`` (docs/worldinfo.md lists every rule, every
trace reason and where we deliberately differ).

Public API
----------
``activate(entries, chat, *, settings, max_context, generation_type="normal", timed_state=None,
rng=None, substitute=None, extra_scan=None, chat_length=None, scan_injections=(),
character_name=None, character_tags=None, count_tokens=None, regex_limits=None) -> ActivationResult``

* ``entries`` — :class:`Entry` objects from all sources; ``Entry.source`` is one of ``chat``,
  ``persona``, ``character``, ``global`` and ``Entry.lorebook_id`` names the book. Sorting by source
  and ``order`` (``settings.insertion_strategy``) is done here; an entry seen twice (same book and uid)
  is kept once, from the first source.
* ``chat`` — :class:`ChatLine` list, **oldest first**, exactly the history the reply will follow (for
  a swipe or regenerate: without the message being replaced). Hidden and ``system`` lines are not
  scanned. ``chat_length`` overrides the length used by timed effects (default: scanned lines).
* ``max_context`` — the maximum *prompt* size in tokens (context − response length); the budget is
  ``round(budget_percent × max_context / 100)`` (at least 1), capped by ``budget_cap`` when > 0.
* ``timed_state`` — the chat's stored :class:`TimedState` (JSON dict); the result carries the new one.
  Persist it after a real generation; ignore it after a dry run.
* ``rng`` — a ``random.Random`` for probability rolls and inclusion-group weights; seed it for
  reproducible runs (same inputs + same seed ⇒ same result).
* ``substitute(text) -> str`` — macro expansion, as ST's ``checkWorldInfo`` orders it: keys (only
  keys containing ``{{`` or ``<``) before matching, once per call; the content of an entry after its
  probability roll and before the budget check and the recursion buffer, once per call.
* ``extra_scan`` — texts for the ``match*`` flags: ``persona_description``, ``character_description``,
  ``character_personality``, ``character_depth_prompt``, ``scenario``, ``creator_notes`` (ST camelCase
  names accepted too). ``scan_injections`` — other scannable prompt texts (Author's Note …), always
  scanned.
* ``character_name`` / ``character_tags`` — for entries' ``characterFilter``.
* ``count_tokens`` — token counter for the budget; default ⌈chars / 3.35⌉ (:func:`estimate_tokens`).
* ``regex_limits`` — :class:`RegexLimits`: the timeout of one regex-key search and the regex time
  budget of the activation (default: :func:`set_default_limits`'s, else 50 ms / 500 ms). A search that
  times out, and every regex key once the budget is spent, count as no match (traced).

Regex keys run on the ``regex`` engine, which releases the GIL while it matches: a slow key does not
stop other threads. :func:`regex_key_problem` is the write-time check of one key (compiles, is not
refused by the translation, no catastrophic backtracking on probe texts); the entry schema's
``regex_key_errors`` applies it to entries.

:class:`ActivationResult` — ``activated`` (effective copies in prompt order), ``by_position`` (all
eight ST position names → joined text), ``depth_injections`` (:class:`DepthInjection` per depth and
role), ``outlets`` (name → text), ``examples_top``/``examples_bottom`` (one string per EM entry, in
prompt order), ``timed_state``, ``trace`` (one :class:`TraceItem` per entry), ``budget_limit``,
``budget_used``, ``budget_overflowed``, ``steps``.

``TraceItem`` is a NamedTuple ``(lorebook_id, uid, status, reason, detail, step, matched_key, source,
comment, matched_text, matched_in, tokens, budget_total)``; ``status`` is ``"activated"`` or
``"skipped"``, ``reason`` a stable code; for a key match ``matched_text`` is the key after macros and
``matched_in`` a :class:`MatchedIn` (chat line, extra source, injection or the recursed content of an
entry); ``tokens``/``budget_total`` what the entry cost the budget and the running total it was
compared at.

ST JSON: :func:`entry_from_st`, :func:`entry_to_st`, :func:`entries_from_st_book`,
:func:`entry_from_character_book`. Nothing here raises on malformed input.

Caching: compiled entry sets (by Entry identity, then by value), per-entry preparations (by Entry
value: an edited entry alone is prepared again; a set differing from the last one in a few entries is
derived from it), key matchers (by key set, with a per-text result cache) and regexes are cached
in-process and are thread-safe to use; :func:`clear_caches` empties them. Keep Entry objects per
lorebook version to stay on the fast path. Recursion steps scan only the newly activated content.
"""

from apps.providers.tokens import estimate_tokens

from .activation import activate
from .compile import clear_caches, sort_entries
from .decorators import parse_decorators
from .matching import KeyProblem, RegexLimits, parse_regex_key, regex_key_problem, set_default_limits
from .model import (
    DEFAULT_DEPTH,
    DEFAULT_WEIGHT,
    GENERATION_TYPES,
    MAX_SCAN_DEPTH,
    POSITION_NAMES,
    ActivationResult,
    ActivationSettings,
    CharacterFilter,
    ChatLine,
    DepthInjection,
    Entry,
    InsertionStrategy,
    MatchedIn,
    Position,
    Role,
    SelectiveLogic,
    Source,
    TimedEffect,
    TimedState,
    TraceItem,
)
from .st_format import entries_from_st_book, entry_from_character_book, entry_from_st, entry_to_st
from .timed import entry_hash, normalize_state

__all__ = [
    "DEFAULT_DEPTH",
    "DEFAULT_WEIGHT",
    "GENERATION_TYPES",
    "MAX_SCAN_DEPTH",
    "POSITION_NAMES",
    "ActivationResult",
    "ActivationSettings",
    "CharacterFilter",
    "ChatLine",
    "DepthInjection",
    "Entry",
    "InsertionStrategy",
    "KeyProblem",
    "MatchedIn",
    "Position",
    "RegexLimits",
    "Role",
    "SelectiveLogic",
    "Source",
    "TimedEffect",
    "TimedState",
    "TraceItem",
    "activate",
    "clear_caches",
    "entries_from_st_book",
    "entry_from_character_book",
    "entry_from_st",
    "entry_hash",
    "entry_to_st",
    "estimate_tokens",
    "normalize_state",
    "parse_decorators",
    "parse_regex_key",
    "regex_key_problem",
    "set_default_limits",
    "sort_entries",
]
