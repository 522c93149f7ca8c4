"""Adapter interface, request/response types, base-URL normalisation (no Django imports).
The kind → adapter class table and :func:`get_adapter` are in :mod:`apps.providers.adapters`.

Streaming contract of :meth:`Adapter.stream`: an async generator of :class:`Delta`. Content and
reasoning deltas are yielded as they arrive (empty ones are skipped); the stream ends with exactly
one final ``Delta`` whose ``finish_reason`` is set (``usage`` on it when the upstream gave any).
Errors are raised as :mod:`apps.providers.adapters.errors` classes. The upstream HTTP response is
opened inside the generator: closing it early (``await agen.aclose()``, e.g. via
``contextlib.aclosing``) or cancelling the consuming task closes the upstream connection at once.
"""

from __future__ import annotations

import abc
import functools
import re
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal, NamedTuple
from urllib.parse import urlsplit, urlunsplit

from apps.providers.types import ChatMessage, FinishReason

AdapterKind = Literal["openai", "anthropic", "gemini", "openai_text", "mock", "local"]
ADAPTER_KINDS: tuple[str, ...] = ("openai", "anthropic", "gemini", "openai_text", "mock", "local")

_EMPTY: Mapping[str, Any] = MappingProxyType({})


SAMPLING_PARAMS: tuple[str, ...] = (
    "top_p",
    "top_k",
    "min_p",
    "presence_penalty",
    "frequency_penalty",
    "repetition_penalty",
    "seed",
    "reasoning_effort",
    "include_reasoning",
)
"""The sampling parameters a caller may set, by their OpenAI / SillyTavern names (`ChatRequest.sampling`)."""

SamplingNames = tuple[tuple[str, str], ...]
"""(name in `SAMPLING_PARAMS`, name in the wire format) pairs: what an adapter sends, and as what."""


def add_sampling(body: dict[str, Any], sampling: Mapping[str, Any], names: SamplingNames) -> None:
    """Put into ``body`` the parameters of ``sampling`` that ``names`` lists, under their wire names.
    Values pass as given (the API layer validates them); unset and ``None`` ones are left out, and so
    is any parameter ``names`` does not list (the wire format has no such field)."""
    for ours, theirs in names:
        value = sampling.get(ours)
        if value is not None:
            body[theirs] = value


@dataclass(frozen=True, slots=True)
class ChatRequest:
    messages: tuple[ChatMessage, ...]
    model: str  # the upstream model name
    max_tokens: int
    temperature: float
    stop: tuple[str, ...] = ()
    extra: Mapping[str, Any] = _EMPTY  # merged into the upstream JSON body as-is
    # Sampling parameters by their OpenAI names (keys of SAMPLING_PARAMS): each adapter sends those its
    # wire format supports, in its own names, and drops the others.
    sampling: Mapping[str, Any] = _EMPTY
    # A raw text-completion prompt (`/v1/completions`): sent as it is by the text-completion adapter
    # (no instruct template, `messages` unused); the chat adapters refuse it.
    prompt: str | None = None


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int

    @classmethod
    def of(cls, prompt_tokens: int, completion_tokens: int) -> Usage:
        return cls(prompt_tokens, completion_tokens, prompt_tokens + completion_tokens)


class Delta(NamedTuple):
    """One streamed piece. A NamedTuple (immutable, ~3× cheaper to create than a frozen dataclass):
    this is created once per relayed chunk."""

    content: str = ""
    reasoning: str = ""
    finish_reason: FinishReason | None = None
    usage: Usage | None = None


@dataclass(frozen=True, slots=True)
class Completion:
    content: str
    reasoning: str
    finish_reason: FinishReason
    usage: Usage | None


@dataclass(frozen=True, slots=True)
class ConnectionConfig:
    kind: str  # one of ADAPTER_KINDS
    base_url: str = ""
    api_key: str | None = field(default=None, repr=False)
    extra_headers: Mapping[str, str] = _EMPTY
    connect_timeout: float = 10.0
    read_timeout: float = 60.0  # idle time allowed between two reads of the response
    instruct_template: str | None = None  # openai_text: chatml, llama3, mistral, alpaca, gemma, …
    custom_instruct_template: str | None = None  # openai_text: a Jinja2 template (instruct="custom")
    options: Mapping[str, Any] = _EMPTY  # kind-specific knobs, e.g. mock {"chunk_delay": 0.02}, local {"spec": …}

    def __repr__(self) -> str:  # never show the key
        return f"ConnectionConfig(kind={self.kind!r}, base_url={self.base_url!r}, api_key=***)"


class Adapter(abc.ABC):
    """One upstream wire format. Cheap to construct (the HTTP client pool is shared)."""

    kind: str = ""

    def __init__(self, config: ConnectionConfig) -> None:
        self.config = config
        self.base_url = normalize_base_url(config.base_url, config.kind)

    @abc.abstractmethod
    def stream(self, request: ChatRequest) -> AsyncGenerator[Delta, None]:
        """Async generator of deltas (see the module docstring for the contract)."""

    @abc.abstractmethod
    async def complete(self, request: ChatRequest) -> Completion:
        """One non-streaming call."""

    async def list_models(self) -> list[str]:
        """Model ids the upstream offers (``GET …/models``)."""
        return []


# ---------------------------------------------------------------------------------------------
# Base URL normalisation

_OPENAI_SUFFIX = re.compile(r"(/chat/completions|/completions|/chat|/models)+$", re.IGNORECASE)
_ANTHROPIC_SUFFIX = re.compile(r"(/messages|/models)+$", re.IGNORECASE)
_GEMINI_SUFFIX = re.compile(r"/models(/[^/]*)?$", re.IGNORECASE)
_GEMINI_VERSION = re.compile(r"/v1(alpha|beta)?\d*$", re.IGNORECASE)

DEFAULT_BASE_URLS: Mapping[str, str] = MappingProxyType(
    {
        "openai": "https://api.openai.com/v1",
        "openai_text": "https://api.openai.com/v1",
        "anthropic": "https://api.anthropic.com/v1",
        "gemini": "https://generativelanguage.googleapis.com/v1beta",
        "mock": "",
        "local": "",  # the app's own llama.cpp server: its port is known only once it runs
    }
)


@functools.lru_cache(maxsize=1024)
def normalize_base_url(url: str | None, kind: str) -> str:
    """The API root the adapter appends its endpoint to (no trailing slash).

    * ``openai`` / ``openai_text``: a trailing ``/chat/completions``, ``/completions`` or ``/models``
      is removed (so we never double it); a bare host gets ``/v1``; any other path is kept as given
      (``https://api.z.ai/api/paas/v4``, ``https://openrouter.ai/api/v1``). Endpoint: ``{root}/chat/completions``.
    * ``anthropic``: ``/messages`` removed; ``/v1`` appended unless the path already ends with it.
      Endpoint: ``{root}/messages``.
    * ``gemini``: ``/models…`` removed; ``/v1beta`` appended unless the path ends with a version
      (``/v1``, ``/v1beta``, ``/v1alpha``). Endpoint: ``{root}/models/{model}:generateContent``.
    * empty ⇒ the vendor's public default. Query strings and fragments are dropped.
    """
    if kind in ("mock", "local"):
        return (url or "").strip().rstrip("/")
    url = (url or "").strip()
    if not url:
        return DEFAULT_BASE_URLS.get(kind, "")
    if "://" not in url:
        url = "http://" + url if url.startswith(("localhost", "127.", "[::1]")) else "https://" + url
    parts = urlsplit(url)
    path = re.sub(r"/{2,}", "/", parts.path).rstrip("/")
    if kind in ("openai", "openai_text"):
        path = _OPENAI_SUFFIX.sub("", path).rstrip("/")
        if not path:
            path = "/v1"
    elif kind == "anthropic":
        path = _ANTHROPIC_SUFFIX.sub("", path).rstrip("/")
        if not path.lower().endswith("/v1"):
            path += "/v1"
    elif kind == "gemini":
        path = _GEMINI_SUFFIX.sub("", path).rstrip("/")
        if not _GEMINI_VERSION.search(path):
            path += "/v1beta"
    else:
        raise ValueError(f"unknown provider kind {kind!r}")
    return urlunsplit((parts.scheme.lower(), parts.netloc, path, "", ""))
