"""Real threadchat processes for tests: `threadchat worker` and `threadchat bot` as child
processes configured only through the environment, signalled and stopped by PID, and waits
that fail with the processes' output and the thread's state.
"""

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from devtools.stack import Stack, eventually
from workflows.conversation import ConversationWorkflow

THREADCHAT = str(Path(sys.executable).with_name("threadchat"))
# Heartbeat timeout (5 s) + sticky queue timeout (3 s) + the reply itself, with margin.
RETRY_TIMEOUT = 60


async def until(condition, timeout: float, what: str, logs) -> Any:
    """`eventually`, failing with the workers' output as it is at the time of the failure."""
    try:
        return await eventually(condition, timeout, what)
    except TimeoutError as err:
        raise AssertionError(f"{err}\n{logs()}") from None


class ChildProcess:
    """A `threadchat` command as a child process, its output captured in a temp file."""

    def __init__(self, command: str, name: str, env: dict[str, str]):
        self.command = command
        self.name = name
        fd, self.log_path = tempfile.mkstemp(prefix=f"threadchat-{command}-{name}-", suffix=".log")
        try:
            self.process = subprocess.Popen(
                [THREADCHAT, command], env=env, stdin=subprocess.DEVNULL, stdout=fd, stderr=fd
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
        return f"--- {self.command} {self.name} (pid {self.pid}) output, last lines ---\n{last}"

    def send(self, sig: signal.Signals) -> None:
        if self.process.poll() is None:
            os.kill(self.pid, sig)

    async def wait_exit(self, timeout: float) -> int:
        """Wait without blocking the event loop: the local servers run on it."""

        def exited() -> bool:
            return self.process.poll() is not None

        await until(exited, timeout, f"{self.command} {self.name} to exit", self.tail)
        return self.process.returncode

    def stop(self) -> None:
        """Kill by PID (if still running), reap, and remove the log file."""
        if self.process.poll() is None:
            os.kill(self.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)
        with contextlib.suppress(OSError):
            os.unlink(self.log_path)


class WorkerProcess(ChildProcess):
    """`threadchat worker` as a child process."""

    def __init__(self, name: str, env: dict[str, str]):
        super().__init__("worker", name, env)

    async def wait_polling(self, timeout: float = 30) -> None:
        """Until the worker logs that it polls its task queue."""

        def polling() -> bool:
            assert self.process.poll() is None, f"worker exited early\n{self.tail()}"
            return "worker polling task queue" in self.output()

        await until(polling, timeout, f"worker {self.name} to poll", self.tail)


def worker_env(stack: Stack, temporal_address: str) -> dict[str, str]:
    """Only the environment: the test's Temporal server and task queue, the Stack's local Slack
    and Bedrock, streaming on, the stack's reply mode. Inherited threadchat, Temporal, Slack
    and AWS settings are dropped so nothing else leaks in."""
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
            "AWS_ENDPOINT_URL_BEDROCK_AGENT_RUNTIME": stack.bedrock.url,
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_DEFAULT_REGION": "us-east-1",
            "THREADCHAT_STREAMING": "true",
            # The stack's allowances (none unless a test sets them), as its in-process worker
            # has: tests share user ids across task queues, and a person's budget workflow
            # lives on the queue of the test that opened it.
            "THREADCHAT_USER_DAILY_TOKENS": str(stack.settings.token_limits.per_user),
            "THREADCHAT_USER_TURNS_PER_MINUTE": str(stack.settings.token_limits.turns_per_minute),
            # As the stack's in-process worker answers: tests talk as several people.
            "THREADCHAT_REPLY_MODE": stack.settings.conversation.reply_mode,
            "LOG_LEVEL": "INFO",
            "PYTHONUNBUFFERED": "1",
        }
    )
    if stack.settings.tools_file:
        env["THREADCHAT_TOOLS_FILE"] = stack.settings.tools_file
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
