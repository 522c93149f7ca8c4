"""Reading card files (PNG/APNG, JSON, CHARX) into a :class:`ParsedCard`, and writing PNG cards."""

from __future__ import annotations

import base64
import copy
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any, Literal

from . import png
from .charx import CARD_MEMBER, CharxReader, is_zip
from .errors import DEFAULT_LIMITS, CardError, CardErrorCode, Limits
from .model import Spec, export_card_json, normalize_card

SourceFormat = Literal["png", "apng", "json", "charx"]

_EMBEDDED_PREFIXES = ("embeded://", "embedded://")  # the spec's spelling, and the obvious typo fix
_OTHER_IMAGES = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
)


@dataclass(frozen=True, slots=True)
class CardAsset:
    """One entry of the card's V3 ``assets`` list; ``data`` is filled for CHARX members only."""

    type: str
    uri: str
    name: str
    ext: str
    path: str | None = None  # the archive path of an ``embeded://`` asset
    data: bytes | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class ParsedCard:
    card_v3: dict[str, Any]
    """Normalised V3 document (``{"spec": "chara_card_v3", "spec_version": "3.0", "data": {...}}``)."""
    original: dict[str, Any]
    """The imported JSON object, verbatim."""
    source_format: SourceFormat
    spec: Spec
    avatar_png: bytes | None
    """PNG avatar: the PNG without its card chunks, or a CHARX icon that is a PNG; else ``None``."""
    assets: tuple[CardAsset, ...] = ()
    hybrid: bool = False
    """V2/V3 wrapper with ST's top-level V1 copies."""
    warnings: tuple[str, ...] = ()


def _json_error(message: str) -> CardError:
    return CardError(CardErrorCode.BAD_JSON, message)


MAX_JSON_DEPTH = 100
_FORBIDDEN_CHARS = re.compile("[\x00\ud800-\udfff]")
_SURROGATES = re.compile("[\ud800-\udfff]")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"number {text[:20]} is out of range")
    return value


def check_json_value(doc: Any) -> None:
    """Reject values we could not store or re-export faithfully: nesting deeper than ``MAX_JSON_DEPTH``,
    NUL characters and unpaired surrogates (PostgreSQL ``jsonb`` refuses both; UTF-8 cannot encode the
    latter). Raises ``CardError(bad_json)``."""
    stack: list[tuple[Any, int]] = [(doc, 0)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, str):
            if _FORBIDDEN_CHARS.search(value):
                raise _json_error("The card JSON contains NUL characters or unpaired surrogates.")
        elif isinstance(value, dict | list):
            if depth >= MAX_JSON_DEPTH:
                raise _json_error("The card JSON is nested too deeply.")
            items = value.items() if isinstance(value, dict) else enumerate(value)
            for key, item in items:
                if isinstance(key, str):
                    stack.append((key, depth + 1))
                stack.append((item, depth + 1))


def load_card_json(raw: bytes, *, limits: Limits = DEFAULT_LIMITS) -> Any:
    """Card JSON bytes (UTF-8, BOM tolerated) → Python value. Raises ``bad_json`` / ``too_large``."""
    if len(raw) > limits.max_json_bytes:
        raise CardError(CardErrorCode.TOO_LARGE, "The card JSON is larger than the accepted size.")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise _json_error("The card JSON is not valid UTF-8.") from exc
    try:
        doc = json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
    except RecursionError as exc:
        raise _json_error("The card JSON is nested too deeply.") from exc
    except ValueError as exc:  # JSONDecodeError, NaN/Infinity, over-long integers
        raise _json_error(f"The card is not valid JSON: {exc}.") from exc
    check_json_value(doc)
    return doc


def _normalize(doc: Any, filename: str | None) -> tuple[dict[str, Any], Spec, bool]:
    stem = PurePosixPath(filename.replace("\\", "/")).stem if filename else None
    try:
        return normalize_card(doc, name_fallback=stem or None)
    except RecursionError as exc:
        raise _json_error("The card JSON is nested too deeply.") from exc


def _assets_of(card_v3: dict[str, Any]) -> list[dict[str, Any]]:
    return [a for a in card_v3["data"].get("assets", []) if isinstance(a, dict)]


def _embedded_path(uri: str) -> str | None:
    for prefix in _EMBEDDED_PREFIXES:
        if uri[: len(prefix)].lower() == prefix:
            return uri[len(prefix) :]
    return None


def _plain_assets(card_v3: dict[str, Any]) -> tuple[CardAsset, ...]:
    return tuple(
        CardAsset(type=a["type"], uri=a["uri"], name=a["name"], ext=a["ext"], path=_embedded_path(a["uri"]))
        for a in _assets_of(card_v3)
    )


def _sniff_unsupported(data: bytes, filename: str | None, content_type: str | None) -> str | None:
    for magic, label in _OTHER_IMAGES:
        if data.startswith(magic):
            return label
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    suffix = PurePosixPath(filename or "").suffix.lower()
    if suffix in (".yaml", ".yml", ".byaf", ".webp", ".jpg", ".jpeg", ".gif"):
        return suffix[1:].upper()
    if content_type and content_type.split(";")[0].strip().lower() in ("image/webp", "image/jpeg", "image/gif"):
        return content_type.split(";")[0].strip()
    return None


def parse_card_bytes(
    data: bytes,
    *,
    filename: str | None = None,
    content_type: str | None = None,
    limits: Limits = DEFAULT_LIMITS,
) -> ParsedCard:
    """Read a character card file. The format is sniffed from the bytes; ``filename`` and
    ``content_type`` only sharpen error messages (and give a name to a nameless card).

    Raises :class:`CardError` — and nothing else — on any input.
    """
    data = bytes(data)
    if len(data) > limits.max_file_bytes:
        raise CardError(
            CardErrorCode.TOO_LARGE,
            f"The file is larger than {limits.max_file_bytes // (1024 * 1024)} MB.",
        )
    if png.is_png(data):
        return _parse_png(data, filename, limits)
    if is_zip(data):
        return _parse_charx(data, filename, limits)
    head = data.lstrip(b"\xef\xbb\xbf \t\r\n")[:1]
    if head in (b"{", b"["):
        return _parse_json(data, filename, limits)
    unsupported = _sniff_unsupported(data, filename, content_type)
    if unsupported:
        raise CardError(
            CardErrorCode.UNSUPPORTED_FORMAT,
            f"{unsupported} cards are not supported; upload a PNG/APNG, JSON or CHARX card.",
        )
    suffix = PurePosixPath(filename or "").suffix.lower()
    ctype = (content_type or "").split(";")[0].strip().lower()
    if suffix == ".json" or ctype == "application/json":
        raise _json_error("The file is not valid JSON.")
    raise CardError(
        CardErrorCode.NOT_A_CARD, "The file is not a character card (expected a PNG/APNG, JSON or CHARX card)."
    )


def parse_card_json(doc: Any, *, filename: str | None = None) -> ParsedCard:
    """An already-decoded JSON value (e.g. a pasted card) → :class:`ParsedCard`."""
    check_json_value(doc)
    card_v3, spec, hybrid = _normalize(doc, filename)
    return ParsedCard(
        card_v3=card_v3,
        original=copy.deepcopy(doc),
        source_format="json",
        spec=spec,
        avatar_png=None,
        assets=_plain_assets(card_v3),
        hybrid=hybrid,
    )


def _parse_json(data: bytes, filename: str | None, limits: Limits) -> ParsedCard:
    return parse_card_json(load_card_json(data, limits=limits), filename=filename)


def _parse_png(data: bytes, filename: str | None, limits: Limits) -> ParsedCard:
    chunks = png.read_chunks(data, limits=limits)
    warnings: list[str] = []
    first_error: CardError | None = None
    # ccv3 first; the next chunk is read (inflated) only when this one is unreadable: the first good one wins
    for text in png.find_card_texts(chunks, limits=limits):
        try:
            if text.error is not None:
                raise text.error
            assert text.payload is not None
            raw = png.decode_card_text(text.payload, max_bytes=limits.max_json_bytes)
            doc = load_card_json(raw, limits=limits)
            card_v3, spec, hybrid = _normalize(doc, filename)
        except CardError as exc:
            first_error = first_error or exc
            warnings.append(f"Skipped an unreadable '{text.keyword}' {text.chunk_type} chunk: {exc.message}")
            continue
        avatar = png.PNG_SIGNATURE + b"".join(c.raw for c in chunks if not png.is_card_chunk(c))
        return ParsedCard(
            card_v3=card_v3,
            original=doc,
            source_format="apng" if png.is_apng(chunks) else "png",
            spec=spec,
            avatar_png=avatar,
            assets=_plain_assets(card_v3),
            hybrid=hybrid,
            warnings=tuple(warnings),
        )
    if first_error is None:
        raise CardError(
            CardErrorCode.NO_CARD_CHUNK,
            "The PNG image has no character card data (no 'ccv3' or 'chara' text chunk).",
        )
    raise first_error


def _parse_charx(data: bytes, filename: str | None, limits: Limits) -> ParsedCard:
    with CharxReader(data, limits=limits) as archive:
        raw = archive.read(CARD_MEMBER, max_bytes=limits.max_json_bytes)
        if raw is None:
            raise CardError(CardErrorCode.NOT_A_CARD, "The CHARX archive has no card.json at its root.")
        doc = load_card_json(raw, limits=limits)
        card_v3, spec, hybrid = _normalize(doc, filename)
        assets: list[CardAsset] = []
        avatar: bytes | None = None
        warnings: list[str] = []
        cache: dict[str, bytes | None] = {}
        for item in _assets_of(card_v3):
            path = _embedded_path(item["uri"])
            if path is not None and path not in cache:
                cache[path] = archive.read(path)
            content = cache.get(path) if path is not None else None
            if path is not None and content is None:
                warnings.append(f"Asset {item['name']!r} points to a missing or unsafe path {path!r}.")
            assets.append(
                CardAsset(
                    type=item["type"], uri=item["uri"], name=item["name"], ext=item["ext"], path=path, data=content
                )
            )
            if avatar is None and item["type"] == "icon" and content is not None and png.is_png(content):
                avatar = content
    return ParsedCard(
        card_v3=card_v3,
        original=doc,
        source_format="charx",
        spec=spec,
        avatar_png=avatar,
        assets=tuple(assets),
        hybrid=hybrid,
        warnings=tuple(warnings),
    )


# ---- writing --------------------------------------------------------------------------------------------


def dumps_card(doc: dict[str, Any]) -> str:
    """Compact JSON with raw non-ASCII characters, like ``JSON.stringify``."""
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":"))


def _b64(doc: dict[str, Any]) -> str:
    text = dumps_card(doc)
    # An edited card may hold unpaired surrogates (a Python str never holds a paired one): they cannot
    # be encoded in UTF-8, and we would refuse them on import, so they become U+FFFD.
    text = _SURROGATES.sub("\ufffd", text)
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


def export_card_png(
    card_v3: dict[str, Any],
    original: dict[str, Any] | None = None,
    avatar_png: bytes | None = None,
    *,
    limits: Limits = DEFAULT_LIMITS,
) -> bytes:
    """A PNG card: the avatar (or a 1×1 transparent PNG) with exactly one ``chara`` (V2 document) and one
    ``ccv3`` (V3 document) ``tEXt`` chunk before ``IEND``; any previous card chunks are dropped and every
    other chunk is kept byte-for-byte. Raises ``CardError(bad_png)`` if ``avatar_png`` is not a PNG."""
    base = avatar_png if avatar_png is not None else png.minimal_png()
    texts = [
        ("chara", _b64(export_card_json(card_v3, original, spec="v2"))),
        ("ccv3", _b64(export_card_json(card_v3, original, spec="v3"))),
    ]
    return png.write_card_chunks(base, texts, limits=limits)
