"""The OpenAI-compatible API's tests use writing mode's fixtures (models on the fake upstream, a prompt,
a token) and the real `openai` SDK against the live server."""

from __future__ import annotations

from typing import Any

import openai
import pytest

from tests.generation.conftest import (  # noqa: F401 (fixtures)
    _module_fake_upstream,
    fake_upstream,
    http,
    make_model,
    token,
    writing_prompt,
)


@pytest.fixture
def client(live_server_url: str, token: str) -> Any:  # noqa: F811
    """The SDK as SillyTavern users configure it: base URL ending in /v1, our token as the API key."""
    with openai.OpenAI(base_url=f"{live_server_url}/v1", api_key=token, max_retries=0, timeout=20) as sdk:
        yield sdk
