"""What the Bedrock task queue costs a turn: the same turns answered with the model calls on
their own queue (as every new conversation now runs) and on the workflow's queue (as
conversations from before it still run), interleaved in one run, with `threadchat worker` and
`threadchat bot` in their own processes against one dev server.

    .venv/bin/python -m bench.queue [--threads 10] [--turns 10] [--gap 0.3]

A turn is timed from the signed Slack event leaving this process to the reply's stream
stopping in the local Slack, with a zero-latency model: all of it is orchestration. `--gap`
is the pause before the next turn (of another conversation). It also reports how long the
reply activity waited from scheduled to started, from the histories. It reports; it never
fails on a number.
"""

import argparse
import asyncio
import dataclasses
import os
import statistics
from datetime import UTC, datetime

from temporalio.common import SearchAttributePair, TypedSearchAttributes

from bench.rig import Rig, new_log_dir, percentile, start_rig
from devtools.stack import ALICE, TEAM
from devtools.temporal_server import TemporalDevServer
from threadchat.ids import conversation_id
from threadchat.model import ConversationStart, ConversationState, ThreadRef, UserMessage
from threadchat.temporal import CONVERSATION_STARTED, SLACK_CHANNEL, SLACK_PARTICIPANTS
from workflows.conversation import ConversationWorkflow

NAMES = {
    "one": "model calls on the workflow's queue",
    "separate": "model calls on the Bedrock queue",
}


async def open_on_one_queue(rig: Rig, channel: str, thread_ts: str) -> None:
    """A conversation whose carried settings predate the Bedrock queue: its model calls go to
    the workflow's own queue, as in every conversation started before it existed."""
    stack = rig.stack
    settings = dataclasses.replace(
        stack.settings.conversation, inference=stack.settings.bedrock.inference()
    )
    thread = ThreadRef(TEAM, channel, thread_ts)
    state = ConversationState(thread=thread, settings=settings, conversation_key=thread_ts)
    await stack.client.start_workflow(
        ConversationWorkflow.run,
        ConversationStart(thread=thread, state=state),
        id=conversation_id(TEAM, channel, thread_ts),
        task_queue=rig.queue,
        start_signal="user_message",
        start_signal_args=[UserMessage(thread_ts, ALICE, "hello", may_start=True)],
        search_attributes=TypedSearchAttributes(
            [
                SearchAttributePair(SLACK_CHANNEL, channel),
                SearchAttributePair(SLACK_PARTICIPANTS, [ALICE]),
                SearchAttributePair(CONVERSATION_STARTED, datetime.now(UTC)),
            ]
        ),
    )


async def reply_waits(rig: Rig, channel: str, ts: str, variant: str) -> list[float]:
    """Scheduled-to-started of each reply activity in the conversation's history (ms)."""
    history = await rig.stack.client.get_workflow_handle(
        conversation_id(TEAM, channel, ts)
    ).fetch_history()
    bedrock_queue = f"{rig.queue}-bedrock"
    scheduled, waits = {}, []
    for event in history.events:
        at = event.event_time.ToDatetime().timestamp()
        if event.HasField("activity_task_scheduled_event_attributes"):
            attrs = event.activity_task_scheduled_event_attributes
            if attrs.activity_type.name == "stream_reply":
                assert (attrs.task_queue.name == bedrock_queue) == (variant == "separate")
                scheduled[event.event_id] = at
        elif event.HasField("activity_task_started_event_attributes"):
            started = event.activity_task_started_event_attributes
            if started.scheduled_event_id in scheduled:
                waits.append((at - scheduled[started.scheduled_event_id]) * 1000)
    return waits


def row(name: str, values: list[float]) -> str:
    return (
        f"| {name} | {statistics.median(values):.1f} | {percentile(values, 0.99):.1f} "
        f"| {len(values)} |"
    )


async def main(threads: int, turns: int, gap: float) -> None:
    server = TemporalDevServer()
    client = await server.start()
    rig = await start_rig(server, client, new_log_dir())
    try:
        channel = rig.channel(0)
        conversations: list[tuple[str, str]] = []  # (variant, thread ts)
        for i in range(threads):
            ts, _, _ = await rig.mention(channel, f"separate queue {i}")
            conversations.append(("separate", ts))
            root = rig.slack.add_message(channel, user=ALICE, text=f"one queue {i}")
            await open_on_one_queue(rig, channel, root["ts"])
            conversations.append(("one", root["ts"]))
        for _, ts in conversations:
            await rig.tracker.wait_done(ts, 1)
        samples: dict[str, list[float]] = {"separate": [], "one": []}
        for turn in range(2, turns + 2):
            for variant, ts in conversations:  # interleaved: both see the same machine
                sent, _ = await rig.say(channel, ts, f"turn {turn}")
                done = await rig.tracker.wait_done(ts, turn)
                samples[variant].append((done - sent) * 1000)
                await asyncio.sleep(gap)
        waits: dict[str, list[float]] = {"separate": [], "one": []}
        for variant, ts in conversations:
            waits[variant] += await reply_waits(rig, channel, ts, variant)
        rig.check()

        print(f"Turns {gap:.2f} s apart, model latency 0.\n")
        print("| Measure | p50 ms | p99 ms | n |")
        print("|---|---|---|---|")
        for variant in ("one", "separate"):
            print(row(f"turn, event sent to reply finished: {NAMES[variant]}", samples[variant]))
        for variant in ("one", "separate"):
            print(row(f"reply activity scheduled to started: {NAMES[variant]}", waits[variant]))
        difference = statistics.median(samples["separate"]) - statistics.median(samples["one"])
        print(f"\nThe separate queue adds {difference:+.1f} ms at p50 per turn.")
    finally:
        await rig.close()
        server.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=10)
    parser.add_argument("--turns", type=int, default=10)
    parser.add_argument("--gap", type=float, default=0.3, help="seconds between turns")
    args = parser.parse_args()
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    asyncio.run(main(args.threads, args.turns, args.gap))
    os._exit(0)
