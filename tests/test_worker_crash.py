"""Real crashes of the worker: `threadchat worker` runs as its own OS process, configured only
through the environment, and gets SIGKILL (or SIGTERM) while it streams a reply or sits idle.

The bot runs in-process (HTTP) and only signals Temporal; the local Slack and Bedrock servers
run in this process too, so everything the worker did is visible in `stack.slack` and
`stack.bedrock`. After a SIGKILL mid-answer the retry starts once the activity's heartbeat
timeout (5 s) has passed, so these tests take a while by design.
"""

import signal
import time
from typing import Any

from temporalio.api.enums.v1 import TimeoutType

from devtools.bedrock import echo_responder
from devtools.processes import (
    WorkerProcess,
    Workers,
    converse_streams,
    thread_state,
    until,
    wait_replies,
    wait_turns,
)
from devtools.stack import Stack
from threadchat import actions, texts

# A slow stream, so that a signal sent once text is visible lands in the middle of it.
SLOW_STREAM = {"stream_chunk_chars": 10, "stream_delay_s": 0.05}
# About 600 characters: the reply quotes it whole, so it streams for about 3 seconds.
QUESTION = " ".join(f"crash{i:03d}" for i in range(75))
# The worker's graceful_shutdown_timeout (threadchat/commands/worker.py).
GRACEFUL_SHUTDOWN = 25


def slow_echo_options() -> dict[str, Any]:
    return {**SLOW_STREAM, "responder": echo_responder}


def assert_single_complete_reply(stack: Stack, channel: str, thread_ts: str, workers: Workers):
    replies = stack.slack.bot_replies(channel, thread_ts)
    context = thread_state(stack, channel, thread_ts, workers)
    assert len(replies) == 1, context
    reply = replies[0]
    assert not stack.slack.is_streaming(channel, reply["ts"]), context
    assert QUESTION in reply["text"], context
    assert reply["text"].strip().endswith("(end of echo)"), context
    return reply


async def assert_answered(
    stack: Stack, channel: str, thread_ts: str, turn: int, text: str, workers: Workers
) -> None:
    """Until `text`, sent as turn `turn`, is answered and recorded: once, and in its place."""
    await wait_replies(stack, channel, thread_ts, turn, workers)
    await wait_turns(stack, channel, thread_ts, turn, workers)
    replies = stack.slack.bot_replies(channel, thread_ts)
    assert len(replies) == turn, workers.logs()
    assert text in replies[-1]["text"]


async def streaming_question(stack: Stack, workers: Workers) -> tuple[WorkerProcess, str]:
    """Worker A streaming its answer to QUESTION, some text already visible; with the
    thread's ts."""
    worker = await workers.start("A")
    thread_ts = await stack.mention(stack.channel, QUESTION)
    await until(
        lambda: stack.slack.calls_to("chat.appendStream"), 20, "visible streaming", workers.logs
    )
    return worker, thread_ts


async def test_worker_killed_mid_stream_leaves_one_complete_reply(make_stack, temporal_server):
    server, _ = temporal_server
    stack = await make_stack(worker=False, bedrock_options=slow_echo_options())
    workers = Workers(stack, server.address)
    try:
        channel = stack.channel
        first, thread_ts = await streaming_question(stack, workers)
        first.send(signal.SIGKILL)
        assert await first.wait_exit(10) == -signal.SIGKILL, workers.logs()
        killed_at = time.monotonic()
        [partial] = stack.slack.bot_replies(channel, thread_ts)
        assert stack.slack.is_streaming(channel, partial["ts"]), "the kill came too late"
        assert QUESTION not in partial["text"], "the kill came too late"

        await workers.start("B")
        await wait_replies(stack, channel, thread_ts, 1, workers, last_has=QUESTION)
        visible_in = time.monotonic() - killed_at
        await wait_turns(stack, channel, thread_ts, 1, workers)
        recorded_in = time.monotonic() - killed_at
        streams = [r for r in stack.bedrock.requests if r.operation == "converse-stream"]
        retried_in = streams[-1].at - killed_at
        print(
            f"\nSIGKILL mid-stream -> retry reached Bedrock after {retried_in:.1f} s,"
            f" complete reply in Slack after {visible_in:.1f} s,"
            f" turn recorded after {recorded_in:.1f} s"
        )

        reply = assert_single_complete_reply(stack, channel, thread_ts, workers)
        assert reply["ts"] == partial["ts"], "the unfinished message was not replaced in place"
        # The activity really ran twice: once on the killed worker, once on the new one.
        assert converse_streams(stack) == 2, workers.logs()

        await stack.say(channel, thread_ts, "and a short follow-up, please")
        await assert_answered(
            stack, channel, thread_ts, 2, "and a short follow-up, please", workers
        )
        assert converse_streams(stack) == 3, workers.logs()
    finally:
        workers.stop_all()


async def test_worker_killed_between_turns_loses_nothing(make_stack, temporal_server):
    server, _ = temporal_server
    stack = await make_stack(worker=False, bedrock_options=slow_echo_options())
    workers = Workers(stack, server.address)
    try:
        first = await workers.start("A")
        channel = stack.channel
        thread_ts = await stack.mention(channel, "first question")
        await wait_replies(stack, channel, thread_ts, 1, workers)
        # Idle: the turn is recorded in Temporal, not just visible in Slack.
        await wait_turns(stack, channel, thread_ts, 1, workers)

        first.send(signal.SIGKILL)
        assert await first.wait_exit(10) == -signal.SIGKILL, workers.logs()

        # No worker runs: the bot still acks 200 (stack.say asserts it), the signal is durable.
        await stack.say(channel, thread_ts, "follow-up while no worker runs")
        handle = stack.handle(channel, thread_ts)

        async def both_signals_recorded() -> bool:
            events = (await handle.fetch_history()).events
            signaled = "workflow_execution_signaled_event_attributes"
            return sum(e.HasField(signaled) for e in events) >= 2

        await until(both_signals_recorded, 10, "the follow-up signal in history", workers.logs)
        assert len(stack.slack.bot_replies(channel, thread_ts)) == 1

        started = time.monotonic()
        await workers.start("B")
        await assert_answered(
            stack, channel, thread_ts, 2, "follow-up while no worker runs", workers
        )
        print(f"\nnew worker -> follow-up answered in {time.monotonic() - started:.1f} s")
        assert converse_streams(stack) == 2, workers.logs()
    finally:
        workers.stop_all()


async def test_sigterm_drains_the_worker(make_stack, temporal_server):
    server, _ = temporal_server
    stack = await make_stack(worker=False, bedrock_options=slow_echo_options())
    workers = Workers(stack, server.address)
    try:
        channel = stack.channel
        first, thread_ts = await streaming_question(stack, workers)
        first.send(signal.SIGTERM)
        termed_at = time.monotonic()
        [partial] = stack.slack.bot_replies(channel, thread_ts)
        assert stack.slack.is_streaming(channel, partial["ts"]), "SIGTERM came too late"

        # It exits by itself, cleanly, within the graceful shutdown timeout (25 s)...
        assert await first.wait_exit(GRACEFUL_SHUTDOWN + 5) == 0, workers.logs()
        exited_in = time.monotonic() - termed_at
        print(f"\nSIGTERM mid-stream -> worker exited (rc 0) in {exited_in:.1f} s")
        assert exited_in < GRACEFUL_SHUTDOWN, workers.logs()
        # ...after finishing the running activity: the reply was complete when it exited,
        # and no retry was needed.
        reply = assert_single_complete_reply(stack, channel, thread_ts, workers)
        assert reply["ts"] == partial["ts"], workers.logs()
        assert converse_streams(stack) == 1, workers.logs()

        await workers.start("B")
        await wait_turns(stack, channel, thread_ts, 1, workers)
        await stack.say(channel, thread_ts, "a follow-up for the new worker")
        await assert_answered(
            stack, channel, thread_ts, 2, "a follow-up for the new worker", workers
        )
        assert converse_streams(stack) == 2, workers.logs()
    finally:
        workers.stop_all()


async def test_worker_killed_mid_regenerate_leaves_one_final_answer(make_stack, temporal_server):
    server, _ = temporal_server
    stack = await make_stack(worker=False)
    workers = Workers(stack, server.address)
    try:
        channel = stack.channel
        first = await workers.start("A")
        thread_ts = await stack.mention(channel, "a question to answer twice")
        [reply] = await wait_replies(stack, channel, thread_ts, 1, workers)
        await wait_turns(stack, channel, thread_ts, 1, workers)

        # A slow model, so that the kill lands while the regenerate is with Bedrock.
        stack.bedrock.set_model_latency(60)
        assert await stack.click(channel, reply["ts"], actions.REGENERATE) == 200
        await until(lambda: converse_streams(stack) == 2, 20, "the regenerate", workers.logs)
        first.send(signal.SIGKILL)
        assert await first.wait_exit(10) == -signal.SIGKILL, workers.logs()
        stack.bedrock.set_model_latency(0)

        await workers.start("B")

        def answered_again() -> bool:
            return "Sampled at temperature" in stack.slack.message(channel, reply["ts"])["text"]

        await until(answered_again, 40, "the regenerated answer", workers.logs)
        # The one reply, edited in place; the killed attempt left nothing behind.
        replies = stack.slack.bot_replies(channel, thread_ts)
        assert [r["ts"] for r in replies] == [reply["ts"]], workers.logs()
        assert converse_streams(stack) == 3, workers.logs()  # answer, killed try, retry

        await stack.say(channel, thread_ts, "and a follow-up")
        await assert_answered(stack, channel, thread_ts, 2, "and a follow-up", workers)
        assert converse_streams(stack) == 4, workers.logs()
    finally:
        workers.stop_all()


async def test_worker_killed_mid_model_call_without_streaming_retries_after_the_heartbeat(
    make_stack, temporal_server
):
    """Streaming off: the model call is one blocking request, which beats from beside it. A
    worker killed during it is noticed by the 5 s heartbeat timeout, not the call's 75 s."""
    server, _ = temporal_server
    stack = await make_stack(worker=False, bedrock_options={"responder": echo_responder})
    workers = Workers(stack, server.address)
    workers.env["THREADCHAT_STREAMING"] = "false"
    try:
        channel = stack.channel
        first = await workers.start("A")
        stack.bedrock.set_model_latency(60)  # the kill lands while the call is with Bedrock

        def calls() -> list:
            return [r for r in stack.bedrock.requests if r.operation == "converse"]

        thread_ts = await stack.mention(channel, QUESTION)
        await until(lambda: calls(), 20, "the model call", workers.logs)
        first.send(signal.SIGKILL)
        assert await first.wait_exit(10) == -signal.SIGKILL, workers.logs()
        killed_at = time.monotonic()
        stack.bedrock.set_model_latency(0)

        await workers.start("B")
        await until(lambda: len(calls()) == 2, 40, "the retried call", workers.logs)
        retried_in = calls()[-1].at - killed_at
        print(f"\nSIGKILL mid-call, no streaming -> retry reached Bedrock after {retried_in:.1f} s")
        await wait_replies(stack, channel, thread_ts, 1, workers, last_has=QUESTION)
        assert_single_complete_reply(stack, channel, thread_ts, workers)
        assert len(calls()) == 2, workers.logs()
        # What ended the killed attempt: its heartbeat timeout, not the call's.
        history = await stack.handle(channel, thread_ts).fetch_history()
        [retried] = [
            e.activity_task_started_event_attributes
            for e in history.events
            if e.HasField("activity_task_started_event_attributes")
            and e.activity_task_started_event_attributes.attempt == 2
        ]
        timeout = retried.last_failure.timeout_failure_info.timeout_type
        assert timeout == TimeoutType.TIMEOUT_TYPE_HEARTBEAT, retried.last_failure
    finally:
        workers.stop_all()


async def test_worker_killed_mid_download_leaves_one_reply(make_stack, temporal_server):
    server, _ = temporal_server
    stack = await make_stack(worker=False)
    workers = Workers(stack, server.address)
    try:
        channel = stack.channel
        first = await workers.start("A")
        stack.slack.download_delay_s = 3  # the kill lands while the file is on its way
        chart = stack.slack.add_file(
            user="U0ALICE", name="chart.png", mimetype="image/png", content=b"\x89PNG\r\n\x1a\n"
        )
        thread_ts = await stack.mention(channel, "what does this chart show?", files=[chart])
        await until(lambda: stack.slack.download_requests, 20, "the download", workers.logs)
        first.send(signal.SIGKILL)
        assert await first.wait_exit(10) == -signal.SIGKILL, workers.logs()
        assert stack.slack.bot_replies(channel, thread_ts) == []
        stack.slack.download_delay_s = 0

        await workers.start("B")
        [reply] = await wait_replies(stack, channel, thread_ts, 1, workers, last_has="chart.png")
        await wait_turns(stack, channel, thread_ts, 1, workers)
        assert len(stack.slack.bot_replies(channel, thread_ts)) == 1, workers.logs()
        assert "Files received: image (png" in reply["text"], reply["text"]
        assert stack.slack.download_requests == [chart["id"]] * 2  # fetched again by the retry
    finally:
        workers.stop_all()


async def test_worker_killed_while_a_stop_cancels_leaves_no_second_answer(
    make_stack, temporal_server
):
    """Stop clicked, and the worker streaming the answer dies before it hears of the cancel:
    the cancelled activity is not retried (its heartbeat times out with the cancel
    requested), the answer keeps what showed, and nobody answers the turn again."""
    server, _ = temporal_server
    stack = await make_stack(worker=False, bedrock_options=slow_echo_options())
    workers = Workers(stack, server.address)
    try:
        channel = stack.channel
        first, thread_ts = await streaming_question(stack, workers)
        stopped = stack.slack.stop_session(channel, thread_ts)  # Slack stops the stream ...
        first.send(signal.SIGKILL)  # ... and the worker dies before it notices
        assert await first.wait_exit(10) == -signal.SIGKILL, workers.logs()
        [partial] = stack.slack.bot_replies(channel, thread_ts)
        assert stopped == [partial["ts"]]
        await stack.click_stop(channel, thread_ts)
        await workers.start("B")
        line = texts.stopped_line("alice")
        await until(
            lambda: stack.slack.message(channel, partial["ts"])["text"].endswith(line),
            40,
            "the answer marked stopped",
            workers.logs,
        )
        await wait_turns(stack, channel, thread_ts, 1, workers)
        assert len(stack.slack.bot_replies(channel, thread_ts)) == 1, workers.logs()
        # What showed stays (as the dead worker's last heartbeat recorded it), cut short.
        text = stack.slack.message(channel, partial["ts"])["text"]
        assert text.startswith("Echo of") and QUESTION not in text
        assert converse_streams(stack) == 1, workers.logs()  # no retry of the stopped call

        await stack.say(channel, thread_ts, "and a short follow-up, please")
        await assert_answered(
            stack, channel, thread_ts, 2, "and a short follow-up, please", workers
        )
    finally:
        workers.stop_all()
