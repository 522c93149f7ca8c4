"""Fast JSON rendering with orjson (UTF-8, no ASCII escaping of Chinese text)."""

from __future__ import annotations

import decimal
import uuid
from typing import Any

import orjson
from django.utils.functional import Promise
from rest_framework import renderers

_OPTIONS = orjson.OPT_NON_STR_KEYS


def _default(obj: Any) -> Any:
    if isinstance(obj, Promise):
        return str(obj)
    if isinstance(obj, decimal.Decimal):
        return int(obj) if obj == obj.to_integral_value() else float(obj)
    if isinstance(obj, uuid.UUID):
        return str(obj)
    if isinstance(obj, set | frozenset | tuple):
        return list(obj)
    raise TypeError(f"Type is not JSON serializable: {type(obj).__name__}")


def dumps(data: Any) -> bytes:
    return orjson.dumps(data, default=_default, option=_OPTIONS)


class JSONRenderer(renderers.BaseRenderer):
    media_type = "application/json"
    format = "json"
    charset = None  # JSON is UTF-8 by definition

    def render(self, data: Any, accepted_media_type: str | None = None, renderer_context: Any = None) -> bytes:
        if data is None:
            return b""
        return dumps(data)


class EventStreamRenderer(renderers.BaseRenderer):
    """Lets DRF content negotiation accept `Accept: text/event-stream` on streaming endpoints.

    Streaming views return a `StreamingHttpResponse` themselves; errors raised before the stream
    starts are rendered as the JSON envelope (see `JSONRenderer`), never as SSE.
    """

    media_type = "text/event-stream"
    format = "sse"
    charset = None

    def render(self, data: Any, accepted_media_type: str | None = None, renderer_context: Any = None) -> bytes:
        if data is None:
            return b""
        return dumps(data)
