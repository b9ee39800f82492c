"""What one tool round costs a turn: mention to finished answer, plain against one round.

    .venv/bin/python -m bench.tools [--turns 30] [--warmup 3]

One stack on the real dev server, with our sample MCP server (the team directory) as its own
process over Streamable HTTP and every channel given its tools. Both kinds of turn run in the
same channel, so both send the same `toolConfig`; they alternate, each a new mention (a new
thread):
  plain:     "hello n": the model answers at once;
  one round: "use find_person name=alice n": the model calls `directory__find_person`, the
             workflow runs it (the call_tool activity on the tools queue), the model answers
             from the result.
The model and the tool answer at zero latency (local Bedrock `stream_delay_s` 0,
`model_latency_s` 0; find_person reads a dict), so what is left is the orchestration. A turn
is timed from just before the mention's event is sent to the answer's `chat.stopStream`
arriving at the local Slack (`RecordedCall.at`), and split at the model calls' arrival at the
local Bedrock (`RecordedRequest.at`, the same clock), the task card's `chat.startStream` and
the tool's run (the sample server's log, wall clock turned monotonic). The first `--warmup`
of each kind are left out. It reports p50/p99 and never fails on a number.
"""

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path

from activities.tools import open_session
from bench.rig import percentile
from devtools.sample_mcp import SampleMcpProcess
from devtools.stack import Stack, eventually, is_title_request, start_stack
from devtools.temporal_server import TemporalDevServer
from threadchat.tools_file import ServerConfig

KINDS = ("plain", "one round")


def tools_file(folder: Path, url: str) -> str:
    path = folder / "tools.yaml"
    path.write_text(
        f"servers:\n  directory:\n    url: {url}\n    timeout: 20s\nchannels:\n"
        "  default: [directory]\n"
    )
    return str(path)


def _model_calls(stack: Stack, after: float) -> list[float]:
    return sorted(
        r.at
        for r in stack.bedrock.requests
        if r.operation in ("converse", "converse-stream")
        and r.at >= after
        and not is_title_request(r.body)  # the thread's title, made after the answer
    )


async def one_turn(
    stack: Stack, directory: SampleMcpProcess, kind: str, n: int
) -> dict[str, float]:
    """One mention answered; its times in ms from the mention: each model call, the task
    card shown, the tool run, the end."""
    text = f"hello {n}" if kind == "plain" else f"use find_person name=alice {n}"
    started = time.monotonic()
    thread = await stack.mention(stack.channel, text)

    def finished() -> float | None:
        if stack.slack.session(stack.channel, thread) != "active":
            return None
        replies = stack.slack.bot_replies(stack.channel, thread)
        ends = [
            c.at
            for c in stack.slack.calls_to("chat.stopStream")
            if c.error is None and c.params.get("ts") in {r["ts"] for r in replies}
        ]
        return ends[-1] if ends else None

    ended = await eventually(finished, 30, f"the answer to {text!r}")
    calls = _model_calls(stack, started)
    rounds = 1 if kind == "plain" else 2
    if len(calls) != rounds:
        raise RuntimeError(f"{text!r}: {len(calls)} model calls, expected {rounds}")
    times = {"total": (ended - started) * 1000, "first model call": (calls[0] - started) * 1000}
    if kind != "plain":
        times["second model call"] = (calls[1] - started) * 1000
        [card] = [
            c.at
            for c in stack.slack.calls_to("chat.startStream")
            if c.at >= started and c.params.get("thread_ts") == thread
        ]
        times["task card shown"] = (card - started) * 1000
        # The server logs in wall-clock time; both clocks are this machine's.
        to_monotonic = time.monotonic() - time.time()
        ran = directory.calls("find_person")[-1]["at"] + to_monotonic
        times["tool ran"] = (ran - started) * 1000
    return times


async def mcp_call(url: str) -> float:
    """One find_person as the call_tool activity makes it (a session opened, initialized,
    the call, closed), outside Temporal; in ms."""
    started = time.monotonic()
    async with open_session(ServerConfig(name="directory", url=url)) as session:
        await session.call_tool("find_person", {"name": "alice"})
    return (time.monotonic() - started) * 1000


async def main(turns: int, warmup: int) -> None:
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    folder = Path(tempfile.mkdtemp(prefix="bench-tools-"))
    directory = SampleMcpProcess(folder / "calls.jsonl")
    server = TemporalDevServer()
    results: dict[str, list[dict[str, float]]] = {kind: [] for kind in KINDS}
    try:
        await directory.start()
        client = await server.start()
        options = {"stream_delay_s": 0, "model_latency_s": 0}
        stack = await start_stack(
            client, tools_file=tools_file(folder, directory.url), bedrock_options=options
        )
        try:
            for n in range(warmup + turns):
                for kind in KINDS:
                    times = await one_turn(stack, directory, kind, n)
                    if n >= warmup:
                        results[kind].append(times)
        finally:
            await stack.close()
        finds = len(directory.calls("find_person"))
        mcp = [await mcp_call(directory.url) for _ in range(turns)]
    finally:
        server.stop()
        directory.stop()

    def p(kind: str, part: str, q: float) -> float:
        values = [t[part] for t in results[kind]]
        return statistics.median(values) if q == 0.5 else percentile(values, q)

    print(f"{turns} turns of each kind, interleaved ({warmup} of each before, not counted);")
    print(f"the directory answered find_person {finds} times\n")
    print("| Turn (mention -> answer finished) | p50 ms | p99 ms |")
    print("|---|---|---|")
    for kind in KINDS:
        print(f"| {kind} | {p(kind, 'total', 0.5):.1f} | {p(kind, 'total', 0.99):.1f} |")
    overhead = p("one round", "total", 0.5) - p("plain", "total", 0.5)
    print(f"\nOne tool round adds {overhead:+.1f} ms to a turn's p50.\n")
    print("| One-round turn, from the mention to | p50 ms | p99 ms |")
    print("|---|---|---|")
    round_ = [
        ("the first model call (arrives at the local Bedrock)", "first model call"),
        ("the task card shown (`chat.startStream`)", "task card shown"),
        ("the tool ran (the server logs the call)", "tool ran"),
        ("the second model call", "second model call"),
        ("the answer finished", "total"),
    ]
    for label, part in round_:
        print(f"| {label} | {p('one round', part, 0.5):.1f} | {p('one round', part, 0.99):.1f} |")
    between = [t["second model call"] - t["first model call"] for t in results["one round"]]
    print(
        f"\nBetween the two model calls (the tool round: the first call's stream, its task "
        f"card, the call_tool activity, the next workflow task): p50 "
        f"{statistics.median(between):.1f} ms, p99 {percentile(between, 0.99):.1f} ms."
    )
    print(
        f"Of which the MCP session and call alone (opened, initialized, called, closed, as the"
        f" activity does, outside Temporal, {turns} times after the turns): p50 "
        f"{statistics.median(mcp):.1f} ms, p99 {percentile(mcp, 0.99):.1f} ms."
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main(args.turns, args.warmup))
    os._exit(0)
