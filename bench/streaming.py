"""Time to first visible text against time to the full answer, streaming on and off.

    .venv/bin/python -m bench.streaming [--replies 20] [--chars 1200]

The local Bedrock server paces its stream like a model (12 characters every 30 ms, after
300 ms before the first token). Each mention's reply is watched in the local Slack server:
when its first words become visible, and when it is complete. Medians from one run; it
reports and never fails on a number.
"""

import argparse
import asyncio
import os
import statistics
import time

from devtools.stack import start_stack
from devtools.temporal_server import TemporalDevServer

PACING = {"stream_chunk_chars": 12, "stream_delay_s": 0.03, "model_latency_s": 0.3}


async def measure(client, streaming: bool, replies: int, chars: int) -> tuple[list, list]:
    answer = ("Streaming makes the first words show up early. " * 100)[:chars]
    stack = await start_stack(
        client, streaming=streaming, bedrock_options={**PACING, "responder": lambda b: answer}
    )
    first: dict[str, float] = {}
    done: dict[str, float] = {}

    def watch(change: dict) -> None:
        thread = change.get("thread_ts") or (change.get("message") or {}).get("thread_ts")
        if (
            change["type"] == "message"
            and change.get("bot_id")
            or (change["type"] == "message" and (change.get("message") or {}).get("bot_id"))
        ):
            first.setdefault(thread, time.perf_counter())
            if not change.get("streaming") and not (change.get("message") or {}).get("streaming"):
                done.setdefault(thread, time.perf_counter())
        elif change["type"] == "stream_stop":
            done.setdefault(thread, time.perf_counter())

    stack.slack.subscribe(watch)
    to_first, to_full = [], []
    try:
        for _ in range(replies):
            start = time.perf_counter()
            ts = await stack.mention(stack.channel, "tell me")
            await stack.replies(stack.channel, ts, 1, timeout=60)
            to_first.append((first[ts] - start) * 1000)
            to_full.append((done[ts] - start) * 1000)
    finally:
        await stack.close()
    return to_first, to_full


async def main(replies: int, chars: int) -> None:
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    server = TemporalDevServer()
    client = await server.start()
    try:
        rows = []
        for streaming in (True, False):
            to_first, to_full = await measure(client, streaming, replies, chars)
            rows.append((streaming, statistics.median(to_first), statistics.median(to_full)))
    finally:
        server.stop()
    print(f"{replies} replies of {chars} characters each, model pacing {PACING}\n")
    print("| Delivery | first visible text, median ms | full answer, median ms |")
    print("|---|---|---|")
    for streaming, first, full in rows:
        print(f"| {'streamed' if streaming else 'posted whole'} | {first:.0f} | {full:.0f} |")
    streamed, whole = rows
    print(
        f"\nStreaming shows the first words after {streamed[1] / whole[1]:.2f}x the time "
        f"the whole post takes to appear."
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replies", type=int, default=20)
    parser.add_argument("--chars", type=int, default=1200)
    args = parser.parse_args()
    asyncio.run(main(args.replies, args.chars))
    os._exit(0)
