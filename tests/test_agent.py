"""Slack's agent platform, end to end: the Messages tab (agent_view), what the user views
(app_context_changed), with Slack's payload shapes, signed over HTTP into the bot."""

import json

from devtools.slack_events import agent_session_stopped_event
from devtools.stack import ALICE, BOB, Stack, eventually
from threadchat import texts
from workflows.conversation import ConversationWorkflow

CHANNEL = "C0VIEWED"


def prompts(stack: Stack) -> list[dict]:
    return [r.body for r in stack.bedrock.requests if r.operation == "converse-stream"]


def in_view(body: dict) -> str:
    """The context block opening the last user message ("" when none)."""
    opening = body["messages"][-1]["content"][0]["text"]
    return opening if opening.startswith("<context kind=") else ""


async def test_opening_the_messages_tab_suggests_prompts_above_its_composer(make_stack):
    stack = await make_stack()
    dm = await stack.open_messages_tab()
    entry = await eventually(lambda: stack.slack.suggested_prompts.get((dm, "")), what="prompts")
    assert entry["prompts"] == texts.messages_tab_prompts()
    assert entry["title"] == texts.PROMPTS_TITLE
    # Nothing is posted, and no conversation starts, until the user writes.
    assert not stack.slack.messages(dm)
    # The Home tab is still the Home tab.
    view = await stack.open_home(ALICE)
    assert view["type"] == "home"


async def test_the_channel_and_the_message_in_view_reach_the_next_turn(make_stack):
    stack = await make_stack()
    stack.slack.join(CHANNEL, ALICE, BOB, stack.slack.bot_user_id)
    stack.slack.join("C0SECRET", BOB, stack.slack.bot_user_id)  # Alice is not in this one
    stack.slack.add_message(CHANNEL, user=BOB, text="the launch moves to Friday")
    root = stack.slack.add_message(CHANNEL, user=BOB, text="which venue?")
    stack.slack.add_message(CHANNEL, user=ALICE, text="the harbour hall", thread_ts=root["ts"])
    stack.slack.add_message("C0SECRET", user=BOB, text="the reorg is on Monday")
    dm = await stack.open_messages_tab()
    # A conversation in the Messages tab: a root message in the DM.
    thread = await stack.say(dm, None, "hello", channel_type="im")
    await stack.replies(dm, thread, 1)
    assert in_view(prompts(stack)[-1]) == ""

    await stack.view(CHANNEL)
    await stack.say(dm, thread, "what is new there?", channel_type="im")
    await stack.replies(dm, thread, 2)
    seen = in_view(prompts(stack)[-1])
    assert seen.startswith(f'<context kind="channel" channel="{CHANNEL}"')
    assert "the launch moves to Friday" in seen

    await stack.view(CHANNEL, root["ts"])  # a message in it: its thread
    await stack.say(dm, thread, "and this one?", channel_type="im")
    await stack.replies(dm, thread, 3)
    seen = in_view(prompts(stack)[-1])
    assert seen.startswith(f'<context kind="thread" channel="{CHANNEL}" ts="{root["ts"]}"')
    assert "the harbour hall" in seen and "which venue?" in seen
    assert "launch" not in seen

    # A channel she may not read: nothing of it reaches her prompt. Slack's retry too.
    for _ in range(2):
        await stack.view("C0SECRET")
    await stack.say(dm, thread, "and here?", channel_type="im")
    await stack.replies(dm, thread, 4)
    prompt = json.dumps(prompts(stack)[-1])
    assert "reorg" not in prompt and "C0SECRET" not in prompt

    # Nothing in view (an empty context): no context block.
    await stack.view(None)
    await stack.say(dm, thread, "thanks", channel_type="im")
    await stack.replies(dm, thread, 5)
    assert in_view(prompts(stack)[-1]) == ""
    status = await stack.handle(dm, thread).query(ConversationWorkflow.status)
    assert status.turn_count == 5
    # A thread the user started by writing is never greeted.
    assert not any("I'm threadchat" in m["text"] for m in stack.slack.bot_replies(dm, thread))


async def test_someone_elses_view_does_not_reach_a_conversation(make_stack):
    stack = await make_stack()
    stack.slack.join(CHANNEL, ALICE, BOB, stack.slack.bot_user_id)
    stack.slack.add_message(CHANNEL, user=BOB, text="bob's channel news")
    dm = "D" + ALICE.removeprefix("U")
    thread = await stack.say(dm, None, "hello", channel_type="im")
    await stack.replies(dm, thread, 1)
    await stack.view(CHANNEL, user=BOB)  # Bob's DM with the app, not Alice's
    await stack.say(dm, thread, "anything new?", channel_type="im")
    await stack.replies(dm, thread, 2)
    assert in_view(prompts(stack)[-1]) == ""


async def test_a_stop_is_acknowledged_and_the_conversation_goes_on(make_stack):
    """Stop does not cancel a turn yet: the event is acked (Slack would retry a 404), and the
    next message is answered."""
    stack = await make_stack()
    thread = await stack.mention(stack.channel, "hello")
    [first] = await stack.replies(stack.channel, thread, 1)
    event = agent_session_stopped_event(
        user=ALICE, channel=stack.channel, thread_ts=thread, streaming_message_ts=[first["ts"]]
    )
    for retry in (None, 1):
        status, _ = await stack.sender.send_event(event, retry_num=retry)
        assert status == 200
    await stack.say(stack.channel, thread, "and then?")
    await stack.replies(stack.channel, thread, 2)
    assert stack.slack.session(stack.channel, thread) == "active"
