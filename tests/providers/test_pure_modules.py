"""The providers' pure modules import no Django (STYLE.md: pure engines, the Django side wraps them)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PURE = (
    "apps.providers.types",
    "apps.providers.tokens",
    "apps.providers.postprocess",
    "apps.providers.validation",
    "apps.providers.instruct",
    "apps.providers.routing",
    "apps.providers.adapters",
    "apps.providers.adapters.sse",
    "apps.providers.adapters.messages",
)


def test_no_django_in_the_import_closure() -> None:
    code = (
        f"import sys\nfor name in {PURE!r}: __import__(name)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'django'))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == "[]"
