from __future__ import annotations

from decimal import Decimal
from typing import Any

import httpx
import pytest

from apps.accounts.services import token_create
from apps.novels.models import Novel
from apps.prompts.models import Prompt, PromptContent
from apps.providers.models import AIModel, Connection, ModelFallback


@pytest.fixture
def make_model(fake_upstream: Any):
    def _make(
        model_id: str = "gpt-4-turbo",
        *,
        kind: str = "openai",
        upstream: str | None = None,
        context_tokens: int = 8192,
        max_output_tokens: int = 4096,
        input_ratio: str = "1",
        output_ratio: str = "1",
        is_free: bool = False,
        post_processing: str = "none",
        read_timeout: float = 5.0,
        fallbacks: tuple[AIModel, ...] = (),
        connection_name: str | None = None,
        **connection_options: Any,
    ) -> AIModel:
        connection, _ = Connection.objects.get_or_create(
            name=connection_name or f"fake-{kind}-{model_id}",
            defaults={
                "kind": kind,
                "base_url": fake_upstream.base_url,
                "read_timeout": read_timeout,
                "connect_timeout": 2.0,
                "prompt_post_processing": post_processing,
                **connection_options,
            },
        )
        connection.set_api_key("sk-test-secret-key-0123456789")
        connection.save()
        model = AIModel.objects.create(
            model_id=model_id,
            connection=connection,
            upstream_model=upstream or f"up-{model_id}",
            context_tokens=context_tokens,
            max_output_tokens=max_output_tokens,
            input_ratio=Decimal(input_ratio),
            output_ratio=Decimal(output_ratio),
            is_free=is_free,
        )
        for position, fallback in enumerate(fallbacks):
            ModelFallback.objects.create(model=model, fallback=fallback, position=position)
        return model

    return _make


@pytest.fixture
def writing_prompt(user: Any) -> Prompt:
    Novel.objects.create(owner=user, title="都市")
    prompt = Prompt.objects.create(author=user, title="故事开头")
    PromptContent.objects.create(
        prompt=prompt, order=2, type="text", role="system", content="情节设定：{{故事背景}}，主角名为{{主角名字}}。"
    )
    PromptContent.objects.create(prompt=prompt, order=1, type="text", role="system", content="你是一名专业的小说作家。")
    return prompt


@pytest.fixture
def token(user: Any) -> str:
    return token_create(user=user).token


@pytest.fixture
def http(live_server_url: str, token: str):
    with httpx.Client(base_url=live_server_url, headers={"Authorization": f"Bearer {token}"}, timeout=20) as client:
        yield client


def sse_events(text: str) -> list[str]:
    """The `data:` payloads of an SSE body, in order (comments excluded)."""
    events = []
    for block in text.split("\n\n"):
        lines = [line[6:] for line in block.split("\n") if line.startswith("data: ")]
        if lines:
            events.append("\n".join(lines))
    return events


@pytest.fixture(scope="module")
def _module_fake_upstream():
    """Generation tests get a fake upstream of their own: the live server keeps pooled keep-alive
    connections to it, which must not disturb the adapter tests' connection accounting."""
    from tests.fakes.upstream import FakeUpstream

    server = FakeUpstream().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def fake_upstream(_module_fake_upstream: Any):
    _module_fake_upstream.reset()
    try:
        yield _module_fake_upstream
    finally:
        _module_fake_upstream.reset()


@pytest.fixture
def job_body(request: Any, user: Any, writing_prompt: Any, make_model: Any) -> Any:
    """A writing job's body (the model made, a balance granted unless the test is marked `no_funds`)."""
    from apps.billing.services import wallet_grant
    from tests.generation.jobs_support import JOB_BODY

    make_model()
    if "no_funds" not in request.keywords:
        wallet_grant(user=user, amount=100_000)

    def _body(**overrides: Any) -> dict[str, Any]:
        return {**JOB_BODY, "promptId": writing_prompt.pk, **overrides}

    return _body
