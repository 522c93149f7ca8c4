"""PNG / APNG container codec for character cards (stdlib only).

Reading
    Chunks are parsed with bounds and CRC checks. A CRC mismatch on a *critical* chunk (upper-case first
    letter: IHDR, PLTE, IDAT, IEND) rejects the file (``bad_png``): that is the image we keep and serve.
    A mismatch on an *ancillary* chunk is tolerated: non-card chunks are kept as they are, and a card
    chunk is still decoded (base64 + JSON validate its content anyway).
    Card text is looked for in ``tEXt``, ``iTXt`` (compressed or not) and ``zTXt`` chunks whose keyword is
    ``ccv3`` or ``chara`` (case-insensitive); every other chunk (APNG ``acTL``/``fcTL``/``fdAT`` included)
    is ignored. Bytes after ``IEND`` are ignored and not kept. Card chunks are read one at a time, in
    preference order, only until one decodes (``find_card_texts``); the text read over all of them is
    capped (``Limits.max_card_text_bytes``), so a file of many compressed chunks cannot inflate each.

Writing
    Every ``chara``/``ccv3`` text chunk (all three chunk types) is removed, then new ``tEXt`` chunks
    ``chara`` and ``ccv3`` (in that order, like SillyTavern) are inserted right before ``IEND``. All other
    chunks are copied byte-for-byte (including their original CRC), in their original order.
"""

from __future__ import annotations

import base64
import binascii
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

from .errors import DEFAULT_LIMITS, CardError, CardErrorCode, Limits

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CARD_KEYWORDS = ("ccv3", "chara")  # preference order
TEXT_CHUNK_TYPES = (b"tEXt", b"iTXt", b"zTXt")
_MAX_CHUNK_LENGTH = 2**31 - 1
_WHITESPACE = b" \t\n\r\x0b\x0c"  # what base64 text may be wrapped with (bytes.translate: one fast C pass)


@dataclass(frozen=True, slots=True)
class Chunk:
    type: bytes
    data: bytes
    raw: bytes
    """The whole chunk as found in the file: length, type, data and CRC."""
    crc_ok: bool

    @property
    def critical(self) -> bool:
        return not self.type[0] & 0x20


@dataclass(frozen=True, slots=True)
class CardText:
    """A card text chunk found in a PNG."""

    keyword: str  # lower-cased: "ccv3" or "chara"
    chunk_type: str  # "tEXt" | "iTXt" | "zTXt"
    payload: bytes | None  # the chunk's (inflated) text bytes: base64, or leniently raw JSON
    error: CardError | None = None  # set (and payload None) when the chunk itself could not be read


def _bad(message: str) -> CardError:
    return CardError(CardErrorCode.BAD_PNG, message)


def is_png(data: bytes) -> bool:
    return data[:8] == PNG_SIGNATURE


def read_chunks(data: bytes, *, limits: Limits = DEFAULT_LIMITS) -> list[Chunk]:
    """Split a PNG into chunks, up to and including ``IEND``. Raises ``CardError(bad_png)``."""
    if not is_png(data):
        raise _bad("The file is not a PNG image (bad signature).")
    chunks: list[Chunk] = []
    pos = 8
    end = len(data)
    while True:
        if pos + 12 > end:
            raise _bad("The PNG file is truncated (no IEND chunk).")
        length, ctype = struct.unpack_from(">I4s", data, pos)
        if length > _MAX_CHUNK_LENGTH:
            raise _bad("The PNG file has an invalid chunk length.")
        if not all(65 <= b <= 90 or 97 <= b <= 122 for b in ctype):
            raise _bad("The PNG file has an invalid chunk type.")
        data_start = pos + 8
        data_end = data_start + length
        if data_end + 4 > end:
            raise _bad(f"The PNG file is truncated inside a {ctype.decode('ascii')} chunk.")
        body = data[data_start:data_end]
        (crc,) = struct.unpack_from(">I", data, data_end)
        crc_ok = zlib.crc32(body, zlib.crc32(ctype)) == crc
        chunk = Chunk(type=ctype, data=body, raw=data[pos : data_end + 4], crc_ok=crc_ok)
        if not chunks and ctype != b"IHDR":
            raise _bad("The PNG file does not start with an IHDR chunk.")
        if not crc_ok and chunk.critical:
            raise _bad(f"The PNG file is corrupt (CRC mismatch in {ctype.decode('ascii')}).")
        chunks.append(chunk)
        if len(chunks) > limits.max_png_chunks:
            raise CardError(CardErrorCode.TOO_LARGE, "The PNG file has too many chunks.")
        pos = data_end + 4
        if ctype == b"IEND":
            return chunks


def is_apng(chunks: list[Chunk]) -> bool:
    """APNG = an ``acTL`` chunk before the first ``IDAT``."""
    for chunk in chunks:
        if chunk.type == b"IDAT":
            return False
        if chunk.type == b"acTL":
            return True
    return False


def _keyword(body: bytes) -> tuple[bytes, int] | None:
    nul = body.find(b"\0", 0, 80)
    if nul <= 0:
        return None
    return body[:nul], nul


def _card_keyword(chunk: Chunk) -> str | None:
    if chunk.type not in TEXT_CHUNK_TYPES:
        return None
    found = _keyword(chunk.data)
    if found is None:
        return None
    keyword = found[0].lower()
    for candidate in CARD_KEYWORDS:
        if keyword == candidate.encode("ascii"):
            return candidate
    return None


def is_card_chunk(chunk: Chunk) -> bool:
    return _card_keyword(chunk) is not None


def _inflate(data: bytes, max_out: int) -> bytes:
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(data, max_out + 1)
    except zlib.error as exc:
        raise _bad("A compressed card text chunk is corrupt.") from exc
    if len(out) > max_out or inflater.unconsumed_tail:
        raise CardError(CardErrorCode.TOO_LARGE, "The card text in the PNG is too large.")
    if not inflater.eof:
        raise _bad("A compressed card text chunk is truncated.")
    return out


def _text_payload(chunk: Chunk, nul: int, max_text: int) -> bytes:
    body = chunk.data
    rest = body[nul + 1 :]
    if chunk.type == b"tEXt":
        if len(rest) > max_text:
            raise CardError(CardErrorCode.TOO_LARGE, "The card text in the PNG is too large.")
        return rest
    if chunk.type == b"zTXt":
        if not rest or rest[0] != 0:
            raise _bad("A zTXt card chunk uses an unknown compression method.")
        return _inflate(rest[1:], max_text)
    # iTXt: flag, method, language\0, translated keyword\0, text (UTF-8)
    if len(rest) < 2:
        raise _bad("An iTXt card chunk is truncated.")
    compressed, method = rest[0], rest[1]
    lang_end = rest.find(b"\0", 2)
    trans_end = rest.find(b"\0", lang_end + 1) if lang_end >= 0 else -1
    if trans_end < 0:
        raise _bad("An iTXt card chunk is truncated.")
    payload = rest[trans_end + 1 :]
    if compressed:
        if method != 0:
            raise _bad("An iTXt card chunk uses an unknown compression method.")
        payload = _inflate(payload, max_text)
    elif len(payload) > max_text:
        raise CardError(CardErrorCode.TOO_LARGE, "The card text in the PNG is too large.")
    return payload


def _total_spent() -> CardError:
    return CardError(CardErrorCode.TOO_LARGE, "The card text chunks of the PNG hold more text than accepted in all.")


def find_card_texts(chunks: list[Chunk], *, limits: Limits = DEFAULT_LIMITS) -> Iterator[CardText]:
    """Card text chunks in preference order — every ``ccv3`` (file order), then every ``chara`` — each
    read (inflated) only when the next one is asked for, so the caller stops at the first that decodes
    (SillyTavern reads the first ``ccv3``, else the first ``chara``).

    A chunk is read up to ``2 × max_json_bytes`` (base64 and slack); the text read over all chunks tried
    is capped by ``max_card_text_bytes``. A chunk that would pass the cap is a ``too_large`` error, and
    once the cap is spent the iteration ends with one such error. At most ``max_card_chunks`` are tried.
    """
    max_text = limits.max_json_bytes * 2 + 1024
    left = limits.max_card_text_bytes
    tried = 0
    for wanted in CARD_KEYWORDS:
        for chunk in chunks:
            if _card_keyword(chunk) != wanted:
                continue
            if tried >= limits.max_card_chunks:
                return
            tried += 1
            ctype = chunk.type.decode("ascii")
            if left <= 0:
                yield CardText(keyword=wanted, chunk_type=ctype, payload=None, error=_total_spent())
                return
            cap = min(max_text, left)
            nul = chunk.data.index(b"\0")
            try:
                payload = _text_payload(chunk, nul, cap)
            except CardError as exc:
                if exc.code == CardErrorCode.TOO_LARGE:
                    left -= cap + 1  # read up to the cap before it failed
                    if cap < max_text:
                        exc = _total_spent()
                else:
                    left -= len(chunk.data)
                yield CardText(keyword=wanted, chunk_type=ctype, payload=None, error=exc)
            else:
                left -= len(payload)
                yield CardText(keyword=wanted, chunk_type=ctype, payload=payload)


def decode_card_text(payload: bytes, *, max_bytes: int | None = None) -> bytes:
    """Card chunk text → JSON bytes. Base64 (standard or URL-safe; whitespace and missing padding
    tolerated); a payload that already looks like a JSON object is taken as is (some tools write raw
    JSON into ``iTXt``). Base64 that would decode to more than ``max_bytes`` is ``too_large`` before it
    is decoded."""
    stripped = payload.strip()
    if stripped.startswith(b"{"):
        return stripped
    raw = stripped.translate(None, _WHITESPACE)
    if max_bytes is not None and len(raw) > (max_bytes + 2) // 3 * 4 + 4:
        raise CardError(CardErrorCode.TOO_LARGE, "The card JSON is larger than the accepted size.")
    if b"-" in raw or b"_" in raw:
        raw = raw.replace(b"-", b"+").replace(b"_", b"/")
    raw += b"=" * (-len(raw) % 4)
    try:
        return base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise CardError(CardErrorCode.BAD_BASE64, "The card chunk is not valid base64.") from exc


def make_chunk(ctype: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + ctype + body + struct.pack(">I", zlib.crc32(body, zlib.crc32(ctype)))


def make_text_chunk(keyword: str, text: str) -> bytes:
    """A ``tEXt`` chunk; ``text`` must be Latin-1 (card payloads are base64, hence ASCII)."""
    return make_chunk(b"tEXt", keyword.encode("latin-1") + b"\0" + text.encode("latin-1"))


def strip_card_chunks(png: bytes, *, limits: Limits = DEFAULT_LIMITS) -> bytes:
    """The PNG without any ``chara``/``ccv3`` text chunk; everything else byte-for-byte."""
    chunks = read_chunks(png, limits=limits)
    return PNG_SIGNATURE + b"".join(c.raw for c in chunks if not is_card_chunk(c))


def write_card_chunks(png: bytes, texts: list[tuple[str, str]], *, limits: Limits = DEFAULT_LIMITS) -> bytes:
    """Replace all card text chunks with ``tEXt`` chunks ``texts`` (keyword, text) inserted before IEND."""
    chunks = read_chunks(png, limits=limits)
    out = [PNG_SIGNATURE]
    for chunk in chunks:
        if chunk.type == b"IEND":
            out.extend(make_text_chunk(keyword, text) for keyword, text in texts)
        if not is_card_chunk(chunk):
            out.append(chunk.raw)
    return b"".join(out)


def minimal_png(width: int = 1, height: int = 1, rgba: tuple[int, int, int, int] = (0, 0, 0, 0)) -> bytes:
    """A valid 8-bit RGBA PNG of one solid colour (default: 1×1 transparent), zlib only."""
    if not (1 <= width <= 4096 and 1 <= height <= 4096):
        raise ValueError("width and height must be within 1..4096")
    pixel = bytes(rgba)
    if len(pixel) != 4:
        raise ValueError("rgba must have four components")
    row = b"\0" + pixel * width  # filter type 0 (None)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    idat = zlib.compress(row * height, 9)
    return PNG_SIGNATURE + make_chunk(b"IHDR", ihdr) + make_chunk(b"IDAT", idat) + make_chunk(b"IEND", b"")
