"""What a shared file costs a turn: turns with a 3 MB PDF against text-only turns, interleaved
in one conversation, with the worker and the bot in this process and a zero-latency model.

    .venv/bin/python -m bench.files [--turns 10] [--megabytes 3]

A turn is timed from the signed Slack event leaving to the reply's stream stopping in the
local Slack; the PDF turn includes files.info, the download from the local Slack, and
sending it to the local Bedrock (base64 in JSON, as boto3 sends it). It reports; it never
fails on a number.
"""

import argparse
import asyncio
import os
import statistics
import time

from bench.rig import Tracker, percentile
from devtools.stack import ALICE, start_stack
from devtools.temporal_server import TemporalDevServer


async def main(turns: int, megabytes: float) -> None:
    server = TemporalDevServer()
    client = await server.start()
    stack = await start_stack(client, bedrock_options={"stream_delay_s": 0})
    tracker = Tracker(stack)
    pdf = b"%PDF-1.4\n" + os.urandom(int(megabytes * 1_000_000))
    try:
        thread = await stack.mention(stack.channel, "warm up")
        await tracker.wait_done(thread, 1)
        samples: dict[str, list[float]] = {"text": [], "pdf": []}
        count = 1
        for i in range(turns):
            for kind in ("text", "pdf"):  # interleaved: both see the same machine
                files = None
                if kind == "pdf":
                    files = [
                        stack.slack.add_file(
                            user=ALICE,
                            name=f"report {i}.pdf",
                            mimetype="application/pdf",
                            content=pdf,
                        )
                    ]
                count += 1
                sent = time.perf_counter()
                await stack.say(stack.channel, thread, f"question {i}", files=files)
                done = await tracker.wait_done(thread, count, timeout=60)
                samples[kind].append((done - sent) * 1000)
                await asyncio.sleep(0.2)
        last = stack.slack.bot_replies(stack.channel, thread)[-1]["text"]
        assert "document" in last, last  # the PDF reached the model
        print(f"| Turn ({megabytes:g} MB PDF vs text), model latency 0 | p50 ms | p99 ms | n |")
        print("|---|---|---|---|")
        for kind, values in samples.items():
            print(
                f"| {kind} | {statistics.median(values):.1f} | {percentile(values, 0.99):.1f} "
                f"| {len(values)} |"
            )
        extra = statistics.median(samples["pdf"]) - statistics.median(samples["text"])
        print(f"\nA {megabytes:g} MB PDF adds {extra:+.1f} ms at p50 to a turn.")
    finally:
        await stack.close()
        server.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=10)
    parser.add_argument("--megabytes", type=float, default=3)
    args = parser.parse_args()
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    asyncio.run(main(args.turns, args.megabytes))
    os._exit(0)
