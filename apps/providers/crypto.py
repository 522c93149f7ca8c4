"""Encryption of provider API keys at rest (Fernet: AES-128-CBC + HMAC-SHA256).

`FIELD_ENCRYPTION_KEY` holds one or more Fernet keys, comma-separated: the first encrypts, all of
them decrypt (key rotation: prepend the new key, re-save, then drop the old one). Unset, a key is
derived from `SECRET_KEY` so the embedded default works — set a real key in production.
"""

from __future__ import annotations

import base64
import hashlib
from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings


class DecryptionError(Exception):
    """The stored secret cannot be decrypted with the configured keys."""


@lru_cache(maxsize=4)
def _fernet(field_key: str, secret_key: str) -> MultiFernet:
    keys = [k.strip() for k in field_key.split(",") if k.strip()]
    if not keys:
        derived = hashlib.sha256(b"field-encryption:" + secret_key.encode()).digest()
        keys = [base64.urlsafe_b64encode(derived).decode()]
    return MultiFernet([Fernet(k.encode()) for k in keys])


def _current() -> MultiFernet:
    return _fernet(settings.FIELD_ENCRYPTION_KEY, settings.SECRET_KEY)


def encrypt(plaintext: str) -> str:
    if not plaintext:
        return ""
    return _current().encrypt(plaintext.encode()).decode()


def decrypt(token: str) -> str:
    if not token:
        return ""
    try:
        return _current().decrypt(token.encode()).decode()
    except InvalidToken as exc:
        raise DecryptionError("the stored API key cannot be decrypted with FIELD_ENCRYPTION_KEY") from exc


def mask(secret: str) -> str:
    """`sk-abc…wxyz` → `sk-…wxyz`: enough to recognise a key, never enough to use it."""
    if not secret:
        return ""
    if len(secret) <= 8:
        return "…" + secret[-2:]
    head = secret[:3] if secret[:3].isascii() else ""
    return f"{head}…{secret[-4:]}"
