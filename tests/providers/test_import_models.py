"""`manage.py import_models FILE.toml [--dry-run]`: SPEC §7 format, line-accurate errors, all or nothing."""

# ruff: noqa: E501  (the table of error cases keeps one case per line)

from __future__ import annotations

from decimal import Decimal
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from django.db import connection as db_connection

from apps.providers import importer, services
from apps.providers.models import AIModel, Connection, ModelFallback

pytestmark = pytest.mark.django_db

KEY = "sk-deepseek-SECRET-0123456789abcdef"
KEY2 = "sk-ant-other-SECRET-9876543210fedcba"

# Every field of SPEC §7 (and the documented extensions) — line numbers matter in the tests below.
FULL = """\
# providers of the writing service
[[connections]]
name = "deepseek"                 # unique; the upsert key
kind = "openai"
base_url = "https://api.deepseek.com/v1"
api_key_env = "DEEPSEEK_API_KEY"
timeout_seconds = 60
max_concurrency = 16
prompt_post_processing = "semi-strict"

[[connections]]
name = "local-llama"
kind = "openai_text"
base_url = "http://127.0.0.1:8080"
instruct_template = "llama3"
timeout_seconds = 2.5
max_concurrency = 0
extra_headers = { "X-Tenant" = "writers" }
enabled = false

[[models]]
model_id = "deepseek-chat"
connection = "deepseek"
upstream_model = "deepseek-chat"
display_name = "DeepSeek V3"
context_tokens = 65536
max_output_tokens = 8192
input_ratio = 1
output_ratio = 1.5
is_free = false
enabled = true
fallbacks = ["llama", "deepseek-reasoner"]

[[models]]
model_id = "deepseek-reasoner"
connection = "deepseek"
upstream_model = "deepseek-reasoner"
context_tokens = 65536
max_output_tokens = 32768
input_ratio = 0.25
output_ratio = 2

[[models]]
model_id = "llama"
connection = "local-llama"
upstream_model = "llama-3.1-8b-instruct"
display_name = "Llama 3.1 8B"
context_tokens = 8192
max_output_tokens = 1024
input_ratio = 10
output_ratio = 10
is_free = true
enabled = false
"""

# A small valid file for the validation cases (line numbers on the right).
BASE = [
    "[[connections]]",  # 1
    'name = "deepseek"',  # 2
    'kind = "openai"',  # 3
    'base_url = "https://api.deepseek.com/v1"',  # 4
    'api_key_env = "DEEPSEEK_API_KEY"',  # 5
    "",  # 6
    "[[models]]",  # 7
    'model_id = "deepseek-chat"',  # 8
    'connection = "deepseek"',  # 9
    'upstream_model = "deepseek-chat"',  # 10
    "context_tokens = 65536",  # 11
    "max_output_tokens = 8192",  # 12
    "input_ratio = 1",  # 13
    "output_ratio = 1",  # 14
]


@pytest.fixture(autouse=True)
def env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEEPSEEK_API_KEY", KEY)
    monkeypatch.delenv("MISSING_KEY", raising=False)


def write(tmp_path: Path, text: str, name: str = "models.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def run(path: Path, *args: str) -> str:
    out = StringIO()
    call_command("import_models", str(path), *args, stdout=out)
    return out.getvalue()


def fail(path: Path, *args: str) -> str:
    with pytest.raises(CommandError) as info:
        run(path, *args)
    return str(info.value)


def snapshot() -> tuple[list[Any], list[Any], list[Any]]:
    return (
        list(Connection.objects.order_by("name").values()),
        list(AIModel.objects.order_by("model_id").values()),
        list(ModelFallback.objects.order_by("id").values("model__model_id", "fallback__model_id", "position")),
    )


def base_with(replace: dict[int, str | None] | None = None, append: list[str] | None = None) -> str:
    lines = list(BASE)
    for number, text in (replace or {}).items():
        lines[number - 1] = text if text is not None else "# (removed)"
    return "\n".join([*lines, *(append or [])]) + "\n"


# ---------------------------------------------------------------------------------------------
# Happy path


def test_imports_every_field(tmp_path: Path) -> None:
    # when
    out = run(write(tmp_path, FULL))

    # then
    assert out.splitlines() == [
        "connection deepseek: created",
        "connection local-llama: created",
        "model deepseek-chat: created",
        "model deepseek-reasoner: created",
        "model llama: created",
        "Done: 5 created, 0 updated, 0 unchanged.",
    ]
    deepseek = Connection.objects.get(name="deepseek")
    assert (deepseek.kind, deepseek.base_url, deepseek.read_timeout, deepseek.connect_timeout) == (
        "openai",
        "https://api.deepseek.com/v1",
        60.0,
        10.0,
    )
    assert (deepseek.max_concurrency, deepseek.prompt_post_processing, deepseek.enabled) == (16, "semi-strict", True)
    assert (deepseek.instruct_template, deepseek.extra_headers) == ("", {})
    assert deepseek.api_key == KEY
    assert deepseek.api_key_hint == "sk-…cdef"
    assert KEY not in deepseek.api_key_encrypted

    llama_conn = Connection.objects.get(name="local-llama")
    assert (llama_conn.kind, llama_conn.base_url, llama_conn.instruct_template) == (
        "openai_text",
        "http://127.0.0.1:8080",
        "llama3",
    )
    assert (llama_conn.read_timeout, llama_conn.max_concurrency, llama_conn.enabled) == (2.5, 0, False)
    assert llama_conn.extra_headers == {"X-Tenant": "writers"}
    assert (llama_conn.api_key_encrypted, llama_conn.api_key_hint, llama_conn.prompt_post_processing) == (
        "",
        "",
        "none",
    )

    chat = AIModel.objects.get(model_id="deepseek-chat")
    assert (chat.connection_id, chat.upstream_model, chat.display_name) == (deepseek.pk, "deepseek-chat", "DeepSeek V3")
    assert (chat.context_tokens, chat.max_output_tokens) == (65536, 8192)
    assert (chat.input_ratio, chat.output_ratio, chat.is_free, chat.enabled) == (
        Decimal("1.00"),
        Decimal("1.50"),
        False,
        True,
    )
    reasoner = AIModel.objects.get(model_id="deepseek-reasoner")
    assert (reasoner.display_name, reasoner.input_ratio, reasoner.output_ratio, reasoner.is_free, reasoner.enabled) == (
        "",
        Decimal("0.25"),
        Decimal("2.00"),
        False,
        True,
    )
    llama = AIModel.objects.get(model_id="llama")
    assert (llama.connection_id, llama.is_free, llama.enabled, llama.max_output_tokens) == (
        llama_conn.pk,
        True,
        False,
        1024,
    )
    assert list(chat.fallback_links.values_list("fallback__model_id", "position")) == [
        ("llama", 0),
        ("deepseek-reasoner", 1),
    ]
    assert ModelFallback.objects.count() == 2


def test_the_key_is_never_printed_nor_stored_in_clear(tmp_path: Path) -> None:
    out = run(write(tmp_path, FULL))
    out += run(write(tmp_path, FULL), "--dry-run")
    assert KEY not in out
    with db_connection.cursor() as cursor:
        cursor.execute("SELECT * FROM providers_connection")
        rows = cursor.fetchall()
    assert rows and all(KEY not in str(value) for row in rows for value in row)


def test_running_twice_changes_nothing(tmp_path: Path) -> None:
    # given
    path = write(tmp_path, FULL)
    run(path)
    before = snapshot()

    # when
    out = run(path)

    # then
    assert out.splitlines() == [
        "connection deepseek: unchanged",
        "connection local-llama: unchanged",
        "model deepseek-chat: unchanged",
        "model deepseek-reasoner: unchanged",
        "model llama: unchanged",
        "Done: 0 created, 0 updated, 5 unchanged.",
    ]
    assert snapshot() == before  # updated_at and the encrypted key included


def test_changes_are_reported_per_field(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # given
    run(write(tmp_path, FULL))
    monkeypatch.setenv("DEEPSEEK_API_KEY", KEY2)
    changed = (
        FULL.replace("timeout_seconds = 60", "timeout_seconds = 90")
        .replace("output_ratio = 1.5", "output_ratio = 1.75")
        .replace('fallbacks = ["llama", "deepseek-reasoner"]', 'fallbacks = ["deepseek-reasoner", "llama"]')
        .replace('display_name = "Llama 3.1 8B"\n', "")
    )

    # when
    out = run(write(tmp_path, changed))

    # then
    assert out.splitlines() == [
        "connection deepseek: updated (read_timeout, api_key)",
        "connection local-llama: unchanged",
        "model deepseek-chat: updated (output_ratio, fallbacks)",
        "model deepseek-reasoner: unchanged",
        "model llama: updated (display_name)",
        "Done: 0 created, 3 updated, 2 unchanged.",
    ]
    assert KEY2 not in out
    deepseek = Connection.objects.get(name="deepseek")
    assert (deepseek.read_timeout, deepseek.api_key, deepseek.api_key_hint) == (90.0, KEY2, "sk-…dcba")
    chat = AIModel.objects.get(model_id="deepseek-chat")
    assert chat.output_ratio == Decimal("1.75")
    assert list(chat.fallback_links.values_list("fallback__model_id", flat=True)) == ["deepseek-reasoner", "llama"]
    assert AIModel.objects.get(model_id="llama").display_name == ""


def test_omitted_api_key_env_keeps_the_stored_key(tmp_path: Path) -> None:
    run(write(tmp_path, base_with()))
    out = run(write(tmp_path, base_with({5: None})))
    assert out.splitlines()[0] == "connection deepseek: unchanged"
    assert Connection.objects.get(name="deepseek").api_key == KEY


def test_fallback_graph_can_be_reversed_in_one_import(tmp_path: Path) -> None:
    # given a → b in the database
    two = base_with() + (
        '\n[[models]]\nmodel_id = "b"\nconnection = "deepseek"\nupstream_model = "b"\n'
        "context_tokens = 100\nmax_output_tokens = 10\ninput_ratio = 1\noutput_ratio = 1\n"
    )
    run(
        write(
            tmp_path,
            two.replace("output_ratio = 1\n\n[[models]]", 'output_ratio = 1\nfallbacks = ["b"]\n\n[[models]]', 1),
        )
    )
    assert list(ModelFallback.objects.values_list("model__model_id", "fallback__model_id")) == [("deepseek-chat", "b")]

    # when the file says b → a instead
    out = run(write(tmp_path, two + 'fallbacks = ["deepseek-chat"]\n'))

    # then
    assert out.splitlines()[1:3] == ["model deepseek-chat: updated (fallbacks)", "model b: updated (fallbacks)"]
    assert list(ModelFallback.objects.values_list("model__model_id", "fallback__model_id")) == [("b", "deepseek-chat")]


def test_models_may_use_connections_and_fallbacks_from_the_database(tmp_path: Path) -> None:
    run(write(tmp_path, FULL))
    text = (
        '[[models]]\nmodel_id = "extra"\nconnection = "deepseek"\nupstream_model = "x"\n'
        "context_tokens = 100\nmax_output_tokens = 10\ninput_ratio = 1\noutput_ratio = 1\n"
        'fallbacks = ["llama"]\n'
    )
    out = run(write(tmp_path, text, "extra.toml"))
    assert out.splitlines() == ["model extra: created", "Done: 1 created, 0 updated, 0 unchanged."]
    extra = AIModel.objects.get(model_id="extra")
    assert extra.connection.name == "deepseek"
    assert list(extra.fallback_links.values_list("fallback__model_id", flat=True)) == ["llama"]


# ---------------------------------------------------------------------------------------------
# Dry run


def test_dry_run_prints_the_plan_and_writes_nothing(tmp_path: Path) -> None:
    out = run(write(tmp_path, FULL), "--dry-run")
    assert out.splitlines() == [
        "connection deepseek: would be created",
        "connection local-llama: would be created",
        "model deepseek-chat: would be created",
        "model deepseek-reasoner: would be created",
        "model llama: would be created",
        "Dry run — nothing written: 5 created, 0 updated, 0 unchanged.",
    ]
    assert (Connection.objects.count(), AIModel.objects.count(), ModelFallback.objects.count()) == (0, 0, 0)


def test_dry_run_of_changes_leaves_the_database_as_it_was(tmp_path: Path) -> None:
    run(write(tmp_path, FULL))
    before = snapshot()
    out = run(write(tmp_path, FULL.replace("context_tokens = 8192", "context_tokens = 16384")), "--dry-run")
    assert "model llama: would be updated (context_tokens)" in out.splitlines()
    assert snapshot() == before


def test_dry_run_reports_errors_too(tmp_path: Path) -> None:
    message = fail(write(tmp_path, base_with({11: "context_tokens = 0"})), "--dry-run")
    assert "models.toml:11: [[models]] #1 (deepseek-chat) field 'context_tokens': must be a positive integer" in message


# ---------------------------------------------------------------------------------------------
# Validation errors, with the line and the field


ERROR_CASES = [
    ({3: 'kind = "azure"'}, None, 3, "[[connections]] #1 (deepseek) field 'kind': must be one of openai, anthropic, gemini, openai_text, mock, local"),
    ({4: 'base_url = "ftp://api.deepseek.com"'}, None, 4, "[[connections]] #1 (deepseek) field 'base_url': must start with http:// or https://"),
    ({4: 'base_url = "api.deepseek.com/v1"'}, None, 4, "[[connections]] #1 (deepseek) field 'base_url': must start with http:// or https://"),
    ({4: 'base_url = "https://api.deepseek.com/v1?key=1"'}, None, 4, "[[connections]] #1 (deepseek) field 'base_url': must not have a query string or fragment"),
    ({4: 'base_url = "https:///v1"'}, None, 4, "[[connections]] #1 (deepseek) field 'base_url': must name a host"),
    ({4: "base_url = 42"}, None, 4, "[[connections]] #1 (deepseek) field 'base_url': must be a string"),
    ({5: 'api_key_env = "deepseek-key"'}, None, 5, "[[connections]] #1 (deepseek) field 'api_key_env': must be an environment variable name (letters, digits, _)"),
    ({5: 'api_key_env = "MISSING_KEY"'}, None, 5, "[[connections]] #1 (deepseek) field 'api_key_env': environment variable MISSING_KEY is not set"),
    ({6: "timeout_seconds = 0"}, None, 6, "[[connections]] #1 (deepseek) field 'timeout_seconds': must be a number of seconds > 0 and ≤ 3600"),
    ({6: 'timeout_seconds = "60"'}, None, 6, "[[connections]] #1 (deepseek) field 'timeout_seconds': must be a number of seconds > 0 and ≤ 3600"),
    ({6: "max_concurrency = -1"}, None, 6, "[[connections]] #1 (deepseek) field 'max_concurrency': must be a non-negative integer"),
    ({6: "max_concurrency = 2.5"}, None, 6, "[[connections]] #1 (deepseek) field 'max_concurrency': must be a non-negative integer"),
    ({6: 'prompt_post_processing = "loose"'}, None, 6, "[[connections]] #1 (deepseek) field 'prompt_post_processing': must be one of none, merge, semi-strict, strict, single-user"),
    ({6: 'instruct_template = "chatml"'}, None, 6, "[[connections]] #1 (deepseek) field 'instruct_template': is only used by openai_text connections"),
    ({3: 'kind = "openai_text"', 6: 'instruct_template = "vicuna"'}, None, 6, "[[connections]] #1 (deepseek) field 'instruct_template': must be one of chatml, llama3, mistral, alpaca, gemma, transcript, custom"),
    ({3: 'kind = "openai_text"', 6: 'instruct_template = "custom"'}, None, 6, "[[connections]] #1 (deepseek) field 'custom_instruct_template': is required when instruct_template is 'custom'"),
    ({6: "enabled = 1"}, None, 6, "[[connections]] #1 (deepseek) field 'enabled': must be true or false"),
    ({3: None}, None, 1, "[[connections]] #1 (deepseek): missing required field 'kind'"),
    ({8: 'model_id = "deep seek"'}, None, 8, "[[models]] #1 (deep seek) field 'model_id': must not contain spaces"),
    ({9: 'connection = "nope"'}, None, 9, "[[models]] #1 (deepseek-chat) field 'connection': unknown connection 'nope' (not in this file nor in the database)"),
    ({10: None}, None, 7, "[[models]] #1 (deepseek-chat): missing required field 'upstream_model'"),
    ({11: "context_tokens = 0"}, None, 11, "[[models]] #1 (deepseek-chat) field 'context_tokens': must be a positive integer"),
    ({11: "context_tokens = -5"}, None, 11, "[[models]] #1 (deepseek-chat) field 'context_tokens': must be a positive integer"),
    ({11: "context_tokens = 1.5"}, None, 11, "[[models]] #1 (deepseek-chat) field 'context_tokens': must be a positive integer"),
    ({11: 'context_tokens = "65536"'}, None, 11, "[[models]] #1 (deepseek-chat) field 'context_tokens': must be a positive integer"),
    ({11: "context_tokens = true"}, None, 11, "[[models]] #1 (deepseek-chat) field 'context_tokens': must be a positive integer"),
    ({12: "max_output_tokens = 70000"}, None, 12, "[[models]] #1 (deepseek-chat) field 'max_output_tokens': must not exceed context_tokens (65536)"),
    ({13: "input_ratio = 0"}, None, 13, "[[models]] #1 (deepseek-chat) field 'input_ratio': must be a number ≥ 0.01"),
    ({13: "input_ratio = 0.005"}, None, 13, "[[models]] #1 (deepseek-chat) field 'input_ratio': must be a number ≥ 0.01"),
    ({13: "input_ratio = -1"}, None, 13, "[[models]] #1 (deepseek-chat) field 'input_ratio': must be a number ≥ 0.01"),
    ({14: "output_ratio = 1.234"}, None, 14, "[[models]] #1 (deepseek-chat) field 'output_ratio': must have at most 2 decimal places"),
    ({14: 'output_ratio = "1"'}, None, 14, "[[models]] #1 (deepseek-chat) field 'output_ratio': must be a number ≥ 0.01"),
    ({14: "output_ratio = nan"}, None, 14, "[[models]] #1 (deepseek-chat) field 'output_ratio': must be a number ≥ 0.01"),
    ({14: "output_ratio = 100000000"}, None, 14, "[[models]] #1 (deepseek-chat) field 'output_ratio': must be at most 99999999.99"),
    (None, ['is_free = "no"'], 15, "[[models]] #1 (deepseek-chat) field 'is_free': must be true or false"),
    (None, ["enabled = 0"], 15, "[[models]] #1 (deepseek-chat) field 'enabled': must be true or false"),
    (None, ["display_name = 3"], 15, "[[models]] #1 (deepseek-chat) field 'display_name': must be a string"),
    (None, ['fallbacks = "gpt-4"'], 15, "[[models]] #1 (deepseek-chat) field 'fallbacks': must be a list of model ids (strings)"),
    (None, ['fallbacks = ["gpt-5"]'], 15, "[[models]] #1 (deepseek-chat) field 'fallbacks': unknown model 'gpt-5'"),
    (None, ['fallbacks = ["deepseek-chat"]'], 15, "[[models]] #1 (deepseek-chat) field 'fallbacks': a model cannot be its own fallback ('deepseek-chat')"),
]  # fmt: skip


@pytest.mark.parametrize(("replace", "append", "line", "message"), ERROR_CASES)
def test_each_invalid_field_is_reported_with_its_line(
    tmp_path: Path, replace: dict[int, str | None] | None, append: list[str] | None, line: int, message: str
) -> None:
    # when
    error = fail(write(tmp_path, base_with(replace, append)))

    # then
    assert error.splitlines() == ["1 error; nothing was imported:", f"{tmp_path / 'models.toml'}:{line}: {message}"]
    assert (Connection.objects.count(), AIModel.objects.count()) == (0, 0)


def test_unknown_fields_are_rejected(tmp_path: Path) -> None:
    error = fail(write(tmp_path, base_with(append=["temperature = 0.7"])))
    assert (
        f"{tmp_path / 'models.toml'}:15: [[models]] #1 (deepseek-chat) field 'temperature': unknown field (allowed: "
        in error
    )
    error = fail(write(tmp_path, base_with({6: 'api_key = "sk-plain"'})))
    assert f"{tmp_path / 'models.toml'}:6: [[connections]] #1 (deepseek) field 'api_key': unknown field" in error
    assert "sk-plain" not in error
    assert Connection.objects.count() == 0


def test_unknown_top_level_tables_are_rejected(tmp_path: Path) -> None:
    error = fail(write(tmp_path, base_with(append=["", "[[model]]", 'model_id = "x"'])))
    assert error.splitlines()[1] == (
        f"{tmp_path / 'models.toml'}:16: unknown top-level key 'model' (expected [[connections]] and [[models]])"
    )


def test_every_error_is_reported_in_line_order(tmp_path: Path) -> None:
    text = base_with({3: 'kind = "azure"', 11: "context_tokens = 0", 13: "input_ratio = 0"})
    path = write(tmp_path, text)
    assert fail(path).splitlines() == [
        "3 errors; nothing was imported:",
        f"{path}:3: [[connections]] #1 (deepseek) field 'kind': must be one of openai, anthropic, gemini, openai_text, mock, local",
        f"{path}:11: [[models]] #1 (deepseek-chat) field 'context_tokens': must be a positive integer",
        f"{path}:13: [[models]] #1 (deepseek-chat) field 'input_ratio': must be a number ≥ 0.01",
    ]


def test_line_numbers_of_the_second_entry_and_after_multiline_strings(tmp_path: Path) -> None:
    # The custom template holds lines that look like TOML tables and keys: they must not confuse us.
    text = (
        "[[connections]]\n"  # 1
        'name = "local"\n'  # 2
        'kind = "openai_text"\n'  # 3
        'base_url = "http://127.0.0.1:8080"\n'  # 4
        'instruct_template = "custom"\n'  # 5
        'custom_instruct_template = """\n'  # 6
        "[[models]]\n"  # 7
        "context_tokens = 0\n"  # 8
        "{% for m in messages %}[INST] {{ m.text }} [/INST]{% endfor %}\n"  # 9
        '"""\n'  # 10
        "\n"  # 11
        "[[models]]\n"  # 12
        'model_id = "one"\n'  # 13
        'connection = "local"\n'  # 14
        'upstream_model = "m"\n'  # 15
        "context_tokens = 100\n"  # 16
        "max_output_tokens = 10\n"  # 17
        "input_ratio = 1\n"  # 18
        "output_ratio = 1\n"  # 19
        "\n"  # 20
        "[[models]]\n"  # 21
        'model_id = "two"\n'  # 22
        'connection = "local"\n'  # 23
        'upstream_model = "m"\n'  # 24
        "context_tokens = 100\n"  # 25
        "max_output_tokens = [\n"  # 26
        "  10,\n"  # 27
        "]\n"  # 28
        "input_ratio = 1\n"  # 29
        "output_ratio = 1\n"  # 30
    )
    path = write(tmp_path, text)
    assert fail(path).splitlines()[1:] == [
        f"{path}:26: [[models]] #2 (two) field 'max_output_tokens': must be a positive integer",
    ]


def test_an_invalid_connection_also_fails_the_models_that_use_it(tmp_path: Path) -> None:
    path = write(tmp_path, base_with({2: 'name = ""'}))
    assert fail(path).splitlines() == [
        "2 errors; nothing was imported:",
        f"{path}:2: [[connections]] #1 field 'name': must not be empty",
        f"{path}:9: [[models]] #1 (deepseek-chat) field 'connection': unknown connection 'deepseek' "
        "(not in this file nor in the database)",
    ]


def test_duplicate_keys_in_the_file(tmp_path: Path) -> None:
    text = base_with() + "\n" + "\n".join(BASE[6:]) + "\n"
    path = write(tmp_path, text)
    assert fail(path).splitlines()[1:] == [
        f"{path}:17: [[models]] #2 (deepseek-chat) field 'model_id': duplicate model_id 'deepseek-chat' "
        "(also in [[models]] #1 (deepseek-chat) at line 8)",
    ]


def test_fallback_loops_are_rejected(tmp_path: Path) -> None:
    # a → b → a inside the file
    text = base_with(append=['fallbacks = ["b"]']) + (
        '\n[[models]]\nmodel_id = "b"\nconnection = "deepseek"\nupstream_model = "b"\n'  # 17..20
        "context_tokens = 100\nmax_output_tokens = 10\ninput_ratio = 1\noutput_ratio = 1\n"
        'fallbacks = ["deepseek-chat"]\n'
    )
    path = write(tmp_path, text)
    assert fail(path).splitlines() == [
        "1 error; nothing was imported:",
        f"{path}:15: [[models]] #1 (deepseek-chat) field 'fallbacks': fallbacks would form a loop: "
        "deepseek-chat → b → deepseek-chat",
    ]
    assert AIModel.objects.count() == 0


def test_fallback_loops_through_database_models_are_rejected(tmp_path: Path) -> None:
    # given c → deepseek-chat in the database
    run(write(tmp_path, base_with()))
    conn = Connection.objects.get(name="deepseek")
    c = services.model_upsert(model_id="c", connection=conn, upstream_model="c").obj
    services.model_set_fallbacks(model=c, fallback_ids=["deepseek-chat"])
    before = snapshot()

    # when the file adds deepseek-chat → c
    path = write(tmp_path, base_with(append=['fallbacks = ["c"]']))

    # then
    assert fail(path).splitlines()[1:] == [
        f"{path}:15: [[models]] #1 (deepseek-chat) field 'fallbacks': fallbacks would form a loop: "
        "deepseek-chat → c → deepseek-chat",
    ]
    assert snapshot() == before


def test_missing_environment_variable_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DEEPSEEK_API_KEY")
    path = write(tmp_path, FULL)
    assert fail(path).splitlines() == [
        "1 error; nothing was imported:",
        f"{path}:6: [[connections]] #1 (deepseek) field 'api_key_env': environment variable DEEPSEEK_API_KEY is not set",
    ]
    assert (Connection.objects.count(), AIModel.objects.count()) == (0, 0)


def test_empty_environment_variable_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEEPSEEK_API_KEY", "  ")
    assert "environment variable DEEPSEEK_API_KEY is empty" in fail(write(tmp_path, FULL))


def test_toml_syntax_error_has_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, base_with({11: "context_tokens = = 5"}))
    lines = fail(path).splitlines()
    assert lines[1].startswith(f"{path}:11: TOML syntax error: ")


def test_empty_file_and_missing_file(tmp_path: Path) -> None:
    path = write(tmp_path, "# nothing\n")
    assert fail(path).splitlines()[1:] == [f"{path}: nothing to import: no [[connections]] or [[models]] tables"]
    assert fail(tmp_path / "absent.toml") == f"{tmp_path / 'absent.toml'}: no such file"


def test_a_failure_while_writing_rolls_everything_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # given an existing configuration and a write that fails half-way (after the connections)
    run(write(tmp_path, FULL))
    before = snapshot()
    real = services.model_upsert

    def flaky(**kwargs: Any) -> Any:
        if kwargs["model_id"] == "llama":
            raise ValidationError({"upstream_model": "boom"})
        return real(**kwargs)

    monkeypatch.setattr(services, "model_upsert", flaky)
    changed = FULL.replace("timeout_seconds = 60", "timeout_seconds = 5").replace(
        "input_ratio = 0.25", "input_ratio = 0.5"
    )

    # when
    error = fail(write(tmp_path, changed))

    # then
    assert error.splitlines() == ["1 error; nothing was imported:", f"{tmp_path / 'models.toml'}: boom"]
    assert snapshot() == before


def test_locate_finds_headers_and_keys() -> None:
    locs = importer.locate(FULL)
    assert [e.line for e in locs.tables["connections"]] == [2, 11]
    assert [e.line for e in locs.tables["models"]] == [21, 34, 43]
    assert locs.tables["connections"][1].keys["extra_headers"] == 18
    assert locs.tables["models"][0].keys["fallbacks"] == 32
