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

The field checks are pure, in :mod:`apps.providers.validation`; a failed one is raised here as Django's
``ValidationError``, like the ``full_clean`` errors.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

from django.core.exceptions import ValidationError
from django.db import transaction

from apps.providers import crypto
from apps.providers.adapters.base import ADAPTER_KINDS
from apps.providers.models import AIModel, Connection, ModelFallback
from apps.providers.selectors import fallback_graph
from apps.providers.validation import (
    ConfigInvalid,
    parse_ratio,
    validate_base_url,
    validate_extra_headers,
    validate_fallbacks,
    validate_instruct,
)

Action = Literal["created", "updated", "unchanged"]

POST_PROCESSING_CHOICES: tuple[str, ...] = tuple(Connection.PostProcessing.values)
KINDS: tuple[str, ...] = ADAPTER_KINDS


@dataclass(frozen=True, slots=True)
class Upserted[T]:
    obj: T
    action: Action
    changed: tuple[str, ...] = ()


def _validation_error(exc: ConfigInvalid) -> ValidationError:
    """A failed check (:mod:`apps.providers.validation`) as the ``ValidationError`` these services raise."""
    if exc.field:
        return ValidationError({exc.field: exc.message})
    return ValidationError(exc.message, code=exc.code)


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
    try:
        base_url = validate_base_url(base_url, kind=kind)
        validate_instruct(
            kind=kind, instruct_template=instruct_template, custom_instruct_template=custom_instruct_template
        )
        headers = validate_extra_headers(extra_headers or {})
    except ConfigInvalid as exc:
        raise _validation_error(exc) from None
    values: dict[str, Any] = {
        "kind": kind,
        "base_url": base_url,
        "extra_headers": headers,
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
        except ConfigInvalid as exc:
            errors[field_name] = exc.message
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


@transaction.atomic
def model_set_fallbacks(*, model: AIModel, fallback_ids: list[str]) -> bool:
    """Replace ``model``'s fallbacks by ``fallback_ids`` (model ids, in order). True when changed."""
    ids = list(fallback_ids)
    current = list(model.fallback_links.order_by("position", "id").values_list("fallback__model_id", flat=True))
    try:
        validate_fallbacks(
            model_id=model.model_id,
            fallback_ids=ids,
            known_ids=AIModel.objects.filter(model_id__in=ids).values_list("model_id", flat=True),
            graph=fallback_graph(),
        )
    except ConfigInvalid as exc:
        raise _validation_error(exc) from None
    if current == ids:
        return False
    by_id = {m.model_id: m for m in AIModel.objects.filter(model_id__in=ids)}
    model.fallback_links.all().delete()
    ModelFallback.objects.bulk_create(
        [ModelFallback(model=model, fallback=by_id[fid], position=index) for index, fid in enumerate(ids)]
    )
    return True
