"""Celery application. With REDIS_URL unset, tasks run eagerly in-process (see settings)."""

import os

from celery import Celery
from celery.signals import worker_process_init, worker_process_shutdown

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "writing_service.settings")

app = Celery("writing_service")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@app.on_after_configure.connect
def _refuse_public_secrets(sender: Celery, **kwargs: object) -> None:
    """Workers decrypt provider keys: the same secrets rule as the web process (writing_service/security.py)."""
    from writing_service.security import require_production_secrets

    require_production_secrets()


@worker_process_init.connect
def _metrics_start(**kwargs: object) -> None:
    """Each worker child (prefork) writes its own metric files (PROMETHEUS_MULTIPROC_DIR) and samples its
    own database pool."""
    from apps.core.metrics import multiproc_start, pool_sampler_start

    multiproc_start()
    pool_sampler_start()


@worker_process_shutdown.connect
def _metrics_stop(**kwargs: object) -> None:
    """A child that exits (recycled, or the worker stops) holds no gauge any more."""
    from apps.core.metrics import process_exit

    process_exit()
