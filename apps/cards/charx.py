"""CHARX (zip with ``card.json`` at the root) reading with zip-bomb defences (stdlib ``zipfile``).

Defences, all from :class:`~.errors.Limits`:

* the central directory's declared member count and size are read from the end-of-directory record
  before ``zipfile`` parses the directory (``too_many_entries``): it builds an object per member first;
* the member count (``too_many_entries``) and the *declared* sizes (per member, total, and ratio to the
  compressed size) are checked before anything is inflated (``zip_bomb``);
* members are only inflated on demand (``card.json`` and the assets the card references), through
  bounded reads that count the bytes actually produced — headers are never trusted alone;
  a stream that yields more than its declared size, or breaks the per-member / total budget or the
  ratio, stops at once (``zip_bomb``);
* member names are normalised (``\\`` → ``/``); names that are absolute, carry a drive letter, a NUL or a
  ``..`` segment are never looked up, so a traversal path can neither be read nor shadow another member;
* encrypted members, unsupported compression and corrupt data are ``bad_zip``.
"""

from __future__ import annotations

import io
import struct
import zipfile
from types import TracebackType

from .errors import DEFAULT_LIMITS, CardError, CardErrorCode, Limits

ZIP_SIGNATURES = (b"PK\x03\x04", b"PK\x05\x06")
CARD_MEMBER = "card.json"
_READ_CHUNK = 64 * 1024
_EOCD = b"PK\x05\x06"
_EOCD64_LOCATOR = b"PK\x06\x07"
_EOCD64 = b"PK\x06\x06"


def is_zip(data: bytes) -> bool:
    return data[:4] in ZIP_SIGNATURES


def safe_member_path(name: str) -> str | None:
    """A normalised relative path, or ``None`` when the name is unsafe (absolute, ``..``, drive, NUL)."""
    if not name or "\0" in name:
        return None
    path = name.replace("\\", "/")
    if path.startswith("/") or (len(path) > 1 and path[1] == ":"):
        return None
    parts = [part for part in path.split("/") if part not in ("", ".")]
    if not parts or any(part == ".." for part in parts):
        return None
    return "/".join(parts)


def _bad_zip(message: str = "The CHARX archive is corrupt or uses an unsupported zip feature.") -> CardError:
    return CardError(CardErrorCode.BAD_ZIP, message)


def _bomb(message: str) -> CardError:
    return CardError(CardErrorCode.ZIP_BOMB, message)


def _directory_extent(data: bytes) -> tuple[int, int] | None:
    """(member count, central directory bytes) as the end-of-directory record declares them (zip64
    included), or ``None`` without one (``zipfile`` then fails as it would)."""
    end = data.rfind(_EOCD, max(0, len(data) - 22 - 0xFFFF))
    if end < 0 or end + 22 > len(data):
        return None
    entries, size = struct.unpack_from("<HL", data, end + 10)
    locator = end - 20
    if (entries == 0xFFFF or size == 0xFFFFFFFF) and locator >= 0 and data[locator : locator + 4] == _EOCD64_LOCATOR:
        (record,) = struct.unpack_from("<Q", data, locator + 8)
        if record + 56 <= len(data) and data[record : record + 4] == _EOCD64:
            entries, size = struct.unpack_from("<QQ", data, record + 32)
    return entries, size


def _check_directory(data: bytes, limits: Limits) -> None:
    extent = _directory_extent(data)
    if extent is None:
        return
    entries, size = extent
    if entries > limits.max_zip_entries:
        raise CardError(
            CardErrorCode.TOO_MANY_ENTRIES,
            f"The CHARX archive has {entries} entries; at most {limits.max_zip_entries} are accepted.",
        )
    if size > limits.max_zip_directory_bytes:
        raise CardError(
            CardErrorCode.TOO_MANY_ENTRIES,
            f"The CHARX archive's member list takes {size} bytes; at most {limits.max_zip_directory_bytes} "
            "are accepted.",
        )


class CharxReader:
    """Open a CHARX archive from bytes; read members within the limits. Use as a context manager."""

    def __init__(self, data: bytes, *, limits: Limits = DEFAULT_LIMITS) -> None:
        self._limits = limits
        self._read_total = 0
        _check_directory(data, limits)
        try:
            self._zip = zipfile.ZipFile(io.BytesIO(data))
            infos = self._zip.infolist()
        except Exception as exc:  # zipfile's failure modes on hostile input are many (struct, zlib, …)
            raise _bad_zip() from exc
        if len(infos) > limits.max_zip_entries:
            self._zip.close()
            raise CardError(
                CardErrorCode.TOO_MANY_ENTRIES,
                f"The CHARX archive has {len(infos)} entries; at most {limits.max_zip_entries} are accepted.",
            )
        declared_total = 0
        self._members: dict[str, zipfile.ZipInfo] = {}
        for info in infos:
            declared_total += info.file_size
            self._check_declared(info)
            if info.is_dir():
                continue
            path = safe_member_path(info.filename)
            if path is not None and path not in self._members:
                self._members[path] = info
        if declared_total > limits.max_zip_total_bytes:
            self._zip.close()
            raise _bomb("The CHARX archive would inflate beyond the accepted total size.")

    def _check_declared(self, info: zipfile.ZipInfo) -> None:
        limits = self._limits
        if info.file_size > limits.max_zip_entry_bytes:
            self._zip.close()
            raise _bomb("A CHARX archive member is larger than the accepted size.")
        if info.file_size > limits.zip_ratio_min_bytes and info.file_size > max(info.compress_size, 1) * (
            limits.max_zip_ratio
        ):
            self._zip.close()
            raise _bomb("A CHARX archive member has a suspicious compression ratio.")

    def __enter__(self) -> CharxReader:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._zip.close()

    @property
    def paths(self) -> list[str]:
        return list(self._members)

    def has(self, path: str) -> bool:
        safe = safe_member_path(path)
        return safe is not None and safe in self._members

    def read(self, path: str, *, max_bytes: int | None = None) -> bytes | None:
        """The member's bytes, or ``None`` if there is no such (safe) member."""
        safe = safe_member_path(path)
        info = self._members.get(safe) if safe is not None else None
        if info is None:
            return None
        limits = self._limits
        if info.flag_bits & 0x1:
            raise _bad_zip("The CHARX archive contains an encrypted member.")
        cap = min(limits.max_zip_entry_bytes, max_bytes if max_bytes is not None else limits.max_zip_entry_bytes)
        if info.file_size > cap:
            raise CardError(CardErrorCode.TOO_LARGE, f"The CHARX member {safe!r} is too large.")
        budget = limits.max_zip_total_bytes - self._read_total
        ratio_cap = max(info.compress_size, 1) * limits.max_zip_ratio
        out = bytearray()
        try:
            with self._zip.open(info) as stream:
                while True:
                    block = stream.read(_READ_CHUNK)
                    if not block:
                        break
                    out += block
                    if len(out) > info.file_size:
                        raise _bomb("A CHARX archive member inflates beyond its declared size.")
                    if len(out) > cap:
                        raise CardError(CardErrorCode.TOO_LARGE, f"The CHARX member {safe!r} is too large.")
                    if len(out) > budget:
                        raise _bomb("The CHARX archive inflates beyond the accepted total size.")
                    if len(out) > limits.zip_ratio_min_bytes and len(out) > ratio_cap:
                        raise _bomb("A CHARX archive member has a suspicious compression ratio.")
        except CardError:
            raise
        except Exception as exc:  # BadZipFile, zlib/lzma/bz2 errors, EOFError, …: a corrupt archive
            raise _bad_zip() from exc
        self._read_total += len(out)
        return bytes(out)
