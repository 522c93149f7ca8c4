"""The kind → adapter table in apps/providers/adapters/__init__.py."""

from __future__ import annotations

import doctest

import pytest

import apps.providers.adapters
from apps.providers.adapters import ADAPTER_KINDS, ADAPTERS, ConnectionConfig, get_adapter


def test_the_table_covers_every_kind_in_order() -> None:
    assert tuple(ADAPTERS) == ADAPTER_KINDS == ("openai", "anthropic", "gemini", "openai_text", "mock", "local")


@pytest.mark.parametrize("kind", ADAPTER_KINDS)
def test_each_kind_gets_its_own_adapter(kind: str) -> None:
    adapter = get_adapter(ConnectionConfig(kind=kind, base_url="http://127.0.0.1:9"))
    assert type(adapter) is ADAPTERS[kind]
    assert adapter.kind == kind


def test_unknown_kind_names_the_known_ones() -> None:
    with pytest.raises(ValueError) as exc:
        get_adapter(ConnectionConfig(kind="cohere"))
    assert str(exc.value) == (
        "unknown provider kind 'cohere'; expected one of openai, anthropic, gemini, openai_text, mock, local"
    )


def test_the_package_docstring_example_holds() -> None:
    assert doctest.testmod(apps.providers.adapters).failed == 0
