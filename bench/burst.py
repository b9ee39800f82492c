"""A burst: many new threads mentioned in the same instant, as when a busy channel wakes up.

    .venv/bin/python -m bench.burst [--threads 200] [--rounds 3]

`threadchat bot` and `threadchat worker` run in their own processes against one dev server;
this process is Slack (the local Web API, and the signed events, all sent at once) and the
local Bedrock with a paced model. Reported in one run: non-2xx answers, the bot's ack
latency, the time to each thread's first reply text (the model's own 0.3 s included), and
the same for signal-with-start alone (the Temporal part of an ack, what the bot does for a
mention), sent from this process in bursts of the same size that alternate with the bot's,
so the worker answers both alike; and signal-with-start to a queue no worker polls, with
nothing else running. It reports; it never fails on a number.
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


async def main(
    threads: int, rounds: int, acks_only: bool, worker_env: dict[str, str], server_config: list[str]
) -> None:
    server = TemporalDevServer(
        extra_args=[arg for value in server_config for arg in ("--dynamic-config-value", value)]
    )
    client = await server.start()
    rig = await start_rig(
        server, client, new_log_dir(), bedrock_options=PACING, worker_env=worker_env
    )
    conversations = Conversations(client, rig.queue)
    try:
        await rig.warm(threads)
        for i in range(3):  # the first turns pay for imports, connections and caches
            ts, _, _ = await rig.mention(rig.channel(i), "warm up")
            await rig.tracker.wait_done(ts, 1)
        if acks_only:
            rig.worker.stop()  # nothing else loads the server: the bot's own share shows
        index = 3

        async def direct(channel: str) -> tuple[str, float, float]:
            """What the bot does for a mention, from this process: signal-with-start alone."""
            text = "burst"
            message = rig.slack.add_message(
                channel, user=ALICE, text=f"<@{rig.slack.bot_user_id}> {text}"
            )
            thread = ThreadRef(TEAM, channel, message["ts"])
            began = time.perf_counter()
            await conversations.start_or_continue(
                thread, UserMessage(message["ts"], ALICE, text, may_start=True)
            )
            return message["ts"], began, (time.perf_counter() - began) * 1000

        pids = {"bot": rig.bot.pid, "dev server": server.process.pid, "this process": os.getpid()}
        if not acks_only:
            pids["worker"] = rig.worker.pid
        acks: dict[str, list[float]] = {"mention": [], "direct": [], "later": []}
        replies: dict[str, list[float]] = {kind: [] for kind in acks}
        cpu = {kind: dict.fromkeys(pids, 0.0) for kind in acks}
        refused = 0

        async def burst(kind: str, sends: list) -> list[str]:
            """Send all at once, wait for each thread's reply; note acks, replies and CPU."""
            nonlocal refused
            before = {name: cpu_seconds(pid) for name, pid in pids.items()}
            failures = len(rig.sender.failures)
            results = await asyncio.gather(*sends)
            refused += len(rig.sender.failures) - failures
            acks[kind] += [ms for _, _, ms in results]
            if not acks_only:
                turn = 2 if kind == "later" else 1
                await asyncio.gather(
                    *(rig.tracker.wait_done(ts, turn, timeout=300) for ts, _, _ in results)
                )
                replies[kind] += [
                    (rig.tracker.visible[ts][turn - 1] - sent) * 1000 for ts, sent, _ in results
                ]
            for name, pid in pids.items():
                cpu[kind][name] += cpu_seconds(pid) - before[name]
            await asyncio.sleep(2)
            return [ts for ts, _, _ in results]

        async def later(channel: str, ts: str) -> tuple[str, float, float]:
            sent, ack = await rig.say(channel, ts, "and one more thing")
            return ts, sent, ack

        # Bot bursts and direct ones alternate, so both meet the same load: the worker
        # answering as many new conversations on the same dev server and 2 cores. Then the
        # bot's threads each get a second message at once: later turns, for comparison.
        for _ in range(rounds):
            channels = [rig.channel(index + i) for i in range(threads)]
            index += threads
            started = await burst("mention", [rig.mention(c, "burst") for c in channels])
            await burst("direct", [direct(rig.channel(index + i)) for i in range(threads)])
            index += threads
            if not acks_only:
                pairs = zip(channels, started, strict=True)
                await burst("later", [later(c, ts) for c, ts in pairs])
        if not acks_only:
            rig.check()

        # The Temporal part alone: no worker polls this queue, so nothing else runs.
        unpolled = Conversations(client, f"bench-unpolled-{uuid.uuid4().hex[:8]}")

        async def start(i: int) -> float:
            thread = ThreadRef(TEAM, "CUNPOLLED", f"1700000000.{i:06d}")
            began = time.perf_counter()
            await unpolled.start_or_continue(
                thread, UserMessage(thread.thread_ts, ALICE, "hi", may_start=True)
            )
            return (time.perf_counter() - began) * 1000

        idle = []
        for round_ in range(rounds):
            idle += await asyncio.gather(*(start(round_ * threads + i) for i in range(threads)))
            await asyncio.sleep(1)

        n = len(acks["mention"]) + len(acks["later"])
        print(f"{rounds} bursts of {threads} new threads mentioned at once, each followed by a")
        print(f"burst of {threads} started by signal-with-start alone, then by a second message")
        print(f"in each of the mentioned threads at once ({n} events to the bot).\n")
        print("| Measure | p50 ms | p99 ms | max ms |")
        print("|---|---|---|---|")
        rows = [
            ("bot ack, new thread", acks["mention"]),
            ("signal-with-start alone, bursts answered alike", acks["direct"]),
            ("signal-with-start alone, no worker running", idle),
            ("bot ack, later message", acks["later"]),
            ("first reply text after a mention (model 0.3 s)", replies["mention"]),
            ("first reply text after signal-with-start alone", replies["direct"]),
            ("reply text after a later message", replies["later"]),
        ]
        for name, values in rows:
            if values:
                print(f"| {name} | {p(values, 0.5)} | {p(values, 0.99)} | {max(values):.0f} |")
        count = rounds * threads
        print(f"\nCPU ms per turn, {count} turns each (2 cores):\n")
        print("| Turns | " + " | ".join(pids) + " | all |")
        print("|---|" + "---|" * (len(pids) + 1))
        labels = {"mention": "first, by mention", "direct": "first, by signal-with-start"}
        for kind, label in {**labels, "later": "later"}.items():
            if not acks[kind]:
                continue
            used = [cpu[kind][name] * 1000 / count for name in pids]
            print(f"| {label} | " + " | ".join(f"{u:.1f}" for u in used) + f" | {sum(used):.1f} |")
        ratio = percentile(acks["mention"], 0.99) / percentile(acks["direct"], 0.99)
        print(
            f"\nnon-2xx answers: {refused} of {n}; ack p99 / signal-with-start p99 of bursts"
            f" answered alike: {ratio:.2f}"
        )
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
    parser.add_argument(
        "--server-config", nargs="*", default=[], metavar="KEY=VALUE", help="dev server config"
    )
    args = parser.parse_args()
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    worker_env = dict(item.split("=", 1) for item in args.worker_env)
    asyncio.run(main(args.threads, args.rounds, args.acks_only, worker_env, args.server_config))
    os._exit(0)
