"""What prompt caching saves over a long conversation, in input tokens as Bedrock bills them.

    .venv/bin/python -m bench.caching [--turns 200]

One scripted conversation per setting (replies of 100-200 words, the default 6,000-token
context budget), run through the real workflow against the local Bedrock, whose cache keeps
a prefix for 5 minutes after it was last written or read. The local Bedrock's clock moves on
by the gap between turns (1 or 10 minutes) before each one, so a long conversation takes
seconds. Each call's tokens come from the conversation's own history, as
`threadchat show --invocations` reads them.

Billed input equivalent: plain input x 1.0 + cache reads x 0.1 + cache writes x 1.25
(Anthropic's Bedrock pricing ratios), summaries included. Naive: every turn resends the
whole transcript, uncached. It reports; it never fails on a number.
"""

import argparse
import asyncio
import math
import os

from bench.script import ScriptedModel, is_summary_request, message_text, system_text
from bench.script import user_messages as scripted_user_messages
from devtools.stack import start_stack
from devtools.temporal_server import TemporalDevServer
from threadchat.commands import operator
from threadchat.config import DEFAULT_MODEL_ID
from threadchat.ids import conversation_id

MODELS = {
    "Claude Haiku 4.5 (the default; 4,096 tokens a checkpoint)": DEFAULT_MODEL_ID,
    "Claude Sonnet 4 (1,024 tokens a checkpoint)": "us.anthropic.claude-sonnet-4-20250514-v1:0",
}
READ, WRITE = 0.1, 1.25


class Clock:
    """The local Bedrock's clock: moved on by hand between turns."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def conversation(client, model_id: str, gap_s: float, turns: int) -> dict[str, float]:
    clock, model = Clock(), ScriptedModel()
    stack = await start_stack(
        client,
        bedrock_options={"responder": model, "clock": clock},
        bedrock_settings={"model_id": model_id, "summary_model_id": model_id},
        streaming=False,
    )
    try:
        texts = scripted_user_messages(turns)
        thread = await stack.mention(stack.channel, texts[0])
        await stack.replies(stack.channel, thread, 1, timeout=60)
        for turn, text in enumerate(texts[1:], start=2):
            clock.now += gap_s
            await stack.say(stack.channel, thread, text)
            await stack.replies(stack.channel, thread, turn, timeout=60)
        rows = await operator.load_invocations(
            stack.client, conversation_id("T0LOCAL", stack.channel, thread)
        )
        bodies = [
            r.body
            for r in sorted(stack.bedrock.requests, key=lambda r: r.at)
            if r.operation == "converse" and not is_summary_request(r.body)
        ]
    finally:
        await stack.close()
    assert sum(r.kind == "reply" for r in rows) == turns == len(bodies)
    # The naive resend: the whole transcript every turn, as the first prompt's system text.
    naive, transcript = 0, []
    for body in bodies:
        question = message_text(body["messages"][-1])
        transcript.append(question)
        naive += math.ceil(len("\n".join([system_text(bodies[0]), *transcript])) / 4)
        transcript.append(model.replies.get(question, ""))
    plain = sum(r.input_tokens + r.cache_read_tokens + r.cache_write_tokens for r in rows)
    billed = sum(
        r.input_tokens + READ * r.cache_read_tokens + WRITE * r.cache_write_tokens for r in rows
    )
    return {
        "naive": naive,
        "plain": plain,
        "billed": billed,
        "read": sum(r.cache_read_tokens for r in rows),
        "write": sum(r.cache_write_tokens for r in rows),
        "summaries": sum(r.kind == "rolling_summary" for r in rows),
    }


async def main(turns: int) -> None:
    server = TemporalDevServer()
    client = await server.start()
    try:
        print(f"{turns}-turn conversation, context budget 6,000 tokens.\n")
        print(
            "| Model | Gap between turns | Naive tokens | Ours, all prompt tokens (ratio) "
            "| Ours, billed input equivalent (ratio) | Cache read / written | Rolling summaries |"
        )
        print("|---|---|---|---|---|---|---|")
        for name, model_id in MODELS.items():
            for gap in (60, 600):
                r = await conversation(client, model_id, gap, turns)
                print(
                    f"| {name} | {gap // 60} min | {r['naive']:,} | {r['plain']:,} "
                    f"({r['naive'] / r['plain']:.1f}×) | {r['billed']:,.0f} "
                    f"({r['naive'] / r['billed']:.1f}×) | {r['read']:,} / {r['write']:,} "
                    f"| {r['summaries']} |",
                    flush=True,
                )
    finally:
        server.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=200)
    args = parser.parse_args()
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    asyncio.run(main(args.turns))
    os._exit(0)
