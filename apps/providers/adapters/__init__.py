"""LLM transport adapters (no Django imports). Public API re-exported here."""

from apps.providers.adapters.base import (
    ADAPTER_KINDS,
    Adapter,
    ChatRequest,
    Completion,
    ConnectionConfig,
    Delta,
    Usage,
    get_adapter,
    normalize_base_url,
)
from apps.providers.adapters.errors import (
    UpstreamAuthError,
    UpstreamBadRequest,
    UpstreamConnectError,
    UpstreamError,
    UpstreamModelNotFound,
    UpstreamProtocolError,
    UpstreamRateLimited,
    UpstreamServerError,
    UpstreamTimeout,
    error_retry_delay,
    retry_delay,
)

__all__ = [
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
