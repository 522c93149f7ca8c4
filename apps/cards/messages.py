"""The codec's Django side, its only Django-aware module: the upload limit from settings
(``CARD_MAX_BYTES``) and codec errors as the translated 400 envelope.

The rest of the package is pure (stdlib only) and must not import this module.
"""

from __future__ import annotations

from django.conf import settings
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from apps.cards.errors import CardError, Limits
from apps.core.errors import ApplicationError


def card_limits() -> Limits:
    return Limits(max_file_bytes=int(getattr(settings, "CARD_MAX_BYTES", 20 * 1024 * 1024)))


def _size_text(limits: Limits) -> str:
    size = limits.max_file_bytes
    if size >= 1024 * 1024:
        return f"{round(size / (1024 * 1024), 1):g} MB"
    if size >= 1024:
        return f"{round(size / 1024, 1):g} KB"
    return f"{size} bytes"


_CARD_MESSAGES = {
    "not_a_card": gettext_lazy("The file is not a character card (expected a PNG/APNG, JSON or CHARX card)."),
    "unsupported_format": gettext_lazy("This file format is not supported; upload a PNG/APNG, JSON or CHARX card."),
    "bad_png": gettext_lazy("The PNG file is corrupt."),
    "no_card_chunk": gettext_lazy("The PNG image has no character card data (no 'ccv3' or 'chara' text chunk)."),
    "bad_base64": gettext_lazy("The card data in the PNG is not valid base64."),
    "bad_json": gettext_lazy("The card JSON is invalid."),
    "bad_zip": gettext_lazy("The CHARX archive is corrupt or uses an unsupported zip feature."),
    "zip_bomb": gettext_lazy("The CHARX archive is suspiciously large when unpacked."),
    "too_many_entries": gettext_lazy("The CHARX archive has too many entries."),
    "too_large": gettext_lazy("The card data is too large."),
}


def card_error_message(code: str, fallback: str) -> str:
    """The translated sentence for a codec error code (the codec's own English sentence as fallback)."""
    message = _CARD_MESSAGES.get(code)
    return str(message) if message is not None else fallback


def card_error(exc: CardError) -> ApplicationError:
    """A codec error as the 400 envelope: translated ``message``, stable ``code``, and the codec's exact
    English sentence in ``reason`` (it names the chunk, the size, the member …)."""
    code = exc.code.value
    return ApplicationError(
        card_error_message(code, exc.message), status_code=400, code=code, extra={"code": code, "reason": exc.message}
    )


def card_too_large_error() -> ApplicationError:
    """The upload is over ``CARD_MAX_BYTES`` (checked before the file is read)."""
    size = _size_text(card_limits())
    return ApplicationError(
        _("The file is larger than %(size)s.") % {"size": size},
        code="too_large",
        extra={"code": "too_large", "reason": f"The file is larger than {size}."},
    )
