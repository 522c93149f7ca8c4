"""Writes of the providers app: connections, models, fallbacks (the only place that writes them).

Upserts are declarative: every field gets the value passed (or the documented default), except the
API key, which is left as it is when ``api_key`` is ``None`` (``""`` clears it). Each upsert reports
whether the row was ``created``, ``updated`` (with the names of the changed fields) or ``unchanged``
— so running the same import twice writes nothing the second time.

Fallbacks
    ``model_set_fallbacks`` stores a model's ordered fallbacks. The generation layer tries the model,
    then its fallbacks in order — **not** transitively (a fallback's own fallbacks are not followed).
    Even so, cycles in the fallback graph (``a → b → a``, longer ones too) are rejected, together
    with self-references, duplicates and unknown ids, so that any code that walks the graph
    terminates and the configuration stays easy to reason about.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Literal
from urllib.parse import urlsplit

from django.core.exceptions import ValidationError
from django.db import transaction

from apps.providers import crypto
from apps.providers.adapters.base import ADAPTER_KINDS
from apps.providers.models import AIModel, Connection, ModelFallback

try:  # the instruct module may be absent in trimmed-down deployments
    from apps.providers.instruct import CUSTOM_TEMPLATE, INSTRUCT_TEMPLATES, InstructTemplateError
    from apps.providers.instruct import validate_custom_template as _validate_custom_template
except ImportError:  # pragma: no cover
    INSTRUCT_TEMPLATES = ("chatml", "llama3", "mistral", "alpaca", "gemma", "transcript")
    CUSTOM_TEMPLATE = "custom"
    InstructTemplateError = ValueError  # type: ignore[misc,assignment]

    def _validate_custom_template(source: str) -> None:
        return None


Action = Literal["created", "updated", "unchanged"]

INSTRUCT_CHOICES: tuple[str, ...] = (*INSTRUCT_TEMPLATES, CUSTOM_TEMPLATE)
POST_PROCESSING_CHOICES: tuple[str, ...] = tuple(Connection.PostProcessing.values)
KINDS: tuple[str, ...] = ADAPTER_KINDS
MIN_RATIO = Decimal("0.01")
MAX_RATIO = Decimal("99999999.99")  # DecimalField(max_digits=10, decimal_places=2)
MAX_TIMEOUT_SECONDS = 3600.0
_HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")


@dataclass(frozen=True, slots=True)
class Upserted[T]:
    obj: T
    action: Action
    changed: tuple[str, ...] = ()


# ---------------------------------------------------------------------------------------------
# Field validators (shared by the importer, the admin and the services)


def validate_base_url(url: str, *, kind: str) -> str:
    """An ``http(s)://host[:port][/path]`` URL (or empty: the vendor's default; always empty is fine
    for ``mock``). Returns the URL stripped. The adapters normalise ``/v1`` and endpoint suffixes."""
    url = (url or "").strip()
    if not url:
        return ""
    if len(url) > 500:
        raise ValidationError("must be at most 500 characters")
    if any(ch.isspace() for ch in url):
        raise ValidationError("must not contain spaces")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ValidationError("must start with http:// or https://")
    if not parts.hostname:
        raise ValidationError("must name a host")
    if parts.query or parts.fragment:
        raise ValidationError("must not have a query string or fragment")
    try:
        parts.port  # noqa: B018 (raises ValueError on a bad port)
    except ValueError:
        raise ValidationError("has an invalid port") from None
    return url


def validate_instruct(*, kind: str, instruct_template: str, custom_instruct_template: str) -> None:
    if kind != Connection.Kind.OPENAI_TEXT:
        if instruct_template:
            raise ValidationError({"instruct_template": "is only used by openai_text connections"})
        if custom_instruct_template:
            raise ValidationError({"custom_instruct_template": "is only used by openai_text connections"})
        return
    if instruct_template and instruct_template not in INSTRUCT_CHOICES:
        raise ValidationError({"instruct_template": f"must be one of {', '.join(INSTRUCT_CHOICES)}"})
    if instruct_template == CUSTOM_TEMPLATE:
        if not custom_instruct_template.strip():
            raise ValidationError({"custom_instruct_template": "is required when instruct_template is 'custom'"})
        try:
            _validate_custom_template(custom_instruct_template)
        except InstructTemplateError as exc:
            raise ValidationError({"custom_instruct_template": str(exc)}) from None
    elif custom_instruct_template:
        raise ValidationError({"custom_instruct_template": "is only used when instruct_template is 'custom'"})


def validate_extra_headers(headers: Mapping[str, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in headers.items():
        if not isinstance(name, str) or not _HEADER_NAME.match(name):
            raise ValidationError(f"invalid header name {name!r}")
        if not isinstance(value, str) or "\n" in value or "\r" in value:
            raise ValidationError(f"header {name!r} must be a one-line string")
        out[name] = value
    return out


def parse_ratio(value: Any) -> Decimal:
    """A ratio ≥ 0.01 with at most two decimals (ints, floats, decimals or numeric strings)."""
    if isinstance(value, bool):
        raise ValidationError("must be a number ≥ 0.01")
    try:
        ratio = Decimal(str(value)) if not isinstance(value, Decimal) else value
    except (InvalidOperation, ValueError):
        raise ValidationError("must be a number ≥ 0.01") from None
    if not ratio.is_finite() or ratio < MIN_RATIO:
        raise ValidationError("must be a number ≥ 0.01")
    if ratio > MAX_RATIO:
        raise ValidationError(f"must be at most {MAX_RATIO}")
    if ratio != ratio.quantize(Decimal("0.01")):
        raise ValidationError("must have at most 2 decimal places")
    return ratio.quantize(Decimal("0.01"))


# ---------------------------------------------------------------------------------------------
# Connections


def _apply(obj: Any, values: Mapping[str, Any]) -> list[str]:
    changed = []
    for name, value in values.items():
        if getattr(obj, name) != value:
            setattr(obj, name, value)
            changed.append(name)
    return changed


def _key_differs(connection: Connection, api_key: str) -> bool:
    try:
        return connection.api_key != api_key
    except crypto.DecryptionError:
        return True


@transaction.atomic
def connection_upsert(
    *,
    name: str,
    kind: str,
    base_url: str = "",
    api_key: str | None = None,
    extra_headers: Mapping[str, str] | None = None,
    connect_timeout: float = 10.0,
    read_timeout: float = 120.0,
    max_concurrency: int = 32,
    prompt_post_processing: str = Connection.PostProcessing.NONE,
    instruct_template: str = "",
    custom_instruct_template: str = "",
    enabled: bool = True,
) -> Upserted[Connection]:
    """Create or update the connection called ``name``. ``api_key=None`` keeps the stored key."""
    if kind not in KINDS:
        raise ValidationError({"kind": f"must be one of {', '.join(KINDS)}"})
    base_url = validate_base_url(base_url, kind=kind)
    validate_instruct(kind=kind, instruct_template=instruct_template, custom_instruct_template=custom_instruct_template)
    values: dict[str, Any] = {
        "kind": kind,
        "base_url": base_url,
        "extra_headers": validate_extra_headers(extra_headers or {}),
        "connect_timeout": float(connect_timeout),
        "read_timeout": float(read_timeout),
        "max_concurrency": int(max_concurrency),
        "prompt_post_processing": str(prompt_post_processing),
        "instruct_template": instruct_template,
        "custom_instruct_template": custom_instruct_template,
        "enabled": bool(enabled),
    }
    connection = Connection.objects.select_for_update().filter(name=name).first()
    if connection is None:
        connection = Connection(name=name, **values)
        if api_key:
            connection.set_api_key(api_key)
        connection.full_clean()
        connection.save()
        return Upserted(connection, "created")
    changed = _apply(connection, values)
    if api_key is not None and _key_differs(connection, api_key.strip()):
        connection.set_api_key(api_key)
        changed.append("api_key")
    if not changed:
        return Upserted(connection, "unchanged")
    connection.full_clean()
    connection.save()
    return Upserted(connection, "updated", tuple(changed))


# ---------------------------------------------------------------------------------------------
# Models


@transaction.atomic
def model_upsert(
    *,
    model_id: str,
    connection: Connection,
    upstream_model: str,
    display_name: str = "",
    context_tokens: int = 8192,
    max_output_tokens: int = 4096,
    input_ratio: Decimal | int | float | str = Decimal("1"),
    output_ratio: Decimal | int | float | str = Decimal("1"),
    is_free: bool = False,
    enabled: bool = True,
) -> Upserted[AIModel]:
    """Create or update the model whose public id is ``model_id``."""
    errors: dict[str, str] = {}
    for field_name, number in (("context_tokens", context_tokens), ("max_output_tokens", max_output_tokens)):
        if isinstance(number, bool) or not isinstance(number, int) or number < 1:
            errors[field_name] = "must be a positive integer"
    ratios: dict[str, Decimal] = {}
    for field_name, raw in (("input_ratio", input_ratio), ("output_ratio", output_ratio)):
        try:
            ratios[field_name] = parse_ratio(raw)
        except ValidationError as exc:
            errors[field_name] = exc.messages[0]
    if not errors and max_output_tokens > context_tokens:
        errors["max_output_tokens"] = "must not exceed context_tokens"
    if errors:
        raise ValidationError(errors)
    values: dict[str, Any] = {
        "connection_id": connection.pk,
        "upstream_model": upstream_model,
        "display_name": display_name,
        "context_tokens": context_tokens,
        "max_output_tokens": max_output_tokens,
        "input_ratio": ratios["input_ratio"],
        "output_ratio": ratios["output_ratio"],
        "is_free": bool(is_free),
        "enabled": bool(enabled),
    }
    model = AIModel.objects.select_for_update().filter(model_id=model_id).first()
    if model is None:
        model = AIModel(model_id=model_id, **values)
        model.full_clean()
        model.save()
        return Upserted(model, "created")
    changed = [("connection" if name == "connection_id" else name) for name in _apply(model, values)]
    if not changed:
        return Upserted(model, "unchanged")
    model.full_clean()
    model.save()
    return Upserted(model, "updated", tuple(changed))


# ---------------------------------------------------------------------------------------------
# Fallbacks


def fallback_graph() -> dict[str, list[str]]:
    """``{model_id: [fallback model_id, …]}`` for every model that has fallbacks, in order."""
    graph: dict[str, list[str]] = {}
    rows = ModelFallback.objects.order_by("model__model_id", "position", "id").values_list(
        "model__model_id", "fallback__model_id"
    )
    for model_id, fallback_id in rows:
        graph.setdefault(model_id, []).append(fallback_id)
    return graph


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
    """Raise ``ValidationError`` for unknown ids, the model itself, duplicates or a cycle.

    ``graph`` is the rest of the fallback graph (``model_id``'s own entry is replaced by
    ``fallback_ids``)."""
    known = set(known_ids)
    seen: set[str] = set()
    for fallback_id in fallback_ids:
        if not isinstance(fallback_id, str) or not fallback_id:
            raise ValidationError("fallbacks must be model ids (strings)")
        if fallback_id == model_id:
            raise ValidationError(f"a model cannot be its own fallback ({model_id!r})")
        if fallback_id in seen:
            raise ValidationError(f"{fallback_id!r} is listed twice")
        if fallback_id not in known:
            raise ValidationError(f"unknown model {fallback_id!r}")
        seen.add(fallback_id)
    merged = {**graph, model_id: list(fallback_ids)}
    cycle = find_cycle(merged, model_id)
    if cycle:
        raise ValidationError(f"fallbacks would form a loop: {' → '.join(cycle)}", code="cycle")


@transaction.atomic
def model_set_fallbacks(*, model: AIModel, fallback_ids: list[str]) -> bool:
    """Replace ``model``'s fallbacks by ``fallback_ids`` (model ids, in order). True when changed."""
    ids = list(fallback_ids)
    current = list(model.fallback_links.order_by("position", "id").values_list("fallback__model_id", flat=True))
    validate_fallbacks(
        model_id=model.model_id,
        fallback_ids=ids,
        known_ids=AIModel.objects.filter(model_id__in=ids).values_list("model_id", flat=True),
        graph=fallback_graph(),
    )
    if current == ids:
        return False
    by_id = {m.model_id: m for m in AIModel.objects.filter(model_id__in=ids)}
    model.fallback_links.all().delete()
    ModelFallback.objects.bulk_create(
        [ModelFallback(model=model, fallback=by_id[fid], position=index) for index, fid in enumerate(ids)]
    )
    return True
