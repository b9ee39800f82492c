"""The threadchat benchmark: latency, throughput, tokens, history and memory, on the real stack.

    .venv/bin/python -m bench.run            # the full run (about 12 minutes on 2 cores)
    .venv/bin/python -m bench.run --quick    # a small run, to check that it works
    .venv/bin/python -m bench.run --from-json bench/results/latest.json  # redo the outputs

It drives the real stack as Slack would: signed HTTP events into the bot (`threadchat bot`),
the worker (`threadchat worker`), the Temporal dev server, and the local Slack and Bedrock
servers, the model with a fixed latency and streaming pace. It prints a Markdown table, writes
bench/results/latest.json and PNG plots, and docs/benchmarks.md with machine info (a quick run
writes to bench/results/quick/ and leaves the docs alone). It reports; it never fails on a
number.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import statistics
import sys
import time
import traceback
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from bench import report
from bench.rig import (
    LoadMeter,
    Rig,
    cpu_seconds,
    new_log_dir,
    proc_status,
    rss_mib,
    start_rig,
    summary,
)
from bench.script import ScriptedModel, body_tokens, is_summary_request, message_text
from bench.script import system_text as body_system
from bench.script import user_messages as scripted_user_messages
from bot.conversations import Conversations
from devtools.stack import ALICE, TEAM
from devtools.temporal_server import TemporalDevServer
from threadchat.config import Settings
from threadchat.model import ThreadRef, UserMessage
from workflows.conversation import HISTORY_SIZE_CAP, ConversationWorkflow

ROOT = Path(__file__).resolve().parent.parent
# The model of the latency measures: 300 ms to the first token, then 12 characters every 30 ms.
PACING = {"model_latency_s": 0.3, "stream_chunk_chars": 12, "stream_delay_s": 0.03}
NO_LATENCY = {"model_latency_s": 0.0, "stream_delay_s": 0.0}
DEFAULT_EVENT_CAP = 2000
TEMPORAL_SUGGESTED_EVENTS = 4096
TEMPORAL_SUGGESTED_BYTES = 4 * 1024 * 1024
CONFIRM_EVENT_CAP = 100  # the lowest THREADCHAT_HISTORY_EVENT_CAP the worker accepts
SEPARATE_MEASURES = "<!-- Measured by their own benchmarks; bench.run keeps what follows. -->"


@dataclass
class Plan:
    """How much of each measure to run."""

    sequential_threads: int = 100
    followups_per_thread: int = 1
    burst_rounds: tuple[tuple[int, int], ...] = ((50, 4), (200, 2))
    throughput_levels: tuple[int, ...] = (8, 32, 128)
    throughput_warmup_s: float = 4
    throughput_window_s: float = 12
    token_turns: int = 200
    history_turns: int = 30
    confirm_turns: int = 30
    memory_levels: tuple[int, ...] = (1, 1000, 10000)
    memory_window: int = 300
    # The whole run's time budget: the memory measure gets what the others leave of it.
    time_budget_s: float = 900


QUICK = Plan(
    sequential_threads=8,
    followups_per_thread=1,
    burst_rounds=((50, 1), (200, 1)),
    throughput_levels=(32,),
    throughput_warmup_s=2,
    throughput_window_s=5,
    token_turns=30,
    history_turns=8,
    confirm_turns=14,
    memory_levels=(1, 100, 300),
    memory_window=150,
    time_budget_s=240,
)


def log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


# -- 1 and 2: ack latency and orchestration overhead ----------------------------------------


async def latency(rig: Rig, plan: Plan) -> dict[str, Any]:
    """Ack latency at 1, 50 and 200 concurrent threads; the orchestration overhead of turns
    answered one at a time."""
    model_s = PACING["model_latency_s"]
    tracker = rig.tracker
    await rig.warm(10)
    # Warm-up: the first turns pay for imports, connections and caches in every process.
    for i in range(3):
        channel = rig.channel(i)
        ts, _, _ = await rig.mention(channel, "warm up")
        await tracker.wait_done(ts, 1)
    index = 3

    acks_1, acks_reply, first_turn, later_turn = [], [], [], []
    threads = []
    for _ in range(plan.sequential_threads):
        channel = rig.channel(index)
        index += 1
        ts, sent, ack = await rig.mention(channel, "what is the plan for today?")
        await tracker.wait_done(ts, 1)
        acks_1.append(ack)
        first_turn.append((tracker.visible[ts][0] - sent) * 1000 - model_s * 1000)
        threads.append((channel, ts))
        await asyncio.sleep(0.05)
    for turn in range(plan.followups_per_thread):
        for channel, ts in threads:
            seen = len(tracker.visible[ts])
            sent, ack = await rig.say(channel, ts, f"and after that, step {turn + 2}?")
            await tracker.wait_done(ts, turn + 2)
            acks_reply.append(ack)
            later_turn.append((tracker.visible[ts][seen] - sent) * 1000 - model_s * 1000)
            await asyncio.sleep(0.05)
    rig.check()
    log(
        f"sequential: ack p50 {summary(acks_1)['p50']:.1f} ms, overhead p50 "
        f"{summary(later_turn)['p50']:.1f} ms (later turns)"
    )

    levels: dict[str, Any] = {"1": {**summary(acks_1), "samples": acks_1}}
    for concurrency, rounds in plan.burst_rounds:
        await rig.warm(concurrency)
        samples, drains, bot_cpu = [], [], []
        for _ in range(rounds):
            batch = []
            for _ in range(concurrency):
                channel = rig.channel(index)
                index += 1
                batch.append(channel)
            started, cpu = time.perf_counter(), cpu_seconds(rig.bot.pid)
            results = await asyncio.gather(*(rig.mention(c, "burst") for c in batch))
            bot_cpu.append((cpu_seconds(rig.bot.pid) - cpu) * 1000 / concurrency)
            samples += [ack for _, _, ack in results]
            await asyncio.gather(*(tracker.wait_done(ts, 1, timeout=180) for ts, _, _ in results))
            drains.append(time.perf_counter() - started)
            await asyncio.sleep(1)
        rig.check()
        levels[str(concurrency)] = {
            **summary(samples),
            "samples": samples,
            "all_replied_s": drains,
            "bot_cpu_ms_per_event": statistics.median(bot_cpu),
        }
        log(f"burst of {concurrency}: ack p99 {levels[str(concurrency)]['p99']:.1f} ms")
    temporal_only = await signal_with_start_bursts(rig, plan)
    return {
        "model": PACING,
        "ack": levels,
        "signal_with_start_alone": temporal_only,
        "ack_thread_reply": {**summary(acks_reply), "samples": acks_reply},
        "overhead_later": {**summary(later_turn), "samples": later_turn},
        "overhead_first": {**summary(first_turn), "samples": first_turn},
        "http_failures": list(rig.sender.failures),
    }


async def signal_with_start_bursts(rig: Rig, plan: Plan) -> dict[str, Any]:
    """The Temporal part of an ack alone: the bot's RPC, signal-with-start, in the same bursts,
    from this process to a task queue no worker polls."""
    conversations = Conversations(rig.stack.client, f"bench-unpolled-{uuid.uuid4().hex[:8]}")
    server_pid = rig.server.process.pid

    async def start(channel: str, index: int) -> float:
        thread = ThreadRef(TEAM, channel, f"1700000000.{index:06d}")
        began = time.perf_counter()
        await conversations.start_or_continue(
            thread, UserMessage(thread.thread_ts, ALICE, "hi", may_start=True)
        )
        return (time.perf_counter() - began) * 1000

    out: dict[str, Any] = {}
    channel = "CUNPOLLED"
    index = 0
    for concurrency, rounds in ((1, 20), *plan.burst_rounds):
        samples, server_cpu = [], []
        for _ in range(rounds if concurrency > 1 else 1):
            count = concurrency if concurrency > 1 else rounds
            cpu = cpu_seconds(server_pid)
            if concurrency == 1:
                batch = [await start(channel, index + i) for i in range(count)]
            else:
                batch = await asyncio.gather(*(start(channel, index + i) for i in range(count)))
            server_cpu.append((cpu_seconds(server_pid) - cpu) * 1000 / count)
            index += count
            samples += batch
            await asyncio.sleep(0.5)
        out[str(concurrency)] = {
            **summary(samples),
            "samples": samples,
            "server_cpu_ms_per_start": statistics.median(server_cpu),
        }
    return out


# -- 3: throughput ----------------------------------------------------------------------------


async def throughput(rig: Rig, plan: Plan, server: TemporalDevServer) -> dict[str, Any]:
    """Closed loop: each simulated user sends the next message once the last was answered."""
    tracker = rig.tracker
    levels = []
    base = 0
    pids = {
        "bench (Slack, Bedrock, load)": os.getpid(),
        "bot": rig.bot.pid,
        "worker": rig.worker.pid,
        "dev server": server.process.pid,
    }
    for concurrency in plan.throughput_levels:
        await rig.warm(concurrency)
        stop = asyncio.Event()
        acks: list[tuple[float, float]] = []
        turn_ms: list[tuple[float, float]] = []

        async def user(
            i: int, base: int = base, stop: asyncio.Event = stop, acks=acks, turn_ms=turn_ms
        ) -> None:
            channel = rig.channel(base + i)
            ts, _, _ = await rig.mention(channel, "go")
            count = 1
            await tracker.wait_done(ts, count, timeout=120)
            while not stop.is_set():
                sent, ack = await rig.say(channel, ts, f"turn {count + 1}")
                acks.append((sent, ack))
                count += 1
                done_at = await tracker.wait_done(ts, count, timeout=120)
                turn_ms.append((sent, (done_at - sent) * 1000))

        base += concurrency
        tasks = [asyncio.create_task(user(i)) for i in range(concurrency)]
        await asyncio.sleep(plan.throughput_warmup_s)
        start, cpu_start = time.perf_counter(), {k: cpu_seconds(p) for k, p in pids.items()}
        meter = LoadMeter()
        await asyncio.sleep(plan.throughput_window_s)
        end, cpu_end = time.perf_counter(), {k: cpu_seconds(p) for k, p in pids.items()}
        load = meter.read()
        stop.set()
        await asyncio.gather(*tasks)
        rig.check()
        window = end - start
        done = [t for t in tracker.completions if start <= t < end]
        per_second = [0] * max(1, int(window))  # whole seconds only
        for t in done:
            if int(t - start) < len(per_second):
                per_second[int(t - start)] += 1
        window_acks = [ack for sent, ack in acks if start <= sent < end]
        level = {
            "threads": concurrency,
            "window_s": window,
            "turns": len(done),
            "turns_per_s": len(done) / window,
            "per_second": per_second,
            "cpu_cores": {k: (cpu_end[k] - cpu_start[k]) / window for k in pids},
            "cpu_ms_per_turn": {
                k: (cpu_end[k] - cpu_start[k]) * 1000 / max(1, len(done)) for k in pids
            },
            "other_cores": load["other_cores"],
            "ack_under_load": summary(window_acks),
            "reply_ms": summary([ms for sent, ms in turn_ms if start <= sent < end]),
        }
        levels.append(level)
        log(
            f"throughput with {concurrency} threads: {level['turns_per_s']:.1f} turns/s; "
            + ", ".join(f"{k} {v:.2f}" for k, v in level["cpu_cores"].items())
            + " cores"
        )
    best = max(levels, key=lambda level: level["turns_per_s"])
    return {"levels": levels, "ceiling_turns_per_s": best["turns_per_s"], "at": best["threads"]}


# -- 5: history ---------------------------------------------------------------------------


async def settled_description(client: Client, workflow_id: str):
    """describe() once the conversation is idle: no activity pending, history not growing."""
    handle = client.get_workflow_handle(workflow_id)
    deadline = time.monotonic() + 10
    previous = None
    while True:
        description = await handle.describe()
        key = (description.run_id, description.history_length)
        idle = not description.raw_description.pending_activities
        if (idle and key == previous) or time.monotonic() > deadline:
            return description
        previous = key
        await asyncio.sleep(0.1)


async def settled_history(client: Client, workflow_id: str, run_id: str | None = None):
    """The history once the workflow is waiting again (its inactivity timer started)."""
    handle = client.get_workflow_handle(workflow_id, run_id=run_id)
    deadline = time.monotonic() + 10
    last = -1
    while True:
        history = await handle.fetch_history()
        events = history.events
        waiting = events and events[-1].event_type == EventType.EVENT_TYPE_TIMER_STARTED
        if (waiting and len(events) == last) or time.monotonic() > deadline:
            return history
        last = len(events)
        await asyncio.sleep(0.1)


def history_bytes(history) -> int:
    return sum(event.ByteSize() for event in history.events)


def turns_in(history) -> int:
    """Turns answered in one run: completed reply activities."""
    names = {}
    for event in history.events:
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            attributes = event.activity_task_scheduled_event_attributes
            names[event.event_id] = attributes.activity_type.name
    return sum(
        1
        for event in history.events
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED
        and names.get(event.activity_task_completed_event_attributes.scheduled_event_id)
        in ("stream_reply", "generate_reply")
    )


async def runs_of(client: Client, workflow_id: str) -> list[dict[str, Any]]:
    """Every run of a conversation (continue-as-new starts a new one), oldest first."""
    found = [run async for run in client.list_workflows(f"WorkflowId = '{workflow_id}'")]
    runs = []
    for run in sorted(found, key=lambda r: r.start_time):
        history = await client.get_workflow_handle(workflow_id, run_id=run.run_id).fetch_history()
        runs.append(
            {
                "run_id": run.run_id,
                "events": len(history.events),
                "bytes": history_bytes(history),
                "turns": turns_in(history),
                "continued_as_new": history.events[-1].event_type
                == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW,
            }
        )
    return runs


def turns_before(limit: float, first: float, per_turn: float, seen_early: float = 0) -> int:
    """Turns answered before the history reaches `limit`: the check runs after each turn,
    seeing the history up to that workflow task's start (`seen_early` fewer)."""
    if per_turn <= 0:
        return 0
    return max(1, math.ceil((limit + seen_early - first) / per_turn) + 1)


async def history(rig: Rig, client: Client, plan: Plan) -> dict[str, Any]:
    """Events and bytes per turn of a conversation of short messages."""
    channel = rig.channel(10_000_000)
    ts, _, _ = await rig.mention(channel, "turn 1")
    await rig.tracker.wait_done(ts, 1)
    workflow_id = rig.workflow_id(channel, ts)
    lengths, sizes = [], []
    for turn in range(1, plan.history_turns + 1):
        if turn > 1:
            await rig.say(channel, ts, f"turn {turn}")
            await rig.tracker.wait_done(ts, turn)
        settled = await settled_history(client, workflow_id)
        lengths.append(len(settled.events))
        # The size as Temporal counts it, which is what the workflow's size cap looks at.
        description = await client.get_workflow_handle(workflow_id).describe()
        sizes.append(description.raw_info.history_size_bytes)
    turns = len(lengths) - 1
    per_turn = (lengths[-1] - lengths[0]) / turns
    bytes_per_turn = (sizes[-1] - sizes[0]) / turns
    size_fit = quadratic_fit(sizes)
    # The workflow checks the length in the task that follows a reply: the task's completion
    # and the new inactivity timer are not in the history yet.
    early = 2
    return {
        "turns": len(lengths),
        "events_by_turn": lengths,
        "bytes_by_turn": sizes,
        "first_turn_events": lengths[0],
        "events_per_turn": per_turn,
        "first_turn_bytes": sizes[0],
        "bytes_per_turn": bytes_per_turn,
        "turns_before_cap": {
            str(cap): turns_before(cap, lengths[0], per_turn, early)
            for cap in (CONFIRM_EVENT_CAP, DEFAULT_EVENT_CAP, TEMPORAL_SUGGESTED_EVENTS)
        },
        # Each reply activity's input carries the prompt, which grows with the conversation
        # (up to the context budget), so the size grows quadratically at first.
        "bytes_fit": size_fit,
        "turns_before_bytes": {
            str(limit): turns_until(size_fit, limit)
            for limit in (HISTORY_SIZE_CAP, TEMPORAL_SUGGESTED_BYTES)
        },
    }


def quadratic_fit(values: list[float]) -> list[float]:
    """Least-squares a*t^2 + b*t + c over turns t = 1, 2, ...; returns [a, b, c]."""
    import numpy

    turns = numpy.arange(1, len(values) + 1)
    return [float(v) for v in numpy.polyfit(turns, numpy.array(values, dtype=float), 2)]


def turns_until(fit: list[float], limit: float, most: int = 100_000) -> int | None:
    """The first turn at which the fitted curve reaches `limit` (None beyond `most`)."""
    a, b, c = fit
    for turn in range(1, most):
        if a * turn * turn + b * turn + c >= limit:
            return turn
    return None


async def confirm_cap(rig: Rig, client: Client, plan: Plan) -> dict[str, Any]:
    """A conversation on a worker with a low history_event_cap: where it really continues."""
    channel = rig.channel(0)
    ts, _, _ = await rig.mention(channel, "turn 1")
    await rig.tracker.wait_done(ts, 1)
    workflow_id = rig.workflow_id(channel, ts)
    for turn in range(2, plan.confirm_turns + 1):
        # As in the history measure: the next message comes once the workflow waits again.
        await settled_history(client, workflow_id)
        await rig.say(channel, ts, f"turn {turn}")
        await rig.tracker.wait_done(ts, turn)
    await settled_history(client, workflow_id)
    runs = await runs_of(client, workflow_id)
    return {"cap": CONFIRM_EVENT_CAP, "turns": plan.confirm_turns, "runs": runs}


# -- 4: input tokens ------------------------------------------------------------------------


async def tokens(rig: Rig, client: Client, model: ScriptedModel, plan: Plan) -> dict[str, Any]:
    """A scripted long conversation: ours (the real workflow's prompts) against a naive
    full-history resend of the same transcript."""
    texts = scripted_user_messages(plan.token_turns)
    channel = rig.channel(0)
    started = time.perf_counter()
    ts, _, _ = await rig.mention(channel, texts[0])
    await rig.tracker.wait_done(ts, 1)
    workflow_id = rig.workflow_id(channel, ts)
    runs_seen: list[str] = []
    history_by_turn = []
    for turn, text in enumerate(texts, start=1):
        if turn > 1:
            await rig.say(channel, ts, text)
            await rig.tracker.wait_done(ts, turn)
        # The next message comes once the conversation waits again, as a person's would.
        description = await settled_description(client, workflow_id)
        if description.run_id not in runs_seen:
            runs_seen.append(description.run_id)
        history_by_turn.append(
            {
                "run": len(runs_seen),
                "events": description.history_length,
                "bytes": description.raw_info.history_size_bytes,
            }
        )
        if turn % 50 == 0:
            log(f"tokens: turn {turn}")
    elapsed = time.perf_counter() - started
    await settled_history(client, workflow_id)
    status = await client.get_workflow_handle(workflow_id).query(ConversationWorkflow.status)

    requests = sorted(
        (r for r in rig.bedrock.requests if r.operation in ("converse", "converse-stream")),
        key=lambda r: r.at,
    )
    ours, summaries, kept_turns, notes = [], [], [], []
    transcript: list[str] = []
    naive = []
    base_system = ""
    for request in requests:
        body = request.body
        if is_summary_request(body):
            summaries.append({"after_turn": len(ours), "input_tokens": body_tokens(body)})
            continue
        messages = body.get("messages") or []
        question = message_text(messages[-1])
        if not ours:
            base_system = body_system(body)
        ours.append(body_tokens(body))
        kept_turns.append((len(messages) - 1) // 2)
        notes.append(len(body_system(body)) - len(base_system))
        transcript.append(question)
        naive.append(math.ceil(len("\n".join([base_system, *transcript])) / 4))
        transcript.append(model.replies.get(question, ""))
    summary_total = sum(s["input_tokens"] for s in summaries)
    ours_total = sum(ours) + summary_total
    naive_total = sum(naive)
    return {
        "turns": len(ours),
        "budget_tokens": Settings().conversation.context_budget_tokens,
        "budget_source": "the default, THREADCHAT_CONTEXT_TOKENS unset",
        "seconds": elapsed,
        "ours_by_turn": ours,
        "naive_by_turn": naive,
        "kept_turns_by_turn": kept_turns,
        "system_notes_chars_by_turn": notes,
        "summaries": summaries,
        "ours_reply_total": sum(ours),
        "ours_summary_total": summary_total,
        "ours_total": ours_total,
        "naive_total": naive_total,
        "ratio_naive_to_ours": naive_total / ours_total if ours_total else float("nan"),
        "workflow_reported_input_tokens": status.input_tokens,
        "history_by_turn": history_by_turn,
        "runs": await runs_of(client, workflow_id),
    }


# -- 6: worker memory ----------------------------------------------------------------------


async def memory(
    rig: Rig, client: Client, plan: Plan, server: TemporalDevServer, deadline: float
) -> dict:
    """Worker RSS with idle open conversations, opened by signal-with-start in batches."""
    conversations = Conversations(client, rig.queue)
    await asyncio.sleep(3)  # the worker connects and starts polling
    worker_pid, server_pid = rig.worker.pid, server.process.pid

    def sample(conversations_open: int, **extra: Any) -> dict[str, Any]:
        status = proc_status(worker_pid)
        return {
            "conversations": conversations_open,
            "worker_rss_mib": status.get("VmRSS", 0) / 1024,
            "worker_peak_rss_mib": status.get("VmHWM", 0) / 1024,
            "server_rss_mib": rss_mib(server_pid),
            "bench_rss_mib": rss_mib(os.getpid()),
            "worker_cpu_s": cpu_seconds(worker_pid),
            **extra,
        }

    samples = [sample(0, seconds=0.0)]
    log(f"memory: idle worker {samples[0]['worker_rss_mib']:.0f} MiB")
    window = asyncio.Semaphore(plan.memory_window)
    budget = deadline - time.monotonic()
    log(f"memory: {budget:.0f} s left of the run's time budget")
    opened = 0
    failures: list[str] = []

    async def open_one(index: int) -> None:
        try:
            channel = rig.channel(index)
            message = rig.slack.add_message(channel, user=ALICE, text="<@U0BOT> hello")
            thread = ThreadRef(TEAM, channel, message["ts"])
            await conversations.start_or_continue(
                thread, UserMessage(message["ts"], ALICE, "hello", may_start=True)
            )
            await rig.tracker.wait_done(message["ts"], 1, timeout=300)
        except Exception as err:
            failures.append(f"{type(err).__name__}: {err}")
        finally:
            window.release()

    out_of_time = False
    for level in plan.memory_levels:
        started, cpu_start = time.perf_counter(), cpu_seconds(worker_pid)
        tasks = []
        begin = opened
        while opened < level:
            await window.acquire()
            if time.monotonic() > deadline:
                window.release()
                out_of_time = True
                break
            tasks.append(asyncio.create_task(open_one(opened)))
            opened += 1
        await asyncio.gather(*tasks)
        seconds = time.perf_counter() - started
        rig.check()
        await asyncio.sleep(3)  # let the last workflow tasks finish and the worker go idle
        new = opened - begin
        samples.append(
            sample(
                opened,
                target=level,
                seconds=seconds,
                opened_per_s=new / seconds if seconds else 0,
                worker_cpu_ms_per_conversation=(
                    (cpu_seconds(worker_pid) - cpu_start) * 1000 / new if new else 0
                ),
            )
        )
        log(
            f"memory: {opened} conversations in {seconds:.0f} s "
            f"({samples[-1]['opened_per_s']:.1f}/s), worker {samples[-1]['worker_rss_mib']:.0f}"
            f" MiB, server {samples[-1]['server_rss_mib']:.0f} MiB"
        )
        if out_of_time:
            break
    return {
        "samples": samples,
        "reached": opened,
        "target": plan.memory_levels[-1],
        "out_of_time": out_of_time,
        "budget_s": budget,
        "failures": failures[:20],
        "failure_count": len(failures),
        "worker_max_cached_workflows": 1000,
    }


# -- The run --------------------------------------------------------------------------------


async def phase(results: dict, name: str, run) -> None:
    started = time.perf_counter()
    meter = LoadMeter()
    log(f"{name}: starting (load average {os.getloadavg()[0]:.1f})")
    try:
        results[name] = await run()
    except Exception as err:
        traceback.print_exc()
        results[name] = {"error": f"{type(err).__name__}: {err}"}
    results.setdefault("phase_seconds", {})[name] = time.perf_counter() - started
    load = results.setdefault("load", {})[name] = meter.read()
    log(
        f"{name}: done in {results['phase_seconds'][name]:.0f} s; the machine was busy "
        f"{load['machine_cores_busy']:.2f} cores, {load['other_cores']:.2f} of them not ours"
    )


async def main(plan: Plan, quick: bool, out_dir: Path, docs: Path | None) -> dict:
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    started = time.perf_counter()
    # Opening conversations stops here, leaving time to settle, stop and write the results.
    deadline = time.monotonic() + plan.time_budget_s - 45
    log_dir = new_log_dir()
    log(f"process logs in {log_dir}")
    results: dict[str, Any] = {
        "quick": quick,
        "machine": report.machine_info(),
        "plan": plan.__dict__,
    }

    server = TemporalDevServer()
    client = await server.start()
    try:

        async def with_rig(run, **options):
            rig = await start_rig(server, client, log_dir, **options)
            try:
                return await run(rig)
            finally:
                await rig.close()

        await phase(
            results,
            "latency",
            lambda: with_rig(lambda rig: latency(rig, plan), bedrock_options=PACING),
        )

        async def throughput_and_history(rig: Rig) -> dict:
            measured = await throughput(rig, plan, server)
            measured["history"] = await history(rig, client, plan)
            return measured

        await phase(
            results,
            "throughput",
            lambda: with_rig(throughput_and_history, bedrock_options=NO_LATENCY),
        )
        if "history" in results.get("throughput", {}):
            results["history"] = results["throughput"].pop("history")
        await phase(
            results,
            "history_confirm",
            lambda: with_rig(
                lambda rig: confirm_cap(rig, client, plan),
                bedrock_options=NO_LATENCY,
                worker_env={"THREADCHAT_HISTORY_EVENT_CAP": str(CONFIRM_EVENT_CAP)},
            ),
        )
        model = ScriptedModel()
        await phase(
            results,
            "tokens",
            lambda: with_rig(
                lambda rig: tokens(rig, client, model, plan),
                bedrock_options={**NO_LATENCY, "stream_chunk_chars": 400, "responder": model},
            ),
        )
    finally:
        server.stop()

    # A fresh dev server, so its memory is that of these conversations alone.
    memory_server = TemporalDevServer()
    memory_client = await memory_server.start()
    try:
        await phase(
            results,
            "memory",
            lambda: with_memory_rig(memory_server, memory_client, log_dir, plan, deadline),
        )
    finally:
        memory_server.stop()

    results["history_size_cap_bytes"] = HISTORY_SIZE_CAP
    results["seconds"] = time.perf_counter() - started
    results["finished"] = report.now()
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / ("quick.json" if quick else "latest.json")).write_text(
        json.dumps(results, indent=1, default=str) + "\n"
    )
    write_outputs(results, out_dir, docs)
    log(f"finished in {results['seconds']:.0f} s; results in {out_dir}")
    return results


def write_outputs(results: dict[str, Any], out_dir: Path, docs: Path | None) -> None:
    """The table (printed), the plots and the docs page, from a run's results."""
    out_dir.mkdir(parents=True, exist_ok=True)
    table = report.summary_table(results)
    plots = report.plots(results, out_dir)
    if docs is not None:
        # Measures of their own (bench.queue, bench.burst, bench.caching) follow the marker,
        # and are kept.
        kept = docs.read_text().partition(SEPARATE_MEASURES)[2] if docs.exists() else ""
        page = report.document(results, table, plots, docs.parent)
        docs.write_text(page + (f"\n{SEPARATE_MEASURES}{kept}" if kept else ""))
    print(table)


async def with_memory_rig(
    server: TemporalDevServer, client: Client, log_dir: Path, plan: Plan, deadline: float
):
    rig = await start_rig(server, client, log_dir, bot=False, bedrock_options=NO_LATENCY)
    try:
        return await memory(rig, client, plan, server, deadline)
    finally:
        await rig.close()


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small run, to check it works")
    parser.add_argument("--out", type=Path, help="where the JSON and plots go")
    parser.add_argument("--no-docs", action="store_true", help="leave docs/benchmarks.md alone")
    parser.add_argument(
        "--from-json", type=Path, help="no run: redo the table, plots and docs from its results"
    )
    args = parser.parse_args()
    plan = QUICK if args.quick else Plan()
    out = args.out or ROOT / "bench" / "results" / ("quick" if args.quick else "")
    docs = None if args.quick or args.no_docs else ROOT / "docs" / "benchmarks.md"
    if args.from_json:
        write_outputs(json.loads(args.from_json.read_text()), out, docs)
        return
    asyncio.run(main(plan, args.quick, out, docs))
    # The Temporal SDK can abort at interpreter shutdown; the results are written by now.
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    cli()
