"""Celery application. With REDIS_URL unset, tasks run eagerly in-process (see settings)."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "writing_service.settings")

app = Celery("writing_service")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
