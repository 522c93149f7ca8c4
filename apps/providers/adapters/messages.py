"""Chat-message conversion shared by the adapters whose APIs take one system text and
alternating turns: Anthropic (:mod:`.anthropic`) and Gemini (:mod:`.gemini`) (no Django imports).

* :func:`split_system`: leading system messages (or all, ``mode="all"``) → one system text joined with
  blank lines; later system messages become ``user`` turns where they stand; ``name`` → a
  ``"Name: "`` prefix on user and assistant turns;
* :func:`merge_turns`: empty texts dropped, consecutive same roles joined with blank lines;
* :data:`PLACEHOLDER`: the first user turn inserted where a conversation would otherwise have none.
"""

from __future__ import annotations

from collections.abc import Sequence

from apps.providers.types import ChatMessage

PLACEHOLDER = "[Start a new chat]"


def _named(m: ChatMessage) -> str:
    if m.name and m.role != "system" and not m.content.startswith(f"{m.name}: "):
        return f"{m.name}: {m.content}"
    return m.content


def merge_turns(pairs: Sequence[tuple[str, str]]) -> list[list[str]]:
    """[[role, text], …] with empty texts dropped and consecutive same roles joined by blank lines."""
    out: list[list[str]] = []
    for role, text in pairs:
        if not text:
            continue
        if out and out[-1][0] == role:
            out[-1][1] = f"{out[-1][1]}\n\n{text}"
        else:
            out.append([role, text])
    return out


def split_system(messages: Sequence[ChatMessage], *, mode: str = "leading") -> tuple[str, list[tuple[str, str]]]:
    """(system text, [(role, text)…]) — leading system messages (or all of them for ``mode="all"``)
    go to the system text; others become user turns where they stand."""
    system: list[str] = []
    turns: list[tuple[str, str]] = []
    leading = True
    for m in messages:
        if m.role == "system":
            if (leading or mode == "all") and m.content:
                system.append(m.content)
                continue
            turns.append(("user", m.content))
            continue
        leading = False
        turns.append((m.role, _named(m)))
    return "\n\n".join(system), turns
