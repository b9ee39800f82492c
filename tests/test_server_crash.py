"""Real crashes of the Temporal server: `temporal server start-dev` on a SQLite file gets
SIGKILL between turns and in the middle of a streamed reply, and is started again on the same
file and port.

The worker is a real `threadchat worker` process (it reconnects by itself). The bot runs
in-process (HTTP) on a client connected before the first crash and never replaced: that
client must reconnect by itself too. The local Slack and Bedrock servers run in this process,
so what the thread and the model saw is visible. The offline model quotes the latest message
and the one before it (`Before that: "..."`), which shows the conversation kept its history.

Nothing may be lost and nothing doubled: each message gets exactly one complete reply. A
message Slack delivers while the server is down is either acked after it was durably handed
over, or refused (5xx or no answer in time), in which case Slack delivers it again.
"""

import asyncio
import time

import aiohttp
import pytest

from devtools.processes import Workers, until, wait_replies, wait_turns
from devtools.slack_events import EventSender, message_event
from devtools.stack import ALICE, Stack, start_stack
from devtools.temporal_server import TemporalDevServer, free_port
from workflows.conversation import ConversationWorkflow

# A slow stream, so that a kill once text is visible lands in the middle of the reply.
SLOW_STREAM = {"stream_chunk_chars": 10, "stream_delay_s": 0.1}
FIRST = "first message: my favourite colour is teal"
SECOND = "second message, sent while the server was down: I also like otters"
# Long, so that the reply quoting it streams for several seconds.
THIRD = "third message, answered across a crash: " + " ".join(f"w{i:03d}" for i in range(30))
FOURTH = "fourth message: what did I say before?"
# Slack gives up on an answer after 3 s and delivers the event again.
SLACK_ACK_TIMEOUT = 3


def quoted(text: str) -> str:
    """Enough of a message to recognise it in a quote (the offline model quotes the first 200
    characters of a turn, labelled with its author)."""
    return text[:150]


def you_said(reply: dict) -> str:
    """The offline model's quote of the latest message."""
    return reply["text"].split("You said:", 1)[-1].split("Before that:", 1)[0]


def before_that(reply: dict) -> str:
    """The offline model's quote of the message before the latest one."""
    return reply["text"].split("Before that:", 1)[1] if "Before that:" in reply["text"] else ""


async def deliver_while_down(sender: EventSender, event: dict) -> int | None:
    """Deliver an event as Slack does, giving up after Slack's 3 s: the status, or None when
    there was no answer in time (Slack would then retry)."""
    try:
        status, _ = await asyncio.wait_for(sender.send_event(event), SLACK_ACK_TIMEOUT)
        return status
    except (TimeoutError, aiohttp.ClientError):
        return None


@pytest.mark.timeout(400)
async def test_server_killed_between_and_during_turns_loses_and_doubles_nothing(tmp_path):
    port = free_port()
    server = TemporalDevServer(db_file=str(tmp_path / "t.db"), port=port)
    stack: Stack | None = None
    workers: Workers | None = None
    try:
        client = await server.start()
        stack = await start_stack(client, worker=False, bedrock_options=SLOW_STREAM)
        workers = Workers(stack, server.address)
        channel = stack.channel
        await workers.start("A")

        async def restart() -> float:
            """Start the server again on the same file and port; the seconds it took."""
            started = time.monotonic()
            await server.start()  # returns once the server answers a new client
            return time.monotonic() - started

        # Turn 1, before any crash.
        thread_ts = await stack.mention(channel, FIRST)
        await wait_replies(stack, channel, thread_ts, 1, workers, last_has=quoted(FIRST))
        await wait_turns(stack, channel, thread_ts, 1, workers)

        # Crash 1: between turns. A message arrives while the server is down.
        server.kill()
        second = stack.slack.add_message(channel, user=ALICE, text=SECOND, thread_ts=thread_ts)
        event = message_event(
            channel=channel, user=ALICE, text=SECOND, ts=second["ts"], thread_ts=thread_ts
        )
        down_started = time.monotonic()
        status_while_down = await deliver_while_down(stack.sender, event)
        answered_in = time.monotonic() - down_started
        # Acking before the hand-over is durable would lose the message.
        assert status_while_down != 200, "the bot acked a message Temporal never got"
        assert status_while_down is None or status_while_down >= 500, status_while_down
        restarted_in = await restart()
        # Slack delivers the event again; the bot's original client must work again.
        status, body = await stack.sender.send_event(event, retry_num=1)
        assert status == 200, f"the bot's Temporal client did not recover: {status} {body}"
        replies = await wait_replies(stack, channel, thread_ts, 2, workers, last_has=quoted(SECOND))
        assert quoted(FIRST) in before_that(replies[1]), replies[1]["text"]
        await wait_turns(stack, channel, thread_ts, 2, workers)
        print(
            f"\nserver down between turns: the bot answered "
            f"{status_while_down if status_while_down is not None else 'nothing'} in"
            f" {answered_in:.1f} s; restart took {restarted_in:.1f} s"
        )

        # Crash 2: during a turn, while the reply streams into Slack.
        streams_before = len(stack.slack.calls_to("chat.startStream"))
        third_ts = await stack.say(channel, thread_ts, THIRD)

        def streaming_third() -> bool:
            replies = stack.slack.bot_replies(channel, thread_ts)
            return (
                len(stack.slack.calls_to("chat.startStream")) > streams_before
                and len(replies) == 3
                and stack.slack.is_streaming(channel, replies[-1]["ts"])
                and len(stack.slack.calls_to("chat.appendStream")) > 0
            )

        await until(streaming_third, 30, "the third reply to stream", workers.logs)
        server.kill()
        killed_at = time.monotonic()
        [*_, partial] = stack.slack.bot_replies(channel, thread_ts)
        assert stack.slack.is_streaming(channel, partial["ts"]), "the kill came too late"
        # The worker streams on (Slack and Bedrock are up) and finishes the reply while the
        # server is down: the activity's result has nowhere to go until it is back.
        await until(
            lambda: not stack.slack.is_streaming(channel, partial["ts"]),
            60,
            "the reply to finish streaming while the server is down",
            workers.logs,
        )
        down_for = time.monotonic() - killed_at
        await restart()
        replies = await wait_replies(stack, channel, thread_ts, 3, workers, last_has=quoted(THIRD))
        await wait_turns(stack, channel, thread_ts, 3, workers)
        recovered_in = time.monotonic() - killed_at
        assert quoted(SECOND) in before_that(replies[2]), replies[2]["text"]
        assert not stack.slack.is_streaming(channel, replies[2]["ts"])
        model_calls = sum(r.operation == "converse-stream" for r in stack.bedrock.requests)
        print(
            f"server killed mid-stream, down {down_for:.1f} s: turn 3 recorded"
            f" {recovered_in:.1f} s after the kill; model calls for turn 3: {model_calls - 2}"
        )

        # The conversation goes on, with its history.
        await stack.say(channel, thread_ts, FOURTH)
        replies = await wait_replies(stack, channel, thread_ts, 4, workers, last_has=FOURTH)
        await wait_turns(stack, channel, thread_ts, 4, workers)
        assert quoted(THIRD) in before_that(replies[3]), replies[3]["text"]

        # Exactly one reply per message, in order; the workflow saw each message once.
        replies = stack.slack.bot_replies(channel, thread_ts)
        assert len(replies) == 4, [r["text"][:80] for r in replies]
        for reply, text in zip(replies, [FIRST, SECOND, THIRD, FOURTH], strict=True):
            assert quoted(text) in you_said(reply), (text, reply["text"])
        status = await stack.handle(channel, thread_ts).query(ConversationWorkflow.status)
        assert status.turn_count == 4 and status.pending == 0, status
        prompt = stack.converse_requests()[-1]["messages"]
        said = [b["text"] for m in prompt if m["role"] == "user" for b in m["content"]]
        for text in (FIRST, SECOND, THIRD, FOURTH):
            assert sum(text in s for s in said) == 1, (text, said)
        assert third_ts  # the third message was delivered once, acked 200 by stack.say
    finally:
        if workers is not None:
            workers.stop_all()
        if stack is not None:
            await stack.close()
        server.kill()
