"""Typed structures of the world-info engine: enums, entries, settings, chat lines, results."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, NamedTuple, TypedDict

DEFAULT_DEPTH = 4
DEFAULT_WEIGHT = 100
MAX_SCAN_DEPTH = 1000

GENERATION_TYPES = ("normal", "continue", "impersonate", "swipe", "regenerate", "quiet")


class Position(IntEnum):
    """Where an activated entry goes (ST ``world_info_position``)."""

    BEFORE = 0
    AFTER = 1
    AN_TOP = 2
    AN_BOTTOM = 3
    AT_DEPTH = 4
    EM_TOP = 5
    EM_BOTTOM = 6
    OUTLET = 7

    @property
    def st_name(self) -> str:
        return _POSITION_NAMES[self]


_POSITION_NAMES = {
    Position.BEFORE: "before",
    Position.AFTER: "after",
    Position.AN_TOP: "ANTop",
    Position.AN_BOTTOM: "ANBottom",
    Position.AT_DEPTH: "atDepth",
    Position.EM_TOP: "EMTop",
    Position.EM_BOTTOM: "EMBottom",
    Position.OUTLET: "outlet",
}
POSITION_NAMES: tuple[str, ...] = tuple(_POSITION_NAMES[p] for p in Position)


class SelectiveLogic(IntEnum):
    AND_ANY = 0
    NOT_ALL = 1
    NOT_ANY = 2
    AND_ALL = 3


class Role(IntEnum):
    """Role of an ``atDepth`` injection (ST ``extension_prompt_roles``)."""

    SYSTEM = 0
    USER = 1
    ASSISTANT = 2


ROLE_NAMES = {Role.SYSTEM: "system", Role.USER: "user", Role.ASSISTANT: "assistant"}


class InsertionStrategy(IntEnum):
    EVENLY = 0
    CHARACTER_FIRST = 1
    GLOBAL_FIRST = 2


class Source:
    """Where an entry's lorebook is attached (ST's four sources)."""

    CHAT = "chat"
    PERSONA = "persona"
    CHARACTER = "character"
    GLOBAL = "global"
    ALL = ("chat", "persona", "character", "global")


@dataclass(frozen=True, slots=True)
class CharacterFilter:
    """ST ``characterFilter``: only (or never, with ``is_exclude``) for these characters / tags."""

    is_exclude: bool = False
    names: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Entry:
    """One world-info entry: every field of ST's ``newWorldInfoEntryDefinition`` in snake_case.

    Defaults are ST's defaults for a new entry. ``source`` and ``lorebook_id`` say where the entry
    comes from; ``extra`` keeps unknown keys of an imported dict so export can write them back.
    """

    uid: int | str = 0
    key: tuple[str, ...] = ()
    keysecondary: tuple[str, ...] = ()
    comment: str = ""
    content: str = ""
    constant: bool = False
    vectorized: bool = False
    selective: bool = True
    selective_logic: int = SelectiveLogic.AND_ANY
    add_memo: bool = False
    order: int | float = 100
    position: int = Position.BEFORE
    disable: bool = False
    ignore_budget: bool = False
    exclude_recursion: bool = False
    prevent_recursion: bool = False
    delay_until_recursion: int = 0
    probability: int | float = 100
    use_probability: bool = True
    depth: int = DEFAULT_DEPTH
    outlet_name: str = ""
    group: str = ""
    group_override: bool = False
    group_weight: int | float = DEFAULT_WEIGHT
    scan_depth: int | None = None
    case_sensitive: bool | None = None
    match_whole_words: bool | None = None
    use_group_scoring: bool | None = None
    automation_id: str = ""
    role: int = Role.SYSTEM
    sticky: int | None = None
    cooldown: int | None = None
    delay: int | None = None
    match_persona_description: bool = False
    match_character_description: bool = False
    match_character_personality: bool = False
    match_character_depth_prompt: bool = False
    match_scenario: bool = False
    match_creator_notes: bool = False
    character_filter: CharacterFilter | None = None
    triggers: tuple[str, ...] = ()
    display_index: int | None = None
    source: str = Source.GLOBAL
    lorebook_id: int | str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def effect_key(self) -> str:
        """Identity of the entry in the timed-effect state (ST: ``"${world}.${uid}"``)."""
        book = "" if self.lorebook_id is None else str(self.lorebook_id)
        return f"{book}.{self.uid}"


@dataclass(frozen=True, slots=True)
class ActivationSettings:
    """Global activation settings. Defaults are those of a new ST install (default ``settings.json``).

    ST's module defaults differ for two of them: ``recursive`` and ``match_whole_words`` are ``False``
    in code but ``True`` in the shipped settings, which is what users get.
    """

    scan_depth: int = 2
    budget_percent: int | float = 25
    budget_cap: int = 0
    min_activations: int = 0
    min_activations_depth_max: int = 0
    max_recursion_steps: int = 0
    include_names: bool = True
    recursive: bool = True
    case_sensitive: bool = False
    match_whole_words: bool = True
    use_group_scoring: bool = False
    insertion_strategy: int = InsertionStrategy.CHARACTER_FIRST


@dataclass(frozen=True, slots=True)
class ChatLine:
    """One chat message. ``is_user`` defaults to ``role == "user"``. Hidden and ``system`` lines are
    not scanned (ST skips ``is_system`` messages)."""

    name: str
    content: str
    role: str = "user"
    is_user: bool | None = None
    hidden: bool = False

    def __post_init__(self) -> None:
        if self.is_user is None:
            object.__setattr__(self, "is_user", self.role == "user")


@dataclass(frozen=True, slots=True)
class DepthInjection:
    depth: int
    role: str
    content: str


class MatchedIn(NamedTuple):
    """Where the matching primary key was found in the scan text (docs/worldinfo.md, "The trace").

    ``source``: ``chat`` (``number`` 0 = the newest scanned message), an extra source's name
    (``persona_description`` … or a caller's ``extra_scan`` name), ``injection`` (``number``: index into
    ``scan_injections``), or ``recursion`` — the activated content (macros expanded) of the entry
    ``lorebook_id``/``uid``.
    """

    source: str
    number: int | None = None
    lorebook_id: int | str | None = None
    uid: int | str | None = None


class TraceItem(NamedTuple):
    """Why one entry activated or not. ``reason`` is a stable code (see docs/worldinfo.md),
    ``detail`` a human sentence, ``step`` the scan loop (1-based; 0 = decided before scanning).

    For a key match, ``matched_key`` is the key as written, ``matched_text`` the key after macro
    substitution (what was searched) and ``matched_in`` where it was found. ``tokens`` is what the
    entry's content (macros expanded, plus its ``\n``) costs the budget and ``budget_total`` the
    running total compared with the budget at that entry (ST: tokens of the text activated in earlier
    steps + tokens of this step's contents so far) — for activated entries and for those the budget
    dropped; ``None`` when the entry never reached the budget check."""

    lorebook_id: int | str | None
    uid: int | str
    status: str
    reason: str
    detail: str = ""
    step: int = 0
    matched_key: str | None = None
    source: str = Source.GLOBAL
    comment: str = ""
    matched_text: str | None = None
    matched_in: MatchedIn | None = None
    tokens: int | None = None
    budget_total: int | None = None


class TimedEffect(TypedDict):
    hash: str
    start: int
    end: int
    protected: bool


class TimedState(TypedDict, total=False):
    """Per-chat timed-effect bookkeeping, JSON-serialisable (ST ``chat_metadata.timedWorldInfo``)."""

    sticky: dict[str, TimedEffect]
    cooldown: dict[str, TimedEffect]


@dataclass(frozen=True, slots=True)
class ActivationResult:
    """What :func:`activate` returns.

    ``activated`` are copies of the activated entries with their effective ``content`` (decorators
    removed, macros substituted), ``position``, ``depth`` and ``role``, in prompt order (ascending
    ``order`` as ST emits them). ``by_position`` has all eight ST position names; ``examples_top`` /
    ``examples_bottom`` keep the EM entries apart because each one becomes its own example block.
    """

    activated: list[Entry]
    by_position: dict[str, str]
    depth_injections: list[DepthInjection]
    outlets: dict[str, str]
    examples_top: list[str]
    examples_bottom: list[str]
    timed_state: TimedState
    trace: list[TraceItem]
    budget_limit: int
    budget_used: int
    budget_overflowed: bool = False
    steps: int = 0
