"""Reads for the model registry: the chain of targets (model + fallbacks) a generation may use, the
fallback graph the checks walk, and the connections' health (their circuits)."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from django.db.models import QuerySet
from django.utils.translation import gettext as _

from apps.core.errors import ApplicationError
from apps.providers.adapters.base import ConnectionConfig
from apps.providers.circuit import Status
from apps.providers.health import breaker
from apps.providers.models import AIModel, ModelFallback


@dataclass(frozen=True, slots=True)
class ModelTarget:
    """Everything the generation layer needs about one model, loaded once (no ORM afterwards)."""

    model_id: str
    display_name: str
    upstream_model: str
    context_tokens: int
    max_output_tokens: int
    input_ratio: Decimal
    output_ratio: Decimal
    is_free: bool
    connection_id: int
    connection_name: str
    config: ConnectionConfig
    post_processing: str
    max_concurrency: int


def _target(model: AIModel) -> ModelTarget:
    connection = model.connection
    return ModelTarget(
        model_id=model.model_id,
        display_name=model.display_name or model.model_id,
        upstream_model=model.upstream_model,
        context_tokens=model.context_tokens,
        max_output_tokens=model.max_output_tokens,
        input_ratio=model.input_ratio,
        output_ratio=model.output_ratio,
        is_free=model.is_free,
        connection_id=connection.pk,
        connection_name=connection.name,
        config=connection.config(),
        post_processing=connection.prompt_post_processing,
        max_concurrency=connection.max_concurrency,
    )


CHAIN_CACHE_SECONDS = 10.0
_chains: dict[str, tuple[float, list[ModelTarget]]] = {}


def models_visible() -> QuerySet[AIModel]:
    """Enabled models whose connection is enabled, by ``model_id`` (what users may pick)."""
    return AIModel.objects.filter(enabled=True, connection__enabled=True).order_by("model_id")


def model_chain(*, model_id: str) -> list[ModelTarget]:
    """The requested model followed by its enabled fallbacks, in order.

    Two queries, then kept in this process for CHAIN_CACHE_SECONDS: the registry changes rarely and an
    operator's edit is live everywhere within that time. (Only in process memory: a target carries the
    decrypted API key, which never goes to a shared cache.) An unknown or disabled model (or one on a
    disabled connection) is a 400 on `modelId`.
    """
    now = time.monotonic()
    cached = _chains.get(model_id)
    if cached is not None and now - cached[0] < CHAIN_CACHE_SECONDS:
        return list(cached[1])
    chain = _load_chain(model_id)
    if len(_chains) > 1000:
        _chains.clear()
    _chains[model_id] = (now, chain)
    return list(chain)


def chains_forget() -> None:
    _chains.clear()


def _load_chain(model_id: str) -> list[ModelTarget]:
    model = AIModel.objects.select_related("connection").filter(model_id=model_id).first()
    if model is None or not model.enabled or not model.connection.enabled:
        raise ApplicationError(
            _("Model %(model)s does not exist or is disabled.") % {"model": model_id},
            status_code=400,
            code="invalid_model",
            extra={"details": {"modelId": [_("Unknown or disabled model.")]}},
        )
    chain = [_target(model)]
    seen = {model.pk}
    links = ModelFallback.objects.filter(model=model).select_related("fallback__connection").order_by("position", "id")
    for link in links:
        fallback = link.fallback
        if fallback.pk in seen or not fallback.enabled or not fallback.connection.enabled:
            continue
        seen.add(fallback.pk)
        chain.append(_target(fallback))
    return chain


def fallback_graph() -> dict[str, list[str]]:
    """``{model_id: [fallback model_id, …]}`` for every model that has fallbacks, in order."""
    graph: dict[str, list[str]] = {}
    rows = ModelFallback.objects.order_by("model__model_id", "position", "id").values_list(
        "model__model_id", "fallback__model_id"
    )
    for model_id, fallback_id in rows:
        graph.setdefault(model_id, []).append(fallback_id)
    return graph


@dataclass(frozen=True, slots=True)
class ConnectionHealth:
    """What an operator sees of a connection's circuit (docs/operations.md, "Connection health")."""

    status: Status  # closed (healthy), open, half_open
    failures: int  # consecutive counted failures
    since: datetime | None  # opened (open, half-open) or last closed (healthy); None: never opened
    retry_in: float  # seconds until a call may go again (0: now)
    shared: bool  # the state every process shares (Redis), or this process's own

    @property
    def healthy(self) -> bool:
        return self.status == "closed"


def _when(seconds: float) -> datetime | None:
    return datetime.fromtimestamp(seconds, UTC) if seconds else None


def connections_health(*, connection_ids: Iterable[int]) -> dict[int, ConnectionHealth]:
    """The health of each connection, in one read (one Redis round trip with `REDIS_URL`)."""
    current = breaker()
    now = current.clock()
    states = current.states(connection_ids)
    return {
        key: ConnectionHealth(
            status=state.status(now, current.cooldown),
            failures=state.failures,
            since=_when(state.opened_at or state.changed_at),
            retry_in=state.retry_after(now, current.cooldown),
            shared=current.store.shared,
        )
        for key, state in states.items()
    }


def model_connection_names() -> dict[str, str]:
    """``{model_id: its connection's name}`` for every model in the catalogue (enabled or not)."""
    return dict(AIModel.objects.values_list("model_id", "connection__name"))
