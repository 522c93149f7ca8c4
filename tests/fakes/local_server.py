"""A stand-in for the managed llama.cpp server: the real process protocol of
:mod:`apps.providers.localmodel.server` (state file, locks, stop when unused, failure report) around a
tiny HTTP server instead of llama.cpp, so the manager's tests need neither xllamacpp nor a model.

    python -m tests.fakes.local_server --model FILE --state … --users …   (what LocalServer runs)

Behaviour is steered by a file beside the model, ``MODEL.mode`` (tests write it):

* ``loading`` — ``/health`` answers 503 ("Loading model") as long as the file says so (rewrite it
  to ``ready`` and the next health check is a 200);
* ``fail`` — the server fails to start (the state file then says why);
* anything else, or no such file — ready at once.

It answers ``GET /health``, ``GET /slots`` and ``POST /v1/chat/completions`` (a short fixed reply, not
streamed), so that a caller can tell it reached this server.
"""

from __future__ import annotations

import argparse
import json
import struct
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from apps.providers.localmodel.server import main

REPLY = "stand-in reply"


# --- GGUF files for tests (the stand-in never reads the model; the app reads its metadata) ---------


def gguf_string(text: str) -> bytes:
    raw = text.encode()
    return struct.pack("<Q", len(raw)) + raw


def gguf_kv(key: str, kind: int, payload: bytes) -> bytes:
    """One metadata pair: ``kind`` is GGUF's value type (4 uint32, 8 string, 9 array, …)."""
    return gguf_string(key) + struct.pack("<I", kind) + payload


def gguf_bytes(*pairs: bytes, version: int = 3) -> bytes:
    return b"GGUF" + struct.pack("<IQQ", version, 0, len(pairs)) + b"".join(pairs)


def write_tiny_gguf(path: str | Path, *, context: int = 4096, name: str = "Tiny Instruct") -> str:
    """A metadata-only GGUF file: a llama model of ``context`` tokens with a chat template."""
    Path(path).write_bytes(
        gguf_bytes(
            gguf_kv("general.architecture", 8, gguf_string("llama")),
            gguf_kv("general.name", 8, gguf_string(name)),
            gguf_kv("llama.context_length", 4, struct.pack("<I", context)),
            gguf_kv("tokenizer.chat_template", 8, gguf_string("{{ messages }}")),
        )
    )
    return str(path)


def _mode(model: str) -> str:
    try:
        return Path(f"{model}.mode").read_text().strip()
    except OSError:
        return "ready"


def set_mode(model: str, mode: str) -> None:
    """What the stand-in serving ``model`` does (see the module docstring)."""
    Path(f"{model}.mode").write_text(mode)


def start_fake(args: argparse.Namespace, port: int) -> Any:
    if _mode(args.model) == "fail":
        raise RuntimeError("Failed to init server (stand-in told to fail)")

    class Handler(BaseHTTPRequestHandler):
        def _json(self, status: int, body: Any) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path == "/health":
                if _mode(args.model) == "loading":
                    error = {"code": 503, "message": "Loading model", "type": "unavailable_error"}
                    self._json(503, {"error": error})
                else:
                    self._json(200, {"status": "ok"})
            elif self.path == "/slots":
                self._json(200, [{"id": i, "is_processing": False} for i in range(args.parallel)])
            else:
                self._json(404, {"error": {"code": 404, "message": "not found", "type": "not_found_error"}})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(length)
            self._json(
                200,
                {
                    "choices": [
                        {"index": 0, "message": {"role": "assistant", "content": REPLY}, "finish_reason": "stop"}
                    ],
                    "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10},
                },
            )

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


if __name__ == "__main__":
    sys.exit(main(start=start_fake))
