"""Key matching: ``/regex/flags`` keys translated to Python regexes, and a multi-key matcher for plain keys.

Regex keys are user input and run on the third-party ``regex`` engine (V0, the ``re``-compatible
mode), never on the stdlib ``re``: every search gets a ``timeout`` (:class:`RegexLimits`, enforced by
the activation loop, which also keeps a time budget per activation), and ``regex`` releases the GIL
while it matches a ``str``, so other threads (the server's event loop) keep running meanwhile.
:func:`regex_key_problem` is the write-time check: what cannot be compiled, what the translation
refuses, and what is catastrophically slow on a few probe texts built from the pattern itself.

Plain keys are not matched one regex per key. :class:`PlainMatcher` is built once per key set (and
cached): each key is indexed under one of its character n-grams (n = min(3, len)), a text is cut into
the set of its n-grams once, and only keys whose anchor n-gram occurs are verified (``key in text``,
a C-speed search). Whole-word keys made only of word characters are found by intersecting the set of
maximal word runs of the text with the key set, which is exact and needs no verification.

Whole words (our rule, see docs/worldinfo.md): a *word character* is a Unicode letter, digit or ``_``
that is not from a script written without spaces (CJK ideographs, kana, Hangul, Thai, Lao, Khmer,
Myanmar, Yi, CJK punctuation). A whole-word key must not have a word character right before or after
it. A key that contains whitespace or any no-space-script character is matched as a substring, as ST
does for keys with spaces.
"""

from __future__ import annotations

import contextlib
import re
import time
import warnings
from collections import Counter, OrderedDict
from dataclasses import dataclass
from functools import lru_cache
from typing import NamedTuple, cast

import regex

MAX_REGEX_LENGTH = 1000
# The most atoms a regex key may expand to: ``regex`` unrolls the minimum count of a repeat at compile
# time (``(?:a{1000}){1000}`` is a 10**6-character string, 275 MB and 0.5 s to compile; one more
# level exhausts memory). Counted on the pattern (counts of nested repeats multiply); compiling the
# largest allowed pattern takes a few milliseconds.
MAX_REGEX_EXPANSION = 5000
_TEXT_CACHE_SIZE = 8192

NOSPACE_RANGES = (
    "\u0e00-\u0eff"  # Thai, Lao
    "\u1000-\u109f"  # Myanmar
    "\u1100-\u11ff"  # Hangul Jamo
    "\u1780-\u17ff"  # Khmer
    "\u2e80-\u2fdf"  # CJK radicals, Kangxi
    "\u3000-\u303f"  # CJK symbols and punctuation
    "\u3040-\u30ff"  # Hiragana, Katakana
    "\u3100-\u312f"  # Bopomofo
    "\u3130-\u318f"  # Hangul compatibility Jamo
    "\u31a0-\u31ff"  # Bopomofo ext, Katakana ext
    "\u3200-\u33ff"  # enclosed CJK, compatibility
    "\u3400-\u4dbf"  # CJK ext A
    "\u4e00-\u9fff"  # CJK unified ideographs
    "\ua000-\ua4cf"  # Yi
    "\uac00-\ud7af"  # Hangul syllables
    "\uf900-\ufaff"  # CJK compatibility ideographs
    "\uff66-\uff9f"  # half-width Katakana
    "\U00020000-\U0003134f"  # CJK ext B..G
)
_NOSPACE_RE = re.compile(f"[{NOSPACE_RANGES}]")
_WORD_CHAR_RE = re.compile(f"[^\\W{NOSPACE_RANGES}]")
_WORD_RUN_RE = re.compile(f"[^\\W{NOSPACE_RANGES}]+")
_SPACE_RE = re.compile(r"\s")
_QUANTIFIER = re.compile(r"\{\d+(?:,\d*)?\}")

# Kinds of plain keys.
SUB = 0  # substring
WORD = 1  # whole word, only word characters: exact lookup in the text's word runs
PWORD = 2  # whole word with punctuation inside or at its ends: find + check the neighbours


def plain_kind(key: str, whole_words: bool) -> int:
    """How a (trimmed, case-transformed) plain key is matched under the whole-word setting."""
    if not whole_words:
        return SUB
    if _WORD_RUN_RE.fullmatch(key):  # the common case; a word run has no space nor CJK character
        return WORD
    if _SPACE_RE.search(key) or _NOSPACE_RE.search(key):
        return SUB
    return PWORD


def is_word_char(ch: str) -> bool:
    return _WORD_CHAR_RE.match(ch) is not None


def find_whole_word(text: str, key: str) -> bool:
    """True if ``key`` occurs in ``text`` with no word character on either side."""
    size = len(key)
    if not size:
        return False
    end = len(text)
    i = text.find(key)
    while i != -1:
        before_ok = i == 0 or _WORD_CHAR_RE.match(text, i - 1) is None
        after_ok = i + size >= end or _WORD_CHAR_RE.match(text, i + size) is None
        if before_ok and after_ok:
            return True
        i = text.find(key, i + 1)
    return False


def match_plain(text: str, key: str, kind: int) -> bool:
    """Reference semantics of one plain key (the matcher must agree with this)."""
    if not key:
        return False
    if kind == SUB:
        return key in text
    return find_whole_word(text, key)


# --------------------------------------------------------------------------------------------------
# Regex keys


@dataclass(frozen=True, slots=True)
class RegexLimits:
    """Time bounds of regex keys during one activation (seconds, wall clock).

    ``timeout`` bounds one search of one key: a search that runs longer is stopped and counts as no
    match (traced ``regex_timeout``). ``budget`` bounds all regex searches of one activation together:
    once spent, the remaining regex keys are not tried (traced ``regex_budget``)."""

    timeout: float = 0.05
    budget: float = 0.5


_limits = RegexLimits()


def set_default_limits(limits: RegexLimits) -> None:
    """The limits :func:`activate` uses when its caller passes none (the Django app sets its settings
    here at start-up)."""
    global _limits
    _limits = limits


def default_limits() -> RegexLimits:
    return _limits


@dataclass(frozen=True, slots=True)
class RegexKey:
    """A ``/pattern/flags`` key, translated to Python syntax; compiled on first use (most regex keys are
    ruled out by their literal first). ``compiled`` is None when the pattern is invalid or refused."""

    source: str
    pattern: str | None  # translated pattern; None when refused or untranslatable
    flags: int = 0
    sticky: bool = False
    error: str = ""
    literal: str | None = None  # a substring every match must contain (already case-folded if ``ci``)
    ci: bool = False

    @property
    def compiled(self) -> regex.Pattern[str] | None:
        return None if self.pattern is None else _compile(self.pattern, self.flags)

    def search(self, text: str, folded: str | None = None, timeout: float | None = None) -> bool:
        """Does the regex match ``text``? ``folded`` may be ``fold_case(text)``, for the literal check.
        Raises ``TimeoutError`` when ``timeout`` (seconds) runs out first."""
        if self.pattern is None:
            return False
        if self.literal is not None:
            if self.ci:
                if self.literal not in (folded if folded is not None else fold_case(text)):
                    return False
            elif self.literal not in text:
                return False
        compiled = self.compiled
        if compiled is None:
            return False
        if self.sticky:
            return compiled.match(text, timeout=timeout) is not None
        return compiled.search(text, timeout=timeout) is not None


_UNBOUNDED = 1 << 16


@lru_cache(maxsize=8192)
def max_width(pattern: str, flags: int) -> int | None:
    """The most characters a match of a translated pattern can consume (lookarounds not counted), or
    None when unbounded or unknown. Lets a search start just before new text (see ``_Run._match``)."""
    try:
        from re import _parser  # type: ignore[attr-defined]  # not in typeshed; the stdlib regex parser (private, stable since 3.11; else no bound)

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            width = _parser.parse(pattern, flags).getwidth()[1]
    except Exception:  # any failure only disables the optimization
        return None
    return width if width < _UNBOUNDED else None


_COMPILE_ERRORS = (regex.error, ValueError, OverflowError, RecursionError, MemoryError)


def _compile_or_error(pattern: str, flags: int) -> regex.Pattern[str] | str:
    """The compiled pattern (``regex``, V0: ``re``'s syntax and semantics), or the compiler's message."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return regex.compile(pattern, flags | regex.VERSION0)
    except _COMPILE_ERRORS as exc:
        return str(exc) or type(exc).__name__


@lru_cache(maxsize=8192)
def _compile(pattern: str, flags: int) -> regex.Pattern[str] | None:
    compiled = _compile_or_error(pattern, flags)
    return None if isinstance(compiled, str) else compiled


_REGEX_FORM = re.compile(r"^/([\s\S]+?)/([gimsuyd]*)$")
_UNESCAPED_SLASH = re.compile(r"(^|[^\\])/")


def looks_like_regex(key: str) -> bool:
    return parse_regex_key(key) is not None


_ASCII_W = "A-Za-z0-9_"
_PY_ESCAPES_KEPT = set("fnrtvsSxu0123456789")


class _Unsafe(Exception):
    pass


_JS_GROUPS = ("(?:", "(?=", "(?!", "(?<=", "(?<!")
_PROPERTY = re.compile(r"\{[A-Za-z0-9_]+(?:=[A-Za-z0-9_]+)?\}")


class _Size:
    """Counts the atoms a pattern expands to: each atom is 1, a group the sum of its contents, and a
    repeat ``{n…}`` multiplies its operand by ``n`` (the part ``regex`` unrolls when compiling)."""

    __slots__ = ("frames",)

    def __init__(self) -> None:
        self.frames = [[0, 0]]  # per open group: [atoms so far, atoms of the last operand]

    def atom(self, size: int = 1) -> None:
        frame = self.frames[-1]
        frame[0] += size
        frame[1] = size

    def open(self) -> None:
        self.frames.append([0, 0])

    def close(self) -> None:
        if len(self.frames) > 1:
            self.atom(max(1, self.frames.pop()[0]))

    def alternative(self) -> None:
        self.frames[-1][1] = 0

    def repeat(self, count: int) -> None:
        frame = self.frames[-1]
        if count > 1 and frame[1]:
            frame[0] += frame[1] * (count - 1)
            frame[1] *= count
            if frame[0] > MAX_REGEX_EXPANSION:
                raise _Unsafe("repetition too large")


def _translate(pattern: str, multiline: bool, unicode_flag: bool) -> str:
    """Translate a JavaScript regex body to Python ``re`` syntax (ASCII ``\\w \\d \\b`` as in JS).

    Only JavaScript's group forms are accepted (``(?:`` ``(?=`` ``(?!`` ``(?<=`` ``(?<!`` ``(?<name>``):
    the constructs that only the ``regex`` engine knows (``(?V1)``, ``(?r)``, ``(?p)``, ``(?R)``,
    ``(?|…)`` …) are invalid in JavaScript and would change the semantics. With the ``u`` flag,
    ``\\p{…}``/``\\P{…}`` are Unicode properties (passed to ``regex``); without it, ``\\p`` is ``p``.
    Raises ``_Unsafe`` for nested quantifiers and for patterns expanding to over
    :data:`MAX_REGEX_EXPANSION` atoms, ``re.error`` for what cannot be translated."""
    out: list[str] = []
    i = 0
    n = len(pattern)
    in_class = False
    # per open group: does it contain a quantifier?
    group_quant: list[bool] = []
    last_group_had_quant = False
    size = _Size()
    while i < n:
        c = pattern[i]
        if c == "\\":
            if i + 1 >= n:
                raise re.error("trailing backslash")
            d = pattern[i + 1]
            i += 2
            if not in_class and d not in "bB":
                size.atom()
            if in_class and d in "dw":
                out.append("0-9" if d == "d" else _ASCII_W)
            elif in_class and d == "b":
                out.append("\\x08")
            elif not in_class and d in "dDwWbB":
                out.append(f"(?a:\\{d})")  # JS classes and boundaries are ASCII
            elif d in "DW":
                out.append("\\" + d)
            elif d in "pP" and unicode_flag:
                prop = _PROPERTY.match(pattern, i)
                if prop is None:
                    raise re.error("bad Unicode property escape")
                out.append("\\" + d + prop.group(0))
                i = prop.end()
            elif d == "k" and not in_class and i < n and pattern[i] == "<":
                close = pattern.find(">", i)
                if close == -1:
                    raise re.error("bad named backreference")
                out.append(f"(?P={pattern[i + 1 : close]})")
                i = close + 1
            elif d == "u" and unicode_flag and i < n and pattern[i] == "{":
                close = pattern.find("}", i)
                if close == -1:
                    raise re.error("bad \\u{}")
                out.append(f"\\U{int(pattern[i + 1 : close], 16):08x}")
                i = close + 1
            elif d == "c" and i < n and pattern[i].isascii() and pattern[i].isalpha():
                out.append(f"\\x{ord(pattern[i]) % 32:02x}")
                i += 1
            elif d == "0" and not (i < n and pattern[i].isdigit()):
                out.append("\\x00")
            elif d in _PY_ESCAPES_KEPT:
                out.append("\\" + d)
            elif d.isascii() and d.isalpha():
                out.append(re.escape(d))  # JS identity escape, e.g. \a, \A, \Z, \e
            else:
                out.append("\\" + d)
            continue
        if in_class:
            if c == "]":
                in_class = False
                out.append(c)
            elif c in "[&~|":
                out.append("\\" + c)
            else:
                out.append(c)
            i += 1
            continue
        if c == "[":
            size.atom()
            if pattern.startswith("[^]", i):
                out.append(r"[\s\S]")
                i += 3
                continue
            if pattern.startswith("[]", i):
                out.append("(?!)")
                i += 2
                continue
            in_class = True
            out.append(c)
            i += 1
            if i < n and pattern[i] == "^":
                out.append("^")
                i += 1
            if i < n and pattern[i] == "]":  # JS: ']' right after '[' or '[^' closes an empty class
                out.append("\\]")
                i += 1
            continue
        if c == "(":
            group_quant.append(False)
            size.open()
            if pattern.startswith("(?", i):
                if pattern.startswith("(?<", i) and not pattern.startswith(("(?<=", "(?<!"), i):
                    out.append("(?P<")
                    i += 3
                    continue
                if not pattern.startswith(_JS_GROUPS, i):
                    raise re.error("unsupported group syntax (not JavaScript)")
            out.append(c)
            i += 1
            continue
        if c == ")":
            last_group_had_quant = group_quant.pop() if group_quant else False
            if group_quant and last_group_had_quant:
                group_quant[-1] = True
            size.close()
            out.append(c)
            i += 1
            if (
                i < n
                and pattern[i] in "*+{"
                and last_group_had_quant
                and (pattern[i] != "{" or re.match(r"\{\d+,\d*\}", pattern[i:]))
            ):
                raise _Unsafe("nested quantifier")
            continue
        if c == "|":
            size.alternative()
            out.append(c)
            i += 1
            continue
        if c in "*+":
            if group_quant:
                group_quant[-1] = True
            out.append(c)
            i += 1
            continue
        if c == "{":
            quantifier = _QUANTIFIER.match(pattern, i)
            if quantifier is None:
                size.atom()
                out.append("\\{")  # JS: a brace that is not a quantifier is a literal
                i += 1
                continue
            if "," in quantifier.group(0) and group_quant:
                group_quant[-1] = True
            size.repeat(int(quantifier.group(0)[1:].split(",")[0].rstrip("}")))
            out.append(quantifier.group(0))
            i = quantifier.end()
            continue
        if c == "}":
            size.atom()
            out.append("\\}")
            i += 1
            continue
        if c == "$" and not multiline:
            out.append(r"\Z")
            i += 1
            continue
        if c not in "^$?":
            size.atom()
        out.append(c)
        i += 1
    if in_class:
        raise re.error("unterminated character class")
    if sum(frame[0] for frame in size.frames) > MAX_REGEX_EXPANSION:
        raise _Unsafe("repetition too large")
    return "".join(out)


# Characters that Python's case-insensitive matching equates with another character although
# ``str.lower`` keeps them apart (or maps them to two characters); folded to one representative.
_FOLD_FIXES = str.maketrans(
    {
        "\u0130": "i",
        "\u0131": "i",
        "\u017f": "s",
        "\u212a": "k",
        "\u212b": "\u00e5",
        "\u00b5": "\u03bc",
        "\u0345": "\u03b9",
        "\u1fbe": "\u03b9",
        "\u1fd3": "\u0390",
        "\u1fe3": "\u03b0",
        "\u03d0": "\u03b2",
        "\u03f5": "\u03b5",
        "\u03d1": "\u03b8",
        "\u03f0": "\u03ba",
        "\u03d6": "\u03c0",
        "\u03f1": "\u03c1",
        "\u03c2": "\u03c3",
        "\u03d5": "\u03c6",
        "\u1e9b": "\u1e61",
        "\ufb05": "\ufb06",
        # Cyrillic letter variants (Unicode 9): lower() keeps them, the engines equate them with these
        "\u1c80": "\u0432",
        "\u1c81": "\u0434",
        "\u1c82": "\u043e",
        "\u1c83": "\u0441",
        "\u1c84": "\u0442",
        "\u1c85": "\u0442",
        "\u1c86": "\u044a",
        "\u1c87": "\u0463",
        "\u1c88": "\ua64b",
    }
)


def fold_case(text: str) -> str:
    """Case folding used by the literal pre-check of ``/…/i`` keys."""
    if text.isascii():  # every character _FOLD_FIXES changes is non-ASCII; translate() is slow
        return text.lower()
    return text.translate(_FOLD_FIXES).lower()


_SPECIAL = set("\\^$.|?*+()[]{}\x01")


def _skip_escape(body: str, i: int, unicode_flag: bool = False) -> int:
    """Index after the escape sequence starting at ``body[i] == "\\"`` (with the ``u`` flag,
    ``\\p{…}`` is one escape; without it, ``\\p`` is ``p`` and the braces are literals)."""
    n = len(body)
    if i + 1 >= n:
        return n
    c = body[i + 1]
    j = i + 2
    if c in "pP" and unicode_flag and j < n and body[j] == "{":
        close = body.find("}", j)
        return n if close == -1 else close + 1
    if c == "x":
        return min(n, j + 2)
    if c == "u":
        if j < n and body[j] == "{":
            close = body.find("}", j)
            return n if close == -1 else close + 1
        return min(n, j + 4)
    if c == "c":
        return min(n, j + 1)
    if c == "k" and j < n and body[j] == "<":
        close = body.find(">", j)
        return n if close == -1 else close + 1
    if c.isdigit():
        while j < n and body[j].isdigit():
            j += 1
    return j


def _required_literal(body: str, unicode_flag: bool = False) -> str | None:
    """The longest run of plain characters at the top level of a JS pattern without top-level
    alternation: every match contains it. None when unsure."""
    if re.search(r"\(\?[aiLmsux-]", body):  # Python inline flags (not JS): no guarantee
        return None
    best = ""
    run: list[str] = []
    i, n = 0, len(body)

    def close() -> None:
        nonlocal best, run
        if len(run) > len(best):
            best = "".join(run)
        run = []

    while i < n:
        c = body[i]
        if c == "\\":
            close()
            i = _skip_escape(body, i, unicode_flag)
        elif c == "[":
            close()
            i += 1
            if i < n and body[i] == "^":
                i += 1
            while i < n and body[i] != "]":  # JS: "[]" is empty and "[^]" any character
                i = _skip_escape(body, i, unicode_flag) if body[i] == "\\" else i + 1
            i += 1
        elif c == "(":
            close()
            level = 0
            while i < n:
                ch = body[i]
                if ch == "\\":
                    i = _skip_escape(body, i, unicode_flag)
                    continue
                if ch == "[":
                    while i < n and body[i] != "]":
                        i = _skip_escape(body, i, unicode_flag) if body[i] == "\\" else i + 1
                elif ch == "(":
                    level += 1
                elif ch == ")":
                    level -= 1
                    if level == 0:
                        break
                i += 1
            i += 1
        elif c == "|":
            return None
        elif c in "?*" or (c == "{" and (quantifier := _QUANTIFIER.match(body, i))):
            if run:
                run.pop()  # the previous character is optional or repeated a variable number of times
            close()
            i = cast("re.Match[str]", quantifier).end() if c == "{" else i + 1  # "{": matched above
        elif c in "{}":
            run.append(c)  # JS: a brace that is not a quantifier is a literal
            i += 1
        elif c in _SPECIAL:
            close()
            i += 1
        else:
            run.append(c)
            i += 1
    close()
    return best if len(best) >= 2 else None


@lru_cache(maxsize=8192)
def parse_regex_key(key: str) -> RegexKey | None:
    """``RegexKey`` if ``key`` has the ``/pattern/flags`` form (ST ``parseRegexFromString``), else None.

    Keys of that form that do not compile, are longer than :data:`MAX_REGEX_LENGTH`, or nest unbounded
    quantifiers (``(a+)+``, a catastrophic-backtracking risk) get ``compiled=None``: they never match.
    """
    m = _REGEX_FORM.match(key)
    if not m:
        return None
    body, flags = m.group(1), m.group(2)
    if _UNESCAPED_SLASH.search(body):
        return None
    if len(set(flags)) != len(flags):
        return RegexKey(key, None, error="duplicate flags")
    if len(body) > MAX_REGEX_LENGTH:
        return RegexKey(key, None, error="pattern too long")
    py_flags = 0  # regex's I, M, S have re's values (max_width parses with re's parser)
    if "i" in flags:
        py_flags |= regex.IGNORECASE
    if "m" in flags:
        py_flags |= regex.MULTILINE
    if "s" in flags:
        py_flags |= regex.DOTALL
    try:
        translated = _translate(body, "m" in flags, "u" in flags)
    except _Unsafe as exc:
        return RegexKey(key, None, error=str(exc))
    except (re.error, ValueError, OverflowError, RecursionError) as exc:
        return RegexKey(key, None, error=f"invalid regex: {exc}")
    literal = _required_literal(body, "u" in flags)
    ci = "i" in flags
    if literal is not None and ci:
        literal = fold_case(literal)
    return RegexKey(key, translated, py_flags, sticky="y" in flags, literal=literal, ci=ci)


# --------------------------------------------------------------------------------------------------
# Write-time check of regex keys

PROBE_SECONDS = 0.05  # probing one key, all probe texts together
PROBE_REPEATS = 40  # how often a probe text repeats one unit
_PROBE_UNITS = 24  # at most this many one-character units per pattern
_PROBE_RUNS = 4  # and this many literal runs (multi-character units and prefixes)
_ESCAPE_SAMPLES = {"d": "0", "D": "a", "w": "a", "W": "!", "s": " ", "S": "a"}


class KeyProblem(NamedTuple):
    """Why a regex key is refused at write time: a stable ``code``, an English ``detail`` and the values
    in it (``error``, ``max``, ``ms``, ``chars``) for a translated message.

    Codes: ``invalid`` (does not compile, or a construct JavaScript does not have), ``flags``
    (repeated flags), ``too_long`` (over :data:`MAX_REGEX_LENGTH`), ``nested_quantifier``,
    ``too_large`` (expands to over :data:`MAX_REGEX_EXPANSION` atoms), ``catastrophic`` (blew the probe
    time on the probe texts: catastrophic backtracking)."""

    code: str
    detail: str
    params: tuple[tuple[str, str | int | float], ...] = ()


def _escaped_char(body: str, i: int) -> str | None:
    """The character a JS escape at ``body[i] == "\\"`` stands for, when it is one character."""
    d = body[i + 1] if i + 1 < len(body) else ""
    if not d:
        return None
    if d in "xu":
        end = _skip_escape(body, i)
        digits = body[i + 2 : end].strip("{}")
        try:
            return chr(int(digits, 16)) if digits else None
        except (ValueError, OverflowError):
            return None
    if d == "c":
        return chr(ord(body[i + 2]) % 32) if i + 2 < len(body) and body[i + 2].isalpha() else None
    if d == "0" and not body[i + 2 : i + 3].isdigit():
        return "\x00"
    simple = {"n": "\n", "t": "\t", "r": "\r", "f": "\f", "v": "\v"}
    if d in simple:
        return simple[d]
    return None if d.isalnum() else d  # \. \( \/ … are the character itself


def _probe_units(body: str, unicode_flag: bool = False) -> tuple[list[str], list[str]]:
    """``(units, runs)`` for the probe texts of a JS pattern body: one-character units (its literal
    characters, a sample character of each class and escape, and of ``.``) and its literal runs (at
    least 2 characters; at most 32). Catastrophic backtracking needs a repeated part that can match one
    text in many ways; the text that triggers it repeats what that part matches, which these units are
    samples of, and it may have to follow a literal (a run)."""
    units: dict[str, None] = {}
    runs: dict[str, None] = {}
    run: list[str] = []

    def close() -> None:
        if 2 <= len(run) <= 32:
            runs["".join(run)] = None
        run.clear()

    i, n = 0, len(body)
    while i < n:
        c = body[i]
        if c == "\\":
            char = _escaped_char(body, i)
            if char is not None:
                run.append(char)
                units[char] = None
            else:
                close()
                sample = _ESCAPE_SAMPLES.get(body[i + 1 : i + 2])
                if sample is not None:
                    units[sample] = None
            i = _skip_escape(body, i, unicode_flag)
        elif c == "[":
            close()
            i += 1
            negated = i < n and body[i] == "^"
            if negated:
                units["\x02"] = None  # a character few classes name
                i += 1
            while i < n and body[i] != "]":
                if body[i] == "\\":
                    char = _escaped_char(body, i)
                    sample = _ESCAPE_SAMPLES.get(body[i + 1 : i + 2])
                    if not negated and (char or sample):
                        units[char or cast(str, sample)] = None
                    i = _skip_escape(body, i, unicode_flag)
                    continue
                if not negated and body[i] != "-":
                    units[body[i]] = None
                i += 1
            i += 1
        elif c == ".":
            close()
            units["a"] = None
            i += 1
        elif c == "(":
            close()
            if body.startswith("(?<", i) and not body.startswith(("(?<=", "(?<!"), i):
                close_name = body.find(">", i)
                i = n if close_name == -1 else close_name + 1
            else:
                i += next((len(g) for g in _JS_GROUPS if body.startswith(g, i)), 1)
        elif c in ")|*+?^$":
            close()
            i += 1
        elif c == "{" and (quantifier := _QUANTIFIER.match(body, i)):
            close()
            i = quantifier.end()
        else:
            run.append(c)
            units[c] = None
            i += 1
    close()
    return list(units)[:_PROBE_UNITS], list(runs)[:_PROBE_RUNS]


def probe_texts(body: str, unicode_flag: bool = False) -> list[str]:
    """The probe texts of a JS pattern body: for each unit, the unit repeated :data:`PROBE_REPEATS`
    times and then a character that fails (NUL), first bare (for anchored patterns), then after each
    literal run (for a part that follows a literal), followed by every literal of the pattern (so that
    a required character is present and the engine cannot rule the text out before trying)."""
    units, runs = _probe_units(body, unicode_flag)
    tail = "\x00" + "".join(units) + " ".join(runs)
    texts = []
    for unit in [*units, *(run for run in runs if len(run) <= 8)]:
        pump = unit * PROBE_REPEATS + "\x00"
        texts.append(pump + "".join(run + pump for run in runs) + tail)
    return texts


def regex_key_problem(key: str, probe_seconds: float = PROBE_SECONDS) -> KeyProblem | None:
    """Why the (trimmed) key cannot be stored as a regex key, or None when it can (or is a plain key).

    Refused: what does not compile or translate, what :func:`parse_regex_key` refuses, and a pattern
    whose searches of :func:`probe_texts` take over ``probe_seconds`` together (each text is ~40–400
    characters; an ordinary key needs well under a millisecond for all of them, a catastrophically
    backtracking one far more than a second). Results are cached per key text."""
    return _problem(key.strip(), probe_seconds)


@lru_cache(maxsize=4096)
def _problem(key: str, probe_seconds: float) -> KeyProblem | None:
    parsed = parse_regex_key(key) if key.startswith("/") else None
    if parsed is None:
        return None
    if parsed.pattern is None:
        error = parsed.error
        if error == "duplicate flags":
            return KeyProblem("flags", "a flag is repeated")
        if error == "pattern too long":
            return KeyProblem("too_long", f"longer than {MAX_REGEX_LENGTH} characters", (("max", MAX_REGEX_LENGTH),))
        if error == "nested quantifier":
            return KeyProblem("nested_quantifier", "a repeated group contains another repetition, as in (a+)+")
        if error == "repetition too large":
            return KeyProblem(
                "too_large",
                f"its repetition counts expand to over {MAX_REGEX_EXPANSION} items",
                (("max", MAX_REGEX_EXPANSION),),
            )
        error = error.removeprefix("invalid regex: ") or "invalid"
        return KeyProblem("invalid", error, (("error", error),))
    compiled = _compile(parsed.pattern, parsed.flags)  # cached: the next activation reuses it
    if compiled is None:
        error = cast(str, _compile_or_error(parsed.pattern, parsed.flags))
        return KeyProblem("invalid", error, (("error", error),))
    body, flags = key[1 : key.rindex("/")], key[key.rindex("/") + 1 :]
    deadline = time.perf_counter() + probe_seconds
    for text in probe_texts(body, "u" in flags):
        left = deadline - time.perf_counter()
        try:
            if left <= 0:
                raise TimeoutError
            if parsed.sticky:
                compiled.match(text, timeout=left)
            else:
                compiled.search(text, timeout=left)
        except TimeoutError:
            ms = f"{probe_seconds * 1000:g}"
            return KeyProblem(
                "catastrophic",
                f"over {ms} ms on a {len(text)}-character test text (catastrophic backtracking)",
                (("ms", ms), ("chars", len(text))),
            )
    return None


# --------------------------------------------------------------------------------------------------
# Multi-key matcher for plain keys


class PlainMatcher:
    """Finds which of a fixed set of (kind, key) plain keys occur in a text. Results are cached per text."""

    __slots__ = ("_cache", "_pword_anchors", "_pword_index", "_qs", "_sub_anchors", "_sub_index", "word_keys")

    def __init__(self, items: frozenset[tuple[int, str]]) -> None:
        word_keys: set[str] = set()
        sub_keys: list[str] = []
        pword_keys: list[str] = []
        for kind, key in items:
            if not key:
                continue
            if kind == WORD:
                word_keys.add(key)
            elif kind == PWORD:
                pword_keys.append(key)
            else:
                sub_keys.append(key)
        self.word_keys = frozenset(word_keys)
        counts: Counter[str] = Counter()
        for key in (*sub_keys, *pword_keys):
            q = min(3, len(key))
            counts.update({key[i : i + q] for i in range(len(key) - q + 1)})
        self._qs: tuple[int, ...] = ()
        qs: set[int] = set()
        self._sub_index = self._index(sub_keys, counts, qs)
        self._pword_index = self._index(pword_keys, counts, qs)
        self._sub_anchors = frozenset(self._sub_index)
        self._pword_anchors = frozenset(self._pword_index)
        self._qs = tuple(sorted(qs))
        self._cache: OrderedDict[str, tuple[frozenset[str], frozenset[str]]] = OrderedDict()

    @staticmethod
    def _index(keys: list[str], counts: Counter[str], qs: set[int]) -> dict[str, list[str]]:
        index: dict[str, list[str]] = {}
        for key in keys:
            q = min(3, len(key))
            qs.add(q)
            anchor = min((key[i : i + q] for i in range(len(key) - q + 1)), key=counts.__getitem__)
            index.setdefault(anchor, []).append(key)
        return index

    def scan(self, text: str) -> tuple[frozenset[str], frozenset[str]]:
        """``(substring keys found, whole-word keys found)`` in ``text``."""
        cached = self._cache.get(text)
        if cached is not None:
            return cached
        found_word: set[str] = set()
        found_sub: set[str] = set()
        if self.word_keys:
            found_word.update(self.word_keys.intersection(_WORD_RUN_RE.findall(text)))
        if self._qs:
            grams: set[str] = set()
            size = len(text)
            for q in self._qs:
                if q == 1:
                    grams.update(text)
                else:
                    grams.update([text[i : i + q] for i in range(size - q + 1)])
            if self._sub_index:
                for anchor in grams & self._sub_anchors:
                    for key in self._sub_index[anchor]:
                        if key in text:
                            found_sub.add(key)
            if self._pword_index:
                for anchor in grams & self._pword_anchors:
                    for key in self._pword_index[anchor]:
                        if find_whole_word(text, key):
                            found_word.add(key)
        result = (frozenset(found_sub), frozenset(found_word))
        self._cache[text] = result
        if len(self._cache) > _TEXT_CACHE_SIZE:
            with contextlib.suppress(KeyError):  # another thread may have evicted it first
                self._cache.popitem(last=False)
        return result


_MATCHERS: OrderedDict[frozenset[tuple[int, str]], PlainMatcher] = OrderedDict()
_MATCHER_CACHE_SIZE = 16


def plain_matcher(items: frozenset[tuple[int, str]]) -> PlainMatcher:
    """The (cached) matcher for a key set; the cache is keyed by the set's contents."""
    matcher = _MATCHERS.get(items)
    with contextlib.suppress(KeyError):  # concurrent callers may evict entries in between
        if matcher is None:
            matcher = PlainMatcher(items)
            _MATCHERS[items] = matcher
            if len(_MATCHERS) > _MATCHER_CACHE_SIZE:
                _MATCHERS.popitem(last=False)
        else:
            _MATCHERS.move_to_end(items)
    return cast(PlainMatcher, matcher)  # set above whenever it was None


def clear_matchers() -> None:
    _MATCHERS.clear()


def compile_cache_clear() -> None:
    _compile.cache_clear()
    max_width.cache_clear()
    _problem.cache_clear()
