"""Prometheus metrics: their definitions (one place, listed in docs/operations.md), the cheap recording
helpers of the hot path, and the multi-process bookkeeping.

Multi-process mode: with `PROMETHEUS_MULTIPROC_DIR` set in the environment *before* this module is first
imported (the settings load `.env` first), every process — each uvicorn worker, each Celery worker
child — writes its values to memory-mapped files in that directory and `/metrics` adds them up
(`MultiProcessCollector`). Without it, values live in this process (the default registry).

Labels are bounded: a route is the URL pattern (`/api/v1/novels/<int:pk>`), never the raw path; models and
connections are the operator's catalogue; no user ids. What the database knows (holds open) is read when
scraped, not counted here (apps/billing/metrics.py).
"""

from __future__ import annotations

import contextlib
import errno
import glob
import logging
import os
import threading
from collections.abc import Callable
from typing import Any

from prometheus_client import Counter, Gauge, Histogram, values
from prometheus_client.multiprocess import mark_process_dead

logger = logging.getLogger("apps.core.metrics")

MULTIPROC_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
# prometheus_client picks the value store when it is first imported: files if the variable was set then.
MULTIPROCESS: bool = getattr(values.ValueClass, "_multiprocess", False)
if MULTIPROCESS:
    os.makedirs(os.environ[MULTIPROC_DIR_ENV], exist_ok=True)  # the metrics below write there at once
elif os.environ.get(MULTIPROC_DIR_ENV):
    logger.warning("%s was set after prometheus_client was imported: metrics stay in-process", MULTIPROC_DIR_ENV)

# --- HTTP -------------------------------------------------------------------------------------------
HTTP_REQUESTS = Counter(
    "http_requests_total",
    "HTTP requests answered, by URL pattern, method and status.",
    ("route", "method", "status"),
)
HTTP_DURATION = Histogram(
    "http_request_duration_seconds",
    "Time to the response (for a stream: to its headers), by URL pattern and method.",
    ("route", "method"),
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0),
)
RATE_LIMIT_REFUSALS = Counter(
    "ratelimit_refusals_total", "Requests refused with 429 by a rate limit, by its scope.", ("scope",)
)
SSE_STREAMS_OPEN = Gauge(
    "sse_streams_open", "Server-sent event streams being relayed now.", multiprocess_mode="livesum"
)

# --- upstream calls and generations ------------------------------------------------------------------
UPSTREAM_CALLS = Counter(
    "upstream_calls_total",
    "Calls to model providers, by connection, model and outcome (ok, cancelled, or the upstream_* error code).",
    ("connection", "model", "outcome"),
)
UPSTREAM_TTFT = Histogram(
    "upstream_time_to_first_token_seconds",
    "From the start of the upstream call (fallbacks included) to the first text, by connection and model.",
    ("connection", "model"),
    buckets=(0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0),
)
OUTPUT_CHARACTERS = Counter(
    "generation_output_characters_total",
    "Characters of text (answer and reasoning) delivered by generations, by model.",
    ("model",),
)

# --- billing ---------------------------------------------------------------------------------------
CHARGED_CHARACTERS = Counter(
    "billing_charged_characters_total",
    "Characters charged for generations, by model and funds (free: daily quota, paid: balance).",
    ("model", "funds"),
)
INSUFFICIENT_BALANCE = Counter(
    "billing_insufficient_balance_total", "Generations refused with 402 (not even the input and one character)."
)
HOLDS_EXPIRED = Counter(
    "billing_holds_expired_total", "Holds released by the sweeper because they outlived their lifetime."
)

# --- database --------------------------------------------------------------------------------------
DB_POOL_CONNECTIONS = Gauge(
    "db_pool_connections",
    "psycopg pool connections of the app processes, by state (in_use, idle); PostgreSQL with the pool only.",
    ("state",),
    multiprocess_mode="livesum",
)
DB_POOL_MAX = Gauge(
    "db_pool_max_connections",
    "Largest size of the app processes' psycopg pools, added up.",
    multiprocess_mode="livesum",
)
DB_POOL_WAITING = Gauge(
    "db_pool_requests_waiting", "Requests waiting for a pooled connection now.", multiprocess_mode="livesum"
)


# --- recording on the hot path -----------------------------------------------------------------------

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED = "(unmatched)"
_http_children: dict[tuple[str, str, int], tuple[Any, Any]] = {}


def route_of(request: Any) -> str:
    """The URL pattern that served `request` (`/api/v1/novels/<int:pk>`), or `(unmatched)` when none did
    (a 404 outside the API, a CORS preflight answered before URL resolution)."""
    match = getattr(request, "resolver_match", None)
    route = getattr(match, "route", None)
    return "/" + route if route else UNMATCHED


def http_observe(request: Any, status: int, seconds: float) -> None:
    """Count one answered request and its duration: two dictionary lookups and three stores once the
    label set has been seen (`bench/middleware.py`)."""
    method = request.method if request.method in _METHODS else "other"
    key = (route_of(request), method, status)
    children = _http_children.get(key)
    if children is None:
        children = (HTTP_REQUESTS.labels(key[0], method, str(status)), HTTP_DURATION.labels(key[0], method))
        _http_children[key] = children
    children[0].inc()
    children[1].observe(seconds)


# --- multi-process bookkeeping -------------------------------------------------------------------------


def multiproc_dir() -> str | None:
    """The directory of multi-process mode, or None for the in-process registry."""
    return os.environ.get(MULTIPROC_DIR_ENV) if MULTIPROCESS else None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError as exc:
        return exc.errno == errno.EPERM  # it exists, owned by someone else
    return True


def _files_by_pid(path: str) -> dict[int, list[str]]:
    found: dict[int, list[str]] = {}
    for name in glob.glob(os.path.join(path, "*.db")):
        stem = os.path.basename(name)[:-3]
        pid = stem.rpartition("_")[2]
        if pid.isdigit():
            found.setdefault(int(pid), []).append(name)
    return found


def multiproc_prune(*, at_start: bool = False, alive: Callable[[int], bool] = _pid_alive) -> list[int]:
    """Forget the processes that are gone (returns their pids).

    Their live gauges always go (a gone process holds no stream open), as prometheus_client's
    `mark_process_dead` does. Their counters and histograms go only `at_start` of a process that finds
    no other one running (a restart of everything): while the fleet runs, removing a dead worker's
    counters would make the fleet's sums drop, which Prometheus reads as a reset and turns into a spike
    of `rate()`.
    """
    path = multiproc_dir()
    if path is None or not os.path.isdir(path):
        return []
    files = _files_by_pid(path)
    me = os.getpid()
    dead = [pid for pid in files if pid != me and not alive(pid)]
    fresh_start = at_start and all(pid == me or pid in dead for pid in files)
    for pid in dead:
        doomed = files[pid] if fresh_start else [name for name in files[pid] if "gauge_live" in name]
        for name in doomed:
            with contextlib.suppress(FileNotFoundError):  # another process pruned it first
                os.remove(name)
    return dead


def multiproc_start() -> None:
    """At process start: make the directory and forget the processes that are gone (all their files
    when nothing else runs, their live gauges only otherwise: `make run` and `make worker` share the
    directory, and either may start while the other runs)."""
    path = multiproc_dir()
    if path is None:
        return
    os.makedirs(path, exist_ok=True)
    multiproc_prune(at_start=True)


def process_exit() -> None:
    """At a worker process's exit: its live gauges stop counting at once (Celery's
    `worker_process_shutdown`; a process that cannot say so is pruned at the next scrape)."""
    if multiproc_dir() is not None:
        mark_process_dead(os.getpid())


# --- the database pool, sampled -------------------------------------------------------------------------

POOL_SAMPLE_SECONDS = 5.0
_sampler: threading.Thread | None = None
_sampler_lock = threading.Lock()


def db_pool_sample() -> None:
    """Set the pool gauges from this process's psycopg pool (PostgreSQL with `DATABASE_POOL`), if it has
    one open: never opens one. In use = connections handed out (to a request, a database step or a task)."""
    from django.db import connections

    wrapper = connections["default"]
    pools = getattr(type(wrapper), "_connection_pools", None)  # Django's PostgreSQL backend keeps them there
    pool = pools.get(wrapper.alias) if pools else None
    if pool is None:
        return
    stats = pool.get_stats()
    size, idle = stats.get("pool_size", 0), stats.get("pool_available", 0)
    DB_POOL_CONNECTIONS.labels("in_use").set(size - idle)
    DB_POOL_CONNECTIONS.labels("idle").set(idle)
    DB_POOL_MAX.set(stats.get("pool_max", 0))
    DB_POOL_WAITING.set(stats.get("requests_waiting", 0))


def _sample_forever(stop: threading.Event) -> None:
    while not stop.wait(POOL_SAMPLE_SECONDS):
        try:
            db_pool_sample()
        except Exception:  # a sampling failure must never take the process down; the next one may work
            logger.exception("database pool sampling failed")


def pool_sampler_start() -> None:
    """Sample the pool every POOL_SAMPLE_SECONDS in a daemon thread (once per process): in multi-process
    mode the process that answers a scrape cannot read its siblings' pools."""
    global _sampler
    from django.conf import settings

    if not settings.DATABASES["default"].get("OPTIONS", {}).get("pool"):
        return
    with _sampler_lock:
        if _sampler is None or not _sampler.is_alive():
            _sampler = threading.Thread(
                target=_sample_forever, args=(threading.Event(),), daemon=True, name="metrics-pool"
            )
            _sampler.start()
