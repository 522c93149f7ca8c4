"""Typed errors and size limits of the card codec.

Every failure on untrusted bytes surfaces as :class:`CardError` with a stable ``code``; the Django layer
maps all of them to HTTP 400 with ``code`` and ``message`` in the error envelope.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

_MIB = 1024 * 1024


class CardErrorCode(StrEnum):
    NOT_A_CARD = "not_a_card"
    UNSUPPORTED_FORMAT = "unsupported_format"
    BAD_PNG = "bad_png"
    NO_CARD_CHUNK = "no_card_chunk"
    BAD_BASE64 = "bad_base64"
    BAD_JSON = "bad_json"
    TOO_LARGE = "too_large"
    BAD_ZIP = "bad_zip"
    ZIP_BOMB = "zip_bomb"
    TOO_MANY_ENTRIES = "too_many_entries"


class CardError(Exception):
    """A card could not be read or written. ``code`` is one of :class:`CardErrorCode`."""

    def __init__(self, code: CardErrorCode | str, message: str) -> None:
        super().__init__(message)
        self.code = CardErrorCode(code)
        self.message = message

    def __repr__(self) -> str:
        return f"CardError({self.code.value!r}, {self.message!r})"

    def __reduce__(self) -> tuple[type[CardError], tuple[str, str]]:
        return (CardError, (self.code.value, self.message))


@dataclass(frozen=True, slots=True)
class Limits:
    """Upper bounds applied while reading untrusted card files (bytes)."""

    max_file_bytes: int = 20 * _MIB
    """Whole upload (PNG, JSON or CHARX)."""
    max_json_bytes: int = 10 * _MIB
    """Decoded card JSON (UTF-8 bytes), after base64 / inflation."""
    max_card_text_bytes: int = 24 * _MIB
    """Card text read from a PNG's ``ccv3``/``chara`` chunks, inflated or stored, summed over every
    chunk tried: room for one chunk of the largest accepted card (base64 of ``max_json_bytes``)."""
    max_card_chunks: int = 16
    """``ccv3``/``chara`` chunks tried before giving up (a card has one or two)."""
    max_zip_entries: int = 2000
    """Members in a CHARX archive (directories included)."""
    max_zip_directory_bytes: int = 1 * _MIB
    """Size of a CHARX archive's central directory (the member list ``zipfile`` reads whole, before
    the member count can be checked): 2,000 members with names of a few hundred bytes."""
    max_zip_entry_bytes: int = 32 * _MIB
    """Uncompressed size of any single CHARX member we read (and of any declared member)."""
    max_zip_total_bytes: int = 64 * _MIB
    """Uncompressed total, declared over all members and actually read over the members we extract."""
    max_zip_ratio: int = 100
    """Largest accepted uncompressed/compressed ratio of a member ..."""
    zip_ratio_min_bytes: int = 1 * _MIB
    """... checked only for members whose uncompressed size exceeds this (small JSON compresses well)."""
    max_png_chunks: int = 100_000
    """Chunks in a PNG (APNG frames are chunks too)."""


DEFAULT_LIMITS = Limits()
