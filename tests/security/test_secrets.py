"""Issue 20, item 8: with DEBUG off the service does not start on the public development SECRET_KEY, a
weak one, or without FIELD_ENCRYPTION_KEY (token hashes and provider-key encryption derive from them)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from django.test import override_settings

from writing_service.security import production_secret_problems

ROOT = Path(__file__).resolve().parents[2]
STRONG = "k" + "".join(chr(33 + (i * 7) % 90) for i in range(63))
FERNET = Fernet.generate_key().decode()


@pytest.mark.parametrize(
    ("debug", "secret_key", "field_key", "problems"),
    [
        (False, "DEV", "", ["SECRET_KEY is the development default", "FIELD_ENCRYPTION_KEY is not set"]),
        (False, "short-key", FERNET, ["SECRET_KEY is too weak"]),
        (False, "a" * 64, FERNET, ["SECRET_KEY is too weak"]),  # long but not random
        (False, STRONG, "", ["FIELD_ENCRYPTION_KEY is not set"]),
        (False, STRONG, FERNET, []),
        (True, "DEV", "", []),  # development
    ],
)
def test_the_rule(settings, debug, secret_key, field_key, problems):
    key = settings.DEV_SECRET_KEY if secret_key == "DEV" else secret_key
    with override_settings(DEBUG=debug, ALLOW_INSECURE_SECRETS=False, SECRET_KEY=key, FIELD_ENCRYPTION_KEY=field_key):
        found = production_secret_problems()
    assert [p.split(" (")[0] for p in found] == problems


def _start(**env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in ("SECRET_KEY", "FIELD_ENCRYPTION_KEY", "DEBUG")}
    clean.update({"DJANGO_SETTINGS_MODULE": "writing_service.settings", "ALLOW_INSECURE_SECRETS": "false", **env})
    return subprocess.run(
        [sys.executable, "-c", "import writing_service.asgi"],
        cwd=ROOT,
        env=clean,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_asgi_application_refuses_to_start_on_the_public_key():
    refused = _start(DEBUG="false")
    assert refused.returncode != 0
    assert "Refusing to start with DEBUG off: SECRET_KEY is the development default" in refused.stderr
    assert _start(DEBUG="false", SECRET_KEY=STRONG, FIELD_ENCRYPTION_KEY=FERNET).returncode == 0
    assert _start(DEBUG="true").returncode == 0
