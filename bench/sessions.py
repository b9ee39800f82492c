"""What agent sessions cost a turn: per-turn time with sessions against without.

    .venv/bin/python -m bench.sessions [--turns 40] [--rounds 3]

One conversation per mode answers `--turns` follow-ups in its thread. "Without" is a local
Slack that refuses `agents.sessions.*` (the worker then uses the assistant thread's status,
as before sessions). A turn is timed from the message's event until its answer is complete in
the local Slack and the thread shows it answered (session `active`, or the status cleared).
The modes alternate over `--rounds` so that drift on a shared machine hits both. It reports
p50/p99 and the Slack calls per turn, and never fails on a number.
"""

import argparse
import asyncio
import os
import statistics
import time

from devtools.stack import eventually, start_stack
from devtools.temporal_server import TemporalDevServer


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def measure(client, sessions: bool, turns: int) -> tuple[list[float], float]:
    stack = await start_stack(client)
    if not sessions:
        stack.slack.sessions_error = "unknown_method"
    times: list[float] = []
    try:
        thread = await stack.mention(stack.channel, "hello")
        await stack.replies(stack.channel, thread, 1, timeout=60)
        calls = len(stack.slack.calls)

        def answered() -> bool:
            if sessions:
                return stack.slack.session(stack.channel, thread) == "active"
            return stack.slack.status(stack.channel, thread) == ""

        for n in range(turns):
            start = time.perf_counter()
            await stack.say(stack.channel, thread, f"follow-up {n}")
            await stack.replies(stack.channel, thread, n + 2, timeout=60)
            await eventually(answered, 10, "answered")
            times.append((time.perf_counter() - start) * 1000)
        per_turn = (len(stack.slack.calls) - calls) / turns
    finally:
        await stack.close()
    return times, per_turn


async def main(turns: int, rounds: int) -> None:
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    server = TemporalDevServer()
    client = await server.start()
    results: dict[bool, list[float]] = {True: [], False: []}
    calls: dict[bool, float] = {}
    try:
        for _ in range(rounds):
            for sessions in (True, False):
                times, calls[sessions] = await measure(client, sessions, turns)
                results[sessions] += times
    finally:
        server.stop()
    print(f"{rounds} rounds x {turns} turns per mode\n")
    print("| Mode | turn p50 ms | turn p99 ms | Slack calls per turn |")
    print("|---|---|---|---|")
    for sessions in (True, False):
        times = results[sessions]
        label = "agent sessions" if sessions else "assistant status (no sessions)"
        print(
            f"| {label} | {statistics.median(times):.1f} | {percentile(times, 99):.1f} |"
            f" {calls[sessions]:.1f} |"
        )
    overhead = statistics.median(results[True]) - statistics.median(results[False])
    print(f"\nSessions add {overhead:+.1f} ms to a turn's p50.")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main(args.turns, args.rounds))
    os._exit(0)
