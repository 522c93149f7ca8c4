"""The built-in macros (SillyTavern's ``macros/definitions/*``): each registered by name, with its
arity and handler, into :data:`.registry.REGISTRY` when this module is imported (the package face
imports it). See :mod:`.registry` for what a handler receives and returns.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from datetime import UTC, timezone
from typing import TYPE_CHECKING

from apps.macros.engine import dice, variables
from apps.macros.engine.context import MAX_DATE_FORMAT
from apps.macros.engine.registry import MANY, Handler, MacroEvaluator, register
from apps.macros.engine.timefmt import format_moment, humanize, parse_datetime, parse_utc_offset
from apps.macros.engine.values import display

if TYPE_CHECKING:
    from apps.macros.engine.scanner import MacroNode


def _field(getter: Callable[[MacroEvaluator], str]) -> Handler:
    return lambda ev, args, node: getter(ev)


# --- names and card/chat context -------------------------------------------------------
register("user", 0, 0, _field(lambda ev: ev.ctx.user), pure=True)
register("char", 0, 0, _field(lambda ev: ev.ctx.char), pure=True)
register("group charIfNotGroup groupNotMuted", 0, 0, _field(lambda ev: ev.ctx.group or ev.ctx.char), pure=True)
register("notChar", 0, 0, _field(lambda ev: ev.ctx.not_char or ev.ctx.user), pure=True)
register("description charDescription", 0, 0, _field(lambda ev: ev.ctx.description), pure=True)
register("personality charPersonality", 0, 0, _field(lambda ev: ev.ctx.personality), pure=True)
register("scenario charScenario", 0, 0, _field(lambda ev: ev.ctx.scenario), pure=True)
register("persona", 0, 0, _field(lambda ev: ev.ctx.persona), pure=True)
register("charPrompt", 0, 0, _field(lambda ev: ev.ctx.char_prompt), pure=True)
register("charInstruction charJailbreak", 0, 0, _field(lambda ev: ev.ctx.char_instruction), pure=True)
register("mesExamples", 0, 0, _field(lambda ev: ev.ctx.mes_examples), pure=True)
register("mesExamplesRaw", 0, 0, _field(lambda ev: ev.ctx.mes_examples_raw or ev.ctx.mes_examples), pure=True)
register("model", 0, 0, _field(lambda ev: ev.ctx.model), pure=True)
register("lastMessage", 0, 0, _field(lambda ev: ev.ctx.last_message), pure=True)
register("lastUserMessage", 0, 0, _field(lambda ev: ev.ctx.last_user_message), pure=True)
register("lastCharMessage", 0, 0, _field(lambda ev: ev.ctx.last_char_message), pure=True)
register("lastMessageId", 0, 0, _field(lambda ev: ev.ctx.last_message_id), pure=True)
register("maxPrompt", 0, 0, _field(lambda ev: ev.ctx.max_prompt), pure=True)
register("input", 0, 0, _field(lambda ev: ev.ctx.input), pure=True)
register("original", 0, 0, _field(lambda ev: ev.take_original()))
register("outlet", 1, 1, lambda ev, args, node: str(ev.ctx.outlets.get(args[0], "") or ""), pure=True)


# --- time -------------------------------------------------------------------------------
def _time(ev: MacroEvaluator, args: list[str], node: MacroNode) -> str | None:
    if not args:
        return format_moment(ev.now(), "LT")
    offset = parse_utc_offset(args[0])
    if offset is None:
        return None
    zone = UTC if not offset else timezone(offset)
    return format_moment(ev.now().astimezone(zone), "LT")


def _time_utc(ev: MacroEvaluator, args: list[str], node: MacroNode) -> str | None:
    return _time(ev, ["UTC" + args[0]], node)


def _datetimeformat(ev: MacroEvaluator, args: list[str], node: MacroNode) -> str | None:
    if len(args[0]) > MAX_DATE_FORMAT:
        return None
    return format_moment(ev.now(), args[0])


def _idle(ev: MacroEvaluator, args: list[str], node: MacroNode) -> str:
    last = ev.ctx.last_interaction
    if last is None:
        return "just now"
    if last.tzinfo is None:
        last = last.replace(tzinfo=ev.ctx.tz)
    return humanize((ev.now() - last).total_seconds() * 1000)


def _time_diff(ev: MacroEvaluator, args: list[str], node: MacroNode) -> str:
    a = parse_datetime(args[0], ev.ctx.tz)
    b = parse_datetime(args[1], ev.ctx.tz)
    if a is None or b is None:
        return "Invalid date"
    return humanize((a - b).total_seconds() * 1000, with_suffix=True)


register("time", 0, 1, _time, pure=True)
register("time_utc", 1, 1, _time_utc, pure=True)
register("date", 0, 0, _field(lambda ev: format_moment(ev.now(), "LL")), pure=True)
register("weekday", 0, 0, _field(lambda ev: format_moment(ev.now(), "dddd")), pure=True)
register("isotime", 0, 0, _field(lambda ev: format_moment(ev.now(), "HH:mm")), pure=True)
register("isodate", 0, 0, _field(lambda ev: format_moment(ev.now(), "YYYY-MM-DD")), pure=True)
register("datetimeformat", 1, 1, _datetimeformat, pure=True)
register("idle_duration idleDuration", 0, 0, _idle, pure=True)
register("timeDiff", 2, 2, _time_diff, pure=True)


# --- randomness -------------------------------------------------------------------------
_UNESCAPED_COMMA = re.compile(r"(?<!\\),")


def _options(args: list[str]) -> list[str]:
    """Several arguments are the options; a single one is split on ``::`` (legacy
    ``{{random:a::b}}``) or else on unescaped commas."""
    if len(args) > 1:
        return args
    if "::" in args[0]:
        return [item.strip() for item in args[0].split("::")]
    return [item.replace("\\,", ",").strip() for item in _UNESCAPED_COMMA.split(args[0])]


def _random(ev: MacroEvaluator, args: list[str], node: MacroNode) -> str:
    return ev.rng().choice(_options(args))


def _pick(ev: MacroEvaluator, args: list[str], node: MacroNode) -> str:
    options = _options(args)
    digest = hashlib.blake2b(digest_size=8)
    digest.update(str(ev.ctx.seed if ev.ctx.seed is not None else "").encode("utf-8", "surrogatepass"))
    digest.update(b"\x00" + ev.text_digest() + b"\x00" + str(node.start).encode())
    return options[int.from_bytes(digest.digest(), "big") % len(options)]


register("random", 1, MANY, _random)
register("pick", 1, MANY, _pick)
register("roll", 1, 1, lambda ev, args, node: dice.roll(args[0], ev.rng(), ev.take_dice))


# --- text -------------------------------------------------------------------------------
def _count(text: str) -> int | None:
    text = text.strip()
    if not text.isascii() or not text.isdigit() or len(text) > 12:
        return None
    return int(text)


def _repeat(char: str) -> Handler:
    def handler(ev: MacroEvaluator, args: list[str], node: MacroNode) -> str | None:
        if not args:
            return char
        count = _count(args[0])
        if count is None:
            return None
        room = ev.budget()
        if count > room:
            ev.note_cut()
            count = room
        return char * count

    return handler


def _banned(ev: MacroEvaluator, args: list[str], node: MacroNode) -> str:
    word = args[0]
    if len(word) >= 2 and word[0] == word[-1] and word[0] in "\"'":
        word = word[1:-1]
    if word:
        ev.ctx.banned_words.append(word)
    return ""


register("newline", 0, 1, _repeat("\n"), pure=True)
register("space", 0, 1, _repeat(" "), pure=True)
register("noop", 0, 0, _field(lambda ev: ""), pure=True)
register("reverse", 1, 1, lambda ev, args, node: args[0][::-1], pure=True)
register("banned", 1, 1, _banned)
register("trim", 0, 1, None, special=True)
register("if", 2, 3, None, special=True)
register("// comment", 0, MANY, None, special=True)


# --- variables --------------------------------------------------------------------------
def _var_macros(suffix: str, local: bool) -> None:
    def store(ev: MacroEvaluator, args: list[str], reads_value: bool = True) -> variables.Store:
        """The store, after charging the work budget for the arguments and the value read."""
        target = ev.ctx.local_vars if local else ev.ctx.global_vars
        ev.charge(sum(map(len, args)) + (variables.value_size(target.get(args[0])) if reads_value else 0))
        return target

    def setvar(ev: MacroEvaluator, args: list[str], node: MacroNode) -> str:
        variables.var_set(store(ev, args, reads_value=False), args[0], args[1], ev.limit)
        return ""

    def addvar(ev: MacroEvaluator, args: list[str], node: MacroNode) -> str:
        variables.var_add(store(ev, args), args[0], args[1], ev.limit)
        return ""

    def step(delta: str) -> Handler:
        def handler(ev: MacroEvaluator, args: list[str], node: MacroNode) -> str:
            return display(variables.var_add(store(ev, args), args[0], delta, ev.limit))

        return handler

    def has(ev: MacroEvaluator, args: list[str], node: MacroNode) -> str:
        return variables.var_has(store(ev, args, reads_value=False), args[0])

    def delete(ev: MacroEvaluator, args: list[str], node: MacroNode) -> str:
        variables.var_delete(store(ev, args, reads_value=False), args[0])
        return ""

    register(f"set{suffix}", 2, 2, setvar)
    register(f"get{suffix}", 1, 1, lambda ev, args, node: variables.var_get(store(ev, args), args[0]))
    register(f"add{suffix}", 2, 2, addvar)
    register(f"inc{suffix}", 1, 1, step("1"))
    register(f"dec{suffix}", 1, 1, step("-1"))
    register(f"has{suffix}", 1, 1, has)
    register(f"delete{suffix}", 1, 1, delete)


_var_macros("var", local=True)
_var_macros("globalvar", local=False)
