"""``import_models FILE.toml``: validate a providers file (SPEC §7) and upsert it, all or nothing.

The file has two arrays of tables: ``[[connections]]`` (upserted by ``name``) and ``[[models]]``
(upserted by ``model_id``); see ``docs/providers.md`` for every field. The whole file is validated
before anything is written and every error names the file, the line and the field at fault::

    models.toml:31: [[models]] #2 (deepseek-chat) field 'context_tokens': must be a positive integer

``tomllib`` only gives positions for syntax errors, so :func:`locate` scans the raw text for the
table headers and keys. The file is declarative: an optional field that is left out gets its
default value (``fallbacks`` left out ⇒ none), with one exception — a connection without
``api_key_env`` keeps the key it already has (e.g. one typed into the admin). API keys are read from
the environment variable named by ``api_key_env``, stored encrypted, and never printed.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from apps.audit.services import Actor
from apps.providers import selectors, services, validation
from apps.providers.models import AIModel, Connection
from apps.providers.validation import ConfigInvalid

CONNECTION_KEYS: tuple[str, ...] = (
    "name",
    "kind",
    "base_url",
    "api_key_env",
    "timeout_seconds",
    "max_concurrency",
    "prompt_post_processing",
    "instruct_template",
    # extensions of the SPEC §7 format (documented in docs/providers.md)
    "custom_instruct_template",
    "extra_headers",
    "enabled",
)
MODEL_KEYS: tuple[str, ...] = (
    "model_id",
    "connection",
    "upstream_model",
    "display_name",
    "context_tokens",
    "max_output_tokens",
    "input_ratio",
    "output_ratio",
    "is_free",
    "enabled",
    "fallbacks",
)
CONNECTION_REQUIRED: tuple[str, ...] = ("name", "kind")
MODEL_REQUIRED: tuple[str, ...] = (
    "model_id",
    "connection",
    "upstream_model",
    "context_tokens",
    "max_output_tokens",
    "input_ratio",
    "output_ratio",
)
# An absent field's error is shown on the line of the field that requires it.
_LINE_FALLBACK = {"custom_instruct_template": "instruct_template"}
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
MAX_TOKENS_LIMIT = 100_000_000
MAX_CONCURRENCY_LIMIT = 100_000


# ---------------------------------------------------------------------------------------------
# Positions in the raw text


@dataclass(slots=True)
class EntryLoc:
    line: int  # the ``[[table]]`` header
    keys: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class Locations:
    tables: dict[str, list[EntryLoc]] = field(default_factory=dict)
    top: dict[str, int] = field(default_factory=dict)  # top-level keys and other tables

    def entry(self, table: str, index: int) -> EntryLoc | None:
        entries = self.tables.get(table, [])
        return entries[index] if index < len(entries) else None


_ARRAY_HEADER = re.compile(r"^\s*\[\[\s*(.+?)\s*\]\]\s*(#.*)?$")
_TABLE_HEADER = re.compile(r"^\s*\[\s*([^\[\]]+?)\s*\]\s*(#.*)?$")
_KEY_LINE = re.compile(r"""^\s*("(?:[^"\\]|\\.)*"|'[^']*'|[A-Za-z0-9_\-]+)\s*(=|\.)""")


def _unquote(key: str) -> str:
    key = key.strip()
    if len(key) >= 2 and key[0] == key[-1] and key[0] in "\"'":
        return key[1:-1]
    return key


def _multiline_opened(rest: str) -> str | None:
    """The delimiter of a multi-line string opened (and not closed) in ``rest``, if any."""
    positions = [(rest.find(d), d) for d in ('"""', "'''") if rest.find(d) != -1]
    if not positions:
        return None
    _pos, delim = min(positions)
    return delim if rest.count(delim) % 2 == 1 else None


def locate(text: str) -> Locations:
    """Line numbers (1-based) of array-table headers and of the keys inside each entry."""
    locs = Locations()
    current: EntryLoc | None = None
    current_prefix = ""  # for [table.sub] headers: keys land on "sub"
    in_string: str | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        if in_string is not None:
            if line.count(in_string) % 2 == 1:
                in_string = None
            continue
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        array = _ARRAY_HEADER.match(line)
        if array:
            name = _unquote(array.group(1))
            current = EntryLoc(number)
            current_prefix = ""
            if "." in name:
                # [[connections.x]]: a sub-table array of the last entry; treat as its key "x"
                top, _, sub = name.partition(".")
                parent = locs.tables.get(top, [])
                if parent:
                    parent[-1].keys.setdefault(sub, number)
                current = None
            else:
                locs.tables.setdefault(name, []).append(current)
            continue
        table = _TABLE_HEADER.match(line)
        if table:
            name = _unquote(table.group(1))
            top, _, sub = name.partition(".")
            parent_entries = locs.tables.get(top)
            if sub and parent_entries:
                parent_entries[-1].keys.setdefault(sub.split(".")[0], number)
                current = parent_entries[-1]
                current_prefix = sub.split(".")[0]
            else:
                locs.top.setdefault(top, number)
                current = None
                current_prefix = "-"  # keys of an unknown table: not recorded
            continue
        key = _KEY_LINE.match(line)
        if key:
            name = _unquote(key.group(1))
            if current is None:
                if not current_prefix:
                    locs.top.setdefault(name, number)
            elif not current_prefix:
                current.keys.setdefault(name, number)
            rest = line[key.end() :]
            in_string = _multiline_opened(rest)
    return locs


# ---------------------------------------------------------------------------------------------
# Errors and results


@dataclass(frozen=True, slots=True)
class ImportProblem:
    line: int | None
    message: str


class ImportFailed(Exception):
    """The file is invalid; ``problems`` lists every error, ordered by line."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True, slots=True)
class ItemResult:
    kind: str  # "connection" | "model"
    key: str
    action: services.Action
    changed: tuple[str, ...] = ()

    def describe(self, *, dry_run: bool) -> str:
        verb = f"would be {self.action}" if dry_run and self.action != "unchanged" else self.action
        detail = f" ({', '.join(self.changed)})" if self.changed else ""
        return f"{self.kind} {self.key}: {verb}{detail}"


@dataclass(frozen=True, slots=True)
class ImportReport:
    items: tuple[ItemResult, ...]
    dry_run: bool

    def count(self, action: str) -> int:
        return sum(1 for item in self.items if item.action == action)

    def lines(self) -> list[str]:
        out = [item.describe(dry_run=self.dry_run) for item in self.items]
        summary = (
            f"{self.count('created')} created, {self.count('updated')} updated, {self.count('unchanged')} unchanged"
        )
        out.append(f"Dry run — nothing written: {summary}." if self.dry_run else f"Done: {summary}.")
        return out


class _Collector:
    def __init__(self, filename: str, locs: Locations) -> None:
        self.filename = filename
        self.locs = locs
        self.problems: list[ImportProblem] = []

    def add(self, line: int | None, message: str) -> None:
        self.problems.append(ImportProblem(line, message))

    def rendered(self) -> list[str]:
        ordered = sorted(self.problems, key=lambda p: (p.line is None, p.line or 0))
        return [
            f"{self.filename}:{p.line}: {p.message}" if p.line else f"{self.filename}: {p.message}" for p in ordered
        ]


@dataclass(slots=True)
class _Entry:
    table: str
    index: int
    data: Mapping[str, Any]
    loc: EntryLoc | None
    errors: _Collector
    label_key: str
    ok: bool = True

    @property
    def label(self) -> str:
        ident = self.data.get(self.label_key)
        suffix = f" ({ident})" if isinstance(ident, str) and ident else ""
        return f"[[{self.table}]] #{self.index + 1}{suffix}"

    def line(self, key: str | None = None) -> int | None:
        if self.loc is None:
            return None
        for name in (key, _LINE_FALLBACK.get(key or "")):
            if name is not None and name in self.loc.keys:
                return self.loc.keys[name]
        return self.loc.line

    def fail(self, key: str | None, message: str) -> None:
        self.ok = False
        where = f"{self.label} field '{key}'" if key else self.label
        self.errors.add(self.line(key), f"{where}: {message}")

    # typed getters: return None (after recording an error) when invalid or absent

    def string(self, key: str, *, max_length: int, default: str | None = None, allow_empty: bool = False) -> str | None:
        if key not in self.data:
            return default
        value = self.data[key]
        if not isinstance(value, str):
            self.fail(key, "must be a string")
            return None
        if not value.strip() and not allow_empty:
            self.fail(key, "must not be empty")
            return None
        if len(value) > max_length:
            self.fail(key, f"must be at most {max_length} characters")
            return None
        return value

    def choice(self, key: str, choices: tuple[str, ...], *, default: str | None = None) -> str | None:
        if key not in self.data:
            return default
        value = self.data[key]
        if not isinstance(value, str) or value not in choices:
            self.fail(key, f"must be one of {', '.join(choices)}")
            return None
        return value

    def positive_int(self, key: str, *, default: int | None = None, allow_zero: bool = False) -> int | None:
        if key not in self.data:
            return default
        value = self.data[key]
        low = 0 if allow_zero else 1
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            self.fail(key, "must be a non-negative integer" if allow_zero else "must be a positive integer")
            return None
        if value > MAX_TOKENS_LIMIT:
            self.fail(key, f"must be at most {MAX_TOKENS_LIMIT}")
            return None
        return value

    def boolean(self, key: str, *, default: bool) -> bool | None:
        if key not in self.data:
            return default
        value = self.data[key]
        if not isinstance(value, bool):
            self.fail(key, "must be true or false")
            return None
        return value

    def ratio(self, key: str) -> Decimal | None:
        if key not in self.data:
            return None
        value = self.data[key]
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.fail(key, "must be a number ≥ 0.01")
            return None
        try:
            return validation.parse_ratio(value)
        except ConfigInvalid as exc:
            self.fail(key, exc.message)
            return None

    def check_keys(self, allowed: tuple[str, ...], required: tuple[str, ...]) -> None:
        for key in self.data:
            if key not in allowed:
                self.fail(key, f"unknown field (allowed: {', '.join(allowed)})")
        for key in required:
            if key not in self.data:
                self.fail(None, f"missing required field '{key}'")


# ---------------------------------------------------------------------------------------------
# Validation


@dataclass(slots=True)
class _ConnectionPlan:
    entry: _Entry
    name: str
    values: dict[str, Any]
    api_key: str | None


@dataclass(slots=True)
class _ModelPlan:
    entry: _Entry
    model_id: str
    connection: str
    values: dict[str, Any]
    fallbacks: list[str]


def _validate_connection(entry: _Entry, environ: Mapping[str, str]) -> _ConnectionPlan | None:
    entry.check_keys(CONNECTION_KEYS, CONNECTION_REQUIRED)
    name = entry.string("name", max_length=100)
    kind = entry.choice("kind", services.KINDS)
    base_url = entry.string("base_url", max_length=500, default="", allow_empty=True)
    if base_url and kind:
        try:
            base_url = validation.validate_base_url(base_url, kind=kind)
        except ConfigInvalid as exc:
            entry.fail("base_url", exc.message)
    api_key: str | None = None
    env_name = entry.string("api_key_env", max_length=200)
    if env_name is not None:
        if not _ENV_NAME.match(env_name):
            entry.fail("api_key_env", "must be an environment variable name (letters, digits, _)")
        elif env_name not in environ:
            entry.fail("api_key_env", f"environment variable {env_name} is not set")
        elif not environ[env_name].strip():
            entry.fail("api_key_env", f"environment variable {env_name} is empty")
        else:
            api_key = environ[env_name].strip()
    timeout: float | None = 120.0
    if "timeout_seconds" in entry.data:
        raw = entry.data["timeout_seconds"]
        if isinstance(raw, bool) or not isinstance(raw, int | float) or not (0 < raw <= validation.MAX_TIMEOUT_SECONDS):
            entry.fail("timeout_seconds", f"must be a number of seconds > 0 and ≤ {validation.MAX_TIMEOUT_SECONDS:g}")
            timeout = None
        else:
            timeout = max(0.1, float(raw))
    max_concurrency = entry.positive_int("max_concurrency", default=32, allow_zero=True)
    if max_concurrency is not None and max_concurrency > MAX_CONCURRENCY_LIMIT:
        entry.fail("max_concurrency", f"must be at most {MAX_CONCURRENCY_LIMIT}")
    post = entry.choice("prompt_post_processing", services.POST_PROCESSING_CHOICES, default="none")
    instruct = entry.string("instruct_template", max_length=32, default="")
    custom = entry.string("custom_instruct_template", max_length=100_000, default="")
    if instruct is not None and custom is not None and kind:
        try:
            validation.validate_instruct(kind=kind, instruct_template=instruct, custom_instruct_template=custom)
        except ConfigInvalid as exc:
            entry.fail(exc.field, exc.message)
    headers: dict[str, str] | None = {}
    if "extra_headers" in entry.data:
        raw_headers = entry.data["extra_headers"]
        if not isinstance(raw_headers, dict):
            entry.fail("extra_headers", "must be a table of header names to string values")
            headers = None
        else:
            try:
                headers = validation.validate_extra_headers(raw_headers)
            except ConfigInvalid as exc:
                entry.fail("extra_headers", exc.message)
    enabled = entry.boolean("enabled", default=True)
    if not entry.ok or name is None or kind is None:
        return None
    return _ConnectionPlan(
        entry=entry,
        name=name,
        api_key=api_key,
        values={
            "kind": kind,
            "base_url": base_url or "",
            "read_timeout": timeout,
            "max_concurrency": max_concurrency,
            "prompt_post_processing": post,
            "instruct_template": instruct or "",
            "custom_instruct_template": custom or "",
            "extra_headers": headers or {},
            "enabled": enabled,
        },
    )


def _validate_model(entry: _Entry, connection_names: set[str]) -> _ModelPlan | None:
    entry.check_keys(MODEL_KEYS, MODEL_REQUIRED)
    model_id = entry.string("model_id", max_length=100)
    if model_id is not None and (model_id != model_id.strip() or any(ch.isspace() for ch in model_id)):
        entry.fail("model_id", "must not contain spaces")
    connection = entry.string("connection", max_length=100)
    if connection is not None and connection not in connection_names:
        entry.fail("connection", f"unknown connection {connection!r} (not in this file nor in the database)")
    upstream = entry.string("upstream_model", max_length=200)
    display_name = entry.string("display_name", max_length=200, default="", allow_empty=True)
    context_tokens = entry.positive_int("context_tokens")
    max_output = entry.positive_int("max_output_tokens")
    if context_tokens and max_output and max_output > context_tokens:
        entry.fail("max_output_tokens", f"must not exceed context_tokens ({context_tokens})")
    input_ratio = entry.ratio("input_ratio")
    output_ratio = entry.ratio("output_ratio")
    is_free = entry.boolean("is_free", default=False)
    enabled = entry.boolean("enabled", default=True)
    fallbacks: list[str] = []
    if "fallbacks" in entry.data:
        raw = entry.data["fallbacks"]
        if not isinstance(raw, list) or not all(isinstance(item, str) and item for item in raw):
            entry.fail("fallbacks", "must be a list of model ids (strings)")
        else:
            fallbacks = list(raw)
    if not entry.ok or model_id is None or connection is None or upstream is None:
        return None
    return _ModelPlan(
        entry=entry,
        model_id=model_id,
        connection=connection,
        fallbacks=fallbacks,
        values={
            "upstream_model": upstream,
            "display_name": display_name or "",
            "context_tokens": context_tokens,
            "max_output_tokens": max_output,
            "input_ratio": input_ratio,
            "output_ratio": output_ratio,
            "is_free": is_free,
            "enabled": enabled,
        },
    )


def _entries(data: Mapping[str, Any], table: str, locs: Locations, errors: _Collector, label_key: str) -> list[_Entry]:
    raw = data.get(table, [])
    if not isinstance(raw, list) or not all(isinstance(item, dict) for item in raw):
        errors.add(locs.top.get(table), f"'{table}' must be an array of tables: [[{table}]]")
        return []
    return [_Entry(table, i, item, locs.entry(table, i), errors, label_key) for i, item in enumerate(raw)]


def _check_unique(entries: list[_Entry], key: str, what: str) -> None:
    first: dict[str, _Entry] = {}
    for entry in entries:
        value = entry.data.get(key)
        if not isinstance(value, str):
            continue
        if value in first:
            other = first[value]
            at = f" at line {other.line(key)}" if other.line(key) else ""
            entry.fail(key, f"duplicate {what} {value!r} (also in {other.label}{at})")
        else:
            first[value] = entry


def validate(text: str, *, filename: str, environ: Mapping[str, str]) -> tuple[list[_ConnectionPlan], list[_ModelPlan]]:
    """Parse and check the whole file (reads the database for known names); raise ImportFailed."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        match = re.search(r"line (\d+)", str(exc))
        where = f"{filename}:{match.group(1)}" if match else filename
        raise ImportFailed([f"{where}: TOML syntax error: {exc}"]) from None
    locs = locate(text)
    errors = _Collector(filename, locs)
    for key in data:
        if key not in ("connections", "models"):
            line = locs.top.get(key) or next((e.line for e in locs.tables.get(key, [])), None)
            errors.add(line, f"unknown top-level key '{key}' (expected [[connections]] and [[models]])")
    conn_entries = _entries(data, "connections", locs, errors, "name")
    model_entries = _entries(data, "models", locs, errors, "model_id")
    if not conn_entries and not model_entries and not errors.problems:
        errors.add(None, "nothing to import: no [[connections]] or [[models]] tables")
    _check_unique(conn_entries, "name", "connection name")
    _check_unique(model_entries, "model_id", "model_id")

    connections = [p for e in conn_entries if (p := _validate_connection(e, environ)) is not None]
    file_names = {e.data["name"] for e in conn_entries if isinstance(e.data.get("name"), str)}
    known_connections = file_names | set(Connection.objects.values_list("name", flat=True))
    models = [m for e in model_entries if (m := _validate_model(e, known_connections)) is not None]

    # Fallbacks: known ids, not self, no duplicates, and no loop in the resulting graph.
    file_ids = {e.data["model_id"] for e in model_entries if isinstance(e.data.get("model_id"), str)}
    known_ids = file_ids | set(AIModel.objects.values_list("model_id", flat=True))
    graph = selectors.fallback_graph()
    for plan in models:
        graph[plan.model_id] = list(plan.fallbacks)
    reported: set[frozenset[str]] = set()
    for plan in models:
        try:
            validation.validate_fallbacks(
                model_id=plan.model_id, fallback_ids=plan.fallbacks, known_ids=known_ids, graph=graph
            )
        except ConfigInvalid as exc:
            if exc.code == "cycle":  # report each loop once, on the first model of the file in it
                cycle = frozenset(validation.find_cycle(graph, plan.model_id) or ())
                if cycle in reported:
                    continue
                reported.add(cycle)
            plan.entry.fail("fallbacks", exc.message)
    if errors.problems:
        raise ImportFailed(errors.rendered())
    return connections, [m for m in models if m.entry.ok]


# ---------------------------------------------------------------------------------------------
# Applying


def import_models(
    text: str,
    *,
    filename: str = "models.toml",
    dry_run: bool = False,
    environ: Mapping[str, str] | None = None,
    by: Actor | None = None,
) -> ImportReport:
    """Validate ``text`` and upsert it in one transaction (rolled back when ``dry_run``), each change
    audited as ``by``'s.

    Raises :class:`ImportFailed` (nothing written) when the file has any error."""
    env = os.environ if environ is None else environ
    items: list[ItemResult] = []
    with transaction.atomic():
        connection_plans, model_plans = validate(text, filename=filename, environ=env)
        by_name: dict[str, Connection] = {}
        try:
            for cplan in connection_plans:
                result = services.connection_upsert(name=cplan.name, api_key=cplan.api_key, by=by, **cplan.values)
                by_name[cplan.name] = result.obj
                items.append(ItemResult("connection", cplan.name, result.action, result.changed))
            model_results: dict[str, services.Upserted[AIModel]] = {}
            for mplan in model_plans:
                connection = by_name.get(mplan.connection) or Connection.objects.get(name=mplan.connection)
                model_results[mplan.model_id] = services.model_upsert(
                    model_id=mplan.model_id, connection=connection, by=by, **mplan.values
                )
            # Fallbacks in two passes, so that a graph that is acyclic in the end never looks cyclic
            # half-way (e.g. a → b becoming b → a): clear the lists that change, then set them.
            # One audit entry per changed list, from the list before the import to the one after it.
            changing = []
            previous: dict[str, list[str]] = {}
            for mplan in model_plans:
                model = model_results[mplan.model_id].obj
                current = list(
                    model.fallback_links.order_by("position", "id").values_list("fallback__model_id", flat=True)
                )
                if current != mplan.fallbacks:
                    changing.append(mplan)
                    previous[mplan.model_id] = current
                    services.model_set_fallbacks(model=model, fallback_ids=[])
            for mplan in changing:
                services.model_set_fallbacks(
                    model=model_results[mplan.model_id].obj,
                    fallback_ids=mplan.fallbacks,
                    by=by,
                    audit_before=previous[mplan.model_id],
                )
            changing_ids = {m.model_id for m in changing}
            for mplan in model_plans:
                model_result = model_results[mplan.model_id]
                action, changed = model_result.action, model_result.changed
                if mplan.model_id in changing_ids and action != "created":
                    action, changed = "updated", (*changed, "fallbacks")
                items.append(ItemResult("model", mplan.model_id, action, changed))
        except ValidationError as exc:  # a safety net: validate() should have caught it
            raise ImportFailed([f"{filename}: {message}" for message in exc.messages]) from None
        except IntegrityError:  # e.g. another import created the same name at the same moment
            raise ImportFailed(
                [f"{filename}: the database changed during the import; nothing was imported — run it again"]
            ) from None
        if dry_run:
            transaction.set_rollback(True)
    return ImportReport(tuple(items), dry_run)
