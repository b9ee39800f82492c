"""The buttons under each reply, end to end: signed block_actions over HTTP into the bot, the
conversation workflow on the real dev server, and the answer read back from the local Slack."""

import asyncio

import pytest

from devtools.bedrock import Fault
from devtools.stack import ALICE, BOB, Stack, eventually
from threadchat import actions, texts
from threadchat.model import EndRequest
from workflows.conversation import ConversationWorkflow

SAMPLED_AGAIN = "Sampled at temperature 0.8"  # the offline model says how it was sampled


def reply_streams(stack: Stack) -> list[dict]:
    return [r.body for r in stack.bedrock.requests if r.operation == "converse-stream"]


async def regenerated(stack: Stack, ts: str, marker: str = SAMPLED_AGAIN) -> dict:
    """The message `ts` once it shows the regenerated answer, finished, with its buttons."""

    def done() -> dict | None:
        message = stack.slack.message(stack.channel, ts)
        if marker in message.get("text", "") and message.get("blocks"):
            return message
        return None

    return await eventually(done, 20, "the regenerated answer")


async def test_regenerate_replaces_the_answer_in_place_and_in_the_context(make_stack):
    stack = await make_stack()
    thread = await stack.mention(stack.channel, "name a colour")
    [first] = await stack.replies(stack.channel, thread, 1)
    assert SAMPLED_AGAIN not in first["text"]

    assert await stack.click(stack.channel, first["ts"], actions.REGENERATE) == 200
    message = await regenerated(stack, first["ts"])
    # The same message, edited; no second reply in the thread.
    assert [r["ts"] for r in stack.slack.bot_replies(stack.channel, thread)] == [first["ts"]]
    assert message["edited"]
    # The new buttons name the new version, so an old click is recognisably stale.
    [block] = [b for b in message["blocks"] if b["type"] == "actions"]
    assert {e["value"] for e in block["elements"]} == {
        actions.encode(actions.decode(block["elements"][0]["value"]))
    }
    assert actions.decode(block["elements"][0]["value"]).version == 1
    again = reply_streams(stack)[-1]
    assert again["inferenceConfig"]["temperature"] == 0.8  # sampled more freely
    assert again["messages"] == reply_streams(stack)[0]["messages"]  # the same question

    # Only the new answer is in the context of the next turn.
    await stack.say(stack.channel, thread, "and another")
    await stack.replies(stack.channel, thread, 2)
    prompt = reply_streams(stack)[-1]["messages"]
    assert [m["role"] for m in prompt] == ["user", "assistant", "user"]
    assert SAMPLED_AGAIN in prompt[1]["content"][0]["text"]
    status = await stack.handle(stack.channel, thread).query(ConversationWorkflow.status)
    assert status.turn_count == 2


def thinking_ended(stack: Stack, thread: str) -> bool:
    """The thread no longer shows the answer being worked on: its session is active again,
    or (where Slack refuses sessions) the assistant thread's status is cleared."""
    if stack.slack.sessions_error:
        return stack.slack.status(stack.channel, thread) == ""
    return stack.slack.session(stack.channel, thread) == "active"


@pytest.mark.parametrize("sessions", [True, False])
async def test_regenerate_ends_the_thinking_status(make_stack, sessions):
    stack = await make_stack()
    stack.slack.sessions_error = None if sessions else "unknown_method"
    thread = await stack.mention(stack.channel, "name a river")
    [first] = await stack.replies(stack.channel, thread, 1)
    assert await stack.click(stack.channel, first["ts"], actions.REGENERATE) == 200
    await regenerated(stack, first["ts"])
    # An edit does not clear it in Slack (nor in the local one): the reply must say so.
    await eventually(lambda: thinking_ended(stack, thread), what="status cleared")
    if sessions:
        history = stack.slack.session_statuses[(stack.channel, thread)]
        assert history == ["processing", "active", "processing", "active"]
    else:
        statuses = [c.params["status"] for c in stack.slack.calls_to("assistant.threads.setStatus")]
        assert statuses[-2].startswith("is thinking") and statuses[-1] == ""


async def test_regenerate_clicked_as_the_answer_ends_waits_for_the_turn(make_stack):
    """Slack shows Regenerate when the answer's stream stops, a moment before the workflow has
    recorded the turn (here held up by a slow answer to chat.stopStream): a click then
    regenerates the answer once the turn is recorded; it is not refused as an older one."""
    stack = await make_stack()
    stack.slack.inject_slow_response("chat.stopStream", 2)
    thread = await stack.mention(stack.channel, "name a mountain")
    [first] = await stack.replies(stack.channel, thread, 1)
    # The click comes while the answer's activity still waits for Slack's answer.
    assert not [c for c in stack.slack.calls_to("chat.stopStream") if c.status], "no race"
    assert await stack.click(stack.channel, first["ts"], actions.REGENERATE) == 200
    await regenerated(stack, first["ts"])
    assert stack.private_notes(stack.channel, ALICE) == []


@pytest.mark.parametrize("sessions", [True, False])
async def test_a_failed_regenerate_ends_the_thinking_status(make_stack, sessions):
    stack = await make_stack()
    stack.slack.sessions_error = None if sessions else "unknown_method"
    thread = await stack.mention(stack.channel, "name a lake")
    [first] = await stack.replies(stack.channel, thread, 1)
    stack.bedrock.inject(Fault("AccessDeniedException", operation="converse-stream"))
    assert await stack.click(stack.channel, first["ts"], actions.REGENERATE) == 200
    await eventually(lambda: len(stack.private_notes(stack.channel, ALICE)) == 1, 20, "notice")
    await eventually(lambda: thinking_ended(stack, thread), what="status cleared")
    if sessions:
        history = stack.slack.session_statuses[(stack.channel, thread)]
        assert history[-2:] == ["processing", "active"] and len(history) == 4
    else:
        assert any(c.params["status"] for c in stack.slack.calls_to("assistant.threads.setStatus"))
    assert stack.slack.message(stack.channel, first["ts"])["text"] == first["text"]


async def test_a_double_click_regenerates_once(make_stack):
    stack = await make_stack()
    thread = await stack.mention(stack.channel, "tell me a fact")
    [first] = await stack.replies(stack.channel, thread, 1)
    statuses = await asyncio.gather(
        stack.click(stack.channel, first["ts"], actions.REGENERATE),
        stack.click(stack.channel, first["ts"], actions.REGENERATE),
    )
    assert statuses == [200, 200]
    await regenerated(stack, first["ts"])
    # A follow-up proves the workflow moved on; only then can the model calls be counted.
    await stack.say(stack.channel, thread, "thanks")
    await stack.replies(stack.channel, thread, 2)
    assert len(reply_streams(stack)) == 3  # the answer, one regenerate, the follow-up
    assert texts.REGENERATE_REFUSED["AlreadyRegenerating"] in stack.private_notes(
        stack.channel, ALICE
    )


async def test_only_participants_regenerate_and_only_the_latest_answer(make_stack):
    stack = await make_stack()
    thread = await stack.mention(stack.channel, "first question")
    [first] = await stack.replies(stack.channel, thread, 1)

    assert await stack.click(stack.channel, first["ts"], actions.REGENERATE, user=BOB) == 200
    refused = texts.REGENERATE_REFUSED["NotParticipant"]
    await eventually(lambda: refused in stack.private_notes(stack.channel, BOB), what="refusal")

    await stack.say(stack.channel, thread, "second question")
    await stack.replies(stack.channel, thread, 2)
    assert await stack.click(stack.channel, first["ts"], actions.REGENERATE) == 200
    older = texts.REGENERATE_REFUSED["NotLatest"]
    await eventually(lambda: older in stack.private_notes(stack.channel, ALICE), what="refusal")
    assert len(reply_streams(stack)) == 2  # neither click reached the model
    assert SAMPLED_AGAIN not in stack.slack.message(stack.channel, first["ts"])["text"]


async def test_regenerate_after_the_conversation_ended_says_so(make_stack):
    stack = await make_stack()
    thread = await stack.mention(stack.channel, "a question")
    [first] = await stack.replies(stack.channel, thread, 1)
    handle = stack.handle(stack.channel, thread)
    await handle.signal(ConversationWorkflow.end, EndRequest(requested_by=ALICE, via="command"))
    await handle.result()
    assert await stack.click(stack.channel, first["ts"], actions.REGENERATE) == 200
    over = texts.CONVERSATION_OVER
    await eventually(lambda: over in stack.private_notes(stack.channel, ALICE), what="notice")


async def test_feedback_is_recorded_once_per_person_and_acknowledged(make_stack):
    stack = await make_stack()
    thread = await stack.mention(stack.channel, "rate me")
    [first] = await stack.replies(stack.channel, thread, 1)
    handle = stack.handle(stack.channel, thread)

    async def counts() -> tuple[int, int]:
        status = await handle.query(ConversationWorkflow.status)
        return status.feedback_up, status.feedback_down

    for _ in range(2):  # a repeated click counts once
        assert await stack.click(stack.channel, first["ts"], actions.FEEDBACK_UP) == 200
    assert await stack.click(stack.channel, first["ts"], actions.FEEDBACK_UP, user=BOB) == 200
    await eventually(lambda: _equal(counts(), (2, 0)), what="two thumbs up")
    thanks = texts.FEEDBACK_THANKS["up"]
    assert stack.private_notes(stack.channel, ALICE).count(thanks) == 2
    assert stack.private_notes(stack.channel, BOB) == [thanks]

    # Changing one's mind replaces the earlier rating.
    assert await stack.click(stack.channel, first["ts"], actions.FEEDBACK_DOWN) == 200
    await eventually(lambda: _equal(counts(), (1, 1)), what="a change of mind")
    await handle.signal(ConversationWorkflow.end, EndRequest(requested_by=ALICE, via="command"))
    result = await handle.result()
    assert sorted((f.user, f.rating, f.reply.turn) for f in result.feedback) == [
        (ALICE, "down", 1),
        (BOB, "up", 1),
    ]


async def _equal(awaitable, expected) -> bool:
    return await awaitable == expected
