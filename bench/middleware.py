"""Cost of the request metrics in the request middleware: `RequestContextMiddleware` around a view that
returns at once, with and without `http_observe`, in-process and in multi-process mode (values in
memory-mapped files), for a label set already seen (the steady state).

    .venv/bin/python bench/middleware.py            # 100,000 requests per round, best of 9 rounds
    .venv/bin/python bench/middleware.py --quick    # 20,000

Each mode runs in a fresh interpreter (prometheus_client picks its value store at import). The access
log line is written to a null stream, so the figures are the middleware's CPU, not a terminal's.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CASE = r"""
import json, logging, os, sys, time
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "writing_service.settings")
os.environ["ALLOW_INSECURE_SECRETS"] = "true"
import django
django.setup()
logging.getLogger("writing_service.request").handlers = [logging.StreamHandler(open(os.devnull, "w"))]
logging.getLogger("writing_service.request").propagate = False
from django.http import HttpResponse
from django.test import RequestFactory
from django.urls import resolve
from apps.core import metrics
import writing_service.middleware as mw

n, rounds = int(sys.argv[1]), int(sys.argv[2])
request = RequestFactory().get("/api/v1/novels/7")
request.resolver_match = resolve("/api/v1/novels/7")
response = HttpResponse(b"{}", content_type="application/json")
middleware = mw.RequestContextMiddleware(lambda r: response)
observe = mw.http_observe

def once(enabled):
    mw.http_observe = observe if enabled else (lambda *a: None)
    started = time.perf_counter()
    for _ in range(n):
        middleware(request)
    return (time.perf_counter() - started) / n * 1e6

def alone():
    started = time.perf_counter()
    for _ in range(n):
        observe(request, 200, 0.003)
    return (time.perf_counter() - started) / n * 1e6

once(True)  # the label set is seen (children cached, files written)
best = {"without_us": float("inf"), "with_us": float("inf"), "observe_us": float("inf")}
for _ in range(rounds):  # interleaved, best of each: the machine is shared
    best["without_us"] = min(best["without_us"], once(False))
    best["with_us"] = min(best["with_us"], once(True))
    best["observe_us"] = min(best["observe_us"], alone())
print(json.dumps({"multiprocess": metrics.MULTIPROCESS, **best}))
"""


def case(n: int, rounds: int, multiproc_dir: str | None) -> dict[str, float]:
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    if multiproc_dir:
        env["PROMETHEUS_MULTIPROC_DIR"] = multiproc_dir
    out = subprocess.run(
        [sys.executable, "-c", CASE, str(n), str(rounds)], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    n, rounds = (20_000, 3) if args.quick else (100_000, 9)
    with tempfile.TemporaryDirectory() as directory:
        results = [case(n, rounds, None), case(n, rounds, directory)]
    print(f"{'mode':<14} {'middleware':>12} {'+ metrics':>12} {'http_observe alone':>20}")
    for r in results:
        mode = "multi-process" if r["multiprocess"] else "in-process"
        print(f"{mode:<14} {r['without_us']:>9.2f} µs {r['with_us']:>9.2f} µs {r['observe_us']:>17.2f} µs")
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "middleware.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
