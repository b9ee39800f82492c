"""Activities against the local servers with real clients: how Bedrock and Slack failures
become retryable or final Temporal errors."""

import asyncio

import pytest
from slack_sdk.errors import SlackApiError

from activities import bedrock as bedrock_activities
from activities import slack as slack_activities
from devtools.bedrock import Fault, LocalBedrock
from devtools.slack import LocalSlack
from threadchat.config import BedrockSettings
from threadchat.slack_client import make_client


@pytest.fixture
async def bedrock():
    server = LocalBedrock()
    await server.start()
    yield server
    await server.stop()


def converse_error(server: LocalBedrock, fault: Fault, read_timeout: float = 10) -> Exception:
    client = bedrock_activities.make_client(
        BedrockSettings(endpoint_url=server.url, read_timeout=read_timeout)
    )
    server.inject(fault)
    try:
        client.converse(
            modelId="us.anthropic.claude-haiku-4-5-20251001-v1:0",
            messages=[{"role": "user", "content": [{"text": "hi"}]}],
        )
    except Exception as err:  # what botocore raised, after exactly one attempt
        return err
    raise AssertionError("the call did not fail")


@pytest.mark.parametrize(
    ("code", "retryable"),
    [
        ("ThrottlingException", True),
        ("ServiceUnavailableException", True),
        ("InternalServerException", True),
        ("ModelNotReadyException", True),
        ("ModelTimeoutException", True),
        ("ValidationException", False),
        ("AccessDeniedException", False),
        ("ResourceNotFoundException", False),
        ("ServiceQuotaExceededException", False),
    ],
)
async def test_bedrock_errors_are_classified(bedrock, code, retryable):
    err = await asyncio.to_thread(converse_error, bedrock, Fault(code))
    failure = bedrock_activities.classify(err)
    assert failure.type == code
    assert failure.non_retryable is not retryable
    assert len(bedrock.requests) == 1  # botocore did not retry on its own


async def test_too_long_input_is_a_context_overflow(bedrock):
    fault = Fault("ValidationException", message="Input is too long for requested model.")
    err = await asyncio.to_thread(converse_error, bedrock, fault)
    failure = bedrock_activities.classify(err)
    assert (failure.type, failure.non_retryable) == (bedrock_activities.CONTEXT_OVERFLOW, True)


async def test_read_timeout_is_retryable(bedrock):
    err = await asyncio.to_thread(converse_error, bedrock, Fault(latency_s=3), read_timeout=1)
    failure = bedrock_activities.classify(err)
    assert (failure.type, failure.non_retryable) == ("BedrockTimeout", False)


@pytest.mark.parametrize(
    ("error", "status", "retryable", "delay"),
    [
        ("ratelimited", 429, True, 7),
        ("internal_error", 500, True, None),
        ("channel_not_found", 200, False, None),
        ("invalid_auth", 200, False, None),
    ],
)
async def test_slack_errors_are_classified(error, status, retryable, delay):
    server = LocalSlack()
    await server.start()
    try:
        client = make_client(server.bot_token, server.base_url)
        server.inject("chat.postMessage", error=error, status=status, retry_after=delay)
        with pytest.raises(SlackApiError) as raised:
            await client.chat_postMessage(channel="C1", text="hi")
    finally:
        await server.stop()
    failure = slack_activities.classify(raised.value)
    assert failure.non_retryable is not retryable
    if delay:
        assert failure.next_retry_delay.total_seconds() == delay
