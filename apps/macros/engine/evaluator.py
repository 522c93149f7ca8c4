"""Walks the parsed tree and expands macros inside-out, left to right."""

from __future__ import annotations

import hashlib
import logging
import random
import re
from collections.abc import Sequence
from datetime import datetime

from apps.macros.engine import variables
from apps.macros.engine.context import (
    DIE_COST,
    MACRO_COST,
    MAX_DICE_PER_CALL,
    MAX_EVAL_DEPTH,
    WORK_FACTOR,
    MacroContext,
)
from apps.macros.engine.registry import REGISTRY, MacroSpec
from apps.macros.engine.scanner import CLOSE, COMMENT, MACRO, NAME, SHORTHAND, Head, MacroNode, Part, parse
from apps.macros.engine.values import (
    dedent_trim,
    display,
    lstrip_newlines,
    rstrip_newlines,
    shorthand_number,
    truthy,
)

logger = logging.getLogger(__name__)

_LEGACY = re.compile(r"<(?:USER|BOT|CHAR|GROUP|CHARIFNOTGROUP)>")
_LEGACY_MACRO = {
    "<USER>": "{{user}}",
    "<BOT>": "{{char}}",
    "<CHAR>": "{{char}}",
    "<GROUP>": "{{group}}",
    "<CHARIFNOTGROUP>": "{{charIfNotGroup}}",
}


class _Trim:
    """Marker returned for a standalone ``{{trim}}``."""

    __slots__ = ()


_TRIM = _Trim()


def needs_expansion(text: str) -> bool:
    """False when ``text`` has nothing the engine would change (the fast path)."""
    if "{{" in text or "\\{\\{" in text or "\\}\\}" in text:
        return True
    return "<" in text and _LEGACY.search(text) is not None


def expand(text: str, ctx: MacroContext) -> str:
    """Expand every macro in ``text``; never raises, malformed macros stay literal."""
    if not isinstance(text, str):
        text = "" if text is None else str(text)
    if not needs_expansion(text):
        return text
    try:
        return Evaluator(ctx, text).run()
    except Exception:  # a bug must not break prompt assembly: fall back to the raw text
        logger.exception("macro expansion failed; returning text unchanged")
        return text


class Evaluator:
    """State of one :func:`expand` call (time snapshot, RNG, ``{{original}}`` use, budget).

    The call's work budget is ``WORK_FACTOR`` × its output limit, or what is left of the request's
    :class:`~.context.MacroBudget` when the context carries one (the smaller); what the call spent is
    taken from that budget when it ends, and ``cut`` (something was dropped or shortened for want of
    budget) marks it exhausted.
    """

    __slots__ = (
        "_digest",
        "_folded",
        "_memo",
        "_now",
        "_original_used",
        "_rng",
        "ctx",
        "cut",
        "dice_left",
        "limit",
        "source",
        "work_left",
        "work_start",
    )

    def __init__(self, ctx: MacroContext, source: str) -> None:
        self.ctx: MacroContext = ctx
        self.source = source
        self.limit = max(int(ctx.max_output_chars), len(source), 0)
        work = WORK_FACTOR * max(self.limit, 1)
        shared = ctx.budget
        if shared is not None:
            work = min(work, max(0, shared.chars))
        self.work_left = self.work_start = work
        self.dice_left = max(0, shared.dice) if shared is not None else MAX_DICE_PER_CALL
        self.cut = False
        self._now: datetime | None = None
        self._rng: random.Random | None = ctx.rng
        self._original_used = False
        self._digest: bytes | None = None
        self._folded: dict[str, str] | None = None
        #: Results of pure macros by body text (a body alone decides a pure macro's output).
        self._memo: dict[str, str] = {}

    # -- services for handlers -------------------------------------------------------------
    def now(self) -> datetime:
        """One clock reading per call, in the context's timezone."""
        if self._now is None:
            tz = self.ctx.tz
            current = self.ctx.now() if self.ctx.now is not None else datetime.now(tz)
            if current.tzinfo is None:
                current = current.replace(tzinfo=tz)
            self._now = current.astimezone(tz)
        return self._now

    def rng(self) -> random.Random:
        if self._rng is None:
            seed = self.ctx.seed
            if seed is None:
                self._rng = random.Random()
            else:
                self._rng = random.Random(seed if isinstance(seed, int | str) else str(seed))
        return self._rng

    def text_digest(self) -> bytes:
        if self._digest is None:
            self._digest = hashlib.blake2b(self.source.encode("utf-8", "surrogatepass"), digest_size=16).digest()
        return self._digest

    def take_original(self) -> str:
        if self._original_used:
            return ""
        self._original_used = True
        return self.ctx.original

    def charge(self, amount: int) -> None:
        """Spend work budget on something that produces no text (e.g. rewriting a variable)."""
        self.work_left -= amount

    def budget(self) -> int:
        """Characters a macro may still produce."""
        return max(0, min(self.work_left, self.limit))

    def note_cut(self) -> None:
        """A macro gave less than asked for want of budget (e.g. ``{{space::N}}`` shortened)."""
        self.cut = True

    def take_dice(self, count: int) -> bool:
        """Spend ``count`` dice (and their work) if both budgets allow it; else nothing, and the cut is noted."""
        cost = count * DIE_COST
        if count > self.dice_left or cost > self.work_left:
            self.cut = True
            return False
        self.dice_left -= count
        self.work_left -= cost
        return True

    # -- driver ----------------------------------------------------------------------------
    def run(self) -> str:
        try:
            text = self.source
            if "<" in text:
                text = _LEGACY.sub(lambda m: _LEGACY_MACRO[m.group()], text)
            root = parse(text)
            result = self.eval_seq(root.parts, 0, pairable=root.closers)
            if len(result) > self.limit:
                self.cut = True
                result = result[: self.limit]
            return result
        finally:
            self._settle()

    def _settle(self) -> None:
        """Take what this call spent from the request's budget."""
        shared = self.ctx.budget
        if shared is None:
            return
        shared.chars -= self.work_start - self.work_left
        shared.dice = self.dice_left
        if self.cut:
            shared.exhausted = True

    def _emit(self, text: str) -> str:
        """Account a macro result against the work budget, cutting it to what is left."""
        size = len(text)
        if size > self.work_left or size > self.limit:
            text = text[: self.budget()]
            size = len(text)
            self.cut = True
        self.work_left -= size
        return text

    def _param(self, name: str) -> str | None:
        params = self.ctx.parameters
        if not params:
            return None
        value = params.get(name)
        if value is None:
            if self._folded is None:
                self._folded = {}
                for key, val in params.items():
                    self._folded.setdefault(str(key).casefold(), val)
            value = self._folded.get(name.casefold())
            if value is None:
                return None
        return value if isinstance(value, str) else str(value)

    # -- sequences and blocks --------------------------------------------------------------
    def eval_seq(
        self,
        parts: Sequence[Part],
        depth: int,
        lo: int = 0,
        hi: int | None = None,
        pairs: dict[int, tuple[int, int]] | None = None,
        *,
        pairable: bool = True,
    ) -> str:
        """Expand ``parts[lo:hi]``.

        ``pairs`` (see :meth:`_pair_blocks`) is computed once per list, and only when the
        scanner saw a possible closing tag in it (``pairable``).
        """
        if hi is None:
            hi = len(parts)
            if hi == 1 and type(parts[0]) is str:
                return parts[0]  # type: ignore[return-value]
            pairs = self._pair_blocks(parts, depth) if pairable else None
        out: list[str] = []
        memo = self._memo
        pending_trim = False
        i = lo
        while i < hi:
            part = parts[i]
            if type(part) is str:
                text: str = part  # type: ignore[assignment]
            else:
                block = pairs.get(i) if pairs else None
                body = part.parts  # type: ignore[union-attr]
                hit = memo.get(body[0]) if len(body) == 1 else None  # type: ignore[arg-type]
                if block is not None:
                    text = self._eval_block(parts, i, block, depth, pairs)  # type: ignore[arg-type]
                    i = block[0]
                elif hit is not None and len(hit) + MACRO_COST < self.work_left and len(hit) <= self.limit:
                    self.work_left -= len(hit) + MACRO_COST  # inlined memo hit of eval_node (the hot path)
                    text = hit
                else:
                    result = self.eval_node(part, depth)  # type: ignore[arg-type]
                    if result is _TRIM:
                        while out:
                            stripped = rstrip_newlines(out[-1])
                            if stripped:
                                out[-1] = stripped
                                break
                            out.pop()
                        pending_trim = True
                        i += 1
                        continue
                    text = result  # type: ignore[assignment]
            if pending_trim and text:
                text = lstrip_newlines(text)
                if text:
                    pending_trim = False
            if text:
                out.append(text)
            i += 1
        return "".join(out)

    def _block_name(self, head: Head) -> str | None:
        """Canonical name when ``head`` could open a scoped block (its content = last argument)."""
        if head.kind == COMMENT:
            return "//" if not head.args else None
        if head.kind != MACRO:
            return None
        spec = REGISTRY.get(head.name)
        if spec is None or not spec.accepts(len(head.args) + 1):
            return None
        if not head.args and self._param(head.raw_name) is not None:
            return None
        return spec.name

    def _pair_blocks(self, parts: Sequence[Part], depth: int) -> dict[int, tuple[int, int]] | None:
        """Match ``{{name …}}`` openers with ``{{/name}}`` closers in one list.

        Returns ``opener index → (closer index, own {{else}} index or -1)``. A closer takes
        the latest unmatched opener of its name; pairs that would cross an enclosing pair,
        or nest deeper than the evaluation depth allows, are dropped (their tags stay literal).
        """
        room = MAX_EVAL_DEPTH - depth
        if room <= 0:
            return None
        closing: set[str] = set()  # canonical names that have a closing tag here
        for part in parts:
            if type(part) is not str:
                head = part.head  # type: ignore[union-attr]
                if head.kind == CLOSE:
                    spec = REGISTRY.get(head.name)
                    closing.add(spec.name if spec is not None else head.name)
        if not closing:
            return None
        waiting: dict[str, list[int]] = {}
        raw: dict[int, int] = {}
        elses: list[int] = []
        for i, part in enumerate(parts):
            if type(part) is str:
                continue
            head = part.head  # type: ignore[union-attr]
            if head.kind == CLOSE:
                spec = REGISTRY.get(head.name)
                openers = waiting.get(spec.name if spec is not None else head.name)
                if openers:
                    raw[openers.pop()] = i
            elif head.kind == MACRO and head.name == "else" and not head.args:
                elses.append(i)
            else:
                if head.kind == MACRO:
                    spec = REGISTRY.get(head.name)
                    if spec is None or spec.name not in closing:
                        continue
                elif head.kind != COMMENT or "//" not in closing:
                    continue
                name = self._block_name(head)
                if name is not None:
                    waiting.setdefault(name, []).append(i)
        if not raw:
            return None
        closes: dict[int, int] = {}
        enclosing: list[int] = []
        for start in sorted(raw):
            end = raw[start]
            while enclosing and enclosing[-1] < start:
                enclosing.pop()
            if (enclosing and end > enclosing[-1]) or len(enclosing) >= room:
                continue
            closes[start] = end
            enclosing.append(end)
        # An {{else}} belongs to the innermost block around it, if that block is an {{if}}.
        own_else: dict[int, int] = {}
        if elses:
            enclosing = []
            else_iter = iter(elses)
            next_else = next(else_iter, None)
            for start in sorted(closes):
                while next_else is not None and next_else < start:
                    _assign_else(parts, next_else, enclosing, closes, own_else)
                    next_else = next(else_iter, None)
                while enclosing and closes[enclosing[-1]] < start:
                    enclosing.pop()
                enclosing.append(start)
            while next_else is not None:
                _assign_else(parts, next_else, enclosing, closes, own_else)
                next_else = next(else_iter, None)
        return {start: (end, own_else.get(start, -1)) for start, end in closes.items()}

    def _eval_block(
        self,
        parts: Sequence[Part],
        start: int,
        block: tuple[int, int],
        depth: int,
        pairs: dict[int, tuple[int, int]],
    ) -> str:
        """Expand the scoped block ``parts[start]`` … ``parts[close]`` (content becomes the last argument)."""
        if self.work_left <= 0:
            self.cut = True
            return ""
        self.work_left -= MACRO_COST
        opener: MacroNode = parts[start]  # type: ignore[assignment]
        close, split = block
        head = opener.head
        preserve = "#" in head.flags
        if head.kind == COMMENT:
            return ""
        spec = REGISTRY[head.name]
        if spec.name == "//":
            return ""
        if spec.name == "if":
            if self._condition(head.args[0], depth, opener.closers):
                body = self.eval_seq(parts, depth + 1, start + 1, close if split < 0 else split, pairs)
            elif split >= 0:
                body = self.eval_seq(parts, depth + 1, split + 1, close, pairs)
            else:
                body = ""
            return body if preserve else dedent_trim(body)
        args = [self.eval_seq(a, depth + 1, pairable=opener.closers) for a in head.args]
        body = self.eval_seq(parts, depth + 1, start + 1, close, pairs)
        args.append(body if preserve else dedent_trim(body))
        if spec.name == "trim":
            return self._emit(args[0].strip())
        assert spec.handler is not None
        result = spec.handler(self, args, opener)
        if result is None:
            return _verbatim(head, args[:-1]) + body + "{{/" + head.raw_name + "}}"
        return self._emit(result)

    def _condition(self, arg: tuple[Part, ...], depth: int, pairable: bool) -> bool:
        parts = list(arg)
        negate = False
        if parts and type(parts[0]) is str and parts[0].startswith("!"):  # type: ignore[union-attr]
            negate = True
            rest = parts[0][1:].lstrip()  # type: ignore[index]
            if rest:
                parts[0] = rest
            else:
                parts.pop(0)
        if not parts:
            value = ""
        elif len(parts) == 1 and type(parts[0]) is str:
            value = self._resolve_bare(parts[0], depth)  # type: ignore[arg-type]
        else:
            value = self.eval_seq(parts, depth + 1, pairable=pairable)
        return truthy(value) != negate

    def _resolve_bare(self, text: str, depth: int) -> str:
        """An ``{{if name}}`` condition: a parameter, argument-less macro or shorthand, else the text."""
        param = self._param(text)
        if param is not None:
            return param
        if text[0] in ".$":
            node = MacroNode(-1)
            node.parts.append(text)
            if node.head.kind == SHORTHAND:
                return self._shorthand(node.head, node, depth)
            return text
        if NAME.fullmatch(text):
            spec = REGISTRY.get(text.lower())
            if spec is not None and spec.name == "original":  # test it without using it up
                return "" if self._original_used else self.ctx.original
            if spec is not None and not spec.special and spec.accepts(0) and spec.handler is not None:
                node = MacroNode(-1)
                node.parts.append(text)
                result = spec.handler(self, [], node)
                return text if result is None else result
        return text

    # -- single macros -----------------------------------------------------------------------
    def eval_node(self, node: MacroNode, depth: int) -> str | _Trim:
        if self.work_left <= 0:
            self.cut = True
            return ""
        self.work_left -= MACRO_COST
        parts = node.parts
        body: str | None = parts[0] if len(parts) == 1 and type(parts[0]) is str else None  # type: ignore[assignment]
        if body is not None:
            hit = self._memo.get(body)
            if hit is not None:
                return self._emit(hit)
            if self.ctx.parameters:
                param = self._param(body.strip())
                if param is not None:
                    self._memo[body] = param
                    return self._emit(param)
        result, pure = self._resolve(node, depth)
        if type(result) is str:
            if pure and body is not None:
                self._memo[body] = result
            return self._emit(result)
        return result

    def _resolve(self, node: MacroNode, depth: int) -> tuple[str | _Trim, bool]:
        """Expand one macro: ``(text or trim marker, whether the text depends only on the body)``."""
        head = node.head
        kind = head.kind
        if kind == MACRO:
            args = head.args
            if not args:
                param = self._param(head.raw_name)
                if param is not None:
                    return param, True
            spec = REGISTRY.get(head.name)
            if spec is None or not spec.accepts(len(args)):
                return self._literal(node, depth), True
            if spec.special:
                return self._special(spec, head, node, depth), spec.name == "//"
            values = [self.eval_seq(a, depth + 1, pairable=node.closers) for a in args]
            assert spec.handler is not None
            result = spec.handler(self, values, node)
            if result is None:
                return _verbatim(head, values), spec.pure
            return result, spec.pure
        if kind == COMMENT:
            return "", True
        if kind == SHORTHAND:
            return self._shorthand(head, node, depth), False
        return self._literal(node, depth), True

    def _literal(self, node: MacroNode, depth: int) -> str:
        """Unknown or malformed macro: kept as written, nested macros resolved."""
        return "{{" + self.eval_seq(node.parts, depth + 1, pairable=node.closers) + "}}"

    def _special(self, spec: MacroSpec, head: Head, node: MacroNode, depth: int) -> str | _Trim:
        if spec.name == "//":
            return ""
        if spec.name == "trim":
            if not head.args:
                return _TRIM
            return self._emit(self.eval_seq(head.args[0], depth + 1, pairable=node.closers).strip())
        # inline {{if::cond::then::else}}
        if self._condition(head.args[0], depth, node.closers):
            return self.eval_seq(head.args[1], depth + 1, pairable=node.closers)
        return self.eval_seq(head.args[2], depth + 1, pairable=node.closers) if len(head.args) > 2 else ""

    def _shorthand(self, head: Head, node: MacroNode, depth: int) -> str:
        store = self.ctx.local_vars if head.name == "." else self.ctx.global_vars
        name = head.raw_name
        op = head.op
        self.charge(variables.value_size(store.get(name)))
        if not op:
            return self._emit(variables.var_get(store, name))
        if op == "++":
            return self._emit(display(variables.var_add(store, name, "1", self.limit)))
        if op == "--":
            return self._emit(display(variables.var_add(store, name, "-1", self.limit)))
        value = self.eval_seq(head.args[0], depth + 1, pairable=node.closers)
        self.charge(len(value))
        if op == "=":
            variables.var_set(store, name, value, self.limit)
            return ""
        if op == "+=":
            variables.var_add(store, name, value, self.limit)
            return ""
        if op == "-=":
            number = shorthand_number(value)
            if number is None:
                return "{{" + head.name + name + " -= " + value + "}}"
            variables.var_add(store, name, repr(-number), self.limit)
            return ""
        current = variables.var_get(store, name)
        if op == "||":
            return self._emit(current if truthy(current) else value)
        if op == "??":
            return self._emit(current if name in store else value)
        if op == "||=":
            if not truthy(current):
                variables.var_set(store, name, value, self.limit)
            return self._emit(variables.var_get(store, name))
        if op == "??=":
            if name not in store:
                variables.var_set(store, name, value, self.limit)
            return self._emit(variables.var_get(store, name))
        return "true" if _compare(current, value, op) else "false"


def _verbatim(head: Head, values: list[str]) -> str:
    """Re-emit a macro whose arguments were already expanded (type mismatch)."""
    frames = head.frames
    pieces = ["{{", frames[0]]
    for value, frame in zip(values, frames[1:], strict=False):
        pieces.append(value)
        pieces.append(frame)
    pieces.append("}}")
    return "".join(pieces)


def _assign_else(
    parts: Sequence[Part], index: int, enclosing: list[int], closes: dict[int, int], own_else: dict[int, int]
) -> None:
    while enclosing and closes[enclosing[-1]] < index:
        enclosing.pop()
    if enclosing:
        owner = enclosing[-1]
        if owner not in own_else and parts[owner].head.name == "if":  # type: ignore[union-attr]
            own_else[owner] = index


def _compare(left: str, right: str, op: str) -> bool:
    a = shorthand_number(left)
    b = shorthand_number(right)
    if a is not None and b is not None:
        x: float | str = a
        y: float | str = b
    else:
        x, y = left, right
    if op == "==":
        return x == y
    if op == "!=":
        return x != y
    if op == ">":
        return x > y  # type: ignore[operator]
    if op == ">=":
        return x >= y  # type: ignore[operator]
    if op == "<":
        return x < y  # type: ignore[operator]
    return x <= y  # type: ignore[operator]
