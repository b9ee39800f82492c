"""Tests of devtools.bedrock.LocalBedrock, driven through a real boto3 bedrock-runtime client.

boto3 is synchronous and the server runs in the test's event loop, so every boto3 call goes
through ``asyncio.to_thread``.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import boto3
import botocore.config
import pytest
import urllib3.exceptions
from botocore.exceptions import ClientError, EventStreamError

from devtools.bedrock import (
    ERROR_STATUS,
    Fault,
    LocalBedrock,
    RecordedRequest,
    estimate_tokens,
    offline_reply,
    offline_summary,
)
from devtools.stack import eventually

MODEL_ID = "us.anthropic.claude-haiku-4-5-20251001-v1:0"
PROFILE_ARN = (
    "arn:aws:bedrock:us-east-1:123456789012:inference-profile/"
    "us.anthropic.claude-haiku-4-5-20251001-v1:0"
)

# One session for the module: its clients share the loaded service model, which keeps client
# creation cheap.
_SESSION = boto3.session.Session()


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": [{"text": text}]}


def assistant(text: str) -> dict[str, Any]:
    return {"role": "assistant", "content": [{"text": text}]}


@pytest.fixture
async def bedrock(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[LocalBedrock]:
    # With a bearer token set, botocore refuses a plain-http endpoint.
    monkeypatch.delenv("AWS_BEARER_TOKEN_BEDROCK", raising=False)
    server = LocalBedrock(stream_chunk_chars=7, stream_delay_s=0.0)
    await server.start()
    yield server
    await server.stop()


def make_client(url: str) -> Any:
    """A real bedrock-runtime client for the local server, without retries."""
    return _SESSION.client(
        "bedrock-runtime",
        region_name="us-east-1",
        endpoint_url=url,
        aws_access_key_id="test",
        aws_secret_access_key="test",
        config=botocore.config.Config(retries={"mode": "standard", "total_max_attempts": 1}),
    )


@pytest.fixture
def client(bedrock: LocalBedrock) -> Any:
    return make_client(bedrock.url)


async def call(fn: Callable[..., Any], /, **kwargs: Any) -> Any:
    return await asyncio.to_thread(fn, **kwargs)


async def client_error(fn: Callable[..., Any], /, **kwargs: Any) -> ClientError:
    with pytest.raises(ClientError) as caught:
        await call(fn, **kwargs)
    return caught.value


def read_stream(response: dict[str, Any]) -> list[dict[str, Any]]:
    return list(response["stream"])


def reply_text(response: dict[str, Any]) -> str:
    return "".join(block["text"] for block in response["output"]["message"]["content"])


# -- pure functions -------------------------------------------------------------------------


def test_estimate_tokens_rounds_up() -> None:
    assert [estimate_tokens(t) for t in ["", "a", "abcd", "abcde", "x" * 400]] == [0, 1, 1, 2, 100]


def test_offline_reply_is_deterministic_and_labelled() -> None:
    body = {"messages": [user("one"), assistant("r"), user("two")]}
    assert offline_reply(body) == '(offline model) Turn 2. You said: "two". Before that: "one".'
    assert offline_reply(body) == offline_reply(dict(body))
    assert offline_reply({"messages": [user("solo")]}) == (
        '(offline model) Turn 1. You said: "solo".'
    )


def test_offline_reply_quotes_at_most_200_chars() -> None:
    long = "y" * 300
    reply = offline_reply({"messages": [user(long)]})
    assert f'"{"y" * 200}"' in reply
    assert "y" * 201 not in reply


# -- converse -------------------------------------------------------------------------------


async def test_converse_answers_with_text_usage_and_previous_message(client: Any) -> None:
    messages = [user("first question"), assistant("first answer"), user("second question")]
    system = [{"text": "You are helpful."}]
    response = await call(client.converse, modelId=MODEL_ID, messages=messages, system=system)

    text = reply_text(response)
    assert text == (
        '(offline model) Turn 2. You said: "second question". Before that: "first question".'
    )
    assert response["output"]["message"]["role"] == "assistant"
    assert response["stopReason"] == "end_turn"
    prompt = "\n".join(["You are helpful.", "first question", "first answer", "second question"])
    assert response["usage"] == {
        "inputTokens": estimate_tokens(prompt),
        "outputTokens": estimate_tokens(text),
        "totalTokens": estimate_tokens(prompt) + estimate_tokens(text),
    }
    assert isinstance(response["metrics"]["latencyMs"], int)


async def test_summary_asked_in_the_last_message(client: Any) -> None:
    latest = "Please summarize this thread for me. " + "z" * 100
    messages = [user("a"), assistant("b"), user("c"), assistant("d"), user(latest)]
    response = await call(client.converse, modelId=MODEL_ID, messages=messages)
    # The conversation is what came before the request: its questions, whole, in order.
    assert reply_text(response) == (
        'Summary (offline model):\n- Someone asked: "a"\n- Someone asked: "c"\n'
        "- The assistant answered each question."
    )


async def test_summary_asked_in_the_system_prompt(client: Any) -> None:
    response = await call(
        client.converse,
        modelId=MODEL_ID,
        system=[{"text": "Summarise the conversation briefly."}],
        messages=[user("z" * 120)],
    )
    assert reply_text(response) == (
        f'Summary (offline model):\n- Someone asked: "{"z" * 90}…"\n- Still open: "{"z" * 60}…"'
    )


def test_the_offline_summary_reads_a_transcript_and_the_summary_so_far():
    transcript = (
        'Summary so far:\n- Alice asked: "where is the style guide?"\n'
        "- The assistant answered each question.\n\nConversation:\n"
        "[Bob] can you shorten this paragraph about the quarterly planning process for us\n"
        "and keep it friendly?\n[assistant] Sure.\nA second line.\n"
        "[Alice] thanks, and who approves it?\n(not answered)"
    )
    summary = offline_summary([user(transcript)])
    assert summary.splitlines() == [
        "Summary (offline model):",
        '- Alice asked: "where is the style guide?"',
        '- Bob asked: "can you shorten this paragraph about the quarterly planning process for us'
        ' and keep it…"',
        '- Alice asked: "thanks, and who approves it?"',
        '- Still open: "thanks, and who approves it?"',
    ]
    many = "\n".join(f"[Alice] question {i}\n[assistant] answer" for i in range(12))
    lines = offline_summary([user(many)]).splitlines()
    assert len(lines) == 1 + 8 + 1 and lines[4] == "- …"  # at most 8 points
    assert lines[1].endswith('"question 0"') and lines[-2].endswith('"question 11"')


async def test_max_tokens_truncates_the_reply(client: Any) -> None:
    response = await call(
        client.converse,
        modelId=MODEL_ID,
        messages=[user("x" * 100)],
        inferenceConfig={"maxTokens": 5},
    )
    full = offline_reply({"messages": [user("x" * 100)]})
    assert reply_text(response) == full[:20]
    assert response["stopReason"] == "max_tokens"
    assert response["usage"]["outputTokens"] == 5


async def test_custom_responder_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_BEARER_TOKEN_BEDROCK", raising=False)
    seen: list[dict[str, Any]] = []

    def responder(body: dict[str, Any]) -> str:
        seen.append(body)
        return "custom"

    async with LocalBedrock(responder=responder) as server:
        client = make_client(server.url)
        response = await call(client.converse, modelId=MODEL_ID, messages=[user("hi")])
    assert reply_text(response) == "custom"
    assert seen[0]["messages"] == [user("hi")]


# -- validation -----------------------------------------------------------------------------

INVALID_CONVERSATIONS = {
    "empty": [],
    "assistant first": [assistant("hello"), user("hi")],
    "two user messages in a row": [user("a"), user("b")],
    "two assistant messages in a row": [user("a"), assistant("b"), assistant("c"), user("d")],
    "empty text": [user("")],
    "whitespace text": [user("a"), assistant(" \n\t "), user("b")],
}


@pytest.mark.parametrize("case", INVALID_CONVERSATIONS)
async def test_invalid_conversations_are_rejected(
    client: Any, bedrock: LocalBedrock, case: str
) -> None:
    error = await client_error(
        client.converse, modelId=MODEL_ID, messages=INVALID_CONVERSATIONS[case]
    )
    assert error.response["Error"]["Code"] == "ValidationException"
    assert error.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert error.response["Error"]["Message"]
    assert [r.status for r in bedrock.requests] == [400]


async def test_input_over_the_context_limit_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_BEARER_TOKEN_BEDROCK", raising=False)
    async with LocalBedrock(context_limit_tokens=50) as server:
        client = make_client(server.url)
        # 200 characters estimate to exactly 50 tokens: at the limit is fine, one more is not.
        await call(client.converse, modelId=MODEL_ID, messages=[user("x" * 200)])
        error = await client_error(client.converse, modelId=MODEL_ID, messages=[user("x" * 201)])
        stream_error = await client_error(
            client.converse_stream, modelId=MODEL_ID, messages=[user("x" * 201)]
        )
    for e in (error, stream_error):
        assert e.response["Error"]["Code"] == "ValidationException"
        assert e.response["Error"]["Message"] == "Input is too long for requested model."


# -- faults ---------------------------------------------------------------------------------


async def test_injected_throttling_is_consumed_after_times(
    client: Any, bedrock: LocalBedrock
) -> None:
    bedrock.inject(Fault(error_code="ThrottlingException", message="slow down", times=2))
    for _ in range(2):
        error = await client_error(client.converse, modelId=MODEL_ID, messages=[user("hi")])
        assert error.response["Error"]["Code"] == "ThrottlingException"
        assert error.response["Error"]["Message"] == "slow down"
        assert error.response["ResponseMetadata"]["HTTPStatusCode"] == 429
    response = await call(client.converse, modelId=MODEL_ID, messages=[user("hi")])
    assert reply_text(response)
    assert [r.status for r in bedrock.requests] == [429, 429, 200]


async def test_access_denied_is_403(client: Any, bedrock: LocalBedrock) -> None:
    bedrock.inject(Fault(error_code="AccessDeniedException"))
    error = await client_error(client.converse, modelId=MODEL_ID, messages=[user("hi")])
    assert error.response["Error"]["Code"] == "AccessDeniedException"
    assert (
        error.response["ResponseMetadata"]["HTTPStatusCode"]
        == 403
        == ERROR_STATUS["AccessDeniedException"]
    )


async def test_faults_only_hit_their_operation_and_can_be_cleared(
    client: Any, bedrock: LocalBedrock
) -> None:
    bedrock.inject(Fault(error_code="ServiceUnavailableException", operation="count-tokens"))
    bedrock.inject(Fault(error_code="InternalServerException", operation="converse", times=5))
    error = await client_error(client.converse, modelId=MODEL_ID, messages=[user("hi")])
    assert error.response["ResponseMetadata"]["HTTPStatusCode"] == 500
    error = await client_error(
        client.count_tokens, modelId=MODEL_ID, input={"converse": {"messages": [user("hi")]}}
    )
    assert error.response["Error"]["Code"] == "ServiceUnavailableException"
    assert error.response["ResponseMetadata"]["HTTPStatusCode"] == 503
    bedrock.clear_faults()
    await call(client.converse, modelId=MODEL_ID, messages=[user("hi")])
    assert [(r.operation, r.status) for r in bedrock.requests] == [
        ("converse", 500),
        ("count-tokens", 503),
        ("converse", 200),
    ]


async def test_latency_fault_and_model_latency_delay_the_answer(
    client: Any, bedrock: LocalBedrock
) -> None:
    bedrock.inject(Fault(latency_s=0.2))
    started = time.monotonic()
    await call(client.converse, modelId=MODEL_ID, messages=[user("hi")])
    assert time.monotonic() - started >= 0.2

    bedrock.set_model_latency(0.15)
    started = time.monotonic()
    response = await call(client.converse, modelId=MODEL_ID, messages=[user("hi")])
    assert time.monotonic() - started >= 0.15
    assert response["metrics"]["latencyMs"] >= 150


async def test_lowering_the_model_latency_lets_an_answer_that_waits_go(
    client: Any, bedrock: LocalBedrock
) -> None:
    bedrock.set_model_latency(60)  # a test holds the answer while it does what it needs
    pending = asyncio.create_task(call(client.converse, modelId=MODEL_ID, messages=[user("hi")]))
    await eventually(lambda: bedrock.requests, what="the request")
    assert not pending.done()
    bedrock.set_model_latency(0)
    response = await asyncio.wait_for(pending, 20)
    assert response["metrics"]["latencyMs"] < 20_000


# -- converse-stream ------------------------------------------------------------------------


async def test_converse_stream_matches_converse(client: Any) -> None:
    messages = [user("tell me something"), assistant("ok"), user("more please")]
    whole = await call(client.converse, modelId=MODEL_ID, messages=messages)
    streamed = await call(client.converse_stream, modelId=MODEL_ID, messages=messages)
    events = await asyncio.to_thread(read_stream, streamed)

    kinds = [next(iter(e)) for e in events]
    deltas = [e["contentBlockDelta"]["delta"]["text"] for e in events if "contentBlockDelta" in e]
    text = reply_text(whole)
    assert "".join(deltas) == text
    assert len(deltas) == -(-len(text) // 7)  # stream_chunk_chars=7 in the fixture
    assert kinds == [
        "messageStart",
        *["contentBlockDelta"] * len(deltas),
        "contentBlockStop",
        "messageStop",
        "metadata",
    ]
    assert events[0]["messageStart"] == {"role": "assistant"}
    assert events[-2]["messageStop"]["stopReason"] == "end_turn"
    assert events[-1]["metadata"]["usage"] == whole["usage"]
    assert "latencyMs" in events[-1]["metadata"]["metrics"]


async def test_stream_error_before_streaming_is_a_client_error(
    client: Any, bedrock: LocalBedrock
) -> None:
    bedrock.inject(Fault(error_code="ThrottlingException", operation="converse-stream"))
    error = await client_error(client.converse_stream, modelId=MODEL_ID, messages=[user("hi")])
    assert error.response["Error"]["Code"] == "ThrottlingException"
    assert error.response["ResponseMetadata"]["HTTPStatusCode"] == 429


async def test_cut_stream_breaks_while_iterating(client: Any, bedrock: LocalBedrock) -> None:
    bedrock.inject(Fault(cut_stream_after_events=2, operation="converse-stream"))
    response = await call(client.converse_stream, modelId=MODEL_ID, messages=[user("hi")])
    received: list[dict[str, Any]] = []

    def consume() -> None:
        for event in response["stream"]:
            received.append(event)

    # botocore iterates urllib3's stream directly, so the broken chunked body surfaces as
    # urllib3's ProtocolError ("Response ended prematurely").
    with pytest.raises(urllib3.exceptions.ProtocolError):
        await asyncio.to_thread(consume)
    assert [next(iter(e)) for e in received] == ["messageStart", "contentBlockDelta"]
    assert bedrock.requests[-1].status == 200


async def test_stream_exception_event_mid_stream(client: Any, bedrock: LocalBedrock) -> None:
    bedrock.inject(
        Fault(error_code="ThrottlingException", message="busy", cut_stream_after_events=3)
    )
    response = await call(client.converse_stream, modelId=MODEL_ID, messages=[user("hi")])
    received: list[dict[str, Any]] = []

    def consume() -> None:
        for event in response["stream"]:
            received.append(event)

    with pytest.raises(EventStreamError) as caught:
        await asyncio.to_thread(consume)
    assert caught.value.response["Error"] == {"Code": "throttlingException", "Message": "busy"}
    assert len(received) == 3


# -- count-tokens and recording ---------------------------------------------------------------


async def test_count_tokens_matches_converse_usage(client: Any) -> None:
    messages = [user("how many tokens is this?"), assistant("some"), user("and this?")]
    system = [{"text": "Be brief."}]
    counted = await call(
        client.count_tokens,
        modelId=MODEL_ID,
        input={"converse": {"messages": messages, "system": system}},
    )
    whole = await call(client.converse, modelId=MODEL_ID, messages=messages, system=system)
    assert counted["inputTokens"] == whole["usage"]["inputTokens"] > 0


async def test_count_tokens_validates_the_conversation(client: Any) -> None:
    error = await client_error(
        client.count_tokens, modelId=MODEL_ID, input={"converse": {"messages": [assistant("x")]}}
    )
    assert error.response["Error"]["Code"] == "ValidationException"


async def test_requests_are_recorded_with_decoded_model_ids(
    client: Any, bedrock: LocalBedrock
) -> None:
    before = time.monotonic()
    await call(client.converse, modelId=MODEL_ID, messages=[user("one")])
    streamed = await call(client.converse_stream, modelId=PROFILE_ARN, messages=[user("two")])
    await asyncio.to_thread(read_stream, streamed)
    bedrock.inject(Fault(error_code="ModelTimeoutException"))
    await client_error(
        client.count_tokens, modelId=PROFILE_ARN, input={"converse": {"messages": [user("3")]}}
    )

    records = bedrock.requests
    assert [(r.operation, r.model_id, r.status) for r in records] == [
        ("converse", MODEL_ID, 200),
        ("converse-stream", PROFILE_ARN, 200),
        ("count-tokens", PROFILE_ARN, 408),
    ]
    assert all(isinstance(r, RecordedRequest) for r in records)
    assert records[0].body["messages"] == [user("one")]
    assert records[2].body["input"]["converse"]["messages"] == [user("3")]
    assert before <= records[0].at <= records[1].at <= records[2].at


async def test_stop_is_idempotent_and_url_needs_a_running_server() -> None:
    server = LocalBedrock()
    with pytest.raises(RuntimeError):
        _ = server.url
    url = await server.start()
    assert url.startswith("http://127.0.0.1:") and server.url == url
    await server.stop()
    await server.stop()
    with pytest.raises(RuntimeError):
        _ = server.url


async def test_only_loopback_binding_is_allowed() -> None:
    with pytest.raises(ValueError, match="loopback"):
        await LocalBedrock().start(host="0.0.0.0")


# -- prompt caching ---------------------------------------------------------------------------

CACHED_MODEL = "us.anthropic.claude-sonnet-4-20250514-v1:0"  # 1,024 tokens a checkpoint
POINT = {"cachePoint": {"type": "default"}}
LONG = "x" * 8000  # 2,000 tokens


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def caching_bedrock(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[Any, Clock]]:
    monkeypatch.delenv("AWS_BEARER_TOKEN_BEDROCK", raising=False)
    clock = Clock()
    server = LocalBedrock(stream_delay_s=0.0, clock=clock)
    await server.start()
    yield make_client(server.url), clock
    await server.stop()


def cached_turn(history: list[str]) -> dict[str, Any]:
    """A prompt of `history` (alternating user/assistant texts, then a question), with a cache
    point after the system text and after the last answer, as threadchat sends it."""
    messages = [user(t) if i % 2 == 0 else assistant(t) for i, t in enumerate(history)]
    if len(messages) >= 3:
        messages[-2]["content"].append(POINT)
    return {
        "modelId": CACHED_MODEL,
        "system": [{"text": "be brief"}, POINT],
        "messages": messages,
    }


async def test_a_prompt_prefix_is_written_then_read_within_the_ttl(caching_bedrock) -> None:
    client, clock = caching_bedrock
    first = await call(client.converse, **cached_turn([LONG, "answer one", "question two"]))
    usage = first["usage"]
    assert usage["cacheReadInputTokens"] == 0 and usage["cacheWriteInputTokens"] > 2000
    written = usage["cacheWriteInputTokens"]

    clock.now += 240  # within the 5 minutes
    second = await call(
        client.converse,
        **cached_turn([LONG, "answer one", "question two", "answer two", "question three"]),
    )
    usage = second["usage"]
    assert usage["cacheReadInputTokens"] == written  # the whole earlier prefix
    assert 0 < usage["cacheWriteInputTokens"] < 20  # only what this turn added
    assert usage["totalTokens"] == (
        usage["inputTokens"]
        + usage["cacheReadInputTokens"]
        + usage["cacheWriteInputTokens"]
        + usage["outputTokens"]
    )


async def test_a_prefix_expires_after_the_ttl_unless_read(caching_bedrock) -> None:
    client, clock = caching_bedrock
    turn = cached_turn([LONG, "answer", "question"])
    await call(client.converse, **turn)
    clock.now += 299
    assert (await call(client.converse, **turn))["usage"]["cacheReadInputTokens"] > 0
    clock.now += 299  # the read renewed it
    assert (await call(client.converse, **turn))["usage"]["cacheReadInputTokens"] > 0
    clock.now += 301
    usage = (await call(client.converse, **turn))["usage"]
    assert usage["cacheReadInputTokens"] == 0 and usage["cacheWriteInputTokens"] > 0


async def test_a_checkpoint_under_the_minimum_is_ignored(caching_bedrock) -> None:
    client, _ = caching_bedrock
    usage = (await call(client.converse, **cached_turn(["short", "answer", "short"])))["usage"]
    assert (usage["cacheReadInputTokens"], usage["cacheWriteInputTokens"]) == (0, 0)
    haiku = {**cached_turn([LONG, "answer", "question"]), "modelId": MODEL_ID}
    usage = (await call(client.converse, **haiku))["usage"]  # Haiku 4.5 needs 4,096 tokens
    assert usage["cacheWriteInputTokens"] == 0


async def test_cache_points_are_refused_where_bedrock_refuses_them(caching_bedrock) -> None:
    client, _ = caching_bedrock
    llama = {**cached_turn([LONG]), "modelId": "meta.llama3-70b-instruct-v1:0"}
    error = await client_error(client.converse, **llama)
    assert error.response["Error"]["Code"] == "ValidationException"
    assert "caching is not supported" in error.response["Error"]["Message"]
    too_many = cached_turn([LONG])
    too_many["system"] = [{"text": "a"}, POINT, {"text": "b"}, POINT, {"text": "c"}, POINT]
    too_many["messages"][0]["content"] += [POINT, POINT]
    error = await client_error(client.converse, **too_many)
    assert "maximum of 4" in error.response["Error"]["Message"]


# -- guardContent ---------------------------------------------------------------------------

GUARDRAIL = {"guardrailIdentifier": "gr-local", "guardrailVersion": "1"}


def guarded(text: str, **extra: Any) -> dict[str, Any]:
    return {"guardContent": {"text": {"text": text, **extra}}}


@pytest.fixture
async def guarding_bedrock(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[LocalBedrock]:
    monkeypatch.delenv("AWS_BEARER_TOKEN_BEDROCK", raising=False)
    server = LocalBedrock(stream_delay_s=0.0, guardrail_words=("forbidden",))
    await server.start()
    yield server
    await server.stop()


async def test_guard_content_is_read_counted_and_quoted(client: Any) -> None:
    question = {"role": "user", "content": [{"text": "plain"}, guarded("guarded question")]}
    response = await call(client.converse, modelId=MODEL_ID, messages=[question])
    assert reply_text(response) == '(offline model) Turn 1. You said: "plain\nguarded question".'
    assert response["usage"]["inputTokens"] == estimate_tokens("plain\nguarded question")


async def test_a_guardrail_checks_only_guard_content_when_there_is_some(guarding_bedrock) -> None:
    client = make_client(guarding_bedrock.url)

    async def stop_reason(content: list[dict[str, Any]]) -> str:
        messages = [{"role": "user", "content": content}]
        response = await call(
            client.converse, modelId=MODEL_ID, messages=messages, guardrailConfig=GUARDRAIL
        )
        return response["stopReason"]

    assert await stop_reason([{"text": "the forbidden word"}]) == "guardrail_intervened"
    assert await stop_reason([guarded("the forbidden word")]) == "guardrail_intervened"
    # Marked blocks are all a guardrail looks at, as Bedrock documents.
    assert await stop_reason([{"text": "the forbidden word"}, guarded("fine")]) == "end_turn"


INVALID_GUARD_CONTENT = {
    "blank text": guarded(" \n"),
    "unknown qualifier": guarded("hi", qualifiers=["everything"]),
    "image format": {"guardContent": {"image": {"format": "gif", "source": {"bytes": b"GIF8"}}}},
}


@pytest.mark.parametrize("case", INVALID_GUARD_CONTENT)
async def test_invalid_guard_content_is_rejected(client: Any, case: str) -> None:
    messages = [{"role": "user", "content": [{"text": "hi"}, INVALID_GUARD_CONTENT[case]]}]
    error = await client_error(client.converse, modelId=MODEL_ID, messages=messages)
    assert error.response["Error"]["Code"] == "ValidationException"
    assert "guardContent" in error.response["Error"]["Message"]


async def test_guard_content_must_be_exactly_one_of_text_or_image(bedrock: LocalBedrock) -> None:
    # botocore checks this itself; without its check the request reaches the server.
    unchecked = _SESSION.client(
        "bedrock-runtime",
        region_name="us-east-1",
        endpoint_url=bedrock.url,
        aws_access_key_id="test",
        aws_secret_access_key="test",
        config=botocore.config.Config(
            retries={"mode": "standard", "total_max_attempts": 1}, parameter_validation=False
        ),
    )
    both = {"text": {"text": "hi"}, "image": {"format": "png", "source": {"bytes": b"x"}}}
    for guard in (both, {}):
        content = [{"text": "hi"}, {"guardContent": guard}]
        error = await client_error(
            unchecked.converse, modelId=MODEL_ID, messages=[{"role": "user", "content": content}]
        )
        assert "exactly one of text or image" in error.response["Error"]["Message"]
    assert [r.status for r in bedrock.requests] == [400, 400]


def test_the_offline_model_reads_threadchats_framing() -> None:
    framed = (
        '<context kind="rolling_summary" about="A summary.">\nearlier talk\n</context>\n'
        '<message from="Ada &amp; co" user="U0ADA" ts="1.1">\nhello\n</message>'
    )
    body = {"messages": [{"role": "user", "content": [{"text": framed}, guarded("x")]}]}
    assert offline_reply(body) == '(offline model) Turn 1. You said: "[Ada & co] hello\nx".'


# -- tools ------------------------------------------------------------------------------------

FIND = {
    "toolSpec": {
        "name": "directory__find_person",
        "description": "Find people in the team directory.",
        "inputSchema": {
            "json": {
                "type": "object",
                "properties": {"name": {"type": "string"}},
                "required": ["name"],
            }
        },
    }
}
REPORT = {
    "toolSpec": {
        "name": "directory__big_report",
        "description": "A report.",
        "inputSchema": {
            "json": {
                "type": "object",
                "properties": {"chars": {"type": "integer"}, "title": {"type": "string"}},
                "required": ["chars"],
            }
        },
    }
}
TOOLS = {"tools": [FIND, REPORT]}


def framed(text: str, name: str = "Ada") -> dict[str, Any]:
    return user(f'<message from="{name}" user="U0ADA" ts="1.1">\n{text}\n</message>')


def uses_of(message: dict[str, Any]) -> list[dict[str, Any]]:
    return [block["toolUse"] for block in message["content"] if "toolUse" in block]


def results_for(uses: list[dict[str, Any]], texts: list[str], status: str = "success") -> dict:
    return {
        "role": "user",
        "content": [
            {
                "toolResult": {
                    "toolUseId": u["toolUseId"],
                    "content": [{"text": t}],
                    "status": status,
                }
            }
            for u, t in zip(uses, texts, strict=True)
        ],
    }


async def test_converse_with_tools_asks_for_a_tool_and_reads_its_result(client: Any) -> None:
    messages = [framed("<@U0BOT> please use find_person Grace Hopper")]
    first = await call(client.converse, modelId=MODEL_ID, messages=messages, toolConfig=TOOLS)
    assert first["stopReason"] == "tool_use"
    message = first["output"]["message"]
    [use] = uses_of(message)
    assert message["content"] == [{"toolUse": use}]  # no text before it by default
    assert use["name"] == "directory__find_person"
    assert use["input"] == {"name": "please Grace Hopper"}
    assert use["toolUseId"].startswith("tooluse_") and len(use["toolUseId"]) <= 64

    messages += [message, results_for([use], ["Grace Hopper: Compilers team\nmore lines"])]
    second = await call(client.converse, modelId=MODEL_ID, messages=messages, toolConfig=TOOLS)
    assert second["stopReason"] == "end_turn"
    text = reply_text(second)
    assert text.startswith("(offline model) Turn 1. You said:")
    assert "I used directory__find_person." in text
    assert 'directory__find_person: "Grace Hopper: Compilers team"' in text
    assert "more lines" not in text
    again = await call(client.converse, modelId=MODEL_ID, messages=messages, toolConfig=TOOLS)
    assert again["output"] == second["output"]  # deterministic


async def test_parallel_calls_with_typed_arguments_and_several_rounds(client: Any) -> None:
    prompt = framed(
        'use tools find_person, big_report name=Ada chars=50 title="Q3 plan" tool_rounds=2'
    )
    messages = [prompt]
    rounds = []
    for _ in range(2):
        answer = await call(client.converse, modelId=MODEL_ID, messages=messages, toolConfig=TOOLS)
        assert answer["stopReason"] == "tool_use"
        uses = uses_of(answer["output"]["message"])
        rounds.append(uses)
        messages += [answer["output"]["message"], results_for(uses, ["one", "two"], "error")]
    first, second = rounds
    assert [u["name"] for u in first] == ["directory__find_person", "directory__big_report"]
    assert first[0]["input"] == {"name": "Ada"}
    assert first[1]["input"] == {"chars": 50, "title": "Q3 plan"}
    assert [u["input"] for u in second] == [u["input"] for u in first]
    all_ids = [u["toolUseId"] for u in first + second]
    assert len(set(all_ids)) == 4  # a fresh id for every call
    final = await call(client.converse, modelId=MODEL_ID, messages=messages, toolConfig=TOOLS)
    assert final["stopReason"] == "end_turn"
    assert 'directory__big_report (error): "two"' in reply_text(final)


async def test_a_message_asking_for_no_tool_is_answered_as_before(client: Any) -> None:
    for text in ("hello there", "use your judgement", "use nothing_known"):
        messages = [framed(text)]
        with_tools = await call(
            client.converse, modelId=MODEL_ID, messages=messages, toolConfig=TOOLS
        )
        without = await call(client.converse, modelId=MODEL_ID, messages=messages)
        assert with_tools["stopReason"] == "end_turn"
        assert with_tools["output"] == without["output"]
    # Without a toolConfig, asking for a tool is just text.
    plain = await call(client.converse, modelId=MODEL_ID, messages=[framed("use find_person")])
    assert plain["stopReason"] == "end_turn"


async def test_converse_stream_sends_tool_use_as_bedrock_does(
    client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    messages = [framed("use tools find_person and big_report name=Alan chars=7")]
    whole = await call(client.converse, modelId=MODEL_ID, messages=messages, toolConfig=TOOLS)
    streamed = await call(
        client.converse_stream, modelId=MODEL_ID, messages=messages, toolConfig=TOOLS
    )
    events = await asyncio.to_thread(read_stream, streamed)
    kinds = [next(iter(e)) for e in events]
    assert kinds[0] == "messageStart" and kinds[-2:] == ["messageStop", "metadata"]
    assert events[-2]["messageStop"]["stopReason"] == "tool_use"
    starts = [e["contentBlockStart"] for e in events if "contentBlockStart" in e]
    assert [s["contentBlockIndex"] for s in starts] == [0, 1]
    expected = uses_of(whole["output"]["message"])
    assert [s["start"]["toolUse"] for s in starts] == [
        {"toolUseId": u["toolUseId"], "name": u["name"]} for u in expected
    ]
    for index, use in enumerate(expected):
        pieces = [
            e["contentBlockDelta"]["delta"]["toolUse"]["input"]
            for e in events
            if "contentBlockDelta" in e and e["contentBlockDelta"]["contentBlockIndex"] == index
        ]
        assert len(pieces) > 1  # the input comes in pieces of a JSON string
        assert json.loads("".join(pieces)) == use["input"]
    stops = [e["contentBlockStop"]["contentBlockIndex"] for e in events if "contentBlockStop" in e]
    assert stops == [0, 1]
    # Each block starts, has its deltas, and stops before the next starts.
    order = [
        (next(iter(e)), next(iter(e.values()))["contentBlockIndex"])
        for e in events
        if next(iter(e)).startswith("contentBlock")
    ]
    assert order == sorted(order, key=lambda item: item[1])

    monkeypatch.delenv("AWS_BEARER_TOKEN_BEDROCK", raising=False)
    async with LocalBedrock(stream_delay_s=0, tool_preamble=True) as talkative:
        other = make_client(talkative.url)
        streamed = await call(
            other.converse_stream, modelId=MODEL_ID, messages=messages, toolConfig=TOOLS
        )
        events = await asyncio.to_thread(read_stream, streamed)
        whole = await call(other.converse, modelId=MODEL_ID, messages=messages, toolConfig=TOOLS)
    text = "".join(
        e["contentBlockDelta"]["delta"].get("text", "") for e in events if "contentBlockDelta" in e
    )
    assert text == "(offline model) Calling directory__find_person, directory__big_report."
    starts = [
        e["contentBlockStart"]["contentBlockIndex"] for e in events if "contentBlockStart" in e
    ]
    assert starts == [1, 2]
    assert list(whole["output"]["message"]["content"][0]) == ["text"]


def tool_error(bedrock_error: ClientError) -> str:
    assert bedrock_error.response["Error"]["Code"] == "ValidationException"
    return bedrock_error.response["Error"]["Message"]


async def test_tool_blocks_need_a_tool_config(client: Any) -> None:
    asked = await call(
        client.converse, modelId=MODEL_ID, messages=[framed("use find_person")], toolConfig=TOOLS
    )
    message = asked["output"]["message"]
    messages = [framed("use find_person"), message, results_for(uses_of(message), ["ok"])]
    for operation in (client.converse, client.converse_stream):
        error = await client_error(operation, modelId=MODEL_ID, messages=messages)
        assert tool_error(error) == (
            "The toolConfig field must be defined when using toolUse and toolResult content blocks."
        )


def spec(name: str = "ok_tool", schema: Any = None, **extra: Any) -> dict[str, Any]:
    schema = {"type": "object"} if schema is None else schema
    return {"toolSpec": {"name": name, "inputSchema": {"json": schema}, **extra}}


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"tools": [spec("has space")]}, "failed to satisfy constraint"),
        ({"tools": [spec("a.b")]}, "failed to satisfy constraint"),
        ({"tools": [spec("dup"), spec("dup")]}, "more than one tool named dup"),
        ({"tools": [spec(schema={"type": "string"})]}, "must be a JSON schema of type object"),
        ({"tools": [spec()], "toolChoice": {"tool": {"name": "other"}}}, "toolChoice"),
    ],
)
async def test_a_bad_tool_config_is_refused(client: Any, config: Any, message: str) -> None:
    # (An empty tool list, a name over 64 characters or an empty description botocore
    # refuses itself, before sending.)
    error = await client_error(
        client.converse, modelId=MODEL_ID, messages=[user("hi")], toolConfig=config
    )
    assert message in tool_error(error)


async def test_tool_results_must_answer_the_previous_tool_uses(client: Any) -> None:
    use = {"toolUseId": "tooluse_abc", "name": "ok_tool", "input": {}}
    other = {"toolUseId": "tooluse_other", "name": "ok_tool", "input": {}}
    asked = {"role": "assistant", "content": [{"toolUse": use}, {"toolUse": other}]}
    config = {"tools": [spec()]}

    def result(tool_use_id: str, **extra: Any) -> dict[str, Any]:
        return {"toolResult": {"toolUseId": tool_use_id, "content": [{"text": "r"}], **extra}}

    cases = [
        (
            [user("q"), asked, {"role": "user", "content": [result("tooluse_abc")]}],
            "Expected toolResult blocks at messages.2.content for the following Ids: tooluse_other",
        ),
        (
            [user("q"), assistant("a"), {"role": "user", "content": [result("tooluse_abc")]}],
            "unexpected toolUseId found in toolResult blocks: tooluse_abc",
        ),
        ([user("q"), asked], "no toolResult answers"),
        (
            [
                user("q"),
                {"role": "assistant", "content": [{"toolUse": {**use, "toolUseId": "bad id"}}]},
            ],
            "needs a toolUseId, a name and an input",
        ),
        ([{"role": "user", "content": [{"toolUse": use}]}], "must be in an assistant message"),
        (
            [user("q"), asked, {"role": "user", "content": [result("tooluse_abc", status="fine")]}],
            "status",
        ),
        (
            [
                user("q"),
                asked,
                {
                    "role": "user",
                    "content": [
                        {
                            "toolResult": {
                                "toolUseId": "tooluse_abc",
                                "content": [],
                                "status": "error",
                            }
                        },
                        result("tooluse_other"),
                    ],
                },
            ],
            "cannot be empty when status value is error",
        ),
    ]
    for messages, message in cases:
        error = await client_error(
            client.converse, modelId=MODEL_ID, messages=messages, toolConfig=config
        )
        assert message in tool_error(error), (message, tool_error(error))
    fine = [
        user("q"),
        asked,
        {
            "role": "user",
            "content": [result("tooluse_other"), result("tooluse_abc", status="error")],
        },
    ]
    answer = await call(client.converse, modelId=MODEL_ID, messages=fine, toolConfig=config)
    assert answer["stopReason"] == "end_turn"
    assert 'ok_tool (error): "r"' in reply_text(answer)
