"""The caller-filled context of one macro expansion, and the engine's safety limits."""

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
#: Longest ``{{datetimeformat}}`` pattern that is formatted (longer ones stay literal).
MAX_DATE_FORMAT = 4096
#: Most dice one ``{{roll}}`` throws (more is an invalid formula, which yields ``''``).
MAX_DICE = 1000


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
