"""Soak: 1,000 turns across 40 concurrent threads while workers are SIGKILLed at random every
few seconds. Every message must get exactly one complete reply: none lost, none doubled.

Two `threadchat worker` processes serve the task queue (real OS processes, as in
test_worker_crash.py); the bot runs in-process over HTTP, with the local Slack and Bedrock
servers. Each thread (alone in its channel) sends its next message only once the reply to the
previous one has finished, so each message is one turn. Every message carries a unique token
and the model quotes the latest message, so each reply can be matched to its message.

A killer task SIGKILLs one of the two workers, chosen at random, every 2-5 s (a seeded
`random.Random`; the seed is printed, and THREADCHAT_SOAK_SEED replays a kill schedule) and
starts a new one in its place at once. A reply cut off by a kill is retried once the activity's
heartbeat timeout has passed. A turn may be hit again and again: it has as long as the answer's
retry policy allows (after that it ends with a notice, counted as lost). On a failure, the
output shows where the slowest and the stuck turns spent their time, kills included.
"""

import asyncio
import contextlib
import os
import random
import signal
import time
from dataclasses import dataclass, field
from datetime import UTC

import pytest
from temporalio.api.enums.v1 import EventType

from devtools.bedrock import echo_responder
from devtools.processes import WorkerProcess, Workers, converse_streams
from devtools.stack import Stack, eventually
from workflows import steps
from workflows.conversation import ConversationWorkflow

THREADS = 40
TURNS_PER_THREAD = 25  # 1,000 turns in all
KILL_INTERVAL_S = (2.0, 5.0)
# The model takes 0.3 s to start, then streams a reply of about 90 characters in 12-character
# deltas 100 ms apart: real streams, long enough that kills often land mid-stream and that the
# soak lasts long enough for 30-odd kills, short enough that it ends in a few minutes.
SOAK_BEDROCK = {
    "model_latency_s": 0.3,
    "stream_chunk_chars": 12,
    "stream_delay_s": 0.1,
    "responder": echo_responder,
}


def answer_deadline(reply_s: float = 2.0, workflow_tasks_lost: int = 3) -> float:
    """The longest the answer's retry policy lets a turn take: every attempt cut off by a kill
    (its heartbeat timeout, and the reply so far), every backoff between, and a few workflow
    tasks lost with their worker (10 s each). A turn unanswered past it is stuck, not unlucky
    (a fixed 120 s, with 10 s heartbeats, once failed a CI run that lost nothing)."""
    policy = steps.BEDROCK_RETRY
    attempts = policy.maximum_attempts
    first, most = policy.initial_interval.total_seconds(), policy.maximum_interval.total_seconds()
    backoffs = sum(min(first * policy.backoff_coefficient**n, most) for n in range(attempts - 1))
    heartbeat = steps.MODEL_HEARTBEAT.total_seconds()
    return attempts * (heartbeat + reply_s) + backoffs + workflow_tasks_lost * 10


TURN_TIMEOUT = answer_deadline()
# After the last kill, a turn cut off just before it still has to be retried.
SETTLE_TIMEOUT = 90
NOTICE = ":warning:"


@dataclass
class Conversation:
    """One thread of the soak: the tokens sent, and why it stopped early, if it did."""

    index: int
    channel: str
    thread_ts: str = ""
    tokens: list[str] = field(default_factory=list)
    stuck: str = ""
    # Seconds from each message to its reply, and when (epoch seconds) each message was sent.
    waits: list[float] = field(default_factory=list)
    sent_at: list[float] = field(default_factory=list)


def message_token(thread: int, turn: int) -> str:
    # Brackets keep tokens apart as substrings too: no token contains another.
    return f"[soak-{thread:02d}-{turn:02d}]"


def bot_messages(stack: Stack, conversation: Conversation) -> list[tuple[dict, bool]]:
    """The bot's messages in the thread, each with whether it is still streaming."""
    channel = conversation.channel
    return [
        (m, stack.slack.is_streaming(channel, m["ts"]))
        for m in stack.slack.bot_replies(channel, conversation.thread_ts)
    ]


def notices(stack: Stack, conversation: Conversation) -> int:
    return sum(m.get("text", "").startswith(NOTICE) for m, _ in bot_messages(stack, conversation))


class Changes:
    """Counts the local Slack's changes per channel, so a poll looks at a thread (a sorted
    copy each time) only when something in it changed: 40 threads polling 20 times a second
    would otherwise compete for the CPU with the servers they wait on."""

    def __init__(self, stack: Stack):
        self.counts: dict[str, int] = {}
        stack.slack.subscribe(self.note)

    def note(self, change: dict) -> None:
        channel = change.get("channel", "")
        self.counts[channel] = self.counts.get(channel, 0) + 1


async def converse(stack: Stack, changes: Changes, conversation: Conversation) -> None:
    """Send the thread's messages one by one, each once the last one is answered: by a finished
    reply, or by a failure notice (which the final count reports as a lost reply)."""
    for turn in range(TURNS_PER_THREAD):
        token = message_token(conversation.index, turn)
        if turn == 0:
            notices_before = 0
            conversation.thread_ts = await stack.mention(conversation.channel, token)
        else:
            notices_before = notices(stack, conversation)
            await stack.say(conversation.channel, conversation.thread_ts, token)
        conversation.tokens.append(token)
        conversation.sent_at.append(time.time())
        seen = -1

        def answered(token: str = token, notices_before: int = notices_before) -> bool:
            nonlocal seen
            if changes.counts.get(conversation.channel, 0) == seen:
                return False
            seen = changes.counts.get(conversation.channel, 0)
            messages = bot_messages(stack, conversation)
            replied = any(token in m.get("text", "") and not live for m, live in messages)
            return replied or notices(stack, conversation) > notices_before

        try:
            await eventually(answered, TURN_TIMEOUT, f"a reply to {token}")
        except TimeoutError:
            # Stop this thread, not the soak: the final count reports it with the others.
            conversation.stuck = f"no reply to {token} within {TURN_TIMEOUT} s"
            return
        conversation.waits.append(time.time() - conversation.sent_at[-1])


class Killer:
    """SIGKILLs one of the running workers at random, on a seeded schedule, and starts a new
    one in its place at once, until stopped."""

    def __init__(self, workers: Workers, running: list[WorkerProcess], seed: int):
        self.workers = workers
        self.running = running
        self.random = random.Random(seed)
        self.kills = 0
        self.stop = asyncio.Event()
        self.killed: list[tuple[float, int]] = []  # when (epoch seconds), and which pid

    async def run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), self.random.uniform(*KILL_INTERVAL_S))
            if self.stop.is_set():
                return
            slot = self.random.randrange(len(self.running))
            victim = self.running[slot]
            # Only kill a worker that got going: killing one still importing tests nothing.
            await victim.wait_polling()
            victim.send(signal.SIGKILL)
            assert await victim.wait_exit(10) == -signal.SIGKILL, victim.tail()
            self.kills += 1
            self.killed.append((time.time(), victim.pid))
            # No waiting for the replacement: the other worker carries on meanwhile.
            replacement = WorkerProcess(f"{slot}-{self.kills}", self.workers.env)
            self.workers.started.append(replacement)
            self.running[slot] = replacement


async def report_progress(conversations: list[Conversation], killer: Killer) -> None:
    """A line every 15 s: captured by pytest, and shown if the test fails."""
    started = time.monotonic()
    while True:
        await asyncio.sleep(15)
        sent = sum(len(c.tokens) for c in conversations)
        stuck = [c.index for c in conversations if c.stuck]
        print(
            f"{time.monotonic() - started:.0f} s: {sent} sent, {killer.kills} kills, stuck {stuck}"
        )


async def settled(stack: Stack, conversation: Conversation) -> bool:
    """The workflow has taken every message as a turn, and nothing runs or waits any more."""
    if any(live for _, live in bot_messages(stack, conversation)):
        return False
    handle = stack.handle(conversation.channel, conversation.thread_ts)
    status = await handle.query(ConversationWorkflow.status)
    if status.turn_count != len(conversation.tokens) or status.pending:
        return False
    return not (await handle.describe()).raw_description.pending_activities


async def settle(stack: Stack, conversations: list[Conversation]) -> None:
    """Wait for every workflow to settle; on timeout, leave the unsettled ones to the count."""
    waiting = list(conversations)

    async def all_settled() -> bool:
        while waiting and await settled(stack, waiting[0]):
            waiting.pop(0)
        return not waiting

    with contextlib.suppress(TimeoutError):
        await eventually(all_settled, SETTLE_TIMEOUT, "every workflow to settle")


async def count(stack: Stack, conversation: Conversation) -> tuple[int, int, list[str]]:
    """Lost and duplicated replies in one thread, and a line on each problem."""
    messages = bot_messages(stack, conversation)
    lost = duplicated = 0
    problems = [conversation.stuck] if conversation.stuck else []
    for token in conversation.tokens:
        holding = [m["ts"] for m, live in messages if token in m.get("text", "") and not live]
        if not holding:
            lost += 1
            problems.append(f"{token}: no finished reply")
        elif len(holding) > 1:
            duplicated += len(holding) - 1
            problems.append(f"{token}: in {len(holding)} bot messages {holding}")
    for message, live in messages:
        text = message.get("text", "")
        if any(token in text for token in conversation.tokens):
            continue
        if not text.startswith(NOTICE):
            # A message for no turn: a leftover of a cut-off stream, or a second reply.
            duplicated += 1
        # A notice stands in for a reply, which is already counted as lost.
        problems.append(f"bot message {message['ts']} (streaming {live}): {text[:120]!r}")
    handle = stack.handle(conversation.channel, conversation.thread_ts)
    status = await handle.query(ConversationWorkflow.status)
    if status.turn_count != len(conversation.tokens):
        problems.append(f"workflow turn_count {status.turn_count}, {len(conversation.tokens)} sent")
    return lost, duplicated, problems


async def timeline(
    stack: Stack, conversation: Conversation, turn: int, killed: list[tuple[float, int]]
) -> str:
    """The workflow's history from a turn's message on, an event a line: where a slow or
    stuck turn spent its time (a kill, a heartbeat timeout, a retry's backoff)."""
    handle = stack.handle(conversation.channel, conversation.thread_ts)
    since = conversation.sent_at[turn] - 1
    lines = [f"--- {handle.id}, from {message_token(conversation.index, turn)} on ---"]
    scheduled: dict[int, str] = {}
    events = []
    async for event in handle.fetch_history_events():
        at = event.event_time.ToDatetime().replace(tzinfo=UTC).timestamp()
        name = EventType.Name(event.event_type).removeprefix("EVENT_TYPE_")
        detail = ""
        if event.HasField("activity_task_scheduled_event_attributes"):
            activity = event.activity_task_scheduled_event_attributes.activity_type
            scheduled[event.event_id] = activity.name
        for field_name in ("started", "completed", "failed", "timed_out", "canceled"):
            attributes = f"activity_task_{field_name}_event_attributes"
            if event.HasField(attributes):
                step = getattr(event, attributes)
                detail = scheduled.get(step.scheduled_event_id, "")
                if field_name == "started":
                    detail += f" attempt {step.attempt}"
                if field_name in ("failed", "timed_out"):
                    detail += f" {step.failure.message[:80]!r}"
        if event.HasField("workflow_task_timed_out_event_attributes"):
            detail = str(event.workflow_task_timed_out_event_attributes.timeout_type)
        if event.HasField("workflow_task_started_event_attributes"):
            detail = event.workflow_task_started_event_attributes.identity
        events.append((at, f"{name} {detail}"))
    events += [(at, f"(worker pid {pid} killed)") for at, pid in killed]
    for at, line in sorted(events):
        if since <= at <= since + TURN_TIMEOUT + 10:
            lines.append(f"  +{at - conversation.sent_at[turn]:6.1f} s {line}")
    return "\n".join(lines[:80])


def worker_logs(workers: Workers, stack: Stack, troubled: list[Conversation]) -> str:
    """Every worker's lines about the troubled threads, and the last lines of the running two."""
    ids = [stack.handle(c.channel, c.thread_ts).id for c in troubled]
    lines = [
        f"[worker {worker.name}] {line}"
        for worker in workers.started
        for line in worker.output().splitlines()
        if any(workflow_id in line for workflow_id in ids)
    ]
    return "\n".join([*lines[-100:], *(w.tail(20) for w in workers.started[-2:])])


# The soak takes 4-6 minutes; a turn stuck at its end adds its deadline and the settling.
@pytest.mark.timeout(900)
async def test_soak_random_worker_kills_lose_and_double_nothing(
    make_stack, temporal_server, capsys
):
    server, _ = temporal_server
    seed = int(os.environ.get("THREADCHAT_SOAK_SEED") or random.randrange(1_000_000))
    print(f"soak seed {seed}")
    started = time.monotonic()
    stack = await make_stack(worker=False, bedrock_options=SOAK_BEDROCK)
    workers = Workers(stack, server.address)
    background: list[asyncio.Task] = []
    try:
        running = [await workers.start("0-0"), await workers.start("1-0")]
        killer = Killer(workers, running, seed)
        changes = Changes(stack)
        conversations = [Conversation(i, f"{stack.channel}{i:02d}") for i in range(THREADS)]
        background += [
            asyncio.create_task(killer.run()),
            asyncio.create_task(report_progress(conversations, killer)),
        ]
        async with asyncio.TaskGroup() as group:
            for conversation in conversations:
                group.create_task(converse(stack, changes, conversation))
        killer.stop.set()
        await background[0]  # raises if the killer failed
        # Queries need a polling worker: let the last replacement get going.
        for worker in running:
            await worker.wait_polling()
        await settle(stack, conversations)

        lost = duplicated = 0
        report, troubled = [], []
        for conversation in conversations:
            thread_lost, thread_duplicated, problems = await count(stack, conversation)
            lost += thread_lost
            duplicated += thread_duplicated
            if problems:
                troubled.append(conversation)
                where = f"{conversation.channel}/{conversation.thread_ts}"
                shown = "; ".join(problems[:8]) + ("; ..." if len(problems) > 8 else "")
                report.append(f"thread {conversation.index} ({where}): {shown}")
        sent = sum(len(c.tokens) for c in conversations)
        summary = (
            f"soak: {sent} turns in {THREADS} threads, {killer.kills} worker kills (seed {seed}),"
            f" {converse_streams(stack) - sent} replies streamed again, lost {lost},"
            f" duplicated {duplicated}, {time.monotonic() - started:.0f} s"
        )
        waits = sorted(
            (wait, conversation.index, turn)
            for conversation in conversations
            for turn, wait in enumerate(conversation.waits)
        )
        if waits:  # none when every thread stuck on its first message
            summary += (
                f"; reply waits p50 {waits[len(waits) // 2][0]:.1f} s,"
                f" p99 {waits[len(waits) * 99 // 100][0]:.1f} s, max {waits[-1][0]:.1f} s"
            )
        with capsys.disabled():
            print(f"\n{summary}")
        if lost or duplicated or report or sent != THREADS * TURNS_PER_THREAD:
            # Where the stuck turns (the first few) and the slowest ones spent their time.
            stuck = [(c, len(c.tokens) - 1) for c in conversations if c.stuck][:3]
            slowest = [(conversations[index], turn) for _, index, turn in waits[-2:]]
            timelines = [
                await timeline(stack, c, turn, killer.killed) for c, turn in stuck + slowest
            ]
            logs = worker_logs(workers, stack, troubled)
            pytest.fail("\n".join([summary, *report, *timelines, logs]), pytrace=False)
    finally:
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        workers.stop_all()
