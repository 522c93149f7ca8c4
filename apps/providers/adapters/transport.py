"""HTTP plumbing shared by the adapters: open a pooled request, map failures to the taxonomy,
and relay an SSE response through a per-protocol :class:`StreamHandler` (no Django imports)."""

from __future__ import annotations

import abc
import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from contextlib import asynccontextmanager, suppress
from typing import Any

import aiohttp
import orjson
from aiohttp.abc import AbstractStreamWriter
from aiohttp.http_exceptions import ContentEncodingError
from aiohttp.payload import BytesPayload

from apps.providers.adapters.base import Adapter, ChatRequest, Completion, ConnectionConfig, Delta
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
from apps.providers.adapters.sse import SSEEvent, SSEParser

MAX_ERROR_BODY = 64 * 1024
DRAIN_TIMEOUT = 1.0  # after the terminal event, wait this long for the body's end (connection reuse)
WRITE_TIMEOUT = 30.0  # the longest the upstream may take to accept a large request body
_UNBUFFERED = 0x10000  # aiohttp's writer waits for the socket only once it holds more than 64 KiB


class WriteTimeout(TimeoutError):
    """The upstream did not read the request body in time."""


class _TimedBody(BytesPayload):
    """A request body whose write gives up after ``timeout`` s (httpx had a write timeout, aiohttp
    has none, and its read timeout only starts once the body is sent). Used for bodies over 64 KiB:
    smaller ones never wait for the socket."""

    def __init__(self, value: bytes, timeout: float) -> None:
        super().__init__(value)
        self.write_timeout = timeout

    async def write_with_length(self, writer: AbstractStreamWriter, content_length: int | None) -> None:
        try:
            async with asyncio.timeout(self.write_timeout):
                await super().write_with_length(writer, content_length)
        except TimeoutError:
            raise WriteTimeout() from None


def json_headers(config: ConnectionConfig, auth: Mapping[str, str]) -> dict[str, str]:
    """Request headers: JSON, the adapter's auth, then the connection's extra headers (aiohttp
    writes header values as UTF-8, so values that are not ASCII go out as UTF-8 bytes)."""
    headers: dict[str, str] = {"content-type": "application/json", "accept": "application/json"}
    headers.update(auth)
    for name, value in config.extra_headers.items():
        headers[name.lower()] = str(value)
    return headers


def _closed_mid_response(provider: str) -> UpstreamError:
    return UpstreamConnectError(f"{provider}: connection closed mid-response", provider=provider)


def _map_aiohttp(exc: aiohttp.ClientError, config: ConnectionConfig, provider: str) -> UpstreamError:
    secrets = (config.api_key,)
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return UpstreamTimeout(f"{provider}: connect timed out after {config.connect_timeout:g} s", provider=provider)
    if isinstance(exc, aiohttp.SocketTimeoutError):
        return UpstreamTimeout(
            f"{provider}: no data received for {config.read_timeout:g} s (read timeout)", provider=provider
        )
    if isinstance(exc, aiohttp.ServerTimeoutError):
        return UpstreamTimeout(f"{provider}: request timed out ({type(exc).__name__})", provider=provider)
    if isinstance(exc, aiohttp.ClientConnectorError):  # refused, DNS, TLS handshake/certificate, proxy
        detail = safe_message(str(exc) or type(exc).__name__, secrets)
        return UpstreamConnectError(f"{provider}: could not connect ({detail})", provider=provider)
    if isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientConnectionResetError):
        return _closed_mid_response(provider)
    if isinstance(exc, aiohttp.ClientPayloadError):
        if isinstance(exc.__cause__, ContentEncodingError) or "content-encoding" in str(exc):
            return UpstreamProtocolError(f"{provider}: could not decode the response body", provider=provider)
        return _closed_mid_response(provider)  # incomplete body: peer closed or reset
    if isinstance(exc, aiohttp.ClientHttpProxyError):
        detail = safe_message(f"proxy answered {exc.status} {exc.message}", secrets)[:200]
        return UpstreamConnectError(f"{provider}: could not connect ({detail})", provider=provider)
    if isinstance(exc, aiohttp.ClientResponseError):  # the response could not be parsed
        text = exc.message if isinstance(exc.message, str) else str(exc)
        return UpstreamProtocolError(
            f"{provider}: invalid HTTP response ({safe_message(text, secrets)[:200]})", provider=provider
        )
    if isinstance(exc, aiohttp.ClientConnectionError):
        return UpstreamConnectError(
            f"{provider}: connection broke ({type(exc).__name__}: {safe_message(str(exc), secrets)[:200]})",
            provider=provider,
        )
    if isinstance(exc, aiohttp.InvalidURL | aiohttp.NonHttpUrlClientError):
        return UpstreamBadRequest(f"{provider}: invalid base URL for this connection", provider=provider)
    return UpstreamConnectError(f"{provider}: HTTP error ({type(exc).__name__})", provider=provider)


async def _read_limited(response: aiohttp.ClientResponse) -> bytes:
    out = bytearray()
    async for chunk in response.content.iter_any():
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
) -> AsyncIterator[aiohttp.ClientResponse]:
    """Open a response on a pooled session (the body is read by the caller, as it arrives);
    non-2xx answers raise the mapped error, and aiohttp exceptions (also those raised while the
    caller reads the body) become taxonomy errors. On exit the connection goes back to the pool if
    the body was read to its end, and is closed at once otherwise."""
    pool = get_pool(config)
    data: bytes | BytesPayload | None = content
    if content is not None and len(content) > _UNBUFFERED:
        data = _TimedBody(content, max(float(config.connect_timeout), WRITE_TIMEOUT))
    response: aiohttp.ClientResponse | None = None
    async with pool.lease() as session:
        try:
            try:
                try:
                    response = await session.request(
                        method, url, headers=headers, data=data, allow_redirects=False, **pool.request_options
                    )
                except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
                    # A pooled keep-alive connection the server had closed meanwhile (llama.cpp closes
                    # after a stream without saying so: the request meets EOF or a reset). Once more, at
                    # once, on another connection; a failure to connect at all is not retried here.
                    if isinstance(exc, aiohttp.ClientConnectorError):
                        raise
                    response = await session.request(
                        method, url, headers=headers, data=data, allow_redirects=False, **pool.request_options
                    )
            except WriteTimeout:
                raise UpstreamTimeout(f"{provider}: request timed out (WriteTimeout)", provider=provider) from None
            except ValueError as exc:  # e.g. a header value with a line break (InvalidURL is a ClientError)
                if isinstance(exc, aiohttp.ClientError):
                    raise
                raise UpstreamConnectError(
                    f"{provider}: HTTP error ({type(exc).__name__})", provider=provider
                ) from None
            status = response.status
            if status >= 300:
                body = await _read_limited(response)
                raise error_from_response(
                    status, body, headers=response.headers, provider=provider, secrets=(config.api_key,)
                )
            yield response
        except aiohttp.ClientError as exc:
            raise _map_aiohttp(exc, config, provider) from None
        finally:
            if response is not None:
                if response.content.is_eof():
                    response.release()
                else:
                    response.close()


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
        raw = await r.read()
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
    with suppress(aiohttp.ClientError, TimeoutError):
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
) -> AsyncGenerator[Delta, None]:
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
            raw = await r.read()
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
        chunks = r.content.iter_any()  # each read as it arrives, fed to the parser as is
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


class HttpAdapter(Adapter):
    """An adapter over one JSON HTTP API. Subclasses say the wire format — where to send
    (:meth:`url`), what (:meth:`body`), how to read a stream (:meth:`stream_handler`) and an answer
    (:meth:`completion`), and how to authenticate (:meth:`auth_headers`); this class sends it with the
    connection's headers and timeouts."""

    provider: str = "upstream"
    #: The endpoint below the base URL (``chat/completions``); adapters whose URL depends on the
    #: request (Gemini's model in the path) override :meth:`url` instead.
    path: str = ""

    def __init__(self, config: ConnectionConfig) -> None:
        super().__init__(config)
        self._headers = json_headers(config, self.auth_headers())
        self._stream_headers = {**self._headers, "accept": "text/event-stream"}
        self._url = f"{self.base_url}/{self.path}"

    @abc.abstractmethod
    def auth_headers(self) -> dict[str, str]:
        """The headers that authenticate (and version) a request, from ``self.config``."""

    def url(self, request: ChatRequest, *, stream: bool) -> str:
        return self._url

    @abc.abstractmethod
    def body(self, request: ChatRequest, *, stream: bool) -> dict[str, Any]: ...

    def refuse_prompt(self, request: ChatRequest) -> None:
        """The chat formats' guard against a raw text-completion prompt (the API layer sends one only
        to a text-completion connection): :class:`UpstreamBadRequest`, not retryable."""
        if request.prompt is not None:
            raise UpstreamBadRequest(
                f"{self.provider}: this connection does not do text completion (a raw prompt needs an"
                " openai_text connection)",
                upstream_code="text_completion_unsupported",
                provider=self.provider,
            )

    @abc.abstractmethod
    def stream_handler(self) -> StreamHandler: ...

    @abc.abstractmethod
    def completion(self, obj: Any) -> Completion:
        """The non-streamed answer's JSON as a completion (raise `UpstreamProtocolError` if malformed)."""

    def stream(self, request: ChatRequest) -> AsyncGenerator[Delta, None]:
        return stream_deltas(
            self.config,
            self.url(request, stream=True),
            headers=self._stream_headers,
            body=self.body(request, stream=True),
            handler=self.stream_handler(),
        )

    async def complete(self, request: ChatRequest) -> Completion:
        obj = await request_json(
            self.config,
            "POST",
            self.url(request, stream=False),
            headers=self._headers,
            body=self.body(request, stream=False),
            provider=self.provider,
        )
        return self.completion(obj)

    async def get_json(self, path: str) -> Any:
        """``GET {base_url}/{path}`` with the adapter's headers (model lists)."""
        return await request_json(
            self.config, "GET", f"{self.base_url}/{path}", headers=self._headers, provider=self.provider
        )
