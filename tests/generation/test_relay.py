"""The relay on its own: what it answers and how it finishes the record, for each way a call can end.

The routed call is a scripted stand-in (deltas, a completion or an error, with optional pauses) and
`finish` records the outcome it is given, so every branch is reached without a server or a database;
the end-to-end tests (test_writing_e2e.py) run the same paths over real sockets.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest

from apps.core.errors import ApplicationError
from apps.generation import relay as relay_module
from apps.generation.models import Generation
from apps.generation.relay import DONE, PING, Relay
from apps.generation.services import Finished, Outcome
from apps.providers.adapters import Completion, Delta, UpstreamServerError, UpstreamTimeout, Usage

# `finish` runs as a real database step (its thread tidies the connection it may hold).
pytestmark = pytest.mark.django_db

FINISHED = Finished(
    consumption={"totalCost": 7},
    usage={"promptTokens": 3, "completionTokens": 2, "totalTokens": 5},
    usage_estimated=False,
    duration_ms=12,
    model="m1",
)


@dataclass
class Target:
    model_id: str = "m1"
    connection_name: str = "c1"


@dataclass
class Prepared:
    generation_id: str = "gen_test"
    extra: dict[str, Any] = field(default_factory=dict)
    allowance: int | None = None  # output characters the hold pays for (None: unmetered)
    hold_covers_worst: bool = True
    targets: list[Target] = field(default_factory=lambda: [Target()])

    def answer_fields(self) -> dict[str, Any]:
        return self.extra

    def output_allowance(self, target: Any) -> int | None:
        return self.allowance


@dataclass
class Pause:
    seconds: float


@dataclass
class Script:
    """What the upstream does: deltas (or pauses) in order, then maybe an error."""

    items: Sequence[Delta | Pause] = ()
    error: BaseException | None = None
    completion: Completion | None = None
    closed: bool = False


class Routed:
    def __init__(self, script: Script) -> None:
        self.script = script
        self.target: Any = None
        self.attempts: list[Any] = []

    async def _deltas(self) -> AsyncIterator[Delta]:
        self.target = Target()
        try:
            for item in self.script.items:
                if isinstance(item, Pause):
                    await asyncio.sleep(item.seconds)
                else:
                    yield item
            if self.script.error is not None:
                raise self.script.error
        finally:
            self.script.closed = True

    def stream(self) -> AsyncIterator[Delta]:
        return self._deltas()

    async def complete(self) -> Completion:
        self.target = Target()
        if self.script.error is not None:
            raise self.script.error
        assert self.script.completion is not None
        return self.script.completion


class Finish:
    def __init__(self) -> None:
        self.outcomes: list[Outcome] = []

    def __call__(self, *, prepared: Any, outcome: Outcome) -> Finished:
        self.outcomes.append(outcome)
        return FINISHED


def make_relay(script: Script, **prepared: Any) -> tuple[Relay, Finish]:
    finish = Finish()
    return Relay(Prepared(**prepared), Routed(script), finish), finish  # type: ignore[arg-type]


async def body_of(relay: Relay) -> list[bytes]:
    primed = await relay.prime()
    return [event async for event in relay.events(primed)]


def split_events(pieces: list[bytes]) -> list[bytes]:
    """The SSE events of the pieces written (one piece may carry several events)."""
    return [event + b"\n\n" for piece in pieces for event in piece.split(b"\n\n")[:-1]]


def payloads(pieces: list[bytes]) -> list[Any]:
    out: list[Any] = []
    for event in split_events(pieces):
        if event == PING:
            out.append("ping")
        elif event == DONE:
            out.append("[DONE]")
        else:
            out.append(orjson.loads(event.removeprefix(b"data: ")))
    return out


# --------------------------------------------------------------------------------------- complete


async def test_complete_answers_the_body_and_finishes_once_as_succeeded():
    relay, finish = make_relay(
        Script(completion=Completion("你好", "想一想", "length", Usage.of(3, 2))), extra={"messageId": 9}
    )

    body = await relay.complete()

    assert body == {
        "content": "你好",
        "reasoning": "想一想",
        "generationId": "gen_test",
        "model": "m1",
        "usage": FINISHED.usage,
        "finishReason": "length",
        "duration": 12,
        "consumption": {"totalCost": 7},
        "messageId": 9,
    }
    [outcome] = finish.outcomes
    assert (outcome.status, outcome.content, outcome.reasoning) == (Generation.Status.SUCCEEDED, "你好", "想一想")
    assert (outcome.finish_reason, outcome.usage, outcome.target) == ("length", Usage.of(3, 2), Target())


async def test_complete_without_reasoning_has_no_reasoning_key():
    relay, _finish = make_relay(Script(completion=Completion("x", "", "stop", None)))

    body = await relay.complete()

    assert "reasoning" not in body
    assert list(body) == ["content", "generationId", "model", "usage", "finishReason", "duration", "consumption"]


async def test_complete_upstream_failure_finishes_failed_and_raises_the_client_error():
    relay, finish = make_relay(Script(error=UpstreamTimeout("slow")))

    with pytest.raises(ApplicationError) as raised:
        await relay.complete()

    assert raised.value.status_code == 504
    [outcome] = finish.outcomes
    assert (outcome.status, outcome.error_code, outcome.content) == (Generation.Status.FAILED, "upstream_timeout", "")


async def test_complete_bug_of_ours_still_finishes_the_record():
    relay, finish = make_relay(Script(error=KeyError("oops")))

    with pytest.raises(KeyError):
        await relay.complete()

    assert [o.status for o in finish.outcomes] == [Generation.Status.FAILED]
    assert finish.outcomes[0].error_code == "KeyError"


# ----------------------------------------------------------------------------------------- stream


async def test_stream_relays_deltas_then_the_final_event_then_done():
    relay, finish = make_relay(
        Script(
            items=[
                Delta(reasoning="嗯"),
                Delta(content="甲"),
                Delta(),  # nothing to relay: no event
                Delta(content="乙", finish_reason="stop", usage=Usage.of(4, 2)),
            ]
        ),
        extra={"messageId": None},
    )

    events = payloads(await body_of(relay))

    assert events == [
        {"content": "", "reasoning": "嗯"},
        {"content": "甲"},
        {"content": "乙"},
        {
            "content": "",
            "finishReason": "stop",
            "generationId": "gen_test",
            "model": "m1",
            "usage": FINISHED.usage,
            "duration": 12,
            "consumption": {"totalCost": 7},
            "messageId": None,
        },
        "[DONE]",
    ]
    [outcome] = finish.outcomes
    assert (outcome.status, outcome.content, outcome.reasoning) == (Generation.Status.SUCCEEDED, "甲乙", "嗯")
    assert outcome.usage == Usage.of(4, 2)
    assert outcome.ttft_ms is not None


async def test_failure_before_the_first_token_is_a_plain_error_and_the_record_fails():
    relay, finish = make_relay(Script(error=UpstreamServerError("boom", upstream_status=500)))

    with pytest.raises(ApplicationError) as raised:
        await relay.prime()

    assert raised.value.status_code == 502
    assert [o.status for o in finish.outcomes] == [Generation.Status.FAILED]


async def test_failure_after_the_first_token_is_an_error_event_and_nothing_is_kept_as_paid():
    relay, finish = make_relay(Script(items=[Delta(content="半")], error=UpstreamServerError("gone")))

    events = payloads(await body_of(relay))

    assert events[0] == {"content": "半"}
    assert events[1]["content"] == "" and events[1]["error"]["statusCode"] == 502
    assert events[2] == "[DONE]"
    [outcome] = finish.outcomes
    assert (outcome.status, outcome.content) == (Generation.Status.FAILED, "半")


async def test_silence_is_filled_with_pings(monkeypatch):
    monkeypatch.setattr(relay_module, "PING_INTERVAL", 0.05)
    relay, _finish = make_relay(Script(items=[Delta(content="a"), Pause(0.18), Delta(content="b")]))

    events = payloads(await body_of(relay))

    assert events[0] == {"content": "a"}
    assert 2 <= events.count("ping") <= 4
    assert events[-3] == {"content": "b"}
    assert events[-2]["finishReason"] == "stop" and events[-1] == "[DONE]"


async def test_no_text_within_the_first_token_wait_starts_the_stream_with_a_ping(monkeypatch):
    monkeypatch.setattr(relay_module, "FIRST_TOKEN_WAIT", 0.05)
    relay, finish = make_relay(Script(items=[Pause(0.1), Delta(content="late")]))

    primed = await relay.prime()

    assert primed == [PING]
    events = payloads([event async for event in relay.events(primed)])
    assert events[1] == {"content": "late"} and events[-1] == "[DONE]"
    assert [o.status for o in finish.outcomes] == [Generation.Status.SUCCEEDED]


async def test_client_disconnect_cancels_closes_the_upstream_and_finishes_once():
    script = Script(items=[Delta(content="一"), Pause(30), Delta(content="never")])
    relay, finish = make_relay(script)
    primed = await relay.prime()
    events = relay.events(primed)

    assert await anext(events) == b'data: {"content":"\xe4\xb8\x80"}\n\n'
    reader = asyncio.ensure_future(anext(events))
    await asyncio.sleep(0.05)
    reader.cancel()  # what the server does when the client goes away
    with pytest.raises(asyncio.CancelledError):
        await reader
    await events.aclose()

    assert script.closed
    [outcome] = finish.outcomes
    assert (outcome.status, outcome.content) == (Generation.Status.CANCELLED, "一")


async def test_deltas_at_hand_together_are_one_piece_and_a_wait_ends_it():
    relay, _finish = make_relay(
        Script(items=[Delta(content="a"), Delta(content="b"), Pause(0.05), Delta(content="c"), Delta(content="d")])
    )

    pieces = await body_of(relay)

    assert pieces[:2] == [
        b'data: {"content":"a"}\n\ndata: {"content":"b"}\n\n',
        b'data: {"content":"c"}\n\ndata: {"content":"d"}\n\n',
    ]
    assert len(pieces) == 3 and pieces[2].endswith(b"\n\n" + DONE)  # the final event and [DONE]: one piece


async def test_a_lone_first_delta_is_yielded_before_the_upstream_sends_more():
    relay, _finish = make_relay(Script(items=[Delta(content="一"), Pause(0.3), Delta(content="二")]))
    events = relay.events(await relay.prime())

    started = asyncio.get_running_loop().time()
    first = await anext(events)

    assert first == 'data: {"content":"一"}\n\n'.encode()
    assert asyncio.get_running_loop().time() - started < 0.2
    assert await anext(events) == 'data: {"content":"二"}\n\n'.encode()
    await events.aclose()


async def test_the_events_at_hand_go_out_before_an_upstream_failure():
    relay, finish = make_relay(
        Script(items=[Delta(content="甲"), Delta(content="乙")], error=UpstreamServerError("gone"))
    )

    pieces = await body_of(relay)

    assert pieces[0] == 'data: {"content":"甲"}\n\ndata: {"content":"乙"}\n\n'.encode()
    assert payloads(pieces[1:])[0]["error"]["statusCode"] == 502 and pieces[1].endswith(DONE)
    assert len(pieces) == 2 and finish.outcomes[0].content == "甲乙"


async def test_the_total_deadline_ends_the_stream_with_what_was_delivered(settings):
    settings.GENERATION_MAX_SECONDS = 0.15
    script = Script(items=[Delta(content="a"), Delta(content="b"), Pause(5), Delta(content="never")])
    relay, finish = make_relay(script)

    pieces = await body_of(relay)

    assert pieces[0] == b'data: {"content":"a"}\n\ndata: {"content":"b"}\n\n'
    assert payloads(pieces[1:])[0]["finishReason"] == "length" and len(pieces) == 2
    assert script.closed
    [outcome] = finish.outcomes
    assert (outcome.status, outcome.content, outcome.finish_reason) == (Generation.Status.SUCCEEDED, "ab", "length")


async def test_a_delta_at_hand_is_taken_without_a_trip_through_the_event_loop():
    script = Script(items=[Delta(content="a"), Delta(content="b"), Pause(0.05), Delta(content="c")])
    relay, _finish = make_relay(script)
    turns: list[str] = []
    asyncio.get_running_loop().call_soon(turns.append, "a turn of the loop")

    first = await relay.next_delta(1.0)
    second = await relay.next_delta(1.0)
    at_hand_taken_after = list(turns)
    third = await relay.next_delta(1.0)  # waited for: the pause

    assert [d.content for d in (first, second, third)] == ["a", "b", "c"]  # type: ignore[union-attr]
    assert at_hand_taken_after == [] and turns == ["a turn of the loop"]
    await relay.close_upstream()


async def test_settle_is_idempotent():
    relay, finish = make_relay(Script())

    first = await relay.settle(Generation.Status.CANCELLED)
    second = await relay.settle(Generation.Status.SUCCEEDED)

    assert first is second is FINISHED
    assert [o.status for o in finish.outcomes] == [Generation.Status.CANCELLED]


# -------------------------------------------------------------------------------- metered billing


class Extensions:
    """`generation_extend` as the relay sees it: each call grants up to `grants[i]` more characters."""

    def __init__(self, *grants: int) -> None:
        self.grants = list(grants)
        self.asked: list[int] = []
        self.seen: list[bytes] = []

    def __call__(self, *, prepared: Prepared, target: Any, output_chars: int) -> int:
        self.asked.append(output_chars)
        assert prepared.allowance is not None
        prepared.allowance += self.grants.pop(0) if self.grants else 0
        return prepared.allowance


@pytest.fixture
def extensions(monkeypatch):
    def install(*grants: int) -> Extensions:
        fake = Extensions(*grants)
        monkeypatch.setattr(relay_module, "generation_extend", fake)
        return fake

    return install


async def test_the_stream_stops_at_exactly_the_last_affordable_character(extensions):
    asked = extensions(0)
    script = Script(items=[Delta(content="一二三四"), Delta(content="五六七八"), Delta(content="九十")])
    relay, finish = make_relay(script, allowance=6)

    events = payloads(await body_of(relay))

    assert events[:2] == [{"content": "一二三四"}, {"content": "五六"}]
    assert events[2]["finishReason"] == "length" and events[3] == "[DONE]"
    assert asked.asked == [8]  # one extension asked for, nothing granted
    assert script.closed  # the upstream request is cancelled at the cut
    [outcome] = finish.outcomes
    assert (outcome.status, outcome.content, outcome.finish_reason) == (
        Generation.Status.SUCCEEDED,
        "一二三四五六",
        "length",
    )
    assert outcome.stopped_by_balance is True


async def test_reasoning_is_kept_first_when_the_cut_falls_inside_a_delta(extensions):
    extensions(0)
    relay, finish = make_relay(Script(items=[Delta(content="abc", reasoning="xyz")]), allowance=4)

    events = payloads(await body_of(relay))

    assert events[0] == {"content": "a", "reasoning": "xyz"}
    assert (finish.outcomes[0].reasoning, finish.outcomes[0].content) == ("xyz", "a")


async def test_an_extension_lets_the_reply_go_on(extensions):
    asked = extensions(100)
    relay, finish = make_relay(
        Script(items=[Delta(content="abcd"), Delta(content="efgh", finish_reason="stop")]), allowance=5
    )

    events = payloads(await body_of(relay))

    assert [e for e in events if isinstance(e, dict) and e.get("content")] == [{"content": "abcd"}, {"content": "efgh"}]
    assert asked.asked == [8]
    [outcome] = finish.outcomes
    assert (outcome.content, outcome.finish_reason, outcome.stopped_by_balance) == ("abcdefgh", "stop", False)


async def test_the_events_at_hand_go_out_before_a_hold_extension_is_asked_for(extensions, monkeypatch):
    asked = extensions(100)
    relay, _finish = make_relay(
        Script(items=[Delta(content="ab"), Delta(content="cd"), Delta(content="ef")]), allowance=4
    )
    pieces: list[bytes] = []
    extend = relay_module.generation_extend

    def recording(**kwargs: Any) -> int:
        asked.seen = list(pieces)
        return extend(**kwargs)

    monkeypatch.setattr(relay_module, "generation_extend", recording)
    async for piece in relay.events(await relay.prime()):
        pieces.append(piece)

    assert asked.asked == [6]
    assert asked.seen == [b'data: {"content":"ab"}\n\ndata: {"content":"cd"}\n\n']  # written before the extension
    assert pieces[1] == b'data: {"content":"ef"}\n\n'


async def test_unmetered_output_is_never_cut(extensions):
    asked = extensions()
    relay, finish = make_relay(Script(items=[Delta(content="x" * 10_000)]), allowance=None)

    await body_of(relay)

    assert asked.asked == [] and len(finish.outcomes[0].content) == 10_000


async def test_a_json_answer_whose_hold_is_short_streams_internally_and_is_cut(extensions):
    extensions(2)
    script = Script(items=[Delta(content="一二三"), Delta(content="四五六"), Pause(30), Delta(content="never")])
    relay, finish = make_relay(script, allowance=3, hold_covers_worst=False)

    body = await relay.complete()

    assert (body["content"], body["finishReason"]) == ("一二三四五", "length")
    assert script.closed
    assert finish.outcomes[0].stopped_by_balance is True


async def test_a_json_answer_longer_than_its_hold_is_metered_too(extensions):
    extensions(1)
    relay, finish = make_relay(Script(completion=Completion("abcdefgh", "", "stop", None)), allowance=5)

    body = await relay.complete()

    assert (body["content"], body["finishReason"]) == ("abcdef", "length")
    assert (finish.outcomes[0].content, finish.outcomes[0].stopped_by_balance) == ("abcdef", True)
