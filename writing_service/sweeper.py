"""Expired billing holds are swept by Celery beat when there is a broker; without one (`make run`, no
`REDIS_URL`) each app process sweeps them itself in a daemon thread (`BILLING_SWEEP_IN_PROCESS`), so a
hold left by a crash does not stay reserved forever on the embedded default."""

from __future__ import annotations

import logging
import threading
import time

from django.conf import settings
from django.db import close_old_connections

logger = logging.getLogger("writing_service.sweeper")

INTERVAL_SECONDS = 60.0
_started: threading.Thread | None = None
_lock = threading.Lock()


def sweep_once() -> dict[str, int]:
    """One sweep, as the beat's task does it, on this thread's own database connection."""
    from apps.generation.tasks import generation_jobs_reap, generations_expire

    try:
        swept = generations_expire()
        reaped = generation_jobs_reap()  # jobs left running by a previous server process
        return {**swept, "jobsFailed": reaped["failed"], "jobsRequeued": reaped["requeued"]}
    finally:
        close_old_connections()


def start_in_process_sweeper(interval: float = INTERVAL_SECONDS) -> threading.Thread | None:
    """Start the process's sweeper thread once, if configured; each tick re-reads the setting."""
    global _started
    if not settings.BILLING_SWEEP_IN_PROCESS:
        return None
    with _lock:
        if _started is not None and _started.is_alive():
            return _started

        def run() -> None:
            while True:
                time.sleep(interval)
                if not settings.BILLING_SWEEP_IN_PROCESS:
                    continue
                try:
                    swept = sweep_once()
                    if swept["released"]:
                        logger.info("released %s expired holds", swept["released"])
                except Exception:  # a failed sweep must not end the thread: the next tick tries again
                    logger.exception("sweeping expired holds failed")

        _started = threading.Thread(target=run, daemon=True, name="hold-sweeper")
        _started.start()
        return _started
