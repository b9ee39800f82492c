"""A burst: many new threads mentioned in the same instant, as when a busy channel wakes up.

    .venv/bin/python -m bench.burst [--threads 200] [--rounds 3]

`threadchat bot` and `threadchat worker` run in their own processes against one dev server;
this process is Slack (the local Web API, and the signed events, all sent at once) and the
local Bedrock with a paced model. Reported in one run: non-2xx answers, the bot's ack
latency, the time to each thread's first reply text (the model's own 0.3 s included), and
signal-with-start alone in bursts of the same size, from this process to a queue no worker
polls, which is the Temporal part of an ack. It reports; it never fails on a number.
"""

import argparse
import asyncio
import os
import time
import uuid

from bench.rig import cpu_seconds, new_log_dir, percentile, start_rig
from bench.run import PACING
from bot.conversations import Conversations
from devtools.stack import ALICE, TEAM
from devtools.temporal_server import TemporalDevServer
from threadchat.model import ThreadRef, UserMessage


def p(values: list[float], q: float) -> str:
    return f"{percentile(values, q):.0f}"


async def main(threads: int, rounds: int, acks_only: bool, worker_env: dict[str, str]) -> None:
    server = TemporalDevServer()
    client = await server.start()
    rig = await start_rig(
        server, client, new_log_dir(), bedrock_options=PACING, worker_env=worker_env
    )
    try:
        await rig.warm(threads)
        for i in range(3):  # the first turns pay for imports, connections and caches
            ts, _, _ = await rig.mention(rig.channel(i), "warm up")
            await rig.tracker.wait_done(ts, 1)
        if acks_only:
            rig.worker.stop()  # nothing else loads the server: the bot's own share shows
        acks, first_replies, refused = [], [], 0
        index = 3
        pids = {"bot": rig.bot.pid, "dev server": server.process.pid, "this process": os.getpid()}
        if not acks_only:
            pids["worker"] = rig.worker.pid
        cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        wall = time.perf_counter()
        for _ in range(rounds):
            channels = [rig.channel(index + i) for i in range(threads)]
            index += threads
            failures = len(rig.sender.failures)
            results = await asyncio.gather(*(rig.mention(c, "burst") for c in channels))
            refused += len(rig.sender.failures) - failures
            acks += [ack for _, _, ack in results]
            if not acks_only:
                await asyncio.gather(
                    *(rig.tracker.wait_done(ts, 1, timeout=300) for ts, _, _ in results)
                )
                first_replies += [
                    (rig.tracker.visible[ts][0] - sent) * 1000 for ts, sent, _ in results
                ]
            await asyncio.sleep(2)
        wall = time.perf_counter() - wall
        cpu = {name: cpu_seconds(pid) - cpu_before[name] for name, pid in pids.items()}
        if not acks_only:
            rig.check()

        conversations = Conversations(client, f"bench-unpolled-{uuid.uuid4().hex[:8]}")

        async def start(i: int) -> float:
            thread = ThreadRef(TEAM, "CUNPOLLED", f"1700000000.{i:06d}")
            began = time.perf_counter()
            await conversations.start_or_continue(
                thread, UserMessage(thread.thread_ts, ALICE, "hi", may_start=True)
            )
            return (time.perf_counter() - began) * 1000

        bare = []
        for round_ in range(rounds):
            bare += await asyncio.gather(*(start(round_ * threads + i) for i in range(threads)))
            await asyncio.sleep(1)

        n = len(acks)
        print(f"{rounds} bursts of {threads} new threads mentioned at once ({n} events).\n")
        print("| Measure | p50 ms | p99 ms | max ms |")
        print("|---|---|---|---|")
        print(f"| bot ack | {p(acks, 0.5)} | {p(acks, 0.99)} | {max(acks):.0f} |")
        print(
            f"| signal-with-start alone, same bursts | {p(bare, 0.5)} | {p(bare, 0.99)} |"
            f" {max(bare):.0f} |"
        )
        if first_replies:
            print(
                f"| first reply text (model 0.3 s) | {p(first_replies, 0.5)} |"
                f" {p(first_replies, 0.99)} | {max(first_replies):.0f} |"
            )
        shares = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in cpu.items())
        print(f"\nCPU over the bursts ({wall:.1f} s of wall time, 2 cores): {shares}")
        ratio = percentile(acks, 0.99) / percentile(bare, 0.99)
        print(f"\nnon-2xx answers: {refused} of {n}; ack p99 / signal-with-start p99: {ratio:.2f}")
    finally:
        await rig.close()
        server.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--acks-only", action="store_true", help="stop the worker first: the bot's share alone"
    )
    parser.add_argument(
        "--worker-env", nargs="*", default=[], metavar="NAME=VALUE", help="worker settings"
    )
    args = parser.parse_args()
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    worker_env = dict(item.split("=", 1) for item in args.worker_env)
    asyncio.run(main(args.threads, args.rounds, args.acks_only, worker_env))
    os._exit(0)
