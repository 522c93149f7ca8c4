"""normalize_base_url: accepted with or without /v1, never doubled endpoints."""

from __future__ import annotations

import pytest

from apps.providers.adapters import ConnectionConfig, get_adapter, normalize_base_url

CASES = [
    # openai
    ("openai", "https://api.openai.com", "https://api.openai.com/v1"),
    ("openai", "https://api.openai.com/", "https://api.openai.com/v1"),
    ("openai", "https://api.openai.com/v1", "https://api.openai.com/v1"),
    ("openai", "https://api.openai.com/v1/", "https://api.openai.com/v1"),
    ("openai", "https://api.openai.com/v1/chat/completions", "https://api.openai.com/v1"),
    ("openai", "https://api.openai.com/v1/chat/completions/", "https://api.openai.com/v1"),
    ("openai", "https://api.openai.com/v1/completions", "https://api.openai.com/v1"),
    ("openai", "https://api.openai.com/v1/models", "https://api.openai.com/v1"),
    ("openai", "https://api.deepseek.com", "https://api.deepseek.com/v1"),
    ("openai", "https://api.deepseek.com/beta", "https://api.deepseek.com/beta"),
    ("openai", "https://openrouter.ai/api/v1", "https://openrouter.ai/api/v1"),
    ("openai", "https://api.z.ai/api/paas/v4", "https://api.z.ai/api/paas/v4"),
    ("openai", "https://api.z.ai/api/paas/v4/chat/completions", "https://api.z.ai/api/paas/v4"),
    ("openai", "http://localhost:11434", "http://localhost:11434/v1"),
    ("openai", "http://127.0.0.1:8080/v1", "http://127.0.0.1:8080/v1"),
    ("openai", "localhost:8080", "http://localhost:8080/v1"),
    ("openai", "api.example.com/v1", "https://api.example.com/v1"),
    ("openai", "  https://API.example.com//v1//  ", "https://API.example.com/v1"),
    ("openai", "HTTPS://api.example.com/v1?x=1#frag", "https://api.example.com/v1"),
    ("openai", "", "https://api.openai.com/v1"),
    ("openai", None, "https://api.openai.com/v1"),
    # openai_text
    ("openai_text", "http://localhost:5000", "http://localhost:5000/v1"),
    ("openai_text", "http://localhost:5000/v1/completions", "http://localhost:5000/v1"),
    ("openai_text", "http://localhost:5000/v1/chat/completions", "http://localhost:5000/v1"),
    # anthropic
    ("anthropic", "https://api.anthropic.com", "https://api.anthropic.com/v1"),
    ("anthropic", "https://api.anthropic.com/v1", "https://api.anthropic.com/v1"),
    ("anthropic", "https://api.anthropic.com/v1/", "https://api.anthropic.com/v1"),
    ("anthropic", "https://api.anthropic.com/v1/messages", "https://api.anthropic.com/v1"),
    ("anthropic", "https://proxy.example.com/anthropic", "https://proxy.example.com/anthropic/v1"),
    ("anthropic", "", "https://api.anthropic.com/v1"),
    # gemini
    ("gemini", "https://generativelanguage.googleapis.com", "https://generativelanguage.googleapis.com/v1beta"),
    ("gemini", "https://generativelanguage.googleapis.com/v1beta", "https://generativelanguage.googleapis.com/v1beta"),
    ("gemini", "https://generativelanguage.googleapis.com/v1", "https://generativelanguage.googleapis.com/v1"),
    (
        "gemini",
        "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.0-flash:generateContent",
        "https://generativelanguage.googleapis.com/v1beta",
    ),
    (
        "gemini",
        "https://generativelanguage.googleapis.com/v1beta/models",
        "https://generativelanguage.googleapis.com/v1beta",
    ),
    ("gemini", "", "https://generativelanguage.googleapis.com/v1beta"),
    # mock
    ("mock", "", ""),
]


@pytest.mark.parametrize(("kind", "url", "expected"), CASES)
def test_normalize_base_url(kind: str, url: str | None, expected: str) -> None:
    assert normalize_base_url(url, kind) == expected


@pytest.mark.parametrize(("kind", "url", "expected"), CASES)
def test_idempotent(kind: str, url: str | None, expected: str) -> None:
    assert normalize_base_url(expected, kind) == expected


def test_unknown_kind() -> None:
    with pytest.raises(ValueError, match="unknown provider kind"):
        normalize_base_url("https://x", "cohere")
    with pytest.raises(ValueError, match="unknown provider kind"):
        get_adapter(ConnectionConfig(kind="cohere"))


@pytest.mark.parametrize(
    ("kind", "url"),
    [
        ("openai", "https://api.openai.com/v1/chat/completions"),
        ("openai", "https://api.openai.com"),
    ],
)
def test_adapter_endpoint_is_never_doubled(kind: str, url: str) -> None:
    a = get_adapter(ConnectionConfig(kind=kind, base_url=url))
    assert a._url == "https://api.openai.com/v1/chat/completions"


def test_config_repr_hides_key() -> None:
    assert "sk-" not in repr(ConnectionConfig(kind="openai", api_key="sk-very-secret"))
