"""The macro registry (SillyTavern's ``MacroRegistry.js``): what a macro is, and where it is found.

:data:`REGISTRY` maps every lower-cased macro name and alias to its :class:`MacroSpec`; the evaluator
looks macros up there, and the built-in definitions (:mod:`.builtins`, imported by the package face)
fill it through :func:`register`. A :data:`Handler` receives the running evaluator, seen through
:class:`MacroEvaluator`, the already-expanded arguments and the macro node, and returns the
replacement text, or ``None`` when an argument has the wrong type (the macro then stays literal, as in
ST's new engine). Depending on the :class:`MacroEvaluator` protocol rather than the evaluator class is
what lets the evaluator import the registry without the registry importing the evaluator.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from apps.macros.engine.context import MacroContext
from apps.macros.engine.scanner import MacroNode


class MacroEvaluator(Protocol):
    """What a handler may use of the evaluator running it (:class:`.evaluator.Evaluator`)."""

    ctx: MacroContext
    #: Most characters the whole expansion may produce.
    limit: int

    def now(self) -> datetime:
        """One clock reading per call, in the context's timezone."""
        ...

    def rng(self) -> random.Random: ...

    def text_digest(self) -> bytes:
        """A digest of the text being expanded (stable choices per text)."""
        ...

    def take_original(self) -> str:
        """``ctx.original`` the first time, ``''`` after."""
        ...

    def charge(self, amount: int) -> None:
        """Spend work budget on something that produces no text."""
        ...

    def budget(self) -> int:
        """Characters a macro may still produce."""
        ...

    def note_cut(self) -> None:
        """Record that a macro gave less than asked for want of budget."""
        ...

    def take_dice(self, count: int) -> bool:
        """Spend ``count`` dice of the budget; ``False`` (nothing spent) when they are not affordable."""
        ...


type Handler = Callable[[MacroEvaluator, list[str], MacroNode], str | None]

#: Arity marker for "any number of arguments".
MANY = 1 << 30


@dataclass(frozen=True, slots=True)
class MacroSpec:
    """A built-in macro: canonical name, accepted argument counts and handler.

    ``special`` macros (``if``, ``trim``, comments) are evaluated by the evaluator itself.
    ``pure`` macros give the same text for the same body within one call (memoised).
    """

    name: str
    min_args: int
    max_args: int
    handler: Handler | None = None
    special: bool = False
    pure: bool = False

    def accepts(self, count: int) -> bool:
        return self.min_args <= count <= self.max_args


REGISTRY: dict[str, MacroSpec] = {}


def register(
    names: str,
    min_args: int,
    max_args: int,
    handler: Handler | None,
    *,
    special: bool = False,
    pure: bool = False,
) -> None:
    """Register a macro under the space-separated ``names`` (the first is canonical)."""
    canonical, *_ = names.split()
    spec = MacroSpec(canonical, min_args, max_args, handler, special, pure)
    for name in names.split():
        REGISTRY[name.lower()] = spec
