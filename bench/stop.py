"""How fast Stop stops: from the click to the app's last write, to the answer marked stopped,
and to the session back to `active`.

    .venv/bin/python -m bench.stop [--stops 20]

Each stop is a new mention whose long answer streams as a model would (12 characters every
30 ms); Stop is clicked once some of it shows (60 to 220 characters), then 0 to 237.5 ms
later (12.5 ms steps) so that clicks fall all over the app's 250 ms append interval. The
click is what Slack does (`Stack.click_stop`): the local Slack stops the thread's streams,
then the bot gets the signed agent_session_stopped. Times
come from the local Slack's recorded calls (`RecordedCall.at`, when each request arrived),
against the click:
  (a) the last chat.appendStream the app attempted on the stopped answer (how long it kept
      writing; 0 when its last append came before the click),
  (b) the chat.update that marks the answer "Stopped by …",
  (c) the agents.sessions.setStatus to `active`.
Medians and p99 from one run, on the real dev server with the worker and bot in this
process; it reports and never fails on a number.
"""

import argparse
import asyncio
import os
import statistics
import time

from bench.rig import percentile
from devtools.slack import RecordedCall
from devtools.stack import eventually, start_stack
from devtools.temporal_server import TemporalDevServer
from threadchat import texts

LONG = " ".join(f"word{i:04d}" for i in range(600))  # about 20 s of streaming
# The reply activity's append interval, and the step by which clicks move through it.
STREAM_FLUSH_SECONDS = 0.25
PHASE_STEP_S = 0.0125
PACING = {"stream_chunk_chars": 12, "stream_delay_s": 0.03, "responder": lambda body: LONG}


def _for_stream(call: RecordedCall, channel: str, ts: str) -> bool:
    return call.params.get("channel") == channel and call.params.get("ts") == ts


def _active(call: RecordedCall, channel: str, thread: str) -> bool:
    params = call.params
    return (
        call.method == "agents.sessions.setStatus"
        and params.get("channel_id") == channel
        and params.get("thread_ts") == thread
        and params.get("status") == "active"
        and call.error is None
    )


async def main(stops: int) -> None:
    server = TemporalDevServer()
    client = await server.start()
    stack = await start_stack(client, bedrock_options=PACING)
    line = texts.stopped_line("alice")
    runs: list[tuple[str, str, float]] = []  # (thread, answer ts, click)
    try:
        for i in range(stops):
            thread = await stack.mention(stack.channel, f"tell me everything, {i}")
            shown_at_least = 60 + 40 * (i % 5)

            def streaming(thread: str = thread, enough: int = shown_at_least) -> dict | None:
                for reply in stack.slack.bot_replies(stack.channel, thread):
                    if (
                        stack.slack.is_streaming(stack.channel, reply["ts"])
                        and len(reply["text"]) >= enough
                    ):
                        return reply
                return None

            answer = await eventually(streaming, 30, "an answer streaming")
            # The text grows only when an append lands, so a click right on seeing it would
            # always fall just after one; spread the clicks over the app's append interval.
            await asyncio.sleep((i * PHASE_STEP_S) % STREAM_FLUSH_SECONDS)
            clicked = time.monotonic()
            stopped, _ = await stack.click_stop(stack.channel, thread)
            assert stopped == [answer["ts"]], stopped
            runs.append((thread, answer["ts"], clicked))

            def settled(thread: str = thread, ts: str = answer["ts"]) -> bool:
                marked = stack.slack.message(stack.channel, ts)["text"].endswith(line)
                return marked and stack.slack.session(stack.channel, thread) == "active"

            await eventually(settled, 30, "the answer marked stopped and the session active")
        # Anything still in flight for the last stop lands before the calls are read.
        await asyncio.sleep(1)
        calls = list(stack.slack.calls)
    finally:
        await stack.close()
        server.stop()

    kept_writing, marked, active = [], [], []
    late_appends = refused_appends = stops_written_after = 0
    for thread, ts, clicked in runs:
        appends = [
            c
            for c in calls
            if c.method == "chat.appendStream" and _for_stream(c, stack.channel, ts)
        ]
        late = [c for c in appends if c.at >= clicked]
        stops_written_after += bool(late)
        late_appends += len(late)
        refused_appends += sum(c.error is not None for c in late)
        kept_writing.append(max(0.0, (appends[-1].at - clicked) * 1000) if appends else 0.0)
        mark = next(
            c
            for c in calls
            if c.method == "chat.update"
            and _for_stream(c, stack.channel, ts)
            and str(c.params.get("text", "")).endswith(line)
        )
        marked.append((mark.at - clicked) * 1000)
        back = next(c for c in calls if c.at >= clicked and _active(c, stack.channel, thread))
        active.append((back.at - clicked) * 1000)

    print(f"{stops} stops, each mid-stream\n")
    print("| From the Stop click to | p50 ms | p99 ms | max ms |")
    print("|---|---|---|---|")
    for label, values in (
        ("(a) the last chat.appendStream the app attempted", kept_writing),
        ('(b) the answer marked "Stopped by …" (chat.update)', marked),
        ("(c) the session `active` (agents.sessions.setStatus)", active),
    ):
        print(
            f"| {label} | {statistics.median(values):.1f} | {percentile(values, 0.99):.1f} "
            f"| {max(values):.1f} |"
        )
    print(
        f"\nAppends attempted after the click: {late_appends} (after {stops_written_after} of"
        f" {stops} stops), {refused_appends} of them refused by the local Slack"
        " (message_not_in_streaming_state)."
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stops", type=int, default=20)
    args = parser.parse_args()
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    asyncio.run(main(args.stops))
    os._exit(0)
