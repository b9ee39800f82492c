"""Converse prompt caching, end to end: each turn's prompt reads the previous one from the
cache, a model that refuses cache points costs one refused call per worker, and the tokens
are counted where operators look."""

import asyncio
import logging
import time

from devtools.stack import Stack
from threadchat.commands import operator
from threadchat.ids import conversation_id
from workflows.conversation import ConversationWorkflow

CACHED_MODEL = "us.anthropic.claude-sonnet-4-20250514-v1:0"  # 1,024 tokens a checkpoint
LONG = "tell me about " + "lighthouses " * 500  # about 1,500 tokens


def cache_points(body: dict) -> int:
    blocks = list(body.get("system", [])) + [b for m in body["messages"] for b in m["content"]]
    return sum("cachePoint" in b for b in blocks)


def streams(stack: Stack) -> list:
    return [r for r in stack.bedrock.requests if r.operation == "converse-stream"]


async def test_each_turn_reads_the_one_before_from_the_cache(make_stack):
    stack = await make_stack(bedrock_settings={"model_id": CACHED_MODEL})
    thread = await stack.mention(stack.channel, LONG)
    await stack.replies(stack.channel, thread, 1)
    for count, text in ((2, "and the oldest one?"), (3, "and the tallest?")):
        await stack.say(stack.channel, thread, text)
        await stack.replies(stack.channel, thread, count)

    bodies = [r.body for r in streams(stack)]
    assert [cache_points(b) for b in bodies] == [1, 2, 2]  # system; then after the last answer
    assert bodies[1]["messages"][1]["content"][-1] == {"cachePoint": {"type": "default"}}
    workflow_id = conversation_id("T0LOCAL", stack.channel, thread)
    rows = await operator.load_invocations(stack.client, workflow_id)
    # Turn 2 writes the prefix turn 1 built; turn 3 reads all of it and writes only turn 2.
    assert rows[0].cache_write_tokens == 0  # nothing before the question to keep
    assert rows[1].cache_write_tokens > 1000 and rows[1].cache_read_tokens == 0
    assert rows[2].cache_read_tokens == rows[1].cache_write_tokens
    assert 0 < rows[2].cache_write_tokens < 100
    assert rows[2].input_tokens < 50  # the new question only
    status = await stack.handle(stack.channel, thread).query(ConversationWorkflow.status)
    assert status.cache_read_tokens == rows[2].cache_read_tokens
    assert status.cache_write_tokens == rows[1].cache_write_tokens + rows[2].cache_write_tokens
    view = await operator.load_conversation(stack.client, workflow_id)
    assert "prompt cache:" in operator.format_conversation(view)


async def test_a_model_that_refuses_cache_points_is_asked_without_them(make_stack, caplog):
    caplog.set_level(logging.WARNING, logger="activities.bedrock")
    stack = await make_stack(bedrock_settings={"model_id": "example.new-model-v1:0"})
    thread = await stack.mention(stack.channel, "hello")
    [reply] = await stack.replies(stack.channel, thread, 1)
    assert "hello" in reply["text"]  # answered all the same
    await stack.say(stack.channel, thread, "again")
    await stack.replies(stack.channel, thread, 2)
    calls = streams(stack)
    assert [(r.status, cache_points(r.body) > 0) for r in calls] == [
        (400, True),  # refused
        (200, False),  # asked again without
        (200, False),  # and from then on
    ]
    refusals = [r for r in caplog.records if "refused prompt cache points" in r.getMessage()]
    assert len(refusals) == 1


async def test_no_cache_points_for_models_known_not_to_take_them(make_stack):
    stack = await make_stack(bedrock_settings={"model_id": "meta.llama3-70b-instruct-v1:0"})
    thread = await stack.mention(stack.channel, "hello")
    await stack.replies(stack.channel, thread, 1)
    [call] = streams(stack)
    assert call.status == 200 and cache_points(call.body) == 0


async def test_turns_further_apart_than_the_cache_keeps_them_send_no_cache_points(make_stack):
    # A cache kept for 3 s instead of Bedrock's 5 minutes, so that turns can be "slow"; not
    # less: a quick follow-up on a loaded machine must still come within it.
    stack = await make_stack(
        bedrock_settings={"model_id": CACHED_MODEL},
        bedrock_options={"cache_ttl_s": 3.0},
        prompt_cache_seconds=3.0,
    )
    thread = await stack.mention(stack.channel, LONG)
    await stack.replies(stack.channel, thread, 1)
    await stack.say(stack.channel, thread, "a quick follow-up")
    await stack.replies(stack.channel, thread, 2)
    answered = time.monotonic()
    await asyncio.sleep(3.5)  # the scenario: a person who comes back later than the cache keeps
    assert time.monotonic() - answered > 3.0
    await stack.say(stack.channel, thread, "a slow follow-up")
    await stack.replies(stack.channel, thread, 3)
    assert [cache_points(r.body) for r in streams(stack)] == [1, 2, 0]
