"""Core latency and history figures, measured on the real stack in one run.

    .venv/bin/python -m bench.core [--threads 200] [--turns 20]

Prints a Markdown table: signal-with-start and signal latency (the Slack handler's Temporal
RPC), the bot's ack latency for a signed event over HTTP, the time from a message to its
reply in Slack with a zero-latency model, and history events per turn. It reports; it never
fails on a number.
"""

import argparse
import asyncio
import os
import statistics
import time

from bot.conversations import Conversations
from devtools.stack import ALICE, start_stack
from devtools.temporal_server import TemporalDevServer
from threadchat.ids import conversation_id
from threadchat.model import ThreadRef, UserMessage


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def row(name: str, values_ms: list[float]) -> str:
    return (
        f"| {name} | {statistics.median(values_ms):.1f} | {percentile(values_ms, 0.99):.1f} "
        f"| {len(values_ms)} |"
    )


async def timed(coro) -> float:
    start = time.perf_counter()
    await coro
    return (time.perf_counter() - start) * 1000


async def main(threads: int, turns: int) -> None:
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    server = TemporalDevServer()
    client = await server.start()
    stack = await start_stack(client)
    try:
        # A task queue no worker polls: the RPCs are measured alone, as the bot sees them
        # while workers are busy elsewhere.
        conversations = Conversations(client, "bench-unpolled")
        channel = stack.channel

        # The Slack handler's RPCs, one at a time so each is measured alone.
        starts, signals = [], []
        for i in range(threads):
            thread = ThreadRef("T0LOCAL", channel, f"1700000000.{i:06d}")
            message = UserMessage(thread.thread_ts, ALICE, "hi")
            starts.append(await timed(conversations.start_or_continue(thread, message)))
        for i in range(threads):
            thread = ThreadRef("T0LOCAL", channel, f"1700000000.{i:06d}")
            message = UserMessage(f"1700000001.{i:06d}", ALICE, "again")
            signals.append(await timed(conversations.continue_only(thread, message)))

        # The bot's ack for a signed mention over HTTP, and the time until the reply shows.
        acks, replies = [], []
        for _ in range(30):
            start = time.perf_counter()
            ts = await stack.mention(channel, "ping")
            acks.append((time.perf_counter() - start) * 1000)
            await stack.replies(channel, ts, 1)
            replies.append((time.perf_counter() - start) * 1000)

        # History events per turn, over one longer conversation.
        ts = await stack.mention(channel, "turn 0")
        await stack.replies(channel, ts, 1)
        handle = client.get_workflow_handle(conversation_id("T0LOCAL", channel, ts))
        first = len((await handle.fetch_history()).events)
        for i in range(1, turns):
            await stack.say(channel, ts, f"turn {i}")
            await stack.replies(channel, ts, i + 1)
        total = len((await handle.fetch_history()).events)
        per_turn = (total - first) / (turns - 1)

        print("| Measure | median ms | p99 ms | n |")
        print("|---|---|---|---|")
        print(row("signal-with-start (new conversation)", starts))
        print(row("signal (running conversation)", signals))
        print(row("bot ack of a signed mention over HTTP", acks))
        print(row("mention to reply visible (model latency 0)", replies))
        print()
        print(
            f"History: first turn {first} events (including workflow start and open); "
            f"then {per_turn:.1f} events per turn over {turns - 1} turns."
        )
    finally:
        await stack.close()
        server.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=200)
    parser.add_argument("--turns", type=int, default=20)
    args = parser.parse_args()
    asyncio.run(main(args.threads, args.turns))
    os._exit(0)
