"""Hand-written scanner and macro-head parser (no backtracking regexes).

:func:`parse` turns text into a list of *parts*: literal ``str`` pieces and :class:`MacroNode`
objects for every balanced ``{{ … }}``; nested macros become nodes inside their parent's
parts. :func:`parse_head` then reads a node's name, flags and ``::``-separated arguments.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from apps.macros.engine.context import MAX_NESTING

#: Macro names: ST's ``[a-zA-Z][\w-]*`` widened to any Unicode letter (CJK parameter names).
NAME = re.compile(r"[^\W\d][\w]*(?:-\w+)*")
_VAR_NAME = re.compile(r"\w+(?:-\w+)*")
_FLAG_CHARS = "#/!?~>"
#: Variable shorthand operators, longest first.
SHORTHAND_OPS = ("||=", "??=", "++", "--", "+=", "-=", "||", "??", "==", "!=", ">=", "<=", "=", ">", "<")

# Head kinds.
MACRO = 0  #: ``{{name}}`` / ``{{name::a::b}}`` / ``{{name arg}}`` / ``{{name:arg}}``
CLOSE = 1  #: ``{{/name}}`` (and ``{{///}}`` closing a ``{{//}}`` block comment)
COMMENT = 2  #: ``{{// …}}``
SHORTHAND = 3  #: ``{{.var …}}`` / ``{{$var …}}``
INVALID = 4  #: not a macro; kept literally (with nested macros resolved)


class MacroNode:
    """One balanced ``{{…}}``; ``start`` is the offset of its ``{{`` in the scanned text."""

    __slots__ = ("_head", "closers", "parts", "start")

    def __init__(self, start: int) -> None:
        self.start = start
        self.parts: list[Part] = []
        #: Whether ``parts`` may hold a closing tag (``{{/name}}``), i.e. block pairing is needed.
        self.closers = False
        self._head: Head | None = None

    @property
    def head(self) -> Head:
        head = self._head
        if head is None:
            parts = self.parts
            if len(parts) == 1 and type(parts[0]) is str and len(parts[0]) <= _CACHED_BODY:
                head = _parse_text_head(parts[0])
            else:
                head = parse_head(parts)
            self._head = head
        return head

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return f"MacroNode({self.start}, {self.parts!r})"


type Part = str | MacroNode
type Arg = tuple[Part, ...]


@dataclass(frozen=True, slots=True)
class Head:
    """The parsed inside of a macro.

    ``frames`` holds the literal text around the arguments (``len(args) + 1`` pieces:
    name and separators with their whitespace), so a macro that fails after its arguments
    were evaluated can be re-emitted verbatim without evaluating them twice.
    """

    kind: int
    name: str = ""
    raw_name: str = ""
    flags: str = ""
    args: tuple[Arg, ...] = ()
    frames: tuple[str, ...] = ("",)
    op: str = ""


_INVALID = Head(INVALID)


def _append_text(parts: list[Part], text: str) -> None:
    if parts and type(parts[-1]) is str:
        parts[-1] += text  # type: ignore[operator]
    else:
        parts.append(text)


#: Characters that may precede the ``/`` of a closing tag (whitespace and flags).
_CLOSER_PREFIX = " \t\r\n#!?~>"
# Fixed-width alternatives plus one ``\{\{+`` run: linear, no backtracking.
_TOKENS = re.compile(r"(\\\{\\?\{|\\\}\\\}|\{\{+|\}\})")


def parse(text: str) -> MacroNode:
    """Split ``text`` into literal strings and macro nodes (never raises).

    Returns a root node (offset ``-1``) whose ``parts`` are the top level.

    * ``\\{\\{`` and ``\\{{`` are a literal ``{{``; ``\\}\\}`` is a literal ``}}``.
    * In a run of three or more ``{``, the macro opens at the last two (``{{{x}}}`` → ``{`` + macro + ``}``).
    * A ``}}`` closes the innermost open macro; a stray ``}}`` is text.
    * An unterminated ``{{`` is text; complete macros inside it still count.
    * ``{{`` deeper than :data:`MAX_NESTING` is text.
    """
    pieces = _TOKENS.split(text)  # [text, token, text, token, ..., text]
    count = len(pieces)
    root_node = MacroNode(-1)
    root = root_node.parts
    cur = root
    container = root_node  # the node whose parts ``cur`` is
    stack: list[tuple[MacroNode, list[Part]]] = []
    pending = pieces[0]
    pos = len(pending)  # offset of the current token
    i = 1
    while i < count:
        token = pieces[i]
        first = token[0]
        if first == "{":
            if len(token) > 2:
                pending += token[:-2]
            if len(stack) >= MAX_NESTING:
                pending += "{{"
            else:
                if pending:
                    cur.append(pending)
                    pending = ""
                node = MacroNode(pos + len(token) - 2)
                if i + 2 < count and pieces[i + 2] == "}}":
                    # Fast path: a macro without nested macros ({{ body }}) in one step.
                    body = pieces[i + 1]
                    if body:
                        node.parts.append(body)
                        if body.lstrip(_CLOSER_PREFIX).startswith("/"):
                            container.closers = True
                    cur.append(node)
                    after = pieces[i + 3]
                    pos += len(token) + len(body) + 2 + len(after)
                    if after:
                        pending += after
                    i += 4
                    continue
                stack.append((node, cur))
                cur = node.parts
                container = node
        elif first == "}":
            if stack:
                if pending:
                    cur.append(pending)
                    pending = ""
                node, parent = stack.pop()
                parent.append(node)
                cur = parent
                container = stack[-1][0] if stack else root_node
            else:
                pending += "}}"
        else:  # escaped braces
            pending += "{{" if token[1] == "{" else "}}"
        after = pieces[i + 1]
        pos += len(token) + len(after)
        if after:
            pending += after
        i += 2
    if pending:
        cur.append(pending)
    while stack:  # unterminated ``{{``: literal text, inner macros kept
        node, parent = stack.pop()
        _append_text(parent, "{{")
        for part in node.parts:
            if type(part) is str:
                _append_text(parent, part)
            else:
                parent.append(part)
        if node.closers:
            (stack[-1][0] if stack else root_node).closers = True
    return root_node


_WS = re.compile(r"\s*")


def _skip_ws(text: str, i: int) -> int:
    return _WS.match(text, i).end()  # type: ignore[union-attr]


def _trim_arg(raw: list[Part]) -> tuple[str, Arg, str]:
    """Strip whitespace at an argument's ends (literal text only): ``(lead, arg, trail)``."""
    lead = trail = ""
    if raw and type(raw[0]) is str:
        first: str = raw[0]  # type: ignore[assignment]
        body = first.lstrip()
        lead = first[: len(first) - len(body)]
        if body:
            raw[0] = body
        else:
            raw.pop(0)
    if raw and type(raw[-1]) is str:
        last: str = raw[-1]  # type: ignore[assignment]
        body = last.rstrip()
        trail = last[len(body) :]
        if body:
            raw[-1] = body
        else:
            raw.pop()
    return lead, tuple(raw), trail


def _build_args(prefix: str, raws: list[list[Part]]) -> tuple[tuple[Arg, ...], tuple[str, ...]]:
    args: list[Arg] = []
    frames: list[str] = [prefix]
    for index, raw in enumerate(raws):
        lead, arg, trail = _trim_arg(raw)
        if index:
            frames[-1] += "::"
        frames[-1] += lead
        args.append(arg)
        frames.append(trail)
    return tuple(args), tuple(frames)


def _split_double_colon(seq: list[Part]) -> list[list[Part]]:
    raws: list[list[Part]] = [[]]
    for part in seq:
        if type(part) is str:
            pieces = part.split("::")  # type: ignore[union-attr]
            if pieces[0]:
                raws[-1].append(pieces[0])
            for piece in pieces[1:]:
                raws.append([piece] if piece else [])
        else:
            raws[-1].append(part)
    return raws


def _has_content(seq: list[Part]) -> bool:
    return any(type(p) is not str or p.strip() for p in seq)  # type: ignore[union-attr]


#: Bodies up to this length (without nested macros) share parsed heads through a cache.
_CACHED_BODY = 256


@lru_cache(maxsize=4096)
def _parse_text_head(body: str) -> Head:
    # Heads of plain-text bodies hold only strings, so sharing them is safe.
    return parse_head([body])


def parse_head(parts: list[Part]) -> Head:
    """Read flags, name and arguments of a macro body (``parts`` between ``{{`` and ``}}``)."""
    if not parts or type(parts[0]) is not str:
        return _INVALID
    first: str = parts[0]  # type: ignore[assignment]
    rest_parts = parts[1:]
    n = len(first)
    i = _skip_ws(first, 0)

    if first.startswith("//", i):
        tail = first[i + 2 :]
        if tail.startswith("/") and not tail[1:].strip() and not rest_parts:
            return Head(CLOSE, name="//", raw_name="//")
        body: list[Part] = [tail, *rest_parts] if tail else list(rest_parts)
        args = (tuple(body),) if _has_content(body) else ()
        return Head(COMMENT, name="//", raw_name="//", args=args)

    flags = ""
    while i < n and first[i] in _FLAG_CHARS:
        flags += first[i]
        i = _skip_ws(first, i + 1)

    if i < n and first[i] in ".$" and "/" not in flags:
        return _parse_shorthand(first, i, rest_parts, flags)

    m = NAME.match(first, i)
    if m is None:
        return _INVALID
    raw_name = m.group()
    name = raw_name.lower()
    j = m.end()
    k = _skip_ws(first, j)

    if "/" in flags:
        if k == n and not rest_parts:
            return Head(CLOSE, name=name, raw_name=raw_name, flags=flags)
        return _INVALID

    if name.startswith("time_utc"):
        # Legacy ``{{time_UTC+2}}``: the argument is the offset text after ``time_UTC``.
        prefix = first[: i + 8]
        args_t, frames = _build_args(prefix, [[first[i + 8 :], *rest_parts]])
        return Head(MACRO, name="time_utc", raw_name=raw_name, flags=flags, args=args_t, frames=frames)

    if k == n and not rest_parts:
        return Head(MACRO, name=name, raw_name=raw_name, flags=flags, frames=(first,))
    if k < n and first.startswith("::", k):
        raws = _split_double_colon([first[k + 2 :], *rest_parts])
        args_t, frames = _build_args(first[: k + 2], raws)
    elif k < n and first[k] == ":":
        args_t, frames = _build_args(first[: k + 1], [[first[k + 1 :], *rest_parts]])
    elif k > j:
        raws = _split_double_colon([first[k:], *rest_parts])
        args_t, frames = _build_args(first[:k], raws)
    else:
        return _INVALID
    return Head(MACRO, name=name, raw_name=raw_name, flags=flags, args=args_t, frames=frames)


def _parse_shorthand(first: str, i: int, rest_parts: list[Part], flags: str) -> Head:
    scope = first[i]
    m = _VAR_NAME.match(first, i + 1)
    if m is None:
        return _INVALID
    var = m.group()
    k = _skip_ws(first, m.end())
    op = ""
    for candidate in SHORTHAND_OPS:
        if first.startswith(candidate, k):
            op = candidate
            k += len(candidate)
            break
    _, value, _ = _trim_arg([first[k:], *rest_parts] if first[k:] else list(rest_parts))
    if (not op or op in ("++", "--")) and value:
        return _INVALID
    return Head(SHORTHAND, name=scope, raw_name=var, flags=flags, args=(value,), op=op)
