"""How references to cards and worldviews become text (pure; the seed's exact format).

    【人物卡：李明】          【世界观：赛博都市】
    姓名: 李明               时代: 2077年
    年龄: 28岁               科技: 义体普及

A character block always names the character (`姓名: …`) unless its own fields already have a
`姓名` key; then every field follows, one `key: value` per line, in the field order.
"""

from __future__ import annotations

from collections.abc import Iterable

NAME_KEY = "姓名"


def render_character(name: str, fields: Iterable[tuple[str, str]]) -> str:
    pairs = list(fields)
    lines = [f"【人物卡：{name}】"]
    if not any(key == NAME_KEY for key, _value in pairs):
        lines.append(f"{NAME_KEY}: {name}")
    lines.extend(f"{key}: {value}" for key, value in pairs)
    return "\n".join(lines)


def render_worldview(name: str, fields: Iterable[tuple[str, str]]) -> str:
    return "\n".join([f"【世界观：{name}】", *(f"{key}: {value}" for key, value in fields)])
