"""The API's JSON parser: orjson, and a size limit checked before the body is read whole.

Django applies `DATA_UPLOAD_MAX_MEMORY_SIZE` only to `request.body`; DRF parsers read the stream
instead, so without a limit here a JSON body of any size would be read into memory (and then parsed
into a many times larger object tree). `API_BODY_MAX_BYTES` bounds it: a declared `Content-Length`
over the limit is refused before anything is read, and at most limit + 1 bytes are read otherwise.
Under ASGI the handlers refuse such bodies earlier still (`writing_service.handlers`); this check
covers every other way in (WSGI, the test client).
"""

from __future__ import annotations

from typing import Any

import orjson
from django.conf import settings
from django.utils.translation import gettext as _
from rest_framework import parsers
from rest_framework.exceptions import ParseError

from apps.core.api.exceptions import body_too_large


def body_max_bytes() -> int:
    """The largest API request body other than an upload (`API_BODY_MAX_BYTES`)."""
    return int(settings.API_BODY_MAX_BYTES)


def _declared_length(parser_context: Any) -> int | None:
    request = (parser_context or {}).get("request")
    meta = getattr(request, "META", None) or {}
    try:
        return int(meta.get("CONTENT_LENGTH") or "")
    except ValueError:
        return None


class JSONParser(parsers.BaseParser):
    media_type = "application/json"

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        if stream is None:
            return {}
        limit = body_max_bytes()
        declared = _declared_length(parser_context)
        if declared is not None and declared > limit:
            raise body_too_large(limit)
        raw = stream.read(limit + 1)
        if len(raw) > limit:
            raise body_too_large(limit)
        if not raw:
            return {}
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise ParseError(_("Malformed JSON: %(error)s") % {"error": exc}) from None
