"""Real crashes of the worker: `threadchat worker` runs as its own OS process, configured only
through the environment, and gets SIGKILL (or SIGTERM) while it streams a reply or sits idle.

The bot runs in-process (HTTP) and only signals Temporal; the local Slack and Bedrock servers
run in this process too, so everything the worker did is visible in `stack.slack` and
`stack.bedrock`. After a SIGKILL mid-stream the retry starts once the activity's heartbeat
timeout (10 s) has passed, so these tests take a while by design.
"""

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from devtools.stack import Stack, eventually
from workflows.conversation import ConversationWorkflow

WORKER_COMMAND = [str(Path(sys.executable).with_name("threadchat")), "worker"]
# A slow stream, so that a signal sent once text is visible lands in the middle of it.
SLOW_STREAM = {"stream_chunk_chars": 10, "stream_delay_s": 0.05}
# About 600 characters: the reply quotes it whole, so it streams for about 3 seconds.
QUESTION = " ".join(f"crash{i:03d}" for i in range(75))
# Heartbeat timeout (10 s) + sticky queue timeout (3 s) + the reply itself, with margin.
RETRY_TIMEOUT = 60
# The worker's graceful_shutdown_timeout (threadchat/worker.py).
GRACEFUL_SHUTDOWN = 25


def echo_responder(body: dict[str, Any]) -> str:
    """The model's answer: the whole latest user message, quoted (the offline model quotes only
    its first 200 characters, too little to prove a reply complete)."""
    user_turns = [m for m in body.get("messages", []) if m.get("role") == "user"]
    text = "\n".join(b["text"] for b in user_turns[-1]["content"] if "text" in b)
    return f"Echo of your message, in full: {text} (end of echo)"


def slow_echo_options() -> dict[str, Any]:
    return {**SLOW_STREAM, "responder": echo_responder}


async def until(condition, timeout: float, what: str, logs) -> Any:
    """`eventually`, failing with the workers' output as it is at the time of the failure."""
    try:
        return await eventually(condition, timeout, what)
    except TimeoutError as err:
        raise AssertionError(f"{err}\n{logs()}") from None


class WorkerProcess:
    """`threadchat worker` as a child process, its output captured in a temp file."""

    def __init__(self, name: str, env: dict[str, str]):
        self.name = name
        fd, self.log_path = tempfile.mkstemp(prefix=f"threadchat-worker-{name}-", suffix=".log")
        try:
            self.process = subprocess.Popen(
                WORKER_COMMAND, env=env, stdin=subprocess.DEVNULL, stdout=fd, stderr=fd
            )
        finally:
            os.close(fd)  # the child has its own copy

    def output(self) -> str:
        return Path(self.log_path).read_text(errors="replace")

    @property
    def pid(self) -> int:
        return self.process.pid

    def tail(self, lines: int = 40) -> str:
        last = "\n".join(self.output().splitlines()[-lines:])
        return f"--- worker {self.name} (pid {self.pid}) output, last lines ---\n{last}"

    def send(self, sig: signal.Signals) -> None:
        if self.process.poll() is None:
            os.kill(self.pid, sig)

    async def wait_polling(self, timeout: float = 30) -> None:
        """Until the worker logs that it polls its task queue."""

        def polling() -> bool:
            assert self.process.poll() is None, f"worker exited early\n{self.tail()}"
            return "worker polling task queue" in self.output()

        await until(polling, timeout, f"worker {self.name} to poll", self.tail)

    async def wait_exit(self, timeout: float) -> int:
        """Wait without blocking the event loop: the local servers run on it."""

        def exited() -> bool:
            return self.process.poll() is not None

        await until(exited, timeout, f"worker {self.name} to exit", self.tail)
        return self.process.returncode

    def stop(self) -> None:
        """Kill by PID (if still running), reap, and remove the log file."""
        if self.process.poll() is None:
            os.kill(self.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)
        with contextlib.suppress(OSError):
            os.unlink(self.log_path)


def worker_env(stack: Stack, temporal_address: str) -> dict[str, str]:
    """Only the environment: the test's Temporal server and task queue, the Stack's local Slack
    and Bedrock, streaming on. Inherited threadchat, Temporal, Slack and AWS settings are
    dropped so nothing else leaks in."""
    prefixes = ("TEMPORAL_", "SLACK_", "AWS_", "BEDROCK_", "THREADCHAT_", "CHAT_", "SYSTEM_PROMPT")
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    env.update(
        {
            "TEMPORAL_ADDRESS": temporal_address,
            "TEMPORAL_NAMESPACE": "default",
            "TEMPORAL_TASK_QUEUE": stack.settings.temporal.task_queue,
            "SLACK_BOT_TOKEN": stack.slack.bot_token,
            "SLACK_API_URL": stack.slack.base_url,
            "AWS_ENDPOINT_URL_BEDROCK_RUNTIME": stack.bedrock.url,
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_DEFAULT_REGION": "us-east-1",
            "THREADCHAT_STREAMING": "true",
            "LOG_LEVEL": "INFO",
            "PYTHONUNBUFFERED": "1",
        }
    )
    assert "AWS_BEARER_TOKEN_BEDROCK" not in env
    return env


class Workers:
    """Every worker process a test starts, stopped (by PID) at the end whatever happens."""

    def __init__(self, stack: Stack, temporal_address: str):
        self.env = worker_env(stack, temporal_address)
        self.started: list[WorkerProcess] = []

    async def start(self, name: str) -> WorkerProcess:
        worker = WorkerProcess(name, self.env)
        self.started.append(worker)
        await worker.wait_polling()
        return worker

    def logs(self) -> str:
        return "\n".join(w.tail() for w in self.started)

    def stop_all(self) -> None:
        for worker in self.started:
            worker.stop()


def converse_streams(stack: Stack) -> int:
    return sum(1 for r in stack.bedrock.requests if r.operation == "converse-stream")


async def wait_turns(stack: Stack, channel: str, thread_ts: str, turns: int, workers: Workers):
    """Until the workflow has recorded `turns` answered turns (a query: needs a live worker)."""

    async def recorded() -> bool:
        status = await stack.handle(channel, thread_ts).query(ConversationWorkflow.status)
        return status.turn_count >= turns

    await until(recorded, RETRY_TIMEOUT, f"turn {turns} recorded", workers.logs)


def thread_state(stack: Stack, channel: str, thread_ts: str, workers: Workers) -> str:
    """What the thread and the model saw, for assertion messages."""
    replies = [
        (r["ts"], stack.slack.is_streaming(channel, r["ts"]), r.get("text", "")[:60] + "...")
        for r in stack.slack.bot_replies(channel, thread_ts)
    ]
    return (
        f"bot replies (ts, streaming, text): {replies}\n"
        f"converse-stream requests: {converse_streams(stack)}\n{workers.logs()}"
    )


async def wait_replies(
    stack: Stack, channel: str, thread_ts: str, count: int, workers: Workers, last_has: str = ""
) -> list[dict]:
    """Like `stack.replies`: until the bot has `count` finished (not streaming) messages in the
    thread, the last one containing `last_has`. Fails at once when there are more than `count`
    (a second, duplicate reply), and on timeout, with the thread's state and the workers' logs.
    """

    def done() -> list[dict] | None:
        replies = stack.slack.bot_replies(channel, thread_ts)
        if len(replies) > count:
            state = thread_state(stack, channel, thread_ts, workers)
            raise AssertionError(f"more than {count} bot messages in the thread\n{state}")
        finished = (
            len(replies) == count
            and not any(stack.slack.is_streaming(channel, r["ts"]) for r in replies)
            and last_has in replies[-1].get("text", "")
        )
        return replies if finished else None

    try:
        return await eventually(done, RETRY_TIMEOUT, f"{count} finished bot replies")
    except TimeoutError as err:
        raise AssertionError(f"{err}\n{thread_state(stack, channel, thread_ts, workers)}") from None


def assert_single_complete_reply(stack: Stack, channel: str, thread_ts: str, workers: Workers):
    replies = stack.slack.bot_replies(channel, thread_ts)
    context = thread_state(stack, channel, thread_ts, workers)
    assert len(replies) == 1, context
    reply = replies[0]
    assert not stack.slack.is_streaming(channel, reply["ts"]), context
    assert QUESTION in reply["text"], context
    assert reply["text"].strip().endswith("(end of echo)"), context
    return reply


async def test_worker_killed_mid_stream_leaves_one_complete_reply(make_stack, temporal_server):
    server, _ = temporal_server
    stack = await make_stack(worker=False, bedrock_options=slow_echo_options())
    workers = Workers(stack, server.address)
    try:
        first = await workers.start("A")
        channel = stack.channel
        thread_ts = await stack.mention(channel, QUESTION)

        await until(
            lambda: stack.slack.calls_to("chat.appendStream"), 20, "visible streaming", workers.logs
        )
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
        await wait_replies(stack, channel, thread_ts, 2, workers)
        await wait_turns(stack, channel, thread_ts, 2, workers)
        replies = stack.slack.bot_replies(channel, thread_ts)
        assert len(replies) == 2, workers.logs()
        assert "and a short follow-up, please" in replies[1]["text"]
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
        await wait_replies(stack, channel, thread_ts, 2, workers)
        await wait_turns(stack, channel, thread_ts, 2, workers)
        print(f"\nnew worker -> follow-up answered in {time.monotonic() - started:.1f} s")
        replies = stack.slack.bot_replies(channel, thread_ts)
        assert len(replies) == 2, workers.logs()
        assert "follow-up while no worker runs" in replies[1]["text"]
        assert converse_streams(stack) == 2, workers.logs()
    finally:
        workers.stop_all()


async def test_sigterm_drains_the_worker(make_stack, temporal_server):
    server, _ = temporal_server
    stack = await make_stack(worker=False, bedrock_options=slow_echo_options())
    workers = Workers(stack, server.address)
    try:
        first = await workers.start("A")
        channel = stack.channel
        thread_ts = await stack.mention(channel, QUESTION)
        await until(
            lambda: stack.slack.calls_to("chat.appendStream"), 20, "visible streaming", workers.logs
        )
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
        await wait_replies(stack, channel, thread_ts, 2, workers)
        await wait_turns(stack, channel, thread_ts, 2, workers)
        replies = stack.slack.bot_replies(channel, thread_ts)
        assert len(replies) == 2, workers.logs()
        assert "a follow-up for the new worker" in replies[1]["text"]
        assert converse_streams(stack) == 2, workers.logs()
    finally:
        workers.stop_all()
