"""Card data as ordered key/value pairs for writing mode's ``【人物卡：{name}】`` rendering."""

from __future__ import annotations

from typing import Any, cast

# (label, V3 data key), in rendering order. creator_notes, tags, creator, character_version and the
# prompt overrides never reach a prompt through this path (spec: MUST NOT be used in prompts).
CARD_FIELD_LABELS: tuple[tuple[str, str], ...] = (
    ("姓名", "name"),
    ("昵称", "nickname"),
    ("描述", "description"),
    ("性格", "personality"),
    ("场景", "scenario"),
    ("开场白", "first_mes"),
    ("对话示例", "mes_example"),
)


def card_fields(card_v3: dict[str, Any]) -> list[tuple[str, str]]:
    """Non-empty descriptive fields of a card as ``(label, value)`` pairs, in a fixed order.

    Accepts the V3 document or just its ``data``. Values are stripped of surrounding whitespace;
    empty (or whitespace-only) fields are skipped; ``creator_notes`` is never included.
    """
    data = cast("dict[str, Any]", card_v3.get("data")) if isinstance(card_v3.get("data"), dict) else card_v3
    pairs: list[tuple[str, str]] = []
    for label, key in CARD_FIELD_LABELS:
        value = data.get(key)
        if isinstance(value, str) and value.strip():
            pairs.append((label, value.strip()))
    return pairs
