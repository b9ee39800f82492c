"""The benchmark rig: the real threadchat processes around the local Slack and Bedrock servers.

The worker and the bot run as their own processes (`threadchat worker`, `threadchat bot`), as
in production, so that their latency, CPU and memory are their own. The local Slack and
Bedrock servers and the load generator share the benchmark's event loop. Events go into the
bot as Slack sends them: signed HTTP POSTs to its Request URL.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from bot.app import EVENTS_PATH
from devtools.slack_events import app_mention_event, event_callback, message_event, sign
from devtools.stack import ALICE, SIGNING_SECRET, TEAM, Stack, start_stack
from devtools.temporal_server import TemporalDevServer, free_port
from threadchat.ids import conversation_id

# Settings passed to our processes; everything else of this kind is dropped from the
# inherited environment, so a developer's own configuration cannot leak into a run.
_OURS = ("TEMPORAL_", "SLACK_", "AWS_", "THREADCHAT_", "BEDROCK_", "CHAT_", "LOG_", "METRICS_")
_DROPPED = {"PORT", "HOST", "SYSTEM_PROMPT", "PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX"}
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
THREADS_PER_CHANNEL = 50


# -- Numbers --------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank percentile (q in 0..1); NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def summary(values: list[float]) -> dict[str, float]:
    """p50, p90, p99, max and count of a sample."""
    if not values:
        return {"n": 0}
    return {
        "p50": statistics.median(values),
        "p90": percentile(values, 0.90),
        "p99": percentile(values, 0.99),
        "max": max(values),
        "mean": statistics.fmean(values),
        "n": len(values),
    }


# -- Processes ------------------------------------------------------------------------------


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of a process, in KiB (empty when it is gone)."""
    values = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0])
    except OSError:
        pass
    return values


def rss_mib(pid: int) -> float:
    return proc_status(pid).get("VmRSS", 0) / 1024


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process so far (threads included)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # After the command name: state is field 3, utime 14 and stime 15 (1-based, man 5 proc).
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def threadchat_command() -> list[str]:
    script = Path(sys.executable).with_name("threadchat")
    if script.exists():
        return [str(script)]
    found = shutil.which("threadchat")
    if found:
        return [found]
    return [sys.executable, "-c", "from threadchat.commands.cli import main; main()"]


def _die_with_parent() -> None:
    """In the child: get SIGTERM if the benchmark dies, so no process outlives a crashed run."""
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class Process:
    """A threadchat command run as a child process in its own session, logging to a file."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log_dir: Path):
        self.name = name
        self.args = args
        self.env = env
        self.log_path = log_dir / f"{name}-{uuid.uuid4().hex[:6]}.log"
        self.popen: subprocess.Popen | None = None

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def start(self) -> None:
        log = self.log_path.open("wb")
        self.popen = subprocess.Popen(
            threadchat_command() + self.args,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        log.close()

    def check(self) -> None:
        if self.popen is not None and self.popen.poll() is not None:
            raise RuntimeError(f"{self.name} exited ({self.popen.returncode}):\n{self.log_tail()}")

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self, timeout: float = 20) -> None:
        """SIGTERM (graceful drain), then SIGKILL; only this child's own process group."""
        if self.popen is None or self.popen.poll() is not None:
            return
        os.killpg(self.popen.pid, signal.SIGTERM)
        try:
            self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait()


def process_env(overrides: dict[str, str], pycache: Path) -> dict[str, str]:
    """Our processes' environment. They keep bytecode caches (in a directory of the run, not
    the source tree), as a deployed install does: without them the workflow sandbox compiles
    the workflow module's source again for every workflow it loads."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(_OURS) and key not in _DROPPED
    }
    env["PYTHONPYCACHEPREFIX"] = str(pycache)
    env.update(overrides)
    return env


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, all cores, from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / CLOCK_TICKS, sum(fields[:8]) / CLOCK_TICKS


def tree_cpu(root: int | None = None) -> float:
    """CPU seconds of this process and all its descendants, live or reaped."""
    root = root or os.getpid()
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid = int(entry.name)
        parents[pid] = int(fields[1])
        # utime, stime, and cutime, cstime: children that exited and were waited for.
        times[pid] = sum(int(v) for v in fields[11:15]) / CLOCK_TICKS
    total = 0.0
    for pid in times:
        ancestor = pid
        while ancestor not in (root, 0, 1) and ancestor in parents:
            ancestor = parents[ancestor]
        if ancestor == root:
            total += times[pid]
    return total


class LoadMeter:
    """How busy the machine was over a span, and how much of that was this run."""

    def __init__(self) -> None:
        self.start = time.monotonic()
        self.machine = machine_cpu()
        self.ours = tree_cpu()

    def read(self) -> dict[str, float]:
        elapsed = time.monotonic() - self.start
        busy, total = machine_cpu()
        machine_cores = (busy - self.machine[0]) / elapsed if elapsed else 0.0
        ours = (tree_cpu() - self.ours) / elapsed if elapsed else 0.0
        return {
            "seconds": elapsed,
            "machine_cores_busy": machine_cores,
            "our_cores": ours,
            "other_cores": max(0.0, machine_cores - ours),
        }


# -- Watching Slack ------------------------------------------------------------------------


class Tracker:
    """Watches the local Slack server: when each bot reply in a thread shows its first text
    and when it is finished (streaming stopped, or posted whole)."""

    def __init__(self, stack: Stack):
        self.bot_id = stack.slack.bot_id
        self.visible: dict[str, list[float]] = defaultdict(list)
        self.done: dict[str, list[float]] = defaultdict(list)
        self.completions: list[float] = []
        self._waiters: dict[str, list[tuple[int, asyncio.Future]]] = defaultdict(list)
        stack.slack.subscribe(self.on_change)

    def on_change(self, change: dict[str, Any]) -> None:
        now = time.perf_counter()
        message = change.get("message") or {}
        thread = message.get("thread_ts")
        if message.get("bot_id") != self.bot_id or not thread:
            return
        if change["type"] == "message":
            self.visible[thread].append(now)
            if not change.get("streaming"):
                self._finished(thread, now)
        elif change["type"] == "stream_stop":
            self._finished(thread, now)

    def _finished(self, thread: str, now: float) -> None:
        self.done[thread].append(now)
        self.completions.append(now)
        count = len(self.done[thread])
        waiting = self._waiters.get(thread)
        if not waiting:
            return
        for item in list(waiting):
            wanted, future = item
            if count >= wanted:
                waiting.remove(item)
                if not future.done():
                    future.set_result(now)

    async def wait_done(self, thread: str, count: int, timeout: float = 60) -> float:
        """Wait until the thread has `count` finished bot replies; the time of the last."""
        if len(self.done[thread]) >= count:
            return self.done[thread][count - 1]
        future = asyncio.get_running_loop().create_future()
        self._waiters[thread].append((count, future))
        return await asyncio.wait_for(future, timeout)


# -- Sending events as Slack does -----------------------------------------------------------


class Sender:
    """Signed Events API POSTs to the bot, over kept-alive connections without a pool limit
    (aiohttp's default of 100 connections would queue a burst of 200 in the client)."""

    def __init__(self, url: str):
        self.url = url
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=300),
            timeout=aiohttp.ClientTimeout(total=60),
        )
        self.failures: list[str] = []

    async def post(self, event: dict[str, Any]) -> tuple[float, float]:
        """Deliver one event; returns (when it was sent, ms until HTTP 200)."""
        body = json.dumps(event_callback(event))
        headers = {"Content-Type": "application/json", **sign(SIGNING_SECRET, body)}
        start = time.perf_counter()
        async with self.session.post(self.url, data=body.encode(), headers=headers) as response:
            await response.read()
            status = response.status
        elapsed = (time.perf_counter() - start) * 1000
        if status != 200:
            self.failures.append(f"HTTP {status}")
        return start, elapsed

    async def warm(self, connections: int, health_url: str) -> None:
        """Open `connections` kept-alive connections, so a burst measures the bot, not TCP
        connection set-up (which a burst beyond the listen backlog would turn into SYN
        retransmits of a second)."""
        for size in [*range(50, connections, 50), connections]:
            await asyncio.gather(*(self._get(health_url) for _ in range(size)))

    async def _get(self, url: str) -> None:
        async with self.session.get(url) as response:
            await response.read()

    async def close(self) -> None:
        await self.session.close()


# -- The rig --------------------------------------------------------------------------------


@dataclass
class Rig:
    """Local Slack and Bedrock, a worker process and (optionally) a bot process, on a fresh
    task queue of the given dev server."""

    server: TemporalDevServer
    stack: Stack
    tracker: Tracker
    log_dir: Path
    worker: Process | None = None
    bot: Process | None = None
    sender: Sender | None = None
    bot_base: str = ""
    _channels: dict[int, str] = field(default_factory=dict)

    @property
    def queue(self) -> str:
        return self.stack.settings.temporal.task_queue

    @property
    def slack(self):
        return self.stack.slack

    @property
    def bedrock(self):
        return self.stack.bedrock

    def channel(self, index: int) -> str:
        """A channel for the index-th thread: LocalSlack re-sorts a whole channel on every
        message, so threads are spread over channels of THREADS_PER_CHANNEL."""
        key = index // THREADS_PER_CHANNEL
        if key not in self._channels:
            self._channels[key] = "C" + uuid.uuid4().hex[:10].upper()
        return self._channels[key]

    def env(self, extra: dict[str, str]) -> dict[str, str]:
        return process_env(
            {
                "TEMPORAL_ADDRESS": self.server.address,
                "TEMPORAL_NAMESPACE": "default",
                "TEMPORAL_TASK_QUEUE": self.queue,
                "SLACK_BOT_TOKEN": self.slack.bot_token,
                "SLACK_API_URL": self.slack.base_url,
                "AWS_ENDPOINT_URL_BEDROCK_RUNTIME": self.bedrock.url,
                "AWS_ACCESS_KEY_ID": "bench",
                "AWS_SECRET_ACCESS_KEY": "bench",
                "AWS_REGION": "us-east-1",
                "THREADCHAT_STREAMING": "true",
                # One simulated person asks everything: no allowance or rate to meet.
                "THREADCHAT_USER_DAILY_TOKENS": "0",
                "THREADCHAT_USER_TURNS_PER_MINUTE": "0",
                "CHAT_INACTIVITY_TIMEOUT": "30m",
                "BEDROCK_READ_TIMEOUT": "30",
                **extra,
            },
            self.log_dir / "pycache",
        )

    async def start_worker(self, extra: dict[str, str]) -> None:
        self.worker = Process("worker", ["worker"], self.env(extra), self.log_dir)
        self.worker.start()

    async def start_bot(self) -> None:
        port = free_port()
        env = self.env({"SLACK_SIGNING_SECRET": SIGNING_SECRET, "PORT": str(port)})
        env["HOST"] = "127.0.0.1"
        self.bot = Process("bot", ["bot"], env, self.log_dir)
        self.bot.start()
        self.bot_base = f"http://127.0.0.1:{port}"
        self.sender = Sender(self.bot_base + EVENTS_PATH)
        deadline = time.monotonic() + 60
        while True:
            self.bot.check()
            try:
                async with self.sender.session.get(self.bot_base + "/healthz") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"the bot did not answer /healthz:\n{self.bot.log_tail()}")
            await asyncio.sleep(0.1)

    async def warm(self, connections: int) -> None:
        await self.sender.warm(connections, self.bot_base + "/healthz")

    # What a Slack user does: the message appears in Slack, and Slack delivers the event.

    async def mention(self, channel: str, text: str) -> tuple[str, float, float]:
        """A top-level mention starting a thread; returns (thread ts, sent at, ack ms)."""
        message = self.slack.add_message(
            channel, user=ALICE, text=f"<@{self.slack.bot_user_id}> {text}"
        )
        event = app_mention_event(
            channel=channel, user=ALICE, text=message["text"], ts=message["ts"]
        )
        sent, ack = await self.sender.post(event)
        return message["ts"], sent, ack

    async def say(self, channel: str, thread_ts: str, text: str) -> tuple[float, float]:
        """A plain reply in the thread; returns (sent at, ack ms)."""
        message = self.slack.add_message(channel, user=ALICE, text=text, thread_ts=thread_ts)
        event = message_event(
            channel=channel, user=ALICE, text=text, ts=message["ts"], thread_ts=thread_ts
        )
        return await self.sender.post(event)

    def workflow_id(self, channel: str, thread_ts: str) -> str:
        return conversation_id(TEAM, channel, thread_ts)

    def check(self) -> None:
        for process in (self.worker, self.bot):
            if process is not None:
                process.check()

    async def close(self) -> None:
        if self.sender is not None:
            await self.sender.close()
        for process in (self.bot, self.worker):
            if process is not None:
                await asyncio.to_thread(process.stop)
        await self.stack.close()


async def start_rig(
    server: TemporalDevServer,
    client,
    log_dir: Path,
    *,
    bot: bool = True,
    worker_env: dict[str, str] | None = None,
    bedrock_options: dict[str, Any] | None = None,
) -> Rig:
    """Start the local servers (no in-process worker or bot) and our processes around them."""
    stack = await start_stack(client, bot=False, worker=False, bedrock_options=bedrock_options)
    rig = Rig(server=server, stack=stack, tracker=Tracker(stack), log_dir=log_dir)
    try:
        await rig.start_worker(worker_env or {})
        if bot:
            await rig.start_bot()
    except BaseException:
        await rig.close()
        raise
    return rig


def new_log_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="threadchat-bench-"))
