"""Tool calls when things go wrong: a worker killed (SIGKILL) in the middle of a call with a
side effect, and Stop while a tool runs or while a call waits for approval. The sample MCP
server logs every call with its idempotency key and whether it performed or deduplicated it,
so what it really did is checked, not what the bot says."""

import signal
import time

from devtools.processes import Workers, until, wait_replies, wait_turns
from devtools.stack import TEAM, eventually
from tests.test_tools import tools_file, waiting_for_approval
from threadchat import texts
from threadchat.commands import operator
from threadchat.ids import conversation_id


def unapproved_tools(tmp_path, url: str) -> str:
    """The sample server with nothing waiting for approval."""
    path = tmp_path / "tools-unapproved.yaml"
    path.write_text(
        f"servers:\n  directory:\n    url: {url}\n    timeout: 30s\n"
        "channels:\n  default: [directory]\n"
    )
    return str(path)


async def tool_rows(stack, thread: str) -> list[operator.ToolInvocation]:
    rows = await operator.load_invocations(
        stack.client, conversation_id(TEAM, stack.channel, thread)
    )
    return [row for row in rows if isinstance(row, operator.ToolInvocation)]


async def test_worker_killed_mid_tool_call_performs_the_effect_once(
    make_stack, temporal_server, directory, tmp_path
):
    server, _ = temporal_server
    stack = await make_stack(worker=False, tools_file=unapproved_tools(tmp_path, directory.url))
    workers = Workers(stack, server.address)
    try:
        first = await workers.start("A")
        # The server files the ticket at once and answers 4 s later: the kill lands between.
        thread = await stack.mention(
            stack.channel, "use file_ticket title=Printer body=broken delay=4"
        )
        await until(lambda: directory.calls("file_ticket"), 30, "the ticket filed", workers.logs)
        first.send(signal.SIGKILL)
        assert await first.wait_exit(10) == -signal.SIGKILL, workers.logs()
        killed_at = time.monotonic()
        assert not stack.slack.bot_replies(stack.channel, thread) or all(
            stack.slack.is_streaming(stack.channel, r["ts"])
            for r in stack.slack.bot_replies(stack.channel, thread)
        ), "the kill came too late"

        await workers.start("B")
        [answer] = await wait_replies(stack, stack.channel, thread, 1, workers)
        answered_in = time.monotonic() - killed_at
        await wait_turns(stack, stack.channel, thread, 1, workers)
        print(f"\nSIGKILL mid-tool -> answer in Slack after {answered_in:.1f} s")

        performed, again = directory.calls("file_ticket")
        assert performed["outcome"] == "performed", directory.calls()
        assert again["outcome"] == "deduplicated", directory.calls()
        assert performed["idempotency_key"] and (
            performed["idempotency_key"] == again["idempotency_key"]
        )
        assert performed["ticket"] == again["ticket"]
        assert f"Ticket {performed['ticket']} is filed" in answer["text"], answer["text"]
        assert len(stack.slack.bot_replies(stack.channel, thread)) == 1
        # On the record: one call, two attempts, a success.
        [row] = await tool_rows(stack, thread)
        assert (row.tool, row.outcome, row.attempts) == ("file_ticket", "success", 2)
        assert row.waited_ms > row.duration_ms + 5000  # the heartbeat timeout, at least
        assert row.idempotency_key == performed["idempotency_key"]
    finally:
        workers.stop_all()


async def test_stop_during_a_tool_call_cancels_it_and_the_answer_stops(
    make_stack, directory, tmp_path
):
    stack = await make_stack(tools_file=unapproved_tools(tmp_path, directory.url))
    thread = await stack.mention(stack.channel, "use slow_lookup seconds=20")
    await eventually(
        lambda: [c for c in directory.calls("slow_lookup") if c["outcome"] == "started"],
        what="the slow lookup running",
    )
    clicked = time.monotonic()
    await stack.click_stop(stack.channel, thread)
    line = texts.stopped_line("alice")

    def marked() -> dict | None:
        replies = stack.slack.bot_replies(stack.channel, thread)
        return replies[0] if replies and replies[0]["text"].endswith(line) else None

    await eventually(marked, what="the answer marked stopped")
    stopped_in = time.monotonic() - clicked
    print(f"\nStop mid-tool -> answer marked stopped after {stopped_in:.1f} s")
    assert stopped_in < 15, "the Stop waited for the tool"
    await eventually(lambda: stack.slack.session(stack.channel, thread) == "active")
    assert len(stack.converse_requests()) == 1  # no round after the tool
    assert len(stack.slack.bot_replies(stack.channel, thread)) == 1
    [row] = await eventually(lambda: tool_rows(stack, thread), what="the call on record")
    assert (row.tool, row.outcome) == ("slow_lookup", "cancelled")

    # The conversation goes on.
    await stack.say(stack.channel, thread, "just say hi")
    await stack.replies(stack.channel, thread, 2)


async def test_stop_while_an_approval_waits_runs_nothing(make_stack, directory, tmp_path):
    stack = await make_stack(tools_file=tools_file(tmp_path, directory.url))
    thread = await stack.mention(stack.channel, "use file_ticket title=Printer body=broken")
    ask = await waiting_for_approval(stack, thread)
    await stack.click_stop(stack.channel, thread)

    def settled() -> dict | None:
        message = stack.slack.message(stack.channel, ask["ts"])
        return message if texts.APPROVAL_STOPPED in message["text"] else None

    message = await eventually(settled, what="the approval message settled")
    assert not [b for b in message.get("blocks") or [] if b.get("type") == "actions"]
    await eventually(lambda: stack.slack.session(stack.channel, thread) == "active")
    assert len(stack.converse_requests()) == 1
    assert not directory.calls("file_ticket")
    [row] = await tool_rows(stack, thread)
    assert (row.outcome, row.approval) == ("cancelled", "stopped")
