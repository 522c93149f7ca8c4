"""Providers configured from the environment when the database has none (SPEC §2).

* :func:`quickstart_ensure` — ``LLM_BASE_URL`` set and **no connection at all** ⇒ one
  OpenAI-compatible connection ``default`` (key from ``LLM_API_KEY``, stored encrypted) and one model
  per id in ``LLM_MODELS`` (``model_id = upstream_model = id``). ``LLM_MODELS`` empty ⇒ one model
  named ``DEFAULT_MODEL_ID``. When ``DEFAULT_MODEL_ID`` is not among ``LLM_MODELS``, an extra model
  ``DEFAULT_MODEL_ID`` is created as an alias of the **first** id (same upstream model, display name
  ``"<first> (default)"``), so that requests without ``modelId`` work; the returned lines say so.
* :func:`mock_ensure` — ``LLM_BASE_URL`` unset and no connection ⇒ a ``mock`` connection with the
  model ``DEFAULT_MODEL_ID`` (deterministic offline text), so that every endpoint works offline.

Both do nothing once any connection exists (operators own the configuration from then on), are safe
to run concurrently from several processes (the loser of the race sees the unique name and stops),
and return human-readable lines describing what they created (never the key).
"""

from __future__ import annotations

import logging
from decimal import Decimal

from django.conf import settings
from django.db import DatabaseError, IntegrityError, transaction

from apps.audit.services import Actor
from apps.providers import services
from apps.providers.models import Connection

QUICKSTART_CONNECTION = "default"
MOCK_CONNECTION = "mock"
DEFAULT_CONTEXT_TOKENS = 32768
DEFAULT_MAX_OUTPUT_TOKENS = 4096

_startup_log = logging.getLogger("writing_service.startup")


def _model_ids() -> list[str]:
    ids: list[str] = []
    for raw in settings.LLM_MODELS or []:
        model_id = str(raw).strip()
        if model_id and model_id not in ids:
            ids.append(model_id)
    return ids


STARTUP = Actor(None, "startup")


def quickstart_ensure(*, by: Actor = STARTUP) -> list[str]:
    """Create the ``default`` connection and its models from ``LLM_*`` settings if none exist (audited
    as ``by``'s)."""
    base_url = (settings.LLM_BASE_URL or "").strip()
    if not base_url or Connection.objects.exists():
        return []
    ids = _model_ids() or [settings.DEFAULT_MODEL_ID]
    lines: list[str] = []
    try:
        with transaction.atomic():
            connection = services.connection_upsert(
                name=QUICKSTART_CONNECTION,
                kind=Connection.Kind.OPENAI,
                base_url=base_url,
                api_key=(settings.LLM_API_KEY or "").strip() or None,
                by=by,
            ).obj
            hint = f", key {connection.api_key_hint}" if connection.api_key_hint else ", no API key"
            lines.append(f"Created connection {connection.name!r} (openai, {base_url}{hint}).")
            for model_id in ids:
                services.model_upsert(
                    model_id=model_id,
                    connection=connection,
                    upstream_model=model_id,
                    display_name=model_id,
                    context_tokens=DEFAULT_CONTEXT_TOKENS,
                    max_output_tokens=DEFAULT_MAX_OUTPUT_TOKENS,
                    input_ratio=Decimal("1"),
                    output_ratio=Decimal("1"),
                    by=by,
                )
                lines.append(f"Created model {model_id!r}.")
            if settings.DEFAULT_MODEL_ID not in ids:
                services.model_upsert(
                    model_id=settings.DEFAULT_MODEL_ID,
                    connection=connection,
                    upstream_model=ids[0],
                    display_name=f"{ids[0]} (default)",
                    context_tokens=DEFAULT_CONTEXT_TOKENS,
                    max_output_tokens=DEFAULT_MAX_OUTPUT_TOKENS,
                    by=by,
                )
                lines.append(
                    f"Created model {settings.DEFAULT_MODEL_ID!r} as an alias of {ids[0]!r} "
                    "(DEFAULT_MODEL_ID is not in LLM_MODELS)."
                )
    except IntegrityError:  # another process created it at the same moment
        return []
    return lines


def mock_ensure(*, by: Actor = STARTUP) -> list[str]:
    """Create the offline ``mock`` connection and the ``DEFAULT_MODEL_ID`` model if nothing is configured."""
    if (settings.LLM_BASE_URL or "").strip() or Connection.objects.exists():
        return []
    model_id = settings.DEFAULT_MODEL_ID
    try:
        with transaction.atomic():
            connection = services.connection_upsert(name=MOCK_CONNECTION, kind=Connection.Kind.MOCK, by=by).obj
            services.model_upsert(
                model_id=model_id,
                connection=connection,
                upstream_model="mock",
                display_name=f"{model_id} (mock)",
                context_tokens=DEFAULT_CONTEXT_TOKENS,
                max_output_tokens=DEFAULT_MAX_OUTPUT_TOKENS,
                by=by,
            )
    except IntegrityError:
        return []
    return [
        f"Created connection {MOCK_CONNECTION!r} (mock: offline deterministic text) and model {model_id!r}.",
        "Set LLM_BASE_URL (and LLM_API_KEY, LLM_MODELS) or run import_models to use a real LLM.",
    ]


def quickstart_on_startup() -> None:
    """SPEC §2: with `LLM_BASE_URL` set and no connection configured, create one at start-up."""
    if not settings.LLM_BASE_URL:
        return
    try:
        for line in quickstart_ensure():
            _startup_log.info("providers quick start: %s", line)
    except DatabaseError:  # not migrated yet: `migrate` first, the next start will do it
        _startup_log.warning("providers quick start skipped: database not ready")
