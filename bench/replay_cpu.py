"""The worker's CPU for workflow code, per new conversation and per turn, of two source trees.

    .venv/bin/python -m bench.replay_cpu --a /path/to/old/tree:tests/histories/<set> \
        --b .:tests/histories/1.0 [--rounds 5] [--repeat 5]

Replaying a recorded history runs exactly the workflow side of a worker: a fresh sandbox
(what every new conversation costs), each activation, the payloads decoded. Activities,
the server and Slack are not in it, so the figure isolates what a change to `workflows/`
costs, with none of a live run's noise from other processes. Each tree replays the
histories recorded from its own code (scenarios present in both sets are compared), in its
own process, rounds alternating between the trees. CPU time, median over all replays.
Per new conversation: a one-turn conversation's replay, and loading the workflow module into a
fresh sandbox alone. Per turn: the slope between a one-turn conversation and the longest
common one. It reports; it never fails on a number.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

# Runs inside the tree measured: replays each history `repeat` times, prints CPU ms of each.
CHILD = """
import asyncio, json, sys, time
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer
from threadchat.commands.worker import keep_bytecode
from workflows.budget import TokenBudgetWorkflow
from workflows.conversation import ConversationWorkflow

keep_bytecode()
paths, repeat = json.loads(sys.argv[1]), int(sys.argv[2])
histories = [WorkflowHistory.from_json(p, open(p).read()) for p in paths]

async def feed(order):
    for history in order:
        yield history

def sandbox_loads(count=50):
    # CPU ms to load the conversation workflow into a fresh sandbox, as for each new one.
    from temporalio import workflow
    from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner
    runner = SandboxedWorkflowRunner()
    definition = workflow._Definition.must_from_class(ConversationWorkflow)
    times = []
    for _ in range(count):
        began = time.process_time()
        runner.prepare_workflow(definition)
        times.append((time.process_time() - began) * 1000)
    return times[5:]

async def main():
    # One replay worker for all, as a worker runs many conversations: each history's CPU is
    # the time between its result and the one before.
    replayer = Replayer(workflows=[ConversationWorkflow, TokenBudgetWorkflow])
    out = {p: [] for p in paths}
    order = histories * (repeat + 1)  # the first pass warms imports and caches
    async with replayer.workflow_replay_iterator(feed(order)) as results:
        last, index = time.process_time(), 0
        async for result in results:
            now = time.process_time()
            if result.replay_failure is not None:
                raise result.replay_failure
            if index >= len(paths):
                out[paths[index % len(paths)]].append((now - last) * 1000)
            last, index = now, index + 1
    out["sandbox"] = sandbox_loads()
    print(json.dumps(out))

asyncio.run(main())
"""

MODEL_CALLS = ("stream_reply", "generate_reply")


def turns(path: Path) -> int:
    """Answered turns in a history: its scheduled reply activities."""
    text = path.read_text()
    return sum(text.count(f'"name": "{name}"') for name in MODEL_CALLS)


def replay(tree: Path, paths: list[Path], repeat: int) -> dict[str, list[float]]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    done = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps([str(p) for p in paths]), str(repeat)],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return {Path(p).name: ms for p, ms in json.loads(done.stdout.splitlines()[-1]).items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--a", required=True, metavar="TREE:HISTORIES", help="before")
    parser.add_argument("--b", required=True, metavar="TREE:HISTORIES", help="after")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    sides = {}
    for label, spec in (("A", args.a), ("B", args.b)):
        tree, histories = spec.split(":", 1)
        sides[label] = (Path(tree).resolve(), Path(tree).resolve() / histories)
    common = sorted(
        set(p.name for p in sides["A"][1].glob("*.json"))
        & set(p.name for p in sides["B"][1].glob("*.json"))
    )
    # Conversations only (budget workflows are not what changed), one-run ones.
    chosen = [n for n in common if turns(sides["A"][1] / n) and turns(sides["B"][1] / n)]
    samples: dict[str, dict[str, list[float]]] = {"A": {}, "B": {}}
    for _ in range(args.rounds):
        for label, (tree, histories) in sides.items():
            measured = replay(tree, [histories / n for n in chosen], args.repeat)
            for name, ms in measured.items():
                samples[label].setdefault(name, []).extend(ms)
    median = {
        label: {n: statistics.median(v) for n, v in s.items()} for label, s in samples.items()
    }
    one = [n for n in chosen if turns(sides["A"][1] / n) == 1 == turns(sides["B"][1] / n)]
    longest = max(chosen, key=lambda n: turns(sides["A"][1] / n))
    print(f"{len(chosen)} conversation histories in both sets; {args.rounds} rounds x")
    print(f"{args.repeat} replays of each, alternating A and B; CPU ms, medians.\n")
    print("| Measure | A (before) | B (after) | B / A |")
    print("|---|---|---|---|")

    def row(name: str, a: float, b: float) -> None:
        print(f"| {name} | {a:.2f} | {b:.2f} | {b / a:.2f} |")

    new_a = statistics.median(median["A"][n] for n in one)
    new_b = statistics.median(median["B"][n] for n in one)
    row(f"new conversation, one turn (median of {len(one)})", new_a, new_b)
    slope = {}
    for label in ("A", "B"):
        n = turns(sides[label][1] / longest)
        slope[label] = (median[label][longest] - (new_a if label == "A" else new_b)) / (n - 1)
    row(f"per later turn ({longest.split('-')[0][5:45]}…, slope)", slope["A"], slope["B"])
    row("loading the workflow into a new sandbox", median["A"]["sandbox"], median["B"]["sandbox"])
    del median["A"]["sandbox"], median["B"]["sandbox"]
    total_a, total_b = sum(median["A"].values()), sum(median["B"].values())
    row("all common histories, summed", total_a, total_b)


if __name__ == "__main__":
    main()
