"""Celery application. With REDIS_URL unset, tasks run eagerly in-process (see settings)."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "writing_service.settings")

app = Celery("writing_service")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@app.on_after_configure.connect
def _refuse_public_secrets(sender: Celery, **kwargs: object) -> None:
    """Workers decrypt provider keys: the same secrets rule as the web process (writing_service/security.py)."""
    from writing_service.security import require_production_secrets

    require_production_secrets()
