"""Billing sits below generation: nothing in apps/billing imports apps.generation (docs/billing.md:
"billing stays unaware of generation"), and its reads import none of its writes (the services import
the selectors, never the reverse)."""

from __future__ import annotations

import ast
from pathlib import Path

import apps.billing

BILLING = Path(apps.billing.__file__).parent


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_billing_imports_nothing_from_generation():
    offenders = {
        str(path.relative_to(BILLING)): sorted(n for n in imported_modules(path) if n.startswith("apps.generation"))
        for path in BILLING.rglob("*.py")
    }
    assert {name: found for name, found in offenders.items() if found} == {}


def test_selectors_do_not_import_services():
    found = imported_modules(BILLING / "selectors.py")
    assert not {n for n in found if n.startswith("apps.billing.services")} and "apps.billing.services" not in found
