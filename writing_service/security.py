"""Refuse to serve in production with secrets anyone can know.

With `DEBUG` off, the service will not start (ASGI, WSGI, Celery) on the development `SECRET_KEY` (it is
public: in this repository) or a short one — API tokens are hashed and provider keys encrypted with keys
derived from it — nor without `FIELD_ENCRYPTION_KEY`. `ALLOW_INSECURE_SECRETS=true` lifts this for test
runs and throwaway servers only.
"""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

MIN_SECRET_KEY_LENGTH = 50


def production_secret_problems() -> list[str]:
    """What is wrong with the secrets for a production start (nothing in DEBUG or when allowed)."""
    if settings.DEBUG or settings.ALLOW_INSECURE_SECRETS:
        return []
    problems = []
    key = settings.SECRET_KEY
    if key == settings.DEV_SECRET_KEY:
        problems.append("SECRET_KEY is the development default (public)")
    elif len(key) < MIN_SECRET_KEY_LENGTH or len(set(key)) < 10:
        problems.append(f"SECRET_KEY is too weak (use {MIN_SECRET_KEY_LENGTH}+ random characters)")
    if not settings.FIELD_ENCRYPTION_KEY:
        problems.append(
            "FIELD_ENCRYPTION_KEY is not set (provider API keys would be encrypted with a key derived from SECRET_KEY)"
        )
    return problems


def require_production_secrets() -> None:
    problems = production_secret_problems()
    if problems:
        raise ImproperlyConfigured(
            "Refusing to start with DEBUG off: "
            + "; ".join(problems)
            + ". Generate them with `python -c 'import secrets; print(secrets.token_urlsafe(64))'` and "
            "`python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'` "
            "(docs/operations.md, production checklist)."
        )
