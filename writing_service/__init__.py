from writing_service.celery import app as celery_app

__all__ = ("celery_app",)
