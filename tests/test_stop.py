"""Slack's Stop button on an agent session: the local Slack stops the thread's streams as Slack
does and sends agent_session_stopped; the conversation cancels the model call in flight, keeps
what showed under a line naming who stopped it, and goes on with the next message."""

import aiohttp
from temporalio.client import Client

from devtools.slack_events import agent_session_stopped_event
from devtools.stack import ALICE, BOB, TEAM, eventually, start_stack
from devtools.temporal_server import free_port
from threadchat import actions, inference, telemetry, texts
from threadchat.model import EndRequest
from workflows.conversation import ConversationWorkflow

# A long answer streamed slowly: a Stop lands in the middle of it.
LONG = " ".join(f"word{i:03d}" for i in range(150))
SLOW = {"responder": lambda body: LONG, "stream_chunk_chars": 10, "stream_delay_s": 0.05}


async def streaming_answer(stack, text: str = "tell me everything") -> tuple[str, dict]:
    """A mention whose answer is streaming, some text already shown."""
    thread = await stack.mention(stack.channel, text)

    def streaming() -> dict | None:
        replies = stack.slack.bot_replies(stack.channel, thread)
        shown = [r for r in replies if stack.slack.is_streaming(stack.channel, r["ts"])]
        return shown[0] if shown and len(shown[0]["text"]) > 50 else None

    return thread, await eventually(streaming, what="an answer streaming")


async def ended(stack, thread: str):
    handle = stack.handle(stack.channel, thread)
    await handle.signal(ConversationWorkflow.end, EndRequest(requested_by=ALICE, via="command"))
    return await handle.result()


async def test_stop_mid_stream_keeps_what_showed_and_the_conversation_goes_on(temporal_server):
    server, _ = temporal_server
    port = free_port()
    client = await Client.connect(
        server.address, runtime=telemetry.make_runtime(f"127.0.0.1:{port}")
    )
    stack = await start_stack(client, bedrock_options=SLOW)
    try:
        thread, answer = await streaming_answer(stack)
        stopped, _ = await stack.click_stop(stack.channel, thread)
        assert stopped == [answer["ts"]]
        clicked = stack.slack.calls[-1].at
        line = texts.stopped_line("alice")

        def marked() -> dict | None:
            message = stack.slack.message(stack.channel, answer["ts"])
            return message if message["text"].endswith(line) else None

        message = await eventually(marked, what="the answer marked stopped")
        # What showed stays, cut where the stream stopped, in the same message.
        shown = message["text"].removesuffix(line).strip()
        assert shown and LONG.startswith(shown) and len(shown) < len(LONG)
        assert [r["ts"] for r in stack.slack.bot_replies(stack.channel, thread)] == [answer["ts"]]
        # Nothing more was written: at most the one append in flight when Slack stopped the
        # stream failed, and none came after it.
        late = [c for c in stack.slack.calls_to("chat.appendStream") if c.at > clicked]
        assert len(late) <= 1 and all(c.error == "message_not_in_streaming_state" for c in late)
        await eventually(lambda: stack.slack.session(stack.channel, thread) == "active")
        assert stack.slack.session_statuses[(stack.channel, thread)] == ["processing", "active"]
        # One model call: no retry ran.
        assert len(stack.converse_requests()) == 1

        await stack.say(stack.channel, thread, "a short one now, please")
        [_, second] = await stack.replies(stack.channel, thread, 2)
        assert second["text"].startswith(LONG[:40]) and line not in second["text"]

        result = await ended(stack, thread)
        first = result.transcript[0]
        assert first.stop_reason == inference.STOPPED and first.stopped_by == ALICE
        assert first.reply == shown and first.reply_ts == [answer["ts"]]
        assert result.transcript[1].stop_reason == "end_turn"
        # The tokens the stopped turn used are counted.
        assert first.output_tokens > 0 and first.input_tokens > 0

        async def scrape() -> str | None:
            url = f"http://127.0.0.1:{port}/metrics"
            async with aiohttp.ClientSession() as session, session.get(url) as response:
                text = await response.text()
            return text if 'outcome="stopped"' in text else None

        scraped = await eventually(scrape, what="the stopped turn counted")
        [count] = [
            line
            for line in scraped.splitlines()
            if line.startswith("threadchat_turns") and 'outcome="stopped"' in line
        ]
        assert float(count.rsplit(" ", 1)[1]) == 1
    finally:
        await stack.close()


async def test_slacks_retry_of_the_stop_event_stops_once(make_stack):
    stack = await make_stack(bedrock_options=SLOW)
    thread, answer = await streaming_answer(stack)
    _, event_id = await stack.click_stop(stack.channel, thread)
    await eventually(lambda: stack.slack.session(stack.channel, thread) == "active")
    await stack.say(stack.channel, thread, "go on then")
    await eventually(
        lambda: len(stack.slack.bot_replies(stack.channel, thread)) == 2,
        what="the second answer started",
    )
    # Slack delivers the same event again (same event id) while the next answer streams.
    event = agent_session_stopped_event(
        user=ALICE, channel=stack.channel, thread_ts=thread, streaming_message_ts=[answer["ts"]]
    )
    status, _ = await stack.sender.send_event(event, event_id=event_id, team_id=TEAM, retry_num=1)
    assert status == 200
    [_, second] = await stack.replies(stack.channel, thread, 2)
    assert second["text"].strip().startswith(LONG[:40])
    assert texts.stopped_line("alice") not in second["text"]
    result = await ended(stack, thread)
    assert [t.stop_reason for t in result.transcript] == [inference.STOPPED, "end_turn"]


async def test_stop_with_nothing_running_or_from_outside_the_thread_changes_nothing(make_stack):
    stack = await make_stack(bedrock_options=SLOW)
    thread = await stack.mention(stack.channel, "hello")
    [answer] = await stack.replies(stack.channel, thread, 1)
    await stack.click_stop(stack.channel, thread)  # nothing streams any more
    # Someone who takes no part in the conversation: the workflow refuses it, whatever the
    # listener let through.
    other, _ = await streaming_answer(stack)
    event = agent_session_stopped_event(
        user=BOB, channel=stack.channel, thread_ts=other, streaming_message_ts=[]
    )
    status, _ = await stack.sender.send_event(event, team_id=TEAM)
    assert status == 200
    [done] = await stack.replies(stack.channel, other, 1)
    assert done["text"].strip().startswith(LONG[:40]) and "Stopped" not in done["text"]

    await stack.say(stack.channel, thread, "and again")
    await stack.replies(stack.channel, thread, 2)
    assert stack.slack.message(stack.channel, answer["ts"])["text"] == answer["text"]
    result = await ended(stack, thread)
    assert [t.stop_reason for t in result.transcript] == ["end_turn", "end_turn"]
    assert not stack.slack.calls_to("chat.update")


async def test_stop_during_a_regenerate_leaves_the_previous_answer(make_stack):
    stack = await make_stack(bedrock_options={**SLOW, "responder": lambda body: "Teal."})
    thread = await stack.mention(stack.channel, "name a colour")
    [first] = await stack.replies(stack.channel, thread, 1)
    before = first["text"]
    stack.bedrock.set_model_latency(60)  # the regenerate is still with the model at the Stop
    assert await stack.click(stack.channel, first["ts"], actions.REGENERATE) == 200
    await eventually(
        lambda: stack.slack.session(stack.channel, thread) == "processing",
        what="the regenerate under way",
    )
    await stack.click_stop(stack.channel, thread)
    await eventually(lambda: stack.slack.session(stack.channel, thread) == "active")
    stack.bedrock.set_model_latency(0)
    assert stack.slack.message(stack.channel, first["ts"])["text"] == before
    assert len(stack.slack.bot_replies(stack.channel, thread)) == 1
    result = await ended(stack, thread)
    [turn] = result.transcript
    assert turn.version == 0 and turn.reply and turn.stop_reason == "end_turn"


async def test_stop_during_a_model_call_without_streaming_posts_only_who_stopped_it(make_stack):
    """Streaming off: nothing of an answer shows before it is posted whole. A Stop while the
    model writes abandons the call; the worker hears of the cancel with a heartbeat (the
    blocking call beats from beside it, and goes on beating till Bedrock answers, 10 s here,
    longer than the heartbeat timeout), so the activity ends as cancelled, not timed out. The
    thread says who stopped it, and the next message is answered."""
    stack = await make_stack(streaming=False, bedrock_options={"model_latency_s": 10})
    thread = await stack.mention(stack.channel, "tell me everything")
    await eventually(lambda: stack.converse_requests(), what="the model call")
    stopped, _ = await stack.click_stop(stack.channel, thread)
    assert stopped == []  # no stream to stop
    line = texts.stopped_line("alice")
    [note] = await stack.replies(stack.channel, thread, 1)
    assert note["text"].strip() == line
    await eventually(lambda: stack.slack.session(stack.channel, thread) == "active")

    history = stack.handle(stack.channel, thread)

    async def cancelled() -> bool:
        events = (await history.fetch_history()).events
        return any(e.HasField("activity_task_canceled_event_attributes") for e in events)

    await eventually(cancelled, what="the model call's activity ending as cancelled")
    stack.bedrock.set_model_latency(0)
    await stack.say(stack.channel, thread, "a short one now, please")
    [_, answer] = await stack.replies(stack.channel, thread, 2)
    assert line not in answer["text"]
    result = await ended(stack, thread)
    first = result.transcript[0]
    assert first.stop_reason == inference.STOPPED and first.stopped_by == ALICE
    assert result.transcript[1].stop_reason == "end_turn"
