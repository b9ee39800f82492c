"""End to end: signed Slack requests over real HTTP into the bot, a worker and the real
Temporal dev server, replies read back from the local Slack Web API server."""

import json

import aiohttp

from activities.bedrock import SUMMARY_PROMPT
from bot.conversations import Conversations
from devtools.slack_events import message_event, message_shortcut, sign, slash_command
from devtools.stack import ALICE, BOB, SIGNING_SECRET, TEAM, eventually
from threadchat import prompt
from threadchat.ids import conversation_id, thread_permalink
from threadchat.model import EndRequest
from workflows.conversation import ConversationWorkflow

JSON = {"Content-Type": "application/json"}


async def test_mention_gets_a_reply_in_its_thread(make_stack):
    stack = await make_stack()
    ts = await stack.mention(stack.channel, "what is Temporal?")
    [reply] = await stack.replies(stack.channel, ts, 1)
    assert reply["thread_ts"] == ts
    assert "what is Temporal?" in reply["text"]
    assert stack.slack.messages(stack.channel) and all(
        m["ts"] == ts for m in stack.slack.messages(stack.channel)
    )  # nothing at the channel's top level but the mention itself


async def test_follow_up_without_mention_is_answered_with_history(make_stack):
    stack = await make_stack()
    ts = await stack.mention(stack.channel, "my name is Ada")
    await stack.replies(stack.channel, ts, 1)
    await stack.say(stack.channel, ts, "what did I just tell you?", user=BOB)
    replies = await stack.replies(stack.channel, ts, 2)
    assert "what did I just tell you?" in replies[1]["text"]
    assert "my name is Ada" in replies[1]["text"]  # the offline model quotes the earlier turn
    last_prompt = stack.converse_requests()[-1]["messages"]
    assert [m["role"] for m in last_prompt] == ["user", "assistant", "user"]
    # Who said what, from Slack: each message framed with its author's id, one block each.
    [asked] = last_prompt[-1]["content"]
    assert asked["text"].startswith(f'<message from="bob" user="{BOB}" ts="')
    [said] = last_prompt[0]["content"]
    assert said["text"].startswith(f'<message from="alice" user="{ALICE}" ts="{ts}">')


async def test_slack_retries_and_double_delivery_get_one_reply(make_stack):
    stack = await make_stack()
    ts = await stack.mention(stack.channel, "hello once")
    text = f"<@{stack.slack.bot_user_id}> hello once"
    # The same mention as a `message` event, then Slack's retries of both.
    as_message = message_event(channel=stack.channel, user=ALICE, text=text, ts=ts)
    for retry in (None, 1, 2):
        status, _ = await stack.sender.send_event(as_message, retry_num=retry)
        assert status == 200
    await stack.replies(stack.channel, ts, 1)
    # A second message proves the workflow moved on; only then can we count the first.
    await stack.say(stack.channel, ts, "second")
    replies = await stack.replies(stack.channel, ts, 2)
    assert len(replies) == 2
    assert len(stack.converse_requests()) == 2


async def test_bot_messages_and_strangers_threads_are_acked_and_ignored(make_stack):
    stack = await make_stack()
    ts = await stack.mention(stack.channel, "hello")
    await stack.replies(stack.channel, ts, 1)
    bot_user = stack.slack.bot_user_id
    # Our own message and another bot's, both inside the active thread and mentioning us.
    own = message_event(
        channel=stack.channel,
        user=bot_user,
        text=f"<@{bot_user}> I am the bot",
        ts="1700000000.000001",
        bot_id=stack.slack.bot_id,
        thread_ts=ts,
    )
    other_bot = message_event(
        channel=stack.channel,
        user="U0OTHER",
        text=f"<@{bot_user}> loop?",
        ts="1700000000.000002",
        subtype="bot_message",
        bot_id="B0OTHER",
        thread_ts=ts,
    )
    no_conversation = message_event(
        channel=stack.channel,
        user=ALICE,
        text="hi",
        ts="1700000000.000003",
        thread_ts="1700000000.000000",
    )
    edit = message_event(
        channel=stack.channel,
        user=ALICE,
        text="edited",
        ts="1700000000.000004",
        subtype="message_changed",
        thread_ts=ts,
    )
    reaction = {"type": "reaction_added", "user": ALICE, "reaction": "tada"}
    for event in (own, other_bot, no_conversation, edit, reaction):
        status, _ = await stack.sender.send_event(event)
        assert status == 200, event
    # A real follow-up is answered as turn 2: nothing above became a turn or a conversation.
    await stack.say(stack.channel, ts, "real follow-up")
    replies = await stack.replies(stack.channel, ts, 2)
    assert "Turn 2" in replies[1]["text"] and "real follow-up" in replies[1]["text"]
    running = [
        w
        async for w in stack.client.list_workflows(
            f"TaskQueue = '{stack.settings.temporal.task_queue}'"
            " AND WorkflowType = 'ConversationWorkflow'"
        )
    ]
    assert len(running) == 1


async def test_mention_while_the_conversation_is_closing_starts_the_next(make_stack):
    stack = await make_stack()
    ts = await stack.mention(stack.channel, "first topic")
    await stack.replies(stack.channel, ts, 1)
    stack.bedrock.set_model_latency(60)  # a slow summary keeps the conversation closing
    await stack.sender.send_command(
        slash_command(command="/endchat", text="", channel_id=stack.channel, user_id=ALICE)
    )
    await eventually(
        lambda: stack.bedrock.requests[-1].body["system"][0]["text"] == SUMMARY_PROMPT,
        what="the closing summary to start",
    )
    await stack.mention(stack.channel, "second topic", thread_ts=ts, user=BOB)
    stack.bedrock.set_model_latency(0)
    replies = await stack.replies(stack.channel, ts, 3)
    assert "Summary" in replies[1]["text"]
    assert "second topic" in replies[2]["text"]
    # The ended conversation's summary opens the next one's prompt, framed as what it is;
    # the system prompt stays the operator's.
    last = stack.converse_requests()[-1]
    system = [b for b in last["system"] if "cachePoint" not in b]
    assert system == [{"text": stack.settings.bedrock.system_prompt}]
    opening = last["messages"][0]["content"][0]["text"]
    assert opening.startswith('<context kind="previous_summary"') and "Summary" in opening


async def test_endchat_ends_the_users_latest_conversation(make_stack):
    stack = await make_stack()
    older = await stack.mention(stack.channel, "older")
    newer = await stack.mention(stack.channel, "newer")
    await stack.replies(stack.channel, newer, 1)
    await stack.replies(stack.channel, older, 1)
    await stack.say(stack.channel, older, "the older thread is the latest active one")
    await stack.replies(stack.channel, older, 2)
    await stack.sender.send_command(
        slash_command(command="/endchat", text="", channel_id=stack.channel, user_id=ALICE)
    )
    result = await stack.handle(stack.channel, newer).result()
    assert result.ended_by == "command"
    assert (await stack.handle(stack.channel, older).describe()).status.name == "RUNNING"


async def test_conversations_are_found_across_continue_as_new(make_stack):
    """Continue-as-new leaves a closed run in visibility beside (for a moment, instead of) the
    running one: the lookups count each chain once, and not at all once it has ended."""
    stack = await make_stack(history_event_cap=10)  # continue as new after every turn
    conversations = Conversations(stack.client, stack.settings.temporal.task_queue)

    async def hopped(ts: str) -> bool:
        workflow_id = conversation_id(TEAM, stack.channel, ts)
        query = f"WorkflowId = '{workflow_id}' AND ExecutionStatus = 'ContinuedAsNew'"
        return bool([e async for e in stack.client.list_workflows(query)])

    ended = await stack.mention(stack.channel, "a thread that hops, then ends")
    await stack.replies(stack.channel, ended, 1)
    await eventually(lambda: hopped(ended), what="the first run closed as continued-as-new")
    status, body = await stack.sender.send_command(
        slash_command(command="/endchat", text="", channel_id=stack.channel, user_id=ALICE)
    )
    assert status == 200 and thread_permalink("local", stack.channel, ended) in body
    assert (await stack.handle(stack.channel, ended).result()).ended_by == "command"

    running = await stack.mention(stack.channel, "a thread that hops and goes on")
    await stack.replies(stack.channel, running, 1)
    await eventually(lambda: hopped(running), what="the first run closed as continued-as-new")
    latest = await conversations.latest_for(TEAM, stack.channel, ALICE)
    assert latest is not None and latest.thread_ts == running
    listed = await conversations.open_for(TEAM, ALICE)
    assert [c.thread.thread_ts for c in listed if c.thread.channel == stack.channel] == [running]


async def test_bad_or_missing_signature_gets_401(make_stack):
    stack = await make_stack()
    body = json.dumps({"type": "event_callback", "event": {"type": "app_mention"}})
    headers = sign("wrong-secret", body)
    status, _ = await stack.sender.send_raw(body, {**headers, **JSON})
    assert status == 401
    async with aiohttp.ClientSession() as session:
        unsigned = await session.post(stack.bot_url, data=body, headers=JSON)
        assert unsigned.status == 401
    stale = sign(SIGNING_SECRET, body, timestamp=1_000_000_000)
    status, _ = await stack.sender.send_raw(body, {**stale, **JSON})
    assert status == 401


async def test_endchat_posts_the_summary_in_the_right_thread(make_stack):
    stack = await make_stack()
    other = await stack.mention(stack.channel, "an older thread", user=BOB)
    ts = await stack.mention(stack.channel, "plan the launch")
    await stack.replies(stack.channel, ts, 1)
    status, body = await stack.sender.send_command(
        slash_command(command="/endchat", text="", channel_id=stack.channel, user_id=ALICE)
    )
    assert status == 200
    answer = json.loads(body)
    assert answer.get("response_type", "ephemeral") == "ephemeral"
    assert thread_permalink("local", stack.channel, ts) in answer["text"]
    replies = await stack.replies(stack.channel, ts, 2)
    assert "Summary" in replies[-1]["text"]
    result = await stack.handle(stack.channel, ts).result()
    assert result.ended_by == "command"
    assert [m.text for turn in result.transcript for m in turn.messages] == ["plan the launch"]
    assert result.summary and result.summary in replies[-1]["text"]
    # Bob's conversation is untouched: Alice's /endchat ended only her own.
    assert await stack.handle(stack.channel, other).describe()
    assert (await stack.handle(stack.channel, other).describe()).status.name == "RUNNING"


async def test_the_offline_summary_covers_every_turn_and_the_count_is_right(make_stack):
    stack = await make_stack()
    questions = [
        "what should we call the new billing service?",
        "who owns the migration of the invoices table?",
        "can the launch move to the second week of March, given the audit?",
        "please write the announcement for the engineering channel, short and friendly",
    ]
    ts = await stack.mention(stack.channel, questions[0])
    await stack.replies(stack.channel, ts, 1)
    for n, question in enumerate(questions[1:], start=2):
        await stack.say(stack.channel, ts, question, user=BOB if n == 3 else ALICE)
        await stack.replies(stack.channel, ts, n)
    await stack.handle(stack.channel, ts).signal(
        ConversationWorkflow.end, EndRequest(requested_by=ALICE, via="command")
    )
    summary = (await stack.replies(stack.channel, ts, 5))[-1]["text"]
    assert "· 4 turns ·" in summary  # counted by the workflow, not the model
    body = summary.split("Summary (offline model):", 1)[1]
    for question in questions:
        shown = next(line for line in body.splitlines() if question[:30] in line)
        quoted = shown.split('"')[1]
        # Whole words only: a cut ends in an ellipsis after a complete word.
        assert quoted == question or (
            quoted.endswith("…") and question.startswith(quoted[:-1] + " ")
        ), shown
    assert "The assistant answered each question." in body


async def test_endchat_with_a_link_and_twice_gives_one_summary(make_stack):
    stack = await make_stack()
    ts = await stack.mention(stack.channel, "hello")
    await stack.replies(stack.channel, ts, 1)
    link = f"<{thread_permalink('local', stack.channel, ts)}>"
    # Someone who is not in the conversation cannot end it, and learns nothing of it.
    status, body = await stack.sender.send_command(
        slash_command(command="/endchat", text=link, channel_id="C0ELSEWHERE", user_id=BOB)
    )
    assert status == 200 and "nothing to end" in json.loads(body)["text"]
    assert (await stack.handle(stack.channel, ts).describe()).status.name == "RUNNING"
    for _ in range(2):
        status, _ = await stack.sender.send_command(
            slash_command(command="/endchat", text=link, channel_id="C0ELSEWHERE", user_id=ALICE)
        )
        assert status == 200
    result = await stack.handle(stack.channel, ts).result()
    assert result.ended_by == "command"
    replies = stack.slack.bot_replies(stack.channel, ts)
    assert sum("Summary" in r["text"] for r in replies) == 1
    # After the end, plain messages get no answer.
    await stack.say(stack.channel, ts, "anyone there?")
    status, body = await stack.sender.send_command(
        slash_command(command="/endchat", text="", channel_id=stack.channel, user_id=ALICE)
    )
    assert "nothing to end" in json.loads(body)["text"]
    assert len(stack.slack.bot_replies(stack.channel, ts)) == len(replies)


async def test_end_chat_shortcut_ends_the_thread_it_is_used_in(make_stack):
    stack = await make_stack()
    ts = await stack.mention(stack.channel, "shortcut me")
    [reply] = await stack.replies(stack.channel, ts, 1)
    status, _ = await stack.sender.send_shortcut(
        message_shortcut(
            callback_id="end_chat",
            channel_id=stack.channel,
            user_id=ALICE,
            message_ts=reply["ts"],
            thread_ts=ts,
            response_url=stack.slack.response_url(stack.channel, ALICE),
        )
    )
    assert status == 200
    replies = await stack.replies(stack.channel, ts, 2)
    assert "Summary" in replies[-1]["text"]
    answers = await eventually(
        lambda: len(stack.slack.ephemerals) > 1 and stack.slack.ephemerals, what="answers"
    )
    assert all(answer["user"] == ALICE for answer in answers)
    assert "Ending" in answers[0]["text"]
    assert replies[-1]["ts"].replace(".", "") in answers[1]["text"]  # links to the summary


async def test_quiet_thread_ends_with_a_summary(make_stack):
    stack = await make_stack(inactivity_timeout_seconds=2)
    ts = await stack.mention(stack.channel, "short chat")
    replies = await stack.replies(stack.channel, ts, 2)
    assert "quiet" in replies[-1]["text"] and "Summary" in replies[-1]["text"]


async def test_new_mention_in_ended_thread_remembers_the_summary(make_stack):
    stack = await make_stack()
    ts = await stack.mention(stack.channel, "first conversation about apples")
    await stack.replies(stack.channel, ts, 1)
    await stack.handle(stack.channel, ts).signal(
        ConversationWorkflow.end, EndRequest(requested_by=ALICE, via="command")
    )
    first = await stack.handle(stack.channel, ts).result()
    await stack.mention(stack.channel, "do you remember?", thread_ts=ts)
    await stack.replies(stack.channel, ts, 3)
    # In the new conversation's first user message, labelled as what it is; not in the
    # system prompt, where a planted instruction would have the operator's authority.
    last = stack.converse_requests()[-1]
    note, thread, question = last["messages"][0]["content"]
    assert note["text"].startswith('<context kind="previous_summary"')
    # The mention is inside the thread: what was said there before comes next.
    assert thread["text"].startswith('<context kind="thread"') and "apples" in thread["text"]
    assert first.summary and prompt.escape(first.summary) in note["text"]
    assert question["text"].startswith(f'<message from="alice" user="{ALICE}"')
    assert "apples" not in json.dumps(last["system"])


async def test_healthz(make_stack):
    stack = await make_stack()
    status, body = await stack.sender.send_raw(b"", {})  # POST with nothing: refused, not crashed
    assert 400 <= status < 500
    health_url = stack.bot_url.replace("/slack/events", "/healthz")
    async with aiohttp.ClientSession() as session, session.get(health_url) as resp:
        assert resp.status == 200
        assert (await resp.json())["ok"] is True
