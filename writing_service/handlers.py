from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection, Iterable
from contextlib import suppress
from typing import Any

from asgiref.sync import iscoroutinefunction
from django.conf import settings
from django.core.exceptions import RequestAborted
from django.core.handlers.asgi import ASGIHandler, get_script_prefix
from django.http import HttpRequest, HttpResponseBase
from django.test.utils import override_settings
from django.urls import ResolverMatch, URLPattern, URLResolver, get_resolver, set_script_prefix
from django.urls.resolvers import RoutePattern

API_PREFIXES = ("/api/", "/v1/")  # this service's API and the OpenAI-compatible one


class ApiASGIHandler(ASGIHandler):
    """Django's ASGI handler with `settings.API_MIDDLEWARE` instead of `settings.MIDDLEWARE`."""

    def load_middleware(self, is_async: bool = False) -> None:
        with override_settings(MIDDLEWARE=settings.API_MIDDLEWARE):
            super().load_middleware(is_async=is_async)


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
        await self.handle(scope, receive, send)

    async def handle(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """Django's `ASGIHandler.handle` (5.2) without the `request_started` / `request_finished`
        signals, each a thread hop: their receivers reset query logs and close database connections
        and caches, which the views here don't leave open (every database step closes its own
        connection; the cache client is shared). The client-disconnect handling is Django's."""
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
    else to the default application."""

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
        await self.default(scope, receive, send)
