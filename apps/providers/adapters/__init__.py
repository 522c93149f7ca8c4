"""LLM transport adapters (no Django imports). Public API re-exported here.

:data:`ADAPTERS` is the one table from a connection's ``kind`` to its adapter class; the adapter
modules import :mod:`.base` and never this package's face, so the table closes no import loop.

>>> type(get_adapter(ConnectionConfig(kind="mock"))).__name__
'MockAdapter'
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from apps.providers.adapters.anthropic import AnthropicAdapter
from apps.providers.adapters.base import (
    ADAPTER_KINDS,
    Adapter,
    ChatRequest,
    Completion,
    ConnectionConfig,
    Delta,
    Usage,
    normalize_base_url,
)
from apps.providers.adapters.errors import (
    UpstreamAuthError,
    UpstreamBadRequest,
    UpstreamConnectError,
    UpstreamError,
    UpstreamLoading,
    UpstreamModelNotFound,
    UpstreamProtocolError,
    UpstreamRateLimited,
    UpstreamServerError,
    UpstreamTimeout,
    error_retry_delay,
    retry_delay,
)
from apps.providers.adapters.gemini import GeminiAdapter
from apps.providers.adapters.local import LocalAdapter
from apps.providers.adapters.mock import MockAdapter
from apps.providers.adapters.openai import OpenAIChatAdapter
from apps.providers.adapters.openai_text import OpenAITextAdapter

ADAPTERS: Mapping[str, type[Adapter]] = MappingProxyType(
    {
        "openai": OpenAIChatAdapter,
        "anthropic": AnthropicAdapter,
        "gemini": GeminiAdapter,
        "openai_text": OpenAITextAdapter,
        "mock": MockAdapter,
        "local": LocalAdapter,
    }
)


def get_adapter(config: ConnectionConfig) -> Adapter:
    """The adapter for ``config.kind`` (one of :data:`ADAPTER_KINDS`); ``ValueError`` for another kind."""
    cls = ADAPTERS.get(config.kind)
    if cls is None:
        raise ValueError(f"unknown provider kind {config.kind!r}; expected one of {', '.join(ADAPTER_KINDS)}")
    return cls(config)


__all__ = [
    "ADAPTERS",
    "ADAPTER_KINDS",
    "Adapter",
    "ChatRequest",
    "Completion",
    "ConnectionConfig",
    "Delta",
    "UpstreamAuthError",
    "UpstreamBadRequest",
    "UpstreamConnectError",
    "UpstreamError",
    "UpstreamLoading",
    "UpstreamModelNotFound",
    "UpstreamProtocolError",
    "UpstreamRateLimited",
    "UpstreamServerError",
    "UpstreamTimeout",
    "Usage",
    "error_retry_delay",
    "get_adapter",
    "normalize_base_url",
    "retry_delay",
]
