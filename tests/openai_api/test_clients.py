"""What SillyTavern and text-completion clients send, replayed against the live server.

SillyTavern's request to a custom OpenAI-compatible endpoint (Chat Completion → Custom): its server
(`src/endpoints/backends/chat-completions.js`, `router.post('/generate')`, the CUSTOM branch, 1.13) posts
`{messages, model, temperature, max_tokens, stream, presence_penalty, frequency_penalty, top_p, top_k,
stop, logit_bias, seed?, n?}` plus the user's "Additional Parameters" (`custom_include_body`, e.g. `min_p`,
`repetition_penalty`) to `{custom_url}/chat/completions` with `Authorization: Bearer <key>`; keys whose
value is undefined are dropped by `JSON.stringify`. It checks the connection with `GET {custom_url}/models`
(expects `{data: [{id}]}`), reads a stream's `choices[0].delta.content` and
`delta.reasoning_content ?? delta.reasoning`, and a JSON answer's `choices[0].message.content`.
"""

from __future__ import annotations

import httpx
import openai
import orjson
import pytest

from apps.billing.services import wallet_grant
from apps.generation.models import Generation
from tests.fakes.upstream import Reply
from tests.generation.conftest import sse_events

pytestmark = pytest.mark.django_db(transaction=True)

SILLYTAVERN_BODY = {
    "messages": [
        {"role": "system", "content": "Write Seraphina's next reply in a fictional chat between Seraphina and Alex."},
        {"role": "system", "content": "[Start a new Chat]"},
        {"role": "assistant", "content": "*Seraphina smiles.* Awake at last!"},
        {"role": "user", "content": "Where am I?", "name": "Alex"},
    ],
    "model": "gpt-4-turbo",
    "temperature": 1,
    "max_tokens": 300,
    "stream": True,
    "presence_penalty": 0,
    "frequency_penalty": 0,
    "top_p": 1,
    "top_k": 40,
    "stop": [],
    "logit_bias": {},
    "seed": 42,
    # "Additional Parameters" a user adds for a local llama.cpp behind the endpoint
    "min_p": 0.05,
    "repetition_penalty": 1.1,
}


@pytest.fixture(autouse=True)
def funds(user):
    wallet_grant(user=user, amount=100_000)


def test_sillytavern_connects_and_streams_a_reply(live_server_url, token, fake_upstream, make_model):
    make_model()
    fake_upstream.script(Reply(chunks=["*She ", "laughs.* ", "The glade."], reasoning=["They are lost."]))
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    with httpx.Client(base_url=f"{live_server_url}/v1", headers=headers, timeout=20) as st:
        models = st.get("/models").json()
        response = st.post("/chat/completions", content=orjson.dumps(SILLYTAVERN_BODY))

    assert "gpt-4-turbo" in [m["id"] for m in models["data"]]
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    events = sse_events(response.text)
    assert events[-1] == "[DONE]"
    text = reasoning = ""
    for event in events[:-1]:
        delta = orjson.loads(event)["choices"][0]["delta"]
        text += delta.get("content") or ""
        reasoning += delta.get("reasoning_content") or delta.get("reasoning") or ""
    assert (text, reasoning) == ("*She laughs.* The glade.", "They are lost.")
    sent = fake_upstream.completion_requests[-1].json
    assert sent["messages"][-1] == {"role": "user", "content": "Where am I?", "name": "Alex"}
    assert (sent["max_tokens"], sent["temperature"], sent["top_p"], sent["seed"]) == (300, 1, 1, 42)
    # a local OpenAI-compatible server gets the extra samplers SillyTavern sends
    assert (sent["top_k"], sent["min_p"], sent["repetition_penalty"]) == (40, 0.05, 1.1)
    assert "logit_bias" not in sent
    assert Generation.objects.get().mode == "chat"


def test_sillytavern_without_streaming(live_server_url, token, fake_upstream, make_model):
    make_model()
    fake_upstream.script(Reply(chunks=["Hello there."]))
    headers = {"Authorization": f"Bearer {token}"}

    with httpx.Client(base_url=f"{live_server_url}/v1", headers=headers, timeout=20) as st:
        answer = st.post("/chat/completions", json={**SILLYTAVERN_BODY, "stream": False}).json()

    assert answer["choices"][0]["message"]["content"] == "Hello there."


def test_text_completion_sends_the_prompt_as_it_is(client, fake_upstream, make_model):
    make_model("llama-base", kind="openai_text")
    fake_upstream.script(Reply(chunks=["Once", " upon"]), Reply(chunks=[" a", " time"]))
    prompt = "<|im_start|>user\nTell a story<|im_end|>\n<|im_start|>assistant\n"

    completion = client.completions.create(model="llama-base", prompt=prompt, max_tokens=20, stop=["\n\n"])
    stream = client.completions.create(model="llama-base", prompt=prompt, max_tokens=20, stream=True)

    assert completion.object == "text_completion" and completion.choices[0].text == "Once upon"
    assert completion.usage.model_extra["consumption"]["totalCost"] == 9
    assert "".join(chunk.choices[0].text for chunk in stream if chunk.choices) == " a time"
    sent = fake_upstream.completion_requests[0]
    assert sent.path.endswith("/completions") and not sent.path.endswith("/chat/completions")
    assert (sent.json["prompt"], sent.json["stop"]) == (prompt, ["\n\n"])


def test_text_completion_on_a_chat_model_is_a_400_on_model(client, make_model):
    make_model()
    with pytest.raises(openai.BadRequestError) as refused:
        client.completions.create(model="gpt-4-turbo", prompt="hi")
    assert refused.value.param == "model"
