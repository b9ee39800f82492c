"""What reading the thread so far costs a first turn: a mention in the middle of a thread of
50 messages (people's and a monitoring app's alert) against a mention that starts its thread,
interleaved, with the worker and the bot in this process and a zero-latency model.

    .venv/bin/python -m bench.thread_context [--rounds 15] [--messages 50]

A first turn is timed from the signed Slack event leaving to the reply's stream stopping in
the local Slack; the mid-thread one includes the `read_thread` local activity (auth.test once
per worker, conversations.replies, users.info for names not cached). The prompt's size is the
first request's user-role text, in characters and estimated tokens (four characters a token,
as the local Bedrock counts). It reports; it never fails on a number.
"""

import argparse
import asyncio
import os
import re
import statistics
import time

from bench.rig import Tracker, percentile
from devtools.stack import ALICE, BOB, start_stack
from devtools.temporal_server import TemporalDevServer

ALERT = [
    {
        "title": "[FIRING] checkout-api p99 latency",
        "text": "p99 is 2.4s (threshold 800ms) for 10 minutes",
        "fields": [{"title": "Runbook", "value": "https://runbooks.example/checkout"}],
    }
]


def user_text(body: dict) -> str:
    return "".join(
        str(block.get("text") or block.get("guardContent", {}).get("text", {}).get("text", ""))
        for m in body["messages"]
        if m["role"] == "user"
        for block in m["content"]
    )


async def main(rounds: int, messages: int) -> None:
    server = TemporalDevServer()
    client = await server.start()
    stack = await start_stack(client, bedrock_options={"stream_delay_s": 0})
    tracker = Tracker(stack)
    slack = stack.slack
    try:
        warm = await stack.mention(stack.channel, "warm up")
        await tracker.wait_done(warm, 1)
        samples: dict[str, list[float]] = {"root mention": [], "mid-thread mention": []}
        sizes: dict[str, int] = {}
        left_out = ""
        for i in range(rounds):
            for kind in samples:  # interleaved: both see the same machine
                thread_ts = None
                if kind == "mid-thread mention":
                    root = slack.add_message(stack.channel, user=ALICE, text=f"incident {i}")
                    thread_ts = root["ts"]
                    slack.add_app_message(
                        stack.channel,
                        bot_id="B0MONITOR",
                        name="Monitoring",
                        attachments=ALERT,
                        thread_ts=thread_ts,
                    )
                    for n in range(messages - 2):
                        slack.add_message(
                            stack.channel,
                            user=(ALICE, BOB)[n % 2],
                            text=f"message {n}: " + "the checkout pods look fine to me " * 3,
                            thread_ts=thread_ts,
                        )
                calls = len(stack.converse_requests())
                sent = time.perf_counter()
                ts = await stack.mention(stack.channel, f"what now {i}?", thread_ts=thread_ts)
                done = await tracker.wait_done(thread_ts or ts, 1, timeout=60)
                samples[kind].append((done - sent) * 1000)
                said = user_text(stack.converse_requests()[calls])
                sizes[kind] = len(said)
                left_out = left_out or "".join(
                    re.findall(r"\((\d+) older messages? not shown", said)
                )
                await asyncio.sleep(0.2)
        print(
            f"| First turn, thread of {messages} messages, model latency 0 | p50 ms | p99 ms | n |"
        )
        print("|---|---|---|---|")
        for kind, values in samples.items():
            print(
                f"| {kind} | {statistics.median(values):.1f} | {percentile(values, 0.99):.1f} "
                f"| {len(values)} |"
            )
        extra = statistics.median(samples["mid-thread mention"]) - statistics.median(
            samples["root mention"]
        )
        print(f"\nReading the thread adds {extra:+.1f} ms at p50 to a first turn.")
        for kind, size in sizes.items():
            print(f"First prompt, {kind}: {size:,} characters, about {size // 4:,} tokens.")
        print(f"Older messages left out of the {messages}: {left_out or 0}.")
    finally:
        await stack.close()
        server.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--messages", type=int, default=50)
    args = parser.parse_args()
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    asyncio.run(main(args.rounds, args.messages))
    os._exit(0)
