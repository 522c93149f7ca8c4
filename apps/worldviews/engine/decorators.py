"""Content decorators: leading ``@@name value`` lines of an entry's content (V3 lorebook spec).

Parsed like ST's ``parseDecorators``: only when the content starts with ``@@``; every leading line that
starts with ``@@`` is a decorator; a ``@@@name`` line is a fallback, read only when the decorator before
it is one we do not support. The content proper starts at the first other line (decorators and the
newlines after them are removed). Unlike ST, content made only of decorators becomes empty.

Supported (name → effect):

* ``activate`` / ``dont_activate`` — force / forbid activation (as ST; ``dont_activate`` beats
  constant and sticky, ``activate`` beats ``dont_activate``);
* ``activate_only_after N`` — blocked while the chat has fewer than N messages;
* ``activate_only_every N`` — only when the chat length is a multiple of N;
* ``depth N`` — insert ``@depth`` at depth N; ``role system|user|assistant`` — its role;
* ``scan_depth N`` — per-entry scan depth;
* ``position before_desc|after_desc|personality|scenario`` — before / after the character definitions;
* ``additional_keys a,b`` — more primary keys; ``exclude_keys a,b`` — any match blocks activation.

Everything else (``keep_activate_after_match``, ``dont_activate_after_match``, ``instruct_depth``,
``reverse_depth``, ``reverse_instruct_depth``, ``instruct_scan_depth``, ``is_greeting``,
``is_user_icon``, ``disable_ui_prompt``, ``ignore_on_max_context``) is unsupported: ignored, and its
``@@@`` fallback is used.
"""

from __future__ import annotations

SUPPORTED = frozenset(
    {
        "activate",
        "dont_activate",
        "activate_only_after",
        "activate_only_every",
        "depth",
        "role",
        "scan_depth",
        "position",
        "additional_keys",
        "exclude_keys",
    }
)
_MULTI = frozenset({"additional_keys", "exclude_keys"})


def parse_decorators(content: str) -> tuple[dict[str, str], str]:
    """``(decorators, content without them)``; repeated ``additional_keys``/``exclude_keys`` accumulate."""
    if not content.startswith("@@"):
        return {}, content
    lines = content.split("\n")
    decorators: dict[str, str] = {}
    fallback = False
    rest = ""
    for index, raw in enumerate(lines):
        if not raw.startswith("@@"):
            rest = "\n".join(lines[index:])
            break
        line = raw.rstrip("\r")
        if line.startswith("@@@"):
            if not fallback:
                continue
            line = line[1:]
        name, _, value = line[2:].strip().partition(" ")
        name = name.strip().lower()
        if name in SUPPORTED:
            value = value.strip()
            if name in _MULTI and name in decorators:
                decorators[name] = f"{decorators[name]},{value}"
            else:
                decorators[name] = value
            fallback = False
        else:
            fallback = True
    return decorators, rest


def int_arg(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(value.strip().split()[0])
    except (ValueError, IndexError):
        return None
