"""Checks of provider configuration: base URLs, instruct templates, extra headers, billing ratios and
the fallback graph (pure Python, no Django imports).

Shared by the services (``connection_upsert``, ``model_upsert``, ``model_set_fallbacks``), the admin
forms and the TOML importer. A failed check raises :class:`ConfigInvalid` with an English message
(untranslated, as before the move); the services re-raise it as Django's ``ValidationError``, their
callers' currency, and the admin forms and the importer show ``message`` on the field.

    >>> parse_ratio("1.5")
    Decimal('1.50')
    >>> find_cycle({"a": ["b"], "b": ["a"]}, "a")
    ['a', 'b', 'a']
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import urlsplit

try:  # the instruct module may be absent in trimmed-down deployments
    from apps.providers.instruct import CUSTOM_TEMPLATE, INSTRUCT_TEMPLATES, InstructTemplateError
    from apps.providers.instruct import validate_custom_template as _validate_custom_template
except ImportError:  # pragma: no cover
    INSTRUCT_TEMPLATES = ("chatml", "llama3", "mistral", "alpaca", "gemma", "transcript")
    CUSTOM_TEMPLATE = "custom"
    InstructTemplateError = ValueError  # type: ignore[misc,assignment]

    def _validate_custom_template(source: str) -> None:
        return None


INSTRUCT_CHOICES: tuple[str, ...] = (*INSTRUCT_TEMPLATES, CUSTOM_TEMPLATE)
MIN_RATIO = Decimal("0.01")
MAX_RATIO = Decimal("99999999.99")  # DecimalField(max_digits=10, decimal_places=2)
MAX_TIMEOUT_SECONDS = 3600.0
_HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")


class ConfigInvalid(ValueError):
    """A failed check: ``message`` (English, shown as is); ``field`` when the check covers several
    fields (``validate_instruct``), else None; ``code`` is ``"cycle"`` for a fallback loop, else None."""

    def __init__(self, message: str, *, field: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.code = code


def validate_base_url(url: str, *, kind: str) -> str:
    """An ``http(s)://host[:port][/path]`` URL (or empty: the vendor's default; always empty is fine
    for ``mock``, and required for ``local``). Returns the URL stripped. The adapters normalise ``/v1``
    and endpoint suffixes."""
    url = (url or "").strip()
    if not url:
        return ""
    if kind == "local":
        raise ConfigInvalid("must be empty for a local connection (the app runs its own server)")
    if len(url) > 500:
        raise ConfigInvalid("must be at most 500 characters")
    if any(ch.isspace() for ch in url):
        raise ConfigInvalid("must not contain spaces")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ConfigInvalid("must start with http:// or https://")
    if not parts.hostname:
        raise ConfigInvalid("must name a host")
    if parts.query or parts.fragment:
        raise ConfigInvalid("must not have a query string or fragment")
    try:
        parts.port  # noqa: B018 (raises ValueError on a bad port)
    except ValueError:
        raise ConfigInvalid("has an invalid port") from None
    return url


def validate_instruct(*, kind: str, instruct_template: str, custom_instruct_template: str) -> None:
    if kind != "openai_text":
        if instruct_template:
            raise ConfigInvalid("is only used by openai_text connections", field="instruct_template")
        if custom_instruct_template:
            raise ConfigInvalid("is only used by openai_text connections", field="custom_instruct_template")
        return
    if instruct_template and instruct_template not in INSTRUCT_CHOICES:
        raise ConfigInvalid(f"must be one of {', '.join(INSTRUCT_CHOICES)}", field="instruct_template")
    if instruct_template == CUSTOM_TEMPLATE:
        if not custom_instruct_template.strip():
            raise ConfigInvalid("is required when instruct_template is 'custom'", field="custom_instruct_template")
        try:
            _validate_custom_template(custom_instruct_template)
        except InstructTemplateError as exc:
            raise ConfigInvalid(str(exc), field="custom_instruct_template") from None
    elif custom_instruct_template:
        raise ConfigInvalid("is only used when instruct_template is 'custom'", field="custom_instruct_template")


def validate_extra_headers(headers: Mapping[str, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in headers.items():
        if not isinstance(name, str) or not _HEADER_NAME.match(name):
            raise ConfigInvalid(f"invalid header name {name!r}")
        if not isinstance(value, str) or "\n" in value or "\r" in value:
            raise ConfigInvalid(f"header {name!r} must be a one-line string")
        out[name] = value
    return out


def parse_ratio(value: Any) -> Decimal:
    """A ratio ≥ 0.01 with at most two decimals (ints, floats, decimals or numeric strings)."""
    if isinstance(value, bool):
        raise ConfigInvalid("must be a number ≥ 0.01")
    try:
        ratio = Decimal(str(value)) if not isinstance(value, Decimal) else value
    except (InvalidOperation, ValueError):
        raise ConfigInvalid("must be a number ≥ 0.01") from None
    if not ratio.is_finite() or ratio < MIN_RATIO:
        raise ConfigInvalid("must be a number ≥ 0.01")
    if ratio > MAX_RATIO:
        raise ConfigInvalid(f"must be at most {MAX_RATIO}")
    if ratio != ratio.quantize(Decimal("0.01")):
        raise ConfigInvalid("must have at most 2 decimal places")
    return ratio.quantize(Decimal("0.01"))


# ---------------------------------------------------------------------------------------------
# Fallbacks (the graph itself is read by ``selectors.fallback_graph``)


def find_cycle(graph: Mapping[str, Iterable[str]], start: str) -> list[str] | None:
    """A path ``[start, …, start]`` when ``start`` can reach itself through fallbacks, else None."""
    stack: list[tuple[str, list[str]]] = [(start, [start])]
    seen: set[str] = set()
    while stack:
        node, path = stack.pop()
        for nxt in graph.get(node, ()):
            if nxt == start:
                return [*path, nxt]
            if nxt not in seen:
                seen.add(nxt)
                stack.append((nxt, [*path, nxt]))
    return None


def validate_fallbacks(
    *, model_id: str, fallback_ids: list[str], known_ids: Iterable[str], graph: Mapping[str, list[str]]
) -> None:
    """Raise :class:`ConfigInvalid` for unknown ids, the model itself, duplicates or a cycle.

    ``graph`` is the rest of the fallback graph (``model_id``'s own entry is replaced by
    ``fallback_ids``)."""
    known = set(known_ids)
    seen: set[str] = set()
    for fallback_id in fallback_ids:
        if not isinstance(fallback_id, str) or not fallback_id:
            raise ConfigInvalid("fallbacks must be model ids (strings)")
        if fallback_id == model_id:
            raise ConfigInvalid(f"a model cannot be its own fallback ({model_id!r})")
        if fallback_id in seen:
            raise ConfigInvalid(f"{fallback_id!r} is listed twice")
        if fallback_id not in known:
            raise ConfigInvalid(f"unknown model {fallback_id!r}")
        seen.add(fallback_id)
    merged = {**graph, model_id: list(fallback_ids)}
    cycle = find_cycle(merged, model_id)
    if cycle:
        raise ConfigInvalid(f"fallbacks would form a loop: {' → '.join(cycle)}", code="cycle")
