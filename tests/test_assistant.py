"""Slack's AI-app surface, end to end: the assistant panel's threads (greeting, suggested
prompts, titles, the channel in view) and the App Home tab."""

import json
import uuid

from devtools.stack import ALICE, BOB, Stack, eventually
from threadchat import texts
from threadchat.commands import operator
from threadchat.config import DEFAULT_SYSTEM_PROMPT
from threadchat.temporal import CONVERSATION_TITLE
from workflows.conversation import ConversationWorkflow

CHANNEL = "C0DESIGN"


def prompts(stack: Stack) -> list[dict]:
    return [r.body for r in stack.bedrock.requests if r.operation == "converse-stream"]


def channel_in_view(body: dict) -> str:
    """The channel context a reply was given: a quoted block opening its last message, never
    the system prompt."""
    assert [b for b in body["system"] if "text" in b] == [{"text": DEFAULT_SYSTEM_PROMPT}]
    opening = body["messages"][-1]["content"][0]["text"]
    return opening if opening.startswith('<context kind="channel"') else ""


async def test_the_panel_greets_once_with_prompts_for_the_channel_in_view(make_stack):
    stack = await make_stack()
    dm, thread = await stack.open_panel(viewing=CHANNEL)
    for _ in range(2):  # Slack delivers the event again
        await stack.panel_event("started", dm, thread, viewing=CHANNEL)
    [greeting] = await stack.replies(dm, thread, 1)
    assert f"<@{ALICE}>" in greeting["text"] and f"<#{CHANNEL}>" in greeting["text"]
    prompts = stack.slack.suggested_prompts[(dm, thread)]["prompts"]
    assert prompts[0] == {
        "title": "Summarize this channel",
        "message": f"Summarize the recent discussion in <#{CHANNEL}>.",
    }
    assert prompts[-1]["message"] == texts.END_PROMPT
    # Proof the workflow took all three deliveries: a message is answered as turn 1.
    await stack.panel_say(dm, thread, "hello")
    replies = await stack.replies(dm, thread, 2)
    assert "Turn 1" in replies[1]["text"]
    assert len(stack.slack.bot_replies(dm, thread)) == 2


async def test_a_panel_thread_is_answered_titled_and_ended_with_its_prompt(make_stack):
    stack = await make_stack()
    dm, thread = await stack.open_panel()
    await stack.replies(dm, thread, 1)
    await stack.panel_say(dm, thread, "how do durable workflows work?")
    await stack.replies(dm, thread, 2)
    title = await eventually(lambda: stack.slack.titles.get((dm, thread)), what="a title")
    handle = stack.handle(dm, thread)

    async def titled() -> bool:
        attributes = (await handle.describe()).typed_search_attributes
        return attributes.get(CONVERSATION_TITLE) == title

    await eventually(titled, what="the title as a search attribute")
    rows = await operator.list_conversations(
        stack.client, task_queue=stack.settings.temporal.task_queue
    )
    assert [r.title for r in rows] == [title] and title in operator.format_table(rows)

    await stack.panel_say(dm, thread, texts.END_PROMPT)
    result = await handle.result()
    assert result.ended_by == "prompt" and result.turn_count == 1
    assert "Conversation summary" in stack.slack.bot_replies(dm, thread)[-1]["text"]


async def test_the_channel_in_view_is_read_only_where_the_user_is_a_member(make_stack):
    stack = await make_stack()
    stack.slack.join(CHANNEL, ALICE, BOB, stack.slack.bot_user_id)
    stack.slack.join("C0SECRET", BOB, stack.slack.bot_user_id)  # Alice is not in this one
    stack.slack.add_message(CHANNEL, user=BOB, text="the launch moves to Friday")
    stack.slack.add_message("C0SECRET", user=BOB, text="the reorg is on Monday")
    dm, thread = await stack.open_panel(viewing=CHANNEL)
    await stack.replies(dm, thread, 1)
    await stack.panel_say(dm, thread, "summarize this channel")
    await stack.replies(dm, thread, 2)
    seen = channel_in_view(prompts(stack)[-1])
    assert seen.startswith(f'<context kind="channel" channel="{CHANNEL}"')
    assert f'<message from="{BOB}" user="{BOB}" ts="' in seen  # its author, from Slack
    assert "the launch moves to Friday" in seen

    # She switches to a channel she may not read: nothing of it reaches her prompt.
    await stack.panel_event("context_changed", dm, thread, viewing="C0SECRET")
    await stack.panel_say(dm, thread, "and this one?")
    await stack.replies(dm, thread, 3)
    prompt = json.dumps(prompts(stack)[-1])
    assert "reorg" not in prompt and "C0SECRET" not in prompt and "launch" not in prompt
    status = await stack.handle(dm, thread).query(ConversationWorkflow.status)
    assert status.turn_count == 2


async def test_app_home_lists_ones_own_conversations_and_ends_one(make_stack):
    stack = await make_stack()
    # People of this test alone: the Home lists every conversation of theirs on the server.
    carol, dave = ("U" + uuid.uuid4().hex[:10].upper() for _ in range(2))
    mine = await stack.mention(stack.channel, "first question", user=carol)
    await stack.replies(stack.channel, mine, 1)
    dm, panel = await stack.open_panel(user=carol)
    await stack.replies(dm, panel, 1)
    daves = await stack.mention(stack.channel, "dave asks", user=dave)
    await stack.replies(stack.channel, daves, 1)

    view = await stack.open_home(carol)
    buttons = [
        b["accessory"]["value"]
        for b in view["blocks"]
        if b.get("accessory", {}).get("action_id") == "threadchat_end_conversation"
    ]
    in_channel, in_panel = stack.handle(stack.channel, mine).id, stack.handle(dm, panel).id
    assert buttons == [in_panel, in_channel]  # newest first, and not Dave's
    assert any("Tokens used today" in str(b) for b in view["blocks"])

    assert await stack.click_home("threadchat_end_conversation", in_channel, user=carol) == 200
    result = await stack.handle(stack.channel, mine).result()
    assert result.ended_by == "home"
    # Someone else's conversation is not ended by a click naming it.
    dave_id = stack.handle(stack.channel, daves).id
    assert await stack.click_home("threadchat_end_conversation", dave_id, user=carol) == 200
    status = await stack.handle(stack.channel, daves).query(ConversationWorkflow.status)
    assert not status.ending


def end_buttons(view: dict) -> list[str]:
    return [
        b["accessory"]["value"]
        for b in view["blocks"]
        if b.get("accessory", {}).get("action_id") == "threadchat_end_conversation"
    ]


async def test_app_home_names_the_channel_and_shows_the_end_once_it_has_ended(make_stack):
    stack = await make_stack()
    stack.slack.name_channel(stack.channel, "general")
    erin = "U" + uuid.uuid4().hex[:10].upper()
    ts = await stack.mention(stack.channel, "an untitled question", user=erin)
    await stack.replies(stack.channel, ts, 1)
    workflow_id = stack.handle(stack.channel, ts).id

    async def titled() -> str | None:
        # The title reaches Temporal's visibility, which the Home reads, a moment later.
        view = await stack.open_home(erin)
        assert end_buttons(view) == [workflow_id]
        [label] = [str(b["text"]) for b in view["blocks"] if b.get("accessory")]
        return label if "an untitled question" in label else None

    label = await eventually(titled, what="the conversation's title in the Home")
    # Titled by its question, and where it is under the title.
    assert "In #general" in label and "&lt;" not in label

    assert await stack.click_home("threadchat_end_conversation", workflow_id, user=erin) == 200
    await stack.handle(stack.channel, ts).result()
    # Published again when the workflow had ended, without the tab being opened again.
    await eventually(
        lambda: texts.HOME_NONE in str(stack.slack.home_views[erin]["blocks"]), 20, "its end"
    )
    views = [
        c.params["view"]
        for c in stack.slack.calls_to("views.publish")
        if c.params["user_id"] == erin
    ]
    # In between it was shown ending, with no button to click twice.
    ending = [v for v in views if texts.HOME_ENDING in str(v)]
    assert ending and all(
        workflow_id not in str(v) or "threadchat_end" not in str(v) for v in ending
    )


async def test_app_home_labels_a_channel_it_cannot_name_without_markup(make_stack):
    stack = await make_stack()  # the local Slack knows no name for this channel
    frank = "U" + uuid.uuid4().hex[:10].upper()
    ts = await stack.mention(stack.channel, "another question", user=frank)
    await stack.replies(stack.channel, ts, 1)

    async def titled() -> str | None:
        view = await stack.open_home(frank)
        [label] = [str(b["text"]) for b in view["blocks"] if b.get("accessory")]
        return label if "another question" in label else None

    label = await eventually(titled, what="the conversation's title in the Home")
    assert "In a channel" in label and stack.channel not in label.split("|")[1]


async def test_slack_retries_of_each_event_change_nothing(make_stack):
    stack = await make_stack()
    stack.slack.join(CHANNEL, ALICE, stack.slack.bot_user_id)
    stack.slack.add_message(CHANNEL, user=BOB, text="the budget is approved")
    dm, thread = await stack.open_panel()
    await stack.replies(dm, thread, 1)
    for _ in range(3):  # the context change, delivered again and again
        await stack.panel_event("context_changed", dm, thread, viewing=CHANNEL)
    await stack.panel_say(dm, thread, "what is new here?")
    await stack.replies(dm, thread, 2)
    assert "the budget is approved" in channel_in_view(prompts(stack)[-1])

    async def published_alike() -> bool:
        # Polled: the last turn's tokens are charged just after its reply.
        first = await stack.open_home(ALICE)
        again = await stack.open_home(ALICE)  # a redelivered app_home_opened publishes it again
        return first == again

    await eventually(published_alike, what="the same view twice")
    greetings = [m for m in stack.slack.bot_replies(dm, thread) if "I'm threadchat" in m["text"]]
    assert len(greetings) == 1
