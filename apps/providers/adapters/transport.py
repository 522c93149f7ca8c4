"""HTTP plumbing shared by the adapters: open a pooled request, map failures to the taxonomy,
and relay an SSE response through a per-protocol :class:`StreamHandler` (no Django imports)."""

from __future__ import annotations

import abc
import asyncio
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager, suppress
from typing import Any

import httpx
import orjson

from apps.providers.adapters.base import ConnectionConfig, Delta
from apps.providers.adapters.client import get_pool
from apps.providers.adapters.errors import (
    UpstreamBadRequest,
    UpstreamConnectError,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamTimeout,
    error_from_response,
    is_error_payload,
    safe_message,
)
from apps.providers.sse import SSEEvent, SSEParser

MAX_ERROR_BODY = 64 * 1024
DRAIN_TIMEOUT = 1.0  # after the terminal event, wait this long for the body's end (connection reuse)


def json_headers(config: ConnectionConfig, auth: Mapping[str, str]) -> dict[str, Any]:
    """Request headers: JSON, the adapter's auth, then the connection's extra headers (values that
    are not ASCII are sent as UTF-8 bytes instead of failing)."""
    headers: dict[str, Any] = {"content-type": "application/json", "accept": "application/json"}
    headers.update(auth)
    for name, value in config.extra_headers.items():
        value = str(value)
        headers[name.lower()] = value if value.isascii() else value.encode("utf-8")
    return headers


def _map_httpx(exc: httpx.HTTPError, config: ConnectionConfig, provider: str) -> UpstreamError:
    secrets = (config.api_key,)
    if isinstance(exc, httpx.ConnectTimeout):
        return UpstreamTimeout(f"{provider}: connect timed out after {config.connect_timeout:g} s", provider=provider)
    if isinstance(exc, httpx.ReadTimeout):
        return UpstreamTimeout(
            f"{provider}: no data received for {config.read_timeout:g} s (read timeout)", provider=provider
        )
    if isinstance(exc, httpx.PoolTimeout):
        return UpstreamTimeout(f"{provider}: no free connection in the client pool", provider=provider)
    if isinstance(exc, httpx.TimeoutException):
        return UpstreamTimeout(f"{provider}: request timed out ({type(exc).__name__})", provider=provider)
    if isinstance(exc, httpx.ConnectError):
        detail = safe_message(str(exc) or type(exc).__name__, secrets)
        return UpstreamConnectError(f"{provider}: could not connect ({detail})", provider=provider)
    if isinstance(exc, httpx.RemoteProtocolError):
        text = str(exc)
        if "peer closed" in text or "incomplete" in text or "Server disconnected" in text:
            return UpstreamConnectError(f"{provider}: connection closed mid-response", provider=provider)
        return UpstreamProtocolError(
            f"{provider}: invalid HTTP response ({safe_message(text, secrets)[:200]})", provider=provider
        )
    if isinstance(exc, httpx.NetworkError):
        return UpstreamConnectError(
            f"{provider}: connection broke ({type(exc).__name__}: {safe_message(str(exc), secrets)[:200]})",
            provider=provider,
        )
    if isinstance(exc, httpx.DecodingError):
        return UpstreamProtocolError(f"{provider}: could not decode the response body", provider=provider)
    if isinstance(exc, httpx.UnsupportedProtocol | httpx.InvalidURL):
        return UpstreamBadRequest(f"{provider}: invalid base URL for this connection", provider=provider)
    return UpstreamConnectError(f"{provider}: HTTP error ({type(exc).__name__})", provider=provider)


async def _read_limited(response: httpx.Response) -> bytes:
    out = bytearray()
    async for chunk in response.aiter_bytes():
        out += chunk
        if len(out) >= MAX_ERROR_BODY:
            break
    return bytes(out)


@asynccontextmanager
async def open_response(
    config: ConnectionConfig,
    method: str,
    url: str,
    *,
    headers: Mapping[str, str],
    content: bytes | None = None,
    provider: str,
) -> AsyncIterator[httpx.Response]:
    """Open a streamed response on a pooled client; non-2xx answers raise the mapped error, and
    httpx exceptions (also those raised while the caller reads the body) become taxonomy errors."""
    async with get_pool(config).lease() as client:
        try:
            async with client.stream(method, url, headers=headers, content=content) as response:
                status = response.status_code
                if status >= 300:
                    body = await _read_limited(response)
                    raise error_from_response(
                        status, body, headers=response.headers, provider=provider, secrets=(config.api_key,)
                    )
                yield response
        except httpx.HTTPError as exc:
            raise _map_httpx(exc, config, provider) from None


def loads(data: str | bytes, provider: str) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        snippet = (data if isinstance(data, str) else data.decode("utf-8", "replace"))[:80]
        raise UpstreamProtocolError(f"{provider} sent invalid JSON: {snippet!r}", provider=provider) from None


async def request_json(
    config: ConnectionConfig,
    method: str,
    url: str,
    *,
    headers: Mapping[str, str],
    body: Any = None,
    provider: str,
) -> Any:
    """One non-streaming call; returns the decoded JSON (error payloads in a 200 also raise)."""
    content = orjson.dumps(body) if body is not None else None
    async with open_response(config, method, url, headers=headers, content=content, provider=provider) as r:
        raw = await r.aread()
    obj = loads(raw, provider)
    if is_error_payload(obj):
        raise error_from_response(None, obj, provider=provider, secrets=(config.api_key,))
    return obj


class StreamHandler(abc.ABC):
    """Per-request state machine of one wire format: turns SSE events into deltas."""

    __slots__ = ("done", "finish", "provider", "secrets", "usage")

    def __init__(self, provider: str, secrets: tuple[str | None, ...]) -> None:
        self.provider = provider
        self.secrets = secrets
        self.done = False  # the terminal event was seen
        self.finish: Any = None
        self.usage: Any = None

    @abc.abstractmethod
    def on_event(self, event: SSEEvent) -> Delta | None:
        """The delta an event carries, if any (raise the upstream's in-stream errors)."""

    @abc.abstractmethod
    def final(self) -> Delta:
        """The last delta (finish reason, usage); raise if the stream ended too early."""

    def error(self, obj: Any) -> UpstreamError:
        return error_from_response(None, obj, provider=self.provider, secrets=self.secrets)


async def _drain(chunks: AsyncIterator[bytes]) -> None:
    with suppress(httpx.HTTPError, TimeoutError):
        async with asyncio.timeout(DRAIN_TIMEOUT):
            async for _ in chunks:
                pass


async def stream_deltas(
    config: ConnectionConfig,
    url: str,
    *,
    headers: Mapping[str, str],
    body: Any,
    handler: StreamHandler,
) -> AsyncIterator[Delta]:
    """POST ``body`` and relay the SSE answer as deltas (an async generator: nothing is sent until
    it is iterated; closing it closes the upstream response)."""
    provider = handler.provider
    content = orjson.dumps(body)
    async with open_response(config, "POST", url, headers=headers, content=content, provider=provider) as r:
        parser = SSEParser()
        feed = parser.feed
        on_event = handler.on_event
        ctype = r.headers.get("content-type", "")
        if "json" in ctype and "event-stream" not in ctype:
            # An error answered as plain JSON with a 200 (some servers do), or a mislabelled stream.
            raw = await r.aread()
            try:
                obj = orjson.loads(raw)
            except orjson.JSONDecodeError:
                obj = None
            if obj is not None:
                if is_error_payload(obj):
                    raise handler.error(obj)
                raise UpstreamProtocolError(
                    f"{provider} answered JSON where an event stream was expected", provider=provider
                )
            for event in [*feed(raw), *parser.flush()]:
                delta = on_event(event)
                if delta is not None:
                    yield delta
                if handler.done:
                    break
            yield handler.final()
            return
        chunks = r.aiter_bytes()
        async for chunk in chunks:
            for event in feed(chunk):
                delta = on_event(event)
                if delta is not None:
                    yield delta
                if handler.done:
                    yield handler.final()
                    await _drain(chunks)  # let the connection go back to the pool
                    return
        for event in parser.flush():
            delta = on_event(event)
            if delta is not None:
                yield delta
            if handler.done:
                break
        yield handler.final()
