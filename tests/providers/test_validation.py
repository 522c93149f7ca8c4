"""The pure provider checks (apps/providers/validation.py) and how the services raise them."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from django.core.exceptions import ValidationError

from apps.providers import services
from apps.providers.validation import (
    ConfigInvalid,
    find_cycle,
    parse_ratio,
    validate_base_url,
    validate_extra_headers,
    validate_fallbacks,
    validate_instruct,
)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(1, Decimal("1.00"), id="int"),
        pytest.param(0.01, Decimal("0.01"), id="float-minimum"),
        pytest.param("2.5", Decimal("2.50"), id="string"),
        pytest.param(Decimal("99999999.99"), Decimal("99999999.99"), id="maximum"),
    ],
)
def test_parse_ratio(value: Any, expected: Decimal) -> None:
    assert str(parse_ratio(value)) == str(expected)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        pytest.param(True, "must be a number ≥ 0.01", id="bool"),
        pytest.param("abc", "must be a number ≥ 0.01", id="not-a-number"),
        pytest.param("NaN", "must be a number ≥ 0.01", id="nan"),
        pytest.param(0, "must be a number ≥ 0.01", id="zero"),
        pytest.param("100000000", "must be at most 99999999.99", id="too-large"),
        pytest.param("1.005", "must have at most 2 decimal places", id="three-decimals"),
    ],
)
def test_parse_ratio_refuses(value: Any, message: str) -> None:
    with pytest.raises(ConfigInvalid) as exc:
        parse_ratio(value)
    assert (exc.value.message, exc.value.field, exc.value.code) == (message, None, None)


@pytest.mark.parametrize(
    ("url", "outcome"),
    [
        pytest.param("  ", "", id="empty-is-the-default"),
        pytest.param(" https://api.example.com/v1 ", "https://api.example.com/v1", id="stripped"),
        pytest.param("https://" + "a" * 500, "must be at most 500 characters", id="too-long"),
        pytest.param("https://a b", "must not contain spaces", id="space"),
        pytest.param("ftp://host", "must start with http:// or https://", id="scheme"),
        pytest.param("http:///path", "must name a host", id="no-host"),
        pytest.param("https://host/?q=1", "must not have a query string or fragment", id="query"),
        pytest.param("https://host:99999", "has an invalid port", id="port"),
    ],
)
def test_validate_base_url(url: str, outcome: str) -> None:
    if outcome == "" or outcome.startswith("http"):
        assert validate_base_url(url, kind="openai") == outcome
        return
    with pytest.raises(ConfigInvalid) as exc:
        validate_base_url(url, kind="openai")
    assert exc.value.message == outcome


@pytest.mark.parametrize(
    ("kind", "template", "custom", "field", "message"),
    [
        pytest.param("openai", "chatml", "", "instruct_template", "is only used by openai_text connections", id="t"),
        pytest.param("openai", "", "x", "custom_instruct_template", "is only used by openai_text connections", id="c"),
        pytest.param(
            "openai_text",
            "nope",
            "",
            "instruct_template",
            "must be one of chatml, llama3, mistral, alpaca, gemma, transcript, custom",
            id="unknown",
        ),
        pytest.param(
            "openai_text",
            "custom",
            " ",
            "custom_instruct_template",
            "is required when instruct_template is 'custom'",
            id="custom-empty",
        ),
        pytest.param(
            "openai_text",
            "chatml",
            "x",
            "custom_instruct_template",
            "is only used when instruct_template is 'custom'",
            id="custom-unused",
        ),
    ],
)
def test_validate_instruct(kind: str, template: str, custom: str, field: str, message: str) -> None:
    with pytest.raises(ConfigInvalid) as exc:
        validate_instruct(kind=kind, instruct_template=template, custom_instruct_template=custom)
    assert (exc.value.field, exc.value.message) == (field, message)


def test_validate_instruct_accepts() -> None:
    validate_instruct(kind="openai", instruct_template="", custom_instruct_template="")
    validate_instruct(kind="openai_text", instruct_template="llama3", custom_instruct_template="")


def test_validate_extra_headers() -> None:
    assert validate_extra_headers({"X-Title": "writer"}) == {"X-Title": "writer"}
    with pytest.raises(ConfigInvalid, match=r"^invalid header name 'bad name'$"):
        validate_extra_headers({"bad name": "v"})
    with pytest.raises(ConfigInvalid, match=r"^header 'X-A' must be a one-line string$"):
        validate_extra_headers({"X-A": "a\nb"})


def test_find_cycle() -> None:
    assert find_cycle({"a": ["b"], "b": ["c"], "c": ["a"]}, "a") == ["a", "b", "c", "a"]
    assert find_cycle({"a": ["b"], "b": ["c"]}, "a") is None


@pytest.mark.parametrize(
    ("fallbacks", "message", "code"),
    [
        pytest.param(["a"], "a model cannot be its own fallback ('a')", None, id="self"),
        pytest.param(["b", "b"], "'b' is listed twice", None, id="twice"),
        pytest.param(["zz"], "unknown model 'zz'", None, id="unknown"),
        pytest.param([""], "fallbacks must be model ids (strings)", None, id="empty-id"),
        pytest.param(["c"], "fallbacks would form a loop: a → c → a", "cycle", id="loop"),
    ],
)
def test_validate_fallbacks(fallbacks: list[str], message: str, code: str | None) -> None:
    with pytest.raises(ConfigInvalid) as exc:
        validate_fallbacks(model_id="a", fallback_ids=fallbacks, known_ids=["a", "b", "c"], graph={"c": ["a"]})
    assert (exc.value.message, exc.value.code) == (message, code)


# The services keep raising Django's ValidationError, in the same shapes as before the checks moved.


@pytest.mark.django_db
def test_connection_upsert_raises_the_check_as_a_validation_error() -> None:
    with pytest.raises(ValidationError) as exc:
        services.connection_upsert(name="x", kind="openai", base_url="ftp://host")
    assert (exc.value.messages, exc.value.code) == (["must start with http:// or https://"], None)
    with pytest.raises(ValidationError) as exc:
        services.connection_upsert(name="x", kind="openai", instruct_template="chatml")
    assert exc.value.message_dict == {"instruct_template": ["is only used by openai_text connections"]}
    with pytest.raises(ValidationError) as exc:
        services.connection_upsert(name="x", kind="openai", extra_headers={"bad name": "v"})
    assert exc.value.messages == ["invalid header name 'bad name'"]


@pytest.mark.django_db
def test_model_upsert_collects_ratio_errors_by_field() -> None:
    conn = services.connection_upsert(name="c", kind="mock").obj
    with pytest.raises(ValidationError) as exc:
        services.model_upsert(model_id="m", connection=conn, upstream_model="m", input_ratio="0", output_ratio="1.005")
    assert exc.value.message_dict == {
        "input_ratio": ["must be a number ≥ 0.01"],
        "output_ratio": ["must have at most 2 decimal places"],
    }


@pytest.mark.django_db
def test_model_set_fallbacks_raises_a_loop_with_its_code() -> None:
    conn = services.connection_upsert(name="c", kind="mock").obj
    a = services.model_upsert(model_id="a", connection=conn, upstream_model="a").obj
    b = services.model_upsert(model_id="b", connection=conn, upstream_model="b").obj
    services.model_set_fallbacks(model=a, fallback_ids=["b"])
    with pytest.raises(ValidationError) as exc:
        services.model_set_fallbacks(model=b, fallback_ids=["a"])
    assert (exc.value.messages, exc.value.code) == (["fallbacks would form a loop: b → a → b"], "cycle")
    with pytest.raises(ValidationError) as exc:
        services.model_set_fallbacks(model=b, fallback_ids=["zz"])
    assert (exc.value.messages, exc.value.code) == (["unknown model 'zz'"], None)
