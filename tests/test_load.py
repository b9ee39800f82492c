"""Load: 200 concurrent threads x 5 messages each, as signed Events API requests over HTTP into
the bot, with a worker and the real Temporal dev server behind it.

Every message carries a token naming its thread and index, and the local model echoes every
token in its whole prompt. So a reply shows the entire context the model was given: reply k of
thread T must show exactly T's tokens 1..k, and no reply or model request may show another
thread's. Each HTTP request is timed to its 200, against Slack's 3-second ack deadline.
"""

import asyncio
import functools
import json
import math
import re
import time
from collections import defaultdict
from typing import Any

import aiohttp
import pytest

from devtools.slack_events import app_mention_event, event_callback, message_event, sign
from devtools.stack import ALICE, SIGNING_SECRET, Stack, eventually
from workflows.conversation import ConversationWorkflow

THREADS = 200
MESSAGES = 5
CHANNELS = 4
# Generous: a reply under this load shows within seconds; this only bounds a failing run.
REPLY_TIMEOUT = 60
# New threads start 10 ms apart (100 a second, all 200 within 2 s), not in one millisecond:
# a burst of 200 signal-with-starts queues in the dev server on 2 cores, and with the worker
# in this process its acks reached 2.2-3.3 s here, some of them 500s past the bot's 2 s
# hand-over timeout. That burst is bench.run's to measure; this test is about 200 at once.
ARRIVALS = 0.01
# Slack redelivers an event not acked within 3 s. Measured here, on 2 cores shared with other
# test runs (load average 4-7) and with the bot, worker, local servers and this client in one
# process: p99 0.7-1.1 s, max 0.9-1.3 s. 2 s leaves a second for the network between Slack
# and the bot and half again the worst max seen, yet fails if acks waited for anything slow
# (a reply takes seconds here, queued behind 200 others).
ACK_BOUND_MS = 2000
TOKEN = re.compile(r"tok-t(\d{3})-m(\d)")


def token(thread: int, index: int) -> str:
    return f"tok-t{thread:03d}-m{index}"


def tokens_in(text: str) -> list[str]:
    """The tokens in `text`, each once, in order of first appearance."""
    return list(dict.fromkeys(m.group(0) for m in TOKEN.finditer(text)))


def threads_in(text: str) -> set[int]:
    return {int(m.group(1)) for m in TOKEN.finditer(text)}


def echo_tokens(body: dict[str, Any]) -> str:
    """The model's answer: every token anywhere in the request (system prompt and context,
    user and assistant turns), so that the reply shows all the model was given."""
    return f"Tokens in my context: {' '.join(tokens_in(json.dumps(body)))}."


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


class Acks:
    """Signed Events API POSTs, each timed until its HTTP 200. Its own connection pool:
    aiohttp's default limit of 100 would queue a burst of 200 in this client and count the
    wait as the bot's."""

    def __init__(self, url: str):
        self.url = url
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=300),
            timeout=aiohttp.ClientTimeout(total=30),
        )
        self.ms: list[float] = []

    async def warm(self, connections: int) -> None:
        """Open the connections first, in batches below the bot's listen backlog (128): a
        burst of 200 new connections would measure SYN retransmits (1 s), not the bot."""
        health = self.url.replace("/slack/events", "/healthz")

        async def get() -> None:
            async with self.session.get(health) as response:
                await response.read()

        for size in [*range(50, connections, 50), connections]:
            await asyncio.gather(*(get() for _ in range(size)))

    async def send(self, event: dict[str, Any]) -> None:
        body = json.dumps(event_callback(event))
        headers = {"Content-Type": "application/json", **sign(SIGNING_SECRET, body)}
        start = time.perf_counter()
        async with self.session.post(self.url, data=body.encode(), headers=headers) as response:
            await response.read()
        self.ms.append((time.perf_counter() - start) * 1000)
        assert response.status == 200, f"ack {response.status} for {event['text']!r}"

    async def close(self) -> None:
        await self.session.close()


class ReplyWatch:
    """The ts of every bot message per thread, from the local Slack server's change feed.
    Reading its stores instead (as `stack.replies` does) would sort and copy a channel of
    hundreds of messages on every poll of every thread: more CPU than the stack under test."""

    def __init__(self, stack: Stack):
        self.slack = stack.slack
        self.ts: dict[tuple[str, str], list[str]] = defaultdict(list)
        stack.slack.subscribe(self.on_change)

    def on_change(self, change: dict[str, Any]) -> None:
        message = change.get("message") or {}
        if change["type"] == "message" and message.get("bot_id") == self.slack.bot_id:
            self.ts[(change["channel"], message.get("thread_ts"))].append(message["ts"])

    def finished(self, channel: str, thread_ts: str, count: int) -> bool:
        """At least `count` bot messages in the thread, none of them still streaming."""
        replies = self.ts[(channel, thread_ts)]
        return len(replies) >= count and not any(
            self.slack.is_streaming(channel, ts) for ts in replies
        )


# About 45 s here; the margin is for a failing run to reach its REPLY_TIMEOUT and report.
@pytest.mark.timeout(180)
async def test_200_threads_x_5_messages(make_stack, capsys):
    stack = await make_stack(bedrock_options={"responder": echo_tokens})
    channels = [f"{stack.channel}{c}" for c in "ABCD"[:CHANNELS]]
    acks, watch = Acks(stack.bot_url), ReplyWatch(stack)
    mentioned: list[int] = []

    async def post(channel: str, thread: int, index: int, thread_ts: str | None) -> str:
        """A user's message, mirrored into the local Slack as Slack would store it; its ts."""
        text = f"{token(thread, index)} please echo"
        if thread_ts is None:
            text = f"<@{stack.slack.bot_user_id}> {text}"
        message = stack.slack.add_message(channel, user=ALICE, text=text, thread_ts=thread_ts)
        fields = dict(channel=channel, user=ALICE, text=text, ts=message["ts"])
        if thread_ts is None:
            await acks.send(app_mention_event(**fields))
        else:
            await acks.send(message_event(**fields, thread_ts=thread_ts))
        return message["ts"]

    async def answered(channel: str, thread_ts: str, thread: int, index: int) -> None:
        finished = functools.partial(watch.finished, channel, thread_ts, index)
        await eventually(finished, REPLY_TIMEOUT, f"reply {index} in thread {thread}")

    async def converse(thread: int) -> tuple[str, str]:
        """One user's thread: a mention, then each follow-up once the last reply is done."""
        channel = channels[thread % CHANNELS]
        # Users arrive at a steady rate rather than all in one millisecond (see ARRIVALS).
        await asyncio.sleep(thread * ARRIVALS)
        try:
            thread_ts = await post(channel, thread, 1, None)
        finally:
            mentioned.append(thread)
        await answered(channel, thread_ts, thread, 1)
        # Every conversation is open before any goes on: all 200 run at once, however fast
        # this machine answers the first ones.
        await eventually(lambda: len(mentioned) == THREADS, REPLY_TIMEOUT, "all mentions")
        for index in range(2, MESSAGES + 1):
            await post(channel, thread, index, thread_ts)
            await answered(channel, thread_ts, thread, index)
        return channel, thread_ts

    try:
        await acks.warm(THREADS)
        started = time.perf_counter()
        outcomes = await asyncio.gather(
            *(converse(t) for t in range(THREADS)), return_exceptions=True
        )
        wall = time.perf_counter() - started
    finally:
        await acks.close()
    errors = [o for o in outcomes if isinstance(o, BaseException)]
    threads = {t: o for t, o in enumerate(outcomes) if not isinstance(o, BaseException)}

    # What each thread shows in Slack, and what each model call was given.
    problems: list[str] = []
    replies_total = missing = duplicated = leaks = 0
    for thread, (channel, thread_ts) in threads.items():
        replies = stack.slack.bot_replies(channel, thread_ts)
        replies_total += len(replies)
        missing += max(0, MESSAGES - len(replies))
        duplicated += max(0, len(replies) - MESSAGES)
        for k, reply in enumerate(replies[:MESSAGES], start=1):
            text = reply.get("text", "")
            expected = [token(thread, i) for i in range(1, k + 1)]
            if threads_in(text) - {thread}:
                leaks += 1
                problems.append(f"thread {thread} reply {k} leaks: {text!r}")
            elif tokens_in(text) != expected:
                problems.append(f"thread {thread} reply {k}: {text!r}, expected {expected}")
    for request in stack.bedrock.requests:
        seen = tokens_in(json.dumps(request.body))
        if len(threads_in(" ".join(seen))) > 1:
            leaks += 1
            problems.append(f"{request.operation} request mixes threads: {seen}")
    missing += MESSAGES * (THREADS - len(threads))

    p50, p99, most = (percentile(acks.ms, q) for q in (0.5, 0.99, 1.0))
    with capsys.disabled():
        print(
            f"\nload: {THREADS} threads x {MESSAGES} messages, {replies_total} replies,"
            f" {missing} missing, {duplicated} duplicated, {leaks} leaks;"
            f" ack p50 {p50:.0f} ms p99 {p99:.0f} ms max {most:.0f} ms;"
            f" {replies_total} turns in {wall:.0f} s ({replies_total / wall:.0f} turns/s)"
        )
    assert not errors, f"{len(errors)} threads failed, first: {errors[0]!r}"
    assert not problems, f"{len(problems)} problems, first ones:\n" + "\n".join(problems[:10])
    assert replies_total == THREADS * MESSAGES
    assert len(acks.ms) == THREADS * MESSAGES

    # Temporal agrees: five turns per conversation, nothing left pending.
    async def status(channel: str, thread_ts: str):
        return await stack.handle(channel, thread_ts).query(ConversationWorkflow.status)

    statuses = await asyncio.gather(*(status(*where) for where in threads.values()))
    assert [(s.turn_count, s.pending) for s in statuses] == [(MESSAGES, 0)] * THREADS

    assert most < ACK_BOUND_MS, f"slowest ack {most:.0f} ms (p99 {p99:.0f} ms)"
