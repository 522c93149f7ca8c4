"""The ``local`` kind: the app's own llama.cpp server, spoken to as an OpenAI-compatible upstream.

The connection's ``options["spec"]`` (a :class:`~apps.providers.localmodel.manager.LocalModelSpec`,
filled in from the settings by ``Connection.config()``) names the model. Each call asks this process's
:class:`~apps.providers.localmodel.manager.LocalServer` for the server's URL — starting the server if
none runs — and then behaves exactly like the ``openai`` kind against it: streaming with usage, stop
strings, sampling, and a closed stream (client disconnect) that stops the llama.cpp slot. While the
model loads a call fails at once with :class:`UpstreamLoading` (503 with ``Retry-After``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncGenerator
from contextlib import aclosing

from apps.providers.adapters.base import Adapter, ChatRequest, Completion, ConnectionConfig, Delta
from apps.providers.adapters.errors import UpstreamConnectError, UpstreamLoading
from apps.providers.adapters.openai import OpenAIChatAdapter
from apps.providers.localmodel.manager import (
    LocalModelFailed,
    LocalModelLoading,
    LocalModelSpec,
    LocalServer,
    local_server,
)

PROVIDER = "local model (llama.cpp)"


class _LocalChat(OpenAIChatAdapter):
    provider = PROVIDER


class LocalAdapter(Adapter):
    kind = "local"
    provider = PROVIDER

    def __init__(self, config: ConnectionConfig) -> None:
        super().__init__(config)
        spec = config.options.get("spec")
        self.server: LocalServer | None = local_server(spec) if isinstance(spec, LocalModelSpec) else None

    async def _chat(self) -> OpenAIChatAdapter:
        """An ``openai`` adapter aimed at the running server (raises while it is not ready)."""
        if self.server is None:
            raise UpstreamConnectError(
                f"{PROVIDER}: the connection names no model (options['spec'])", provider=PROVIDER
            )
        try:
            url = await self.server.base_url()
        except LocalModelLoading as exc:
            raise UpstreamLoading(f"{PROVIDER}: {exc}", retry_after=exc.retry_after, provider=PROVIDER) from None
        except (LocalModelFailed, OSError) as exc:
            raise UpstreamConnectError(f"{PROVIDER}: {exc}", provider=PROVIDER) from None
        return _LocalChat(dataclasses.replace(self.config, kind="openai", base_url=url, api_key=None))

    async def stream(self, request: ChatRequest) -> AsyncGenerator[Delta, None]:
        chat = await self._chat()
        async with aclosing(chat.stream(request)) as deltas:
            async for delta in deltas:
                yield delta

    async def complete(self, request: ChatRequest) -> Completion:
        return await (await self._chat()).complete(request)

    async def list_models(self) -> list[str]:
        return await (await self._chat()).list_models()
