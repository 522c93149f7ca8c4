"""Operator diagnostics shared by the admin actions and ``manage.py llm_check``.

* :func:`check_model` — send a short chat ("Say hello", small ``max_tokens``) to a model's upstream,
  streaming or not, and measure it: reply, latency, time to first token, finish reason, usage, or the
  error (a safe message: adapters redact the key; anything else is redacted here too).
* :func:`list_upstream_models` — the upstream's ``GET …/models`` ids ("fetch model list").

The async functions do no ORM work: :func:`check_target` loads (synchronously) what they need first.
:func:`run_check` and :func:`fetch_model_ids` are the sync entry points; they run the coroutine with
``async_to_sync(..., force_new_loop=True)`` on a private event loop and close that loop's pooled HTTP
clients afterwards, so they never touch the clients that the server's own loop is streaming with.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from asgiref.sync import async_to_sync

from apps.providers import crypto
from apps.providers.adapters import ChatRequest, ConnectionConfig, UpstreamError, UpstreamLoading, Usage, get_adapter
from apps.providers.adapters.client import aclose_clients
from apps.providers.adapters.errors import redact
from apps.providers.models import AIModel, Connection
from apps.providers.types import ChatMessage

DEFAULT_PROMPT = "Say hello"
DEFAULT_MAX_TOKENS = 32
DEFAULT_TIMEOUT = 60.0
LOADING_POLL = 0.5  # seconds between tries while the model loads


class DiagnosticError(Exception):
    """A diagnostic could not run or the upstream failed; ``str()`` is a safe message."""


@dataclass(frozen=True, slots=True)
class CheckTarget:
    """Everything :func:`check_model` needs, loaded outside the event loop."""

    config: ConnectionConfig
    upstream_model: str
    label: str = ""


@dataclass(frozen=True, slots=True)
class CheckResult:
    ok: bool
    reply: str = ""
    reasoning: str = ""
    latency_ms: int = 0
    first_token_ms: int | None = None
    finish_reason: str | None = None
    usage: Usage | None = None
    error: str = ""

    def summary(self) -> str:
        """One line for admin messages."""
        if not self.ok:
            return f"failed after {self.latency_ms} ms: {self.error}"
        parts = [f"reply {self.reply.strip()[:200]!r}", f"latency {self.latency_ms} ms"]
        if self.first_token_ms is not None:
            parts.append(f"first token {self.first_token_ms} ms")
        parts.append(f"finish {self.finish_reason}")
        parts.append(usage_text(self.usage))
        return ", ".join(parts)


def usage_text(usage: Usage | None) -> str:
    if usage is None:
        return "usage not reported"
    return f"usage {usage.prompt_tokens} prompt + {usage.completion_tokens} completion = {usage.total_tokens} tokens"


def check_target(model: AIModel) -> CheckTarget:
    """Sync: decrypt the key and build the target (raises :class:`DiagnosticError`)."""
    connection = model.connection
    try:
        config = connection.config()
    except crypto.DecryptionError as exc:
        raise DiagnosticError(str(exc)) from None
    return CheckTarget(config=config, upstream_model=model.upstream_model, label=model.model_id)


def _safe(exc: BaseException, config: ConnectionConfig | None) -> str:
    if isinstance(exc, UpstreamError | DiagnosticError):
        return str(exc)
    secrets = (config.api_key,) if config is not None else ()
    text = redact(" ".join(str(exc).split()), secrets)[:300]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


async def check_model(
    target: CheckTarget | AIModel,
    *,
    stream: bool,
    prompt: str = DEFAULT_PROMPT,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    time_limit: float = DEFAULT_TIMEOUT,
) -> CheckResult:
    """Send ``prompt`` to the model's upstream and measure the answer. Never raises for upstream
    failures: they come back as ``CheckResult(ok=False, error=…)``.

    An ``AIModel`` is accepted only with its ``connection`` already loaded (``select_related``)."""
    if isinstance(target, AIModel):
        if not AIModel.connection.is_cached(target):  # type: ignore[attr-defined]
            raise TypeError("check_model needs the model's connection loaded (select_related) or a CheckTarget")
        try:
            target = check_target(target)
        except DiagnosticError as exc:
            return CheckResult(ok=False, error=str(exc))
    request = ChatRequest(
        messages=(ChatMessage("user", prompt),), model=target.upstream_model, max_tokens=max_tokens, temperature=0.7
    )
    started = time.perf_counter()
    first_token_ms: int | None = None

    def elapsed() -> int:
        return round((time.perf_counter() - started) * 1000)

    try:
        async with asyncio.timeout(time_limit):
            adapter = get_adapter(target.config)
            while True:  # a model still loading (the local one just started) is waited for
                try:
                    if stream:
                        content: list[str] = []
                        reasoning: list[str] = []
                        finish = None
                        usage = None
                        async for delta in adapter.stream(request):
                            if first_token_ms is None and (delta.content or delta.reasoning):
                                first_token_ms = elapsed()
                            content.append(delta.content)
                            reasoning.append(delta.reasoning)
                            if delta.finish_reason is not None:
                                finish, usage = delta.finish_reason, delta.usage
                        return CheckResult(
                            ok=True,
                            reply="".join(content),
                            reasoning="".join(reasoning),
                            latency_ms=elapsed(),
                            first_token_ms=first_token_ms,
                            finish_reason=finish,
                            usage=usage,
                        )
                    completion = await adapter.complete(request)
                    return CheckResult(
                        ok=True,
                        reply=completion.content,
                        reasoning=completion.reasoning,
                        latency_ms=elapsed(),
                        finish_reason=completion.finish_reason,
                        usage=completion.usage,
                    )
                except UpstreamLoading as exc:
                    await asyncio.sleep(min(exc.retry_after or LOADING_POLL, LOADING_POLL))
    except TimeoutError:
        return CheckResult(
            ok=False,
            latency_ms=elapsed(),
            first_token_ms=first_token_ms,
            error=f"no complete answer within {time_limit:g} s",
        )
    except Exception as exc:  # an operator tool: report every failure, never crash the admin
        return CheckResult(
            ok=False, latency_ms=elapsed(), first_token_ms=first_token_ms, error=_safe(exc, target.config)
        )


async def list_upstream_models(config: ConnectionConfig, *, time_limit: float = DEFAULT_TIMEOUT) -> list[str]:
    """Model ids offered by the upstream (raises :class:`DiagnosticError` with a safe message)."""
    try:
        async with asyncio.timeout(time_limit):
            return await get_adapter(config).list_models()
    except TimeoutError:
        raise DiagnosticError(f"no answer within {time_limit:g} s") from None
    except Exception as exc:
        raise DiagnosticError(_safe(exc, config)) from None


def _run_private[T](factory: Callable[[], Awaitable[T]]) -> T:
    async def runner() -> T:
        try:
            return await factory()
        finally:
            await aclose_clients()

    return async_to_sync(runner, force_new_loop=True)()


def run_check(
    model: AIModel,
    *,
    stream: bool = False,
    prompt: str = DEFAULT_PROMPT,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    time_limit: float = DEFAULT_TIMEOUT,
) -> CheckResult:
    """Sync wrapper of :func:`check_model` (admin action, llm_check)."""
    try:
        target = check_target(model)
    except DiagnosticError as exc:
        return CheckResult(ok=False, error=str(exc))
    return _run_private(
        lambda: check_model(target, stream=stream, prompt=prompt, max_tokens=max_tokens, time_limit=time_limit)
    )


def fetch_model_ids(connection: Connection, *, time_limit: float = DEFAULT_TIMEOUT) -> list[str]:
    """Sync: the upstream's model ids for ``connection`` (raises :class:`DiagnosticError`)."""
    try:
        config = connection.config()
    except crypto.DecryptionError as exc:
        raise DiagnosticError(str(exc)) from None
    return _run_private(lambda: list_upstream_models(config, time_limit=time_limit))
