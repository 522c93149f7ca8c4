from __future__ import annotations

import asyncio
import tempfile
import uuid
from collections.abc import Awaitable, Callable, Collection, Iterable
from contextlib import suppress
from typing import Any

import orjson
from asgiref.sync import iscoroutinefunction
from django.conf import settings
from django.core.cache import DEFAULT_CACHE_ALIAS, caches
from django.core.exceptions import RequestAborted
from django.core.handlers.asgi import ASGIHandler, get_script_prefix
from django.http import HttpRequest, HttpResponseBase
from django.test.utils import override_settings
from django.urls import ResolverMatch, URLPattern, URLResolver, get_resolver, set_script_prefix
from django.urls.resolvers import RoutePattern
from django.utils import translation

from apps.core.cache import loop_backend
from writing_service.middleware import VALID_REQUEST_ID

API_PREFIXES = ("/api/", "/v1/")  # this service's API and the OpenAI-compatible one
OPENAI_PREFIX = "/v1/"
UPLOAD_OVERHEAD = 1024 * 1024  # multipart framing and the other form fields, on top of CARD_MAX_BYTES

type ASGIApp = Callable[[dict[str, Any], Any, Any], Awaitable[None]]


# ------------------------------------------------------------------------------------- body limits


class BodyTooLarge(Exception):
    """The request body grew past its limit while it was being received."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"request body over {limit} bytes")
        self.limit = limit


def _header(scope: dict[str, Any], name: bytes) -> bytes | None:
    for key, value in scope.get("headers") or ():
        if key.lower() == name:
            return bytes(value)
    return None


def body_limit(scope: dict[str, Any]) -> int:
    """The largest body accepted for this request, in bytes.

    API paths: multipart uploads (character cards, lorebooks) `CARD_MAX_BYTES` plus 1 MiB of framing;
    any other body (JSON) `API_BODY_MAX_BYTES`. Other paths (admin, docs): Django's
    `DATA_UPLOAD_MAX_MEMORY_SIZE`, which its form parsing applies anyway but only once the whole
    body is on disk.
    """
    if not scope.get("path", "").startswith(API_PREFIXES):
        return int(settings.DATA_UPLOAD_MAX_MEMORY_SIZE)
    content_type = (_header(scope, b"content-type") or b"").lower()
    if content_type.startswith(b"multipart/form-data"):
        return int(settings.CARD_MAX_BYTES) + UPLOAD_OVERHEAD
    return int(settings.API_BODY_MAX_BYTES)


def _declared_length(scope: dict[str, Any]) -> int | None:
    value = _header(scope, b"content-length")
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        return None


class _LimitedReceive:
    """`receive` that counts the body bytes and raises `BodyTooLarge` past `limit` (a chunked body,
    or one that outgrows its own `Content-Length`)."""

    __slots__ = ("limit", "receive", "seen")

    def __init__(self, receive: Any, limit: int) -> None:
        self.receive = receive
        self.limit = limit
        self.seen = 0

    async def __call__(self) -> dict[str, Any]:
        message = await self.receive()
        if message["type"] == "http.request":
            self.seen += len(message.get("body") or b"")
            if self.seen > self.limit:
                raise BodyTooLarge(self.limit)
        return message


def _too_large_body(scope: dict[str, Any], limit: int) -> bytes:
    """The 413 in the API's envelope, or in OpenAI's shape under `/v1/`, in the client's language."""
    from apps.core.api.exceptions import body_too_large_message, envelope
    from apps.openai_api.errors import openai_error

    request = HttpRequest()
    language = _header(scope, b"accept-language")
    if language:
        request.META["HTTP_ACCEPT_LANGUAGE"] = language.decode("latin-1")
    with translation.override(translation.get_language_from_request(request, check_path=False)):
        message = body_too_large_message(limit)
    if scope.get("path", "").startswith(OPENAI_PREFIX):
        body = openai_error(413, message, code="request_too_large")
    else:
        body = envelope(413, message, limitBytes=limit)
    return orjson.dumps(body)


def _answer_headers(scope: dict[str, Any]) -> list[tuple[bytes, bytes]]:
    """What the middleware would have added, for an answer given before Django runs: the request id, and
    CORS for an allowed origin (else a browser frontend could not read the 413 at all)."""
    incoming = (_header(scope, b"x-request-id") or b"").decode("latin-1")
    request_id = incoming if VALID_REQUEST_ID.match(incoming) else uuid.uuid4().hex
    headers = [(b"x-request-id", request_id.encode("ascii"))]
    origin = _header(scope, b"origin")
    if origin and origin.decode("latin-1") in settings.CORS_ALLOWED_ORIGINS:
        headers += [
            (b"access-control-allow-origin", origin),
            (b"access-control-expose-headers", ", ".join(settings.CORS_EXPOSE_HEADERS).encode("latin-1")),
            (b"vary", b"origin"),
        ]
    return headers


async def send_too_large(scope: dict[str, Any], send: Any, limit: int) -> None:
    """Answer 413 and close the connection (the rest of the body is never read)."""
    body = _too_large_body(scope, limit)
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode("ascii")),
                (b"x-content-type-options", b"nosniff"),
                (b"connection", b"close"),
                *_answer_headers(scope),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def limit_body(scope: dict[str, Any], receive: Any, send: Any, app: ASGIApp) -> None:
    """Run `app` with the body limit of `body_limit(scope)`: a `Content-Length` over it is refused
    before anything is read, a body that grows past it while received is refused at that point."""
    if scope["type"] != "http":
        await app(scope, receive, send)
        return
    limit = body_limit(scope)
    declared = _declared_length(scope)
    if declared is not None and declared > limit:
        await send_too_large(scope, send, limit)
        return
    started = False

    async def tracking_send(message: dict[str, Any]) -> None:
        nonlocal started
        if message["type"] == "http.response.start":
            started = True
        await send(message)

    try:
        await app(scope, _LimitedReceive(receive, limit), tracking_send)
    except BodyTooLarge as exc:
        if not started:
            await send_too_large(scope, send, exc.limit)


# ------------------------------------------------------------------------------------------ handlers


class ApiASGIHandler(ASGIHandler):
    """Django's ASGI handler with `settings.API_MIDDLEWARE` instead of `settings.MIDDLEWARE`, and the
    body limits of `body_limit` (413 before a body over them is read whole)."""

    def load_middleware(self, is_async: bool = False) -> None:
        with override_settings(MIDDLEWARE=settings.API_MIDDLEWARE):
            super().load_middleware(is_async=is_async)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        await limit_body(scope, receive, send, super().__call__)

    async def read_body(self, receive: Any) -> Any:
        """Django's `read_body` (the body in a temporary file that moves to disk past
        `FILE_UPLOAD_MAX_MEMORY_SIZE`), closing that file when the body is refused midway."""
        body_file = tempfile.SpooledTemporaryFile(  # noqa: SIM115 (returned open, as Django's)
            max_size=settings.FILE_UPLOAD_MAX_MEMORY_SIZE, mode="w+b"
        )
        try:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise RequestAborted()
                if "body" in message:
                    body_file.write(message["body"])
                if not message.get("more_body", False):
                    break
        except BaseException:
            body_file.close()
            raise
        body_file.seek(0)
        return body_file


class AsyncApiASGIHandler(ApiASGIHandler):
    """The API handler for views that are async end to end (the generation endpoints).

    Django runs every request inside a `ThreadSensitiveContext`, which starts a thread for the
    request's synchronous code and joins it at the end — about a millisecond of CPU per request.
    Async views here do their database work in `apps.core.db.db_sync_to_async` steps, which
    run on a shared thread pool, so that thread is never needed; Django's own short synchronous
    steps (request signals, closing the response) run on asgiref's shared thread.
    """

    def __init__(self) -> None:
        super().__init__()
        self._matches: dict[tuple[Any, str], ResolverMatch] = {}

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            raise ValueError(f"Django can only handle ASGI/HTTP connections, not {scope['type']}.")
        await limit_body(scope, receive, send, self.handle)

    async def handle(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """Django's `ASGIHandler.handle` (5.2) without the `request_started` / `request_finished`
        signals, each a thread hop: their receivers reset query logs and close database connections
        and caches, which the views here don't leave open (every database step closes its own
        connection; the cache client is shared). The client-disconnect handling is Django's; the body
        limit is applied around it (`__call__`), while `read_body` receives the body.

        The request's tasks read the default cache through the process's one backend object for the
        event loop (`apps.core.cache.loop_backend`): Django's `caches` keeps one per task there and
        would build one for every request."""
        caches[DEFAULT_CACHE_ALIAS] = loop_backend()  # this task's and its children's (contextvars)
        try:
            body_file = await self.read_body(receive)
        except RequestAborted:
            return
        set_script_prefix(get_script_prefix(scope))
        request, error_response = self.create_request(scope, body_file)
        if request is None:
            body_file.close()
            await self.send_response(error_response, send)
            return

        async def process_request() -> HttpResponseBase:
            response = await self.run_get_response(request)
            with suppress(asyncio.CancelledError):  # the client left while the response was sent
                await self.send_response(response, send)
            return response

        tasks = [
            asyncio.create_task(self.listen_for_disconnect(receive)),
            asyncio.create_task(process_request()),
        ]
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            if task.done():
                try:
                    task.result()
                except RequestAborted:
                    pass
                except AssertionError:
                    body_file.close()
                    raise
            else:
                task.cancel()
                with suppress(asyncio.CancelledError):
                    await task
        if not tasks[1].cancelled():
            _close_quietly(tasks[1].result())
        body_file.close()

    def resolve_request(self, request: HttpRequest) -> ResolverMatch:
        """Django walks the whole URL tree for every request (≈ 0.4 ms here); these few fixed paths
        (no captured arguments) resolve the same way every time, per URL configuration."""
        if hasattr(request, "urlconf"):
            return super().resolve_request(request)
        key = (get_resolver(), request.path_info)
        match = self._matches.get(key)
        if match is None:
            match = super().resolve_request(request)
            if not match.args and not match.kwargs:
                self._matches[key] = match
            return match
        request.resolver_match = match
        return match


def _close_quietly(response: HttpResponseBase) -> None:
    """`response.close()` without the `request_finished` signal (see `AsyncApiASGIHandler.handle`)."""
    for closer in response._resource_closers:
        with suppress(Exception):
            closer()
    response._resource_closers.clear()
    response.closed = True


def api_asgi_handler() -> ApiASGIHandler:
    return ApiASGIHandler()


def async_api_paths(urlconf: str | None = None) -> frozenset[str]:
    """The paths `PathRouter` sends to `AsyncApiASGIHandler`: those of the views marked async end to end
    (`apps.core.api.views.async_end_to_end`: every `AsyncAPIView`, and `healthz`), read from the URL
    configuration. Fixed paths only: a route with parameters, or under a regex, stays with the API
    handler, since the router matches whole paths."""
    paths: set[str] = set()

    def walk(entries: Iterable[URLPattern | URLResolver], prefix: str) -> None:
        for entry in entries:
            pattern = entry.pattern
            if not isinstance(pattern, RoutePattern) or pattern.converters:
                continue
            route = prefix + str(pattern)
            if isinstance(entry, URLResolver):
                walk(entry.url_patterns, route)
            elif _async_end_to_end(entry.callback):
                paths.add("/" + route)

    walk(get_resolver(urlconf).url_patterns, "")
    return frozenset(paths)


def _async_end_to_end(view: Callable[..., Any]) -> bool:
    view_class = getattr(view, "view_class", None)  # a class-based view's as_view() function
    marked = getattr(view, "async_end_to_end", False) or getattr(view_class, "async_end_to_end", False)
    return marked is True and iscoroutinefunction(view)


class PathRouter:
    """Send `/api/` HTTP requests to the API handler (the `async_paths` to the async one), everything
    else to the default application — with the body limit of `body_limit` (the API handlers apply
    their own)."""

    def __init__(
        self,
        *,
        api: Callable[..., Awaitable[None]],
        default: Callable[..., Awaitable[None]],
        async_api: Callable[..., Awaitable[None]] | None = None,
        async_paths: Collection[str] = (),
    ) -> None:
        self.api = api
        self.default = default
        self.async_api = async_api or api
        self.async_paths = frozenset(async_paths)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            path = scope.get("path", "")
            if path in self.async_paths:
                await self.async_api(scope, receive, send)
                return
            if path.startswith(API_PREFIXES):
                await self.api(scope, receive, send)
                return
            await limit_body(scope, receive, send, self.default)
            return
        await self.default(scope, receive, send)
