"""Model calls on their own task queue, rate limited by Temporal across every worker.

Temporal enforces a task queue's rate in each of its partitions (four by default), and each
dispatches on its own; the worker's own limit smooths that. Both are token buckets that start
full (one second's worth), so in any window of w seconds there are at most rate x (w + 1)
calls: an idle queue lets one second's worth through at once, then calls keep to the rate.
Bedrock counts its quotas per minute, where that burst is one second's worth in sixty. The
dev server runs one partition per queue, as a self-hosted cluster can set for the Bedrock
queue, so that what the test measures is the limit's own timing.
"""

import asyncio

from devtools.stack import eventually, start_stack

THREADS = 20
LIMIT = 2  # calls per second


def most_within(times: list[float], seconds: float) -> int:
    """The most calls that started within any window of `seconds`."""
    return max(sum(1 for t in times[i:] if t - start < seconds) for i, start in enumerate(times))


async def test_bedrock_calls_keep_to_the_rate_limit_and_every_thread_is_answered(client):
    stack = await start_stack(client, bedrock_settings={"max_calls_per_second": LIMIT})
    try:
        threads = await asyncio.gather(
            *(stack.mention(stack.channel, f"question {i}") for i in range(THREADS))
        )

        def answered() -> bool:
            return all(stack.slack.bot_replies(stack.channel, ts) for ts in threads)

        await eventually(answered, timeout=60, what="a reply in every thread")
        for ts in threads:
            assert len(await stack.replies(stack.channel, ts, 1)) == 1
    finally:
        await stack.close()
    calls = sorted(r.at for r in stack.bedrock.requests if r.operation == "converse-stream")
    assert len(calls) == THREADS
    offsets = [round(t - calls[0], 2) for t in calls]
    print(f"\n{THREADS} calls at {LIMIT}/s started at {offsets} s")
    # A token bucket: in any window, at most the rate plus the one second's worth it starts
    # with (or saved up while the calls were slow to be taken)...
    for seconds in (1, 2, 5, 10):
        assert most_within(calls, seconds) <= LIMIT * seconds + LIMIT
    # ...so the calls take as long as the rate demands (without the limit: a fraction of a
    # second).
    assert calls[-1] - calls[0] >= (THREADS - LIMIT) / LIMIT - 0.1
