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

Audit
    Given ``by`` (an import, the quick start, an operator), each created or updated row and each
    changed fallback list gets an audit entry in the same transaction (keys redacted); unchanged rows
    get none. ``connection_circuit_reset`` is always an operator's decision, always audited.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

from django.core.exceptions import ValidationError
from django.db import transaction

from apps.audit.services import Actor, audit_record, audit_saved, snapshot
from apps.providers import crypto
from apps.providers.adapters.base import ADAPTER_KINDS
from apps.providers.circuit import CircuitState
from apps.providers.health import breaker
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
logger = logging.getLogger("apps.providers.circuit")

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
    by: Actor | None = None,
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
        _audit_saved(by, connection, None)
        return Upserted(connection, "created")
    before = snapshot(connection)
    changed = _apply(connection, values)
    if api_key is not None and _key_differs(connection, api_key.strip()):
        connection.set_api_key(api_key)
        changed.append("api_key")
    if not changed:
        return Upserted(connection, "unchanged")
    connection.full_clean()
    connection.save()
    _audit_saved(by, connection, before)
    return Upserted(connection, "updated", tuple(changed))


def _audit_saved(by: Actor | None, obj: Connection | AIModel, before: dict[str, Any] | None) -> None:
    if by is not None:
        audit_saved(by=by, obj=obj, before=before)


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
    by: Actor | None = None,
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
        _audit_saved(by, model, None)
        return Upserted(model, "created")
    before = snapshot(model)
    changed = [("connection" if name == "connection_id" else name) for name in _apply(model, values)]
    if not changed:
        return Upserted(model, "unchanged")
    model.full_clean()
    model.save()
    _audit_saved(by, model, before)
    return Upserted(model, "updated", tuple(changed))


# ---------------------------------------------------------------------------------------------
# Fallbacks


@transaction.atomic
def model_set_fallbacks(
    *, model: AIModel, fallback_ids: list[str], by: Actor | None = None, audit_before: list[str] | None = None
) -> bool:
    """Replace ``model``'s fallbacks by ``fallback_ids`` (model ids, in order). True when changed.
    ``audit_before``: the list the audit entry reports as before, when this call ends a change made in
    two steps (the importer clears changing lists first)."""
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
    if by is not None:
        audit_record(
            by=by,
            action="aimodel.fallbacks",
            target_type="providers.aimodel",
            target_id=model.pk,
            target_repr=model.model_id,
            before={"fallbacks": current if audit_before is None else audit_before},
            after={"fallbacks": ids},
        )
    return True


# ---------------------------------------------------------------------------------------------
# Connection health


def connection_circuit_reset(*, connection: Connection, by: Actor) -> CircuitState:
    """Close the connection's circuit now (the operator knows the upstream is back): its calls resume at
    once instead of after the cool-down and probe. Audited (`connection.circuit_reset`) and logged."""
    previous = breaker().reset(connection.pk)
    audit_record(
        by=by,
        action="connection.circuit_reset",
        target_type="providers.connection",
        target_id=connection.pk,
        target_repr=connection.name,
        before={"failures": previous.failures, "open": bool(previous.opened_at)},
        after={"failures": 0, "open": False},
    )
    if previous.opened_at:
        logger.warning("circuit closed: connection %s (#%d) reset by %s", connection.name, connection.pk, by.name)
    return previous
