"""The import rules of docs/architecture.md, checked on the source (ast), so a wrong import fails here.

1. Apps import only downward along ``LAYERS`` (an app may import itself and anything listed before it).
2. No import cycle between modules of ``apps/`` (function-level and type-only imports count too).
3. The pure engines import nothing from Django or DRF, however deep (checked in a fresh interpreter).
4. No ``services.py`` or ``selectors.py`` imports ``rest_framework``: services speak the domain
   (``apps.core.errors``), the views decide how it is written.
5. No ``selectors`` module imports a ``services`` module: reads never write.

Each checker is a plain function over an import graph and is tested on a small made-up graph too, so
a checker that stopped finding anything would fail as well.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Bottom to top. `core` is the shared kernel; `audit` (the operators' audit log) is written by every app
# that changes money, tokens or connections; `cards`, `macros` are pure codecs/engines; `providers`
# (upstream adapters, the model catalogue, the token estimate) and `billing` (the money) serve
# everything above; `generation` (writing and roleplay) is the top of the domain, `openai_api` (the
# OpenAI-compatible API over it) stands on it, `playground` (a page over the API) on that, and `dashboard`
# (the operators' page over billing and generation) is the top of all.
LAYERS = (
    "core",
    "audit",
    "cards",
    "macros",
    "providers",
    "billing",
    "accounts",
    "novels",
    "characters",
    "worldviews",
    "prompts",
    "generation",
    "openai_api",
    "playground",
    "dashboard",
)

PURE_MODULES = (
    "apps.cards",
    "apps.cards.book",
    "apps.cards.charx",
    "apps.cards.png",
    "apps.macros.engine",
    "apps.worldviews.engine",
    "apps.worldviews.engine.entry_schema",
    "apps.billing.charges",
    "apps.providers.types",
    "apps.providers.tokens",
    "apps.providers.postprocess",
    "apps.providers.validation",
    "apps.providers.instruct",
    "apps.providers.routing",
    "apps.providers.adapters",
    "apps.providers.adapters.sse",
    "apps.providers.adapters.messages",
    "apps.providers.localmodel.gguf",
    "apps.providers.localmodel.manager",
    "apps.providers.localmodel.server",
    "apps.generation.assembly",
    "apps.generation.roleplay.assembly",
    "apps.generation.calls",
    "apps.dashboard.charts",
)
FORBIDDEN_IN_PURE = ("django", "rest_framework", "drf_spectacular", "celery")


# ------------------------------------------------------------------------------------------ graph


def module_files(root: Path) -> dict[str, Path]:
    """``apps.x.y`` → its file, for every module and package under ``root / "apps"``."""
    modules = {}
    for path in sorted((root / "apps").rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def imported_names(path: Path, module: str) -> set[str]:
    """Every dotted name ``path`` imports, wherever the import statement stands: ``import m`` gives
    ``m``, ``from m import n`` gives ``m.n`` (a submodule, or a name of ``m``); relative ones resolved."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                source = ".".join([*base, *([node.module] if node.module else [])])
            else:
                source = node.module or ""
            names.update(f"{source}.{alias.name}" for alias in node.names)
    return names


def import_graph(root: Path) -> dict[str, set[str]]:
    """Module → the modules of ``apps/`` it imports (a name resolves to its longest module prefix)."""
    modules = module_files(root)

    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        targets = {resolve(name) for name in imported_names(path, module) if name.startswith("apps.")}
        graph[module] = {t for t in targets if t is not None and t not in (module, "apps")}
    return graph


# --------------------------------------------------------------------------------------- checkers


def app_of(module: str) -> str:
    return module.split(".")[1] if module.count(".") >= 1 else ""


def upward_imports(graph: Mapping[str, Iterable[str]], layers: tuple[str, ...]) -> list[str]:
    """``"a.m -> b.n"`` for every import of an app above (or absent from) the importer's layer."""
    rank = {app: i for i, app in enumerate(layers)}
    bad = []
    for module, targets in sorted(graph.items()):
        source = app_of(module)
        for target in sorted(targets):
            app = app_of(target)
            if app == source or not app:
                continue
            if source not in rank or app not in rank or rank[app] > rank[source]:
                bad.append(f"{module} -> {target}")
    return bad


def import_cycles(graph: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    cycles: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph.get(start, ()))))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    cycles.append(sorted(component))
    return cycles


def drf_in_domain_layer(root: Path) -> list[str]:
    modules = module_files(root)
    bad = []
    for module, path in modules.items():
        if path.name not in ("services.py", "selectors.py"):
            continue
        names = imported_names(path, module)
        bad.extend(f"{module} imports {n}" for n in sorted(names) if n.split(".")[0] == "rest_framework")
    return bad


def selectors_importing_services(graph: Mapping[str, Iterable[str]]) -> list[str]:
    return [
        f"{module} -> {target}"
        for module, targets in sorted(graph.items())
        if module.endswith(".selectors")
        for target in sorted(targets)
        if target.endswith(".services")
    ]


# ------------------------------------------------------------------------------------------ tests


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph(ROOT)


def test_every_app_has_a_layer(graph):
    apps = {app_of(m) for m in graph if m.count(".") >= 1}
    assert apps == set(LAYERS)


def test_apps_import_only_downward(graph):
    assert upward_imports(graph, LAYERS) == []


def test_no_import_cycles(graph):
    assert import_cycles(graph) == []


def test_selectors_do_not_import_services(graph):
    assert selectors_importing_services(graph) == []


def test_services_and_selectors_do_not_import_drf():
    assert drf_in_domain_layer(ROOT) == []


def test_pure_engines_import_no_django():
    code = (
        "import importlib, sys\n"
        f"for name in {PURE_MODULES!r}:\n"
        "    importlib.import_module(name)\n"
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({FORBIDDEN_IN_PURE!r})))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True, timeout=120
    )
    assert result.stdout.strip() == "[]"


# The checkers find what they should (a checker that found nothing would pass the tests above).


def test_checker_finds_an_upward_import():
    made_up = {"apps.billing.services": {"apps.generation.models"}, "apps.generation.models": set()}
    assert upward_imports(made_up, LAYERS) == ["apps.billing.services -> apps.generation.models"]
    assert upward_imports({"apps.new.x": {"apps.core.db"}}, LAYERS) == ["apps.new.x -> apps.core.db"]
    read_writes = {"apps.billing.selectors": {"apps.billing.services", "apps.billing.models"}}
    assert selectors_importing_services(read_writes) == ["apps.billing.selectors -> apps.billing.services"]


def test_checker_finds_a_cycle():
    made_up = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"}}
    assert import_cycles(made_up) == [["a", "b", "c"]]


def test_checker_reads_relative_and_nested_imports(tmp_path):
    package = tmp_path / "apps" / "billing"
    package.mkdir(parents=True)
    (tmp_path / "apps" / "__init__.py").write_text("")
    (package / "__init__.py").write_text("")
    (package / "models.py").write_text("")
    (package / "services.py").write_text(
        "from . import models\n"
        "def f():\n"
        "    from rest_framework.exceptions import ValidationError\n"
        "    from apps.generation.models import Generation\n"
    )
    assert import_graph(tmp_path)["apps.billing.services"] == {"apps.billing.models"}
    assert drf_in_domain_layer(tmp_path) == ["apps.billing.services imports rest_framework.exceptions.ValidationError"]
    assert "apps.generation.models.Generation" in imported_names(package / "services.py", "apps.billing.services")
