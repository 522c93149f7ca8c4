"""Providers configured from the environment when the database has none (SPEC §2).

* :func:`quickstart_ensure` — ``LLM_BASE_URL`` set and **no connection but the app's own** (``local``,
  ``mock``: what an earlier ``make run`` made) ⇒ one
  OpenAI-compatible connection ``default`` (key from ``LLM_API_KEY``, stored encrypted) and one model
  per id in ``LLM_MODELS`` (``model_id = upstream_model = id``). ``LLM_MODELS`` empty ⇒ one model
  named ``DEFAULT_MODEL_ID``. When ``DEFAULT_MODEL_ID`` is not among ``LLM_MODELS``, an extra model
  ``DEFAULT_MODEL_ID`` is created as an alias of the **first** id (same upstream model, display name
  ``"<first> (default)"``), so that requests without ``modelId`` work; the returned lines say so.
* :func:`local_ensure` — ``LLM_BASE_URL`` unset and ``LLM_PROVIDER=local`` ⇒ a ``local`` connection
  (the llama.cpp server the app runs itself, :mod:`apps.providers.localmodel`) and its model
  ``LOCAL_MODEL_ID`` (ratios 1/1, the context read from the GGUF file), each created when missing,
  whatever else is configured (it is the app's own); nothing, and a line saying why, when the local
  model cannot run here (not installed).
* :func:`mock_ensure` — ``LLM_BASE_URL`` unset and no connection ⇒ a ``mock`` connection with the
  model ``DEFAULT_MODEL_ID`` (deterministic offline text), so that every endpoint works offline.
  ``LLM_PROVIDER=mock`` (the explicit offline choice) creates them even beside other connections,
  when no model ``DEFAULT_MODEL_ID`` exists yet.

:func:`providers_ensure` runs the three in that order. Otherwise they do nothing once any connection
exists (operators own the configuration from then on), are safe to run concurrently from several
processes (the loser of the race sees the unique name and stops), and return human-readable lines
describing what they created (never the key).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

from django.conf import settings
from django.db import DatabaseError, IntegrityError, connections, transaction

from apps.audit.services import Actor
from apps.providers import services
from apps.providers.local import local_model_info, local_model_problem, local_model_spec
from apps.providers.localmodel.manager import LocalModelError, local_server
from apps.providers.models import AIModel, Connection

QUICKSTART_CONNECTION = "default"
MOCK_CONNECTION = "mock"
LOCAL_CONNECTION = "local"
# Made by the app itself (`make run`): they do not stop the LLM_* quick start, so that setting LLM_BASE_URL
# after a first `make run` on the local model (or the mock) still configures the real provider.
APP_CONNECTIONS = (MOCK_CONNECTION, LOCAL_CONNECTION)
LOCAL_MAX_OUTPUT_TOKENS = 2048
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
    if not base_url or Connection.objects.exclude(name__in=APP_CONNECTIONS).exists():
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


def local_ensure(*, by: Actor = STARTUP) -> list[str]:
    """Create the ``local`` connection and the ``LOCAL_MODEL_ID`` model when ``LLM_PROVIDER=local``."""
    if (settings.LLM_BASE_URL or "").strip() or settings.LLM_PROVIDER != "local":
        return []
    problem = local_model_problem()
    if problem:
        return [f"The local model cannot run here: {problem}."]
    spec = local_model_spec()
    info = local_model_info(spec.model_path)
    name = info.name if info else spec.alias
    model_id = settings.LOCAL_MODEL_ID
    lines: list[str] = []
    try:
        with transaction.atomic():
            connection = Connection.objects.filter(name=LOCAL_CONNECTION).first()
            if connection is None:
                connection = services.connection_upsert(
                    name=LOCAL_CONNECTION, kind=Connection.Kind.LOCAL, read_timeout=300.0, by=by
                ).obj
                lines.append(
                    f"Created connection {LOCAL_CONNECTION!r} (local: a llama.cpp server this app starts and stops, "
                    f"serving {spec.model_path})."
                )
            if not AIModel.objects.filter(model_id=model_id).exists():
                services.model_upsert(
                    model_id=model_id,
                    connection=connection,
                    upstream_model=spec.alias,
                    display_name=f"{name} (local)",
                    context_tokens=spec.context,
                    max_output_tokens=min(LOCAL_MAX_OUTPUT_TOKENS, spec.context),
                    input_ratio=Decimal("1"),
                    output_ratio=Decimal("1"),
                    by=by,
                )
                lines.append(f"Created model {model_id!r} ({name}, context {spec.context} tokens).")
    except IntegrityError:  # another process created them at the same moment
        return []
    return lines


def mock_ensure(*, by: Actor = STARTUP) -> list[str]:
    """Create the offline ``mock`` connection and the ``DEFAULT_MODEL_ID`` model if nothing is configured
    (or, with ``LLM_PROVIDER=mock``, if that model does not exist)."""
    if (settings.LLM_BASE_URL or "").strip():
        return []
    if settings.LLM_PROVIDER != "mock" and Connection.objects.exists():
        return []
    model_id = settings.DEFAULT_MODEL_ID
    if AIModel.objects.filter(model_id=model_id).exists():
        return []
    try:
        with transaction.atomic():
            connection = Connection.objects.filter(name=MOCK_CONNECTION, kind=Connection.Kind.MOCK).first()
            if connection is None:
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


def providers_ensure(*, by: Actor = STARTUP) -> list[str]:
    """The quick start, the local model and the mock fallback, in that order (`demo_setup`,
    `providers_quickstart`), audited as ``by``'s."""
    return quickstart_ensure(by=by) + local_ensure(by=by) + mock_ensure(by=by)


def local_start() -> str:
    """Start loading the local model now, when a ``local`` connection is enabled (returns at once;
    generation answers 503 with ``Retry-After`` until the model is loaded). A line for the log."""
    if not Connection.objects.filter(kind=Connection.Kind.LOCAL, enabled=True).exists():
        return ""
    server = local_server(local_model_spec())
    try:
        spawned = server.start()
    except LocalModelError as exc:
        return f"the local model cannot start: {exc}"
    state = server.state()
    if spawned:
        return f"loading {server.spec.model_path} in a llama.cpp server (log {server.log_path})"
    return f"using the running llama.cpp server (pid {state.pid}, port {state.port})"


def quickstart_on_startup() -> None:
    """SPEC §2: with `LLM_BASE_URL` set and no connection configured, create one at start-up; with
    `LLM_PROVIDER=local`, the local model's connection, and start loading it (without waiting).

    `uvicorn --workers N` imports the application inside its event loop, where Django refuses
    database calls: the work then runs on a thread of its own (a few queries; the model loads in
    another process)."""
    if not settings.LLM_BASE_URL and settings.LLM_PROVIDER != "local":
        return
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        _startup()
        return
    with ThreadPoolExecutor(1, thread_name_prefix="startup") as pool:
        pool.submit(_startup).result()


def _startup() -> None:
    try:
        for line in quickstart_ensure() + local_ensure():
            _startup_log.info("providers quick start: %s", line)
        if settings.LLM_PROVIDER == "local" and (started := local_start()):
            _startup_log.info("local model: %s", started)
    except DatabaseError:  # not migrated yet: `migrate` first, the next start will do it
        _startup_log.warning("providers quick start skipped: database not ready")
    finally:
        if threading.current_thread() is not threading.main_thread():
            connections.close_all()  # this thread's connections end with it
