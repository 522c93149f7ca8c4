"""The caller-filled context of one macro expansion, the request-wide budget it may carry, and the
engine's safety limits."""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from typing import Any

#: Deepest ``{{`` nesting the scanner builds; a deeper ``{{`` is plain text.
MAX_NESTING = 32
#: Deepest evaluation path (macro arguments plus scoped blocks such as ``{{if}}``).
MAX_EVAL_DEPTH = 48
#: Total characters all macros of one call may produce, as a multiple of the output limit.
WORK_FACTOR = 8
#: Work every evaluated macro costs on top of its output (so macros that print nothing count too).
MACRO_COST = 1
#: Longest ``{{datetimeformat}}`` pattern that is formatted (longer ones stay literal).
MAX_DATE_FORMAT = 4096
#: Most dice one ``{{roll}}`` throws (more is an invalid formula, which yields ``''``).
MAX_DICE = 1000
#: Most dice one call throws when the context carries no :class:`MacroBudget` (whose ``dice`` rules).
MAX_DICE_PER_CALL = 10_000
#: Work one die costs, in characters of the budget.
DIE_COST = 8


@dataclass(slots=True)
class MacroBudget:
    """Work left for every expansion of one request, shared by all the calls whose context carries it.

    ``chars`` is spent by each call as its own work budget is (macro output, variable work, one unit
    per macro, ``DIE_COST`` per die); ``dice`` by every die thrown. A call never spends more than is
    left: what it cannot afford expands to ``''`` (or is cut), and ``exhausted`` is set — as it is when
    a call is cut by its own limits. The engine never raises; the caller decides what an exhausted
    budget means (the service refuses the request: ``apps/macros/limits.py``).
    """

    chars: int
    dice: int = MAX_DICE_PER_CALL
    exhausted: bool = False
    limit: int = field(init=False)  # ``chars`` at the start

    def __post_init__(self) -> None:
        self.limit = self.chars

    @property
    def spent(self) -> int:
        return self.limit - self.chars


@dataclass(slots=True)
class MacroContext:
    """Everything a macro may read or change during one :func:`expand` call.

    String fields are the values of the matching ST macros (``''`` when the caller has
    nothing). Variable stores are caller-owned mappings so a chat can persist them.

    Fields beyond the shared API shape (all optional):

    * ``not_char`` - value of ``{{notChar}}`` (falls back to ``user``, ST's solo-chat value).
    * ``mes_examples_raw`` - value of ``{{mesExamplesRaw}}`` (falls back to ``mes_examples``).
    * ``input`` - value of ``{{input}}`` (the user's pending input).
    * ``banned_words`` - ``{{banned "w"}}`` appends ``w`` here (and expands to ``''``).
    * ``budget`` - a :class:`MacroBudget` shared by every call of one request (``None``: each call
      has only its own limits).
    """

    parameters: Mapping[str, str] = field(default_factory=dict)
    user: str = ""
    char: str = ""
    group: str = ""
    description: str = ""
    personality: str = ""
    scenario: str = ""
    persona: str = ""
    char_prompt: str = ""
    char_instruction: str = ""
    mes_examples: str = ""
    original: str = ""
    model: str = ""
    last_message: str = ""
    last_user_message: str = ""
    last_char_message: str = ""
    last_message_id: str = ""
    max_prompt: str = ""
    outlets: Mapping[str, str] = field(default_factory=dict)
    local_vars: MutableMapping[str, Any] = field(default_factory=dict)
    global_vars: MutableMapping[str, Any] = field(default_factory=dict)
    now: Callable[[], datetime] | None = None
    tz: tzinfo = UTC
    last_interaction: datetime | None = None
    rng: random.Random | None = None
    seed: str | int | None = None
    max_output_chars: int = 1_000_000
    not_char: str = ""
    mes_examples_raw: str = ""
    input: str = ""
    banned_words: list[str] = field(default_factory=list)
    budget: MacroBudget | None = None
