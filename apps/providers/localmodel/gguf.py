"""Reading a GGUF file's metadata (no Django imports, no dependency).

A GGUF file starts with ``GGUF``, a version, the tensor and key/value counts, then the key/value
pairs (little-endian). Only the metadata is read, never the tensors; large arrays (the tokenizer's
vocabulary) are skipped without being decoded.

>>> import io, struct
>>> def s(t): return struct.pack("<Q", len(t)) + t
>>> head = b"GGUF" + struct.pack("<IQQ", 3, 0, 2)
>>> kv = s(b"general.architecture") + struct.pack("<I", 8) + s(b"llama")
>>> kv += s(b"llama.context_length") + struct.pack("<II", 4, 8192)
>>> read_metadata(io.BytesIO(head + kv))
{'general.architecture': 'llama', 'llama.context_length': 8192}
"""

from __future__ import annotations

import functools
import os
import struct
from dataclasses import dataclass
from typing import IO, Any

MAGIC = b"GGUF"
MAX_STRING = 16 * 1024 * 1024  # a chat template is a few KiB; anything this big is a broken file
MAX_ARRAY = 1 << 28

# value type → struct format of one scalar (8 = string, 9 = array are read apart)
_SCALARS: dict[int, str] = {
    0: "<B",
    1: "<b",
    2: "<H",
    3: "<h",
    4: "<I",
    5: "<i",
    6: "<f",
    7: "<?",
    10: "<Q",
    11: "<q",
    12: "<d",
}
_STRING = 8
_ARRAY = 9


class GGUFError(ValueError):
    """The file is not a GGUF file, or its metadata is cut short or malformed."""


def _read(f: IO[bytes], n: int) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise GGUFError("GGUF metadata is cut short")
    return data


def _unpack(f: IO[bytes], fmt: str) -> Any:
    return struct.unpack(fmt, _read(f, struct.calcsize(fmt)))[0]


def _string(f: IO[bytes]) -> str:
    n = _unpack(f, "<Q")
    if n > MAX_STRING:
        raise GGUFError("GGUF string too long")
    return _read(f, n).decode("utf-8", "replace")


def _value(f: IO[bytes], kind: int, *, keep: bool) -> Any:
    if kind in _SCALARS:
        return _unpack(f, _SCALARS[kind])
    if kind == _STRING:
        return _string(f)
    if kind == _ARRAY:
        item_kind = _unpack(f, "<I")
        count = _unpack(f, "<Q")
        if count > MAX_ARRAY:
            raise GGUFError("GGUF array too long")
        if not keep and item_kind in _SCALARS:  # skip fixed-size items in one seek
            f.seek(count * struct.calcsize(_SCALARS[item_kind]), os.SEEK_CUR)
            return None
        if not keep and item_kind == _STRING:  # the vocabulary: skip each string by its length
            for _ in range(count):
                f.seek(_unpack(f, "<Q"), os.SEEK_CUR)
            return None
        items = [_value(f, item_kind, keep=keep) for _ in range(count)]
        return items if keep else None
    raise GGUFError(f"unknown GGUF value type {kind}")


def read_metadata(f: IO[bytes], *, arrays: bool = False) -> dict[str, Any]:
    """The key/value metadata of the GGUF file open in ``f`` (arrays left out unless ``arrays``)."""
    if _read(f, 4) != MAGIC:
        raise GGUFError("not a GGUF file")
    version = _unpack(f, "<I")
    if version < 2:
        raise GGUFError(f"GGUF version {version} is not supported")
    _unpack(f, "<Q")  # tensor count
    count = _unpack(f, "<Q")
    out: dict[str, Any] = {}
    for _ in range(count):
        key = _string(f)
        kind = _unpack(f, "<I")
        value = _value(f, kind, keep=arrays)
        if kind != _ARRAY or arrays:
            out[key] = value
    return out


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """What the app needs to know about a GGUF model before serving it."""

    name: str  # general.name, or the file name
    architecture: str
    context_length: int  # tokens the model was trained for (`<arch>.context_length`)
    chat_template: str  # `tokenizer.chat_template` ("" when the file has none)


def model_info(path: str) -> ModelInfo:
    """Read :class:`ModelInfo` from the GGUF file at ``path`` (``GGUFError``/``OSError`` if it cannot);
    kept in memory while the file's size and modification time stay the same."""
    stat = os.stat(path)
    return _model_info(os.path.realpath(path), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=16)
def _model_info(path: str, size: int, mtime_ns: int) -> ModelInfo:
    with open(path, "rb", buffering=1 << 16) as f:
        meta = read_metadata(f)
    arch = str(meta.get("general.architecture") or "")
    context = meta.get(f"{arch}.context_length")
    if not isinstance(context, int) or context <= 0:
        raise GGUFError(f"GGUF file has no {arch}.context_length")
    name = str(meta.get("general.name") or os.path.splitext(os.path.basename(path))[0])
    return ModelInfo(
        name=name,
        architecture=arch,
        context_length=context,
        chat_template=str(meta.get("tokenizer.chat_template") or ""),
    )
