"""The operator commands, run as the real console script against the Temporal dev server:
`threadchat conversations` lists running conversations, `threadchat show` prints one."""

import asyncio
import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

from devtools.slack_events import slash_command
from devtools.stack import ALICE, BOB, TEAM, eventually, is_title_request
from threadchat.ids import conversation_id, thread_permalink

THREADCHAT = str(Path(sys.executable).with_name("threadchat"))


async def run(server, stack, *args: str) -> subprocess.CompletedProcess:
    """The CLI in a subprocess, off the event loop: the stack's worker, which answers the
    status query, runs on this loop."""
    env = {
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", "/tmp"),
        "TEMPORAL_ADDRESS": server.address,
        "TEMPORAL_TASK_QUEUE": stack.settings.temporal.task_queue if stack else "threadchat",
    }
    return await asyncio.to_thread(
        subprocess.run,
        [THREADCHAT, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


async def listed(server, stack, *args: str) -> dict[str, dict]:
    result = await run(server, stack, "conversations", "--json", *args)
    assert result.returncode == 0, result.stderr
    return {row["workflow_id"]: row for row in json.loads(result.stdout)}


async def test_conversations_lists_running_conversations_with_filters(temporal_server, make_stack):
    server = temporal_server[0]
    stack = await make_stack()
    other_channel = "C" + uuid.uuid4().hex[:10].upper()
    shared = await stack.mention(stack.channel, "shared question")
    await stack.replies(stack.channel, shared, 1)
    await stack.say(stack.channel, shared, "a follow-up", user=BOB)
    await stack.replies(stack.channel, shared, 2)
    bobs = await stack.mention(stack.channel, "bob's own thread", user=BOB)
    elsewhere = await stack.mention(other_channel, "another channel")
    await stack.replies(stack.channel, bobs, 1)
    await stack.replies(other_channel, elsewhere, 1)
    ids = {
        "shared": conversation_id(TEAM, stack.channel, shared),
        "bobs": conversation_id(TEAM, stack.channel, bobs),
        "elsewhere": conversation_id(TEAM, other_channel, elsewhere),
    }
    expected_turns = {ids["shared"]: 2, ids["bobs"]: 1, ids["elsewhere"]: 1}

    async def all_listed():
        rows = await listed(server, stack)
        turns = {workflow_id: row["turns"] for workflow_id, row in rows.items()}
        return rows if turns == expected_turns else None

    rows = await eventually(all_listed, timeout=30, what="three conversations listed")
    assert rows[ids["shared"]]["channel"] == stack.channel
    assert rows[ids["shared"]]["participants"] == [ALICE, BOB]
    assert rows[ids["bobs"]]["participants"] == [BOB]
    assert rows[ids["elsewhere"]]["channel"] == other_channel
    assert rows[ids["elsewhere"]]["participants"] == [ALICE]
    assert all(row["input_tokens"] > 0 and row["output_tokens"] > 0 for row in rows.values())

    assert set(await listed(server, stack, "--channel", other_channel)) == {ids["elsewhere"]}
    assert set(await listed(server, stack, "--user", BOB)) == {ids["shared"], ids["bobs"]}
    both = await listed(server, stack, "--channel", stack.channel, "--user", ALICE)
    assert set(both) == {ids["shared"]}

    table = await run(server, stack, "conversations")
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].startswith("ID") and "LAST ACTIVITY" in lines[0] and "TOKENS IN/OUT" in lines[0]
    shared_line = next(line for line in lines if line.startswith(ids["shared"]))
    assert f"{ALICE},{BOB}" in shared_line and " 2 " in shared_line
    assert "ago" in shared_line or "just now" in shared_line

    bad = await run(server, stack, "conversations", "--channel", "C1' OR '1'='1")
    assert bad.returncode == 2
    assert len(bad.stderr.strip().splitlines()) == 1 and "--channel" in bad.stderr


async def test_conversations_without_a_worker_lists_what_visibility_knows(
    temporal_server, make_stack
):
    server = temporal_server[0]
    stack = await make_stack(worker=False)
    ts = await stack.mention(stack.channel, "is anyone there?")
    workflow_id = conversation_id(TEAM, stack.channel, ts)

    rows = await eventually(
        lambda: listed(server, stack), timeout=30, what="the conversation to be listed"
    )
    row = rows[workflow_id]
    assert row["channel"] == stack.channel and row["participants"] == [ALICE]
    assert row["turns"] is None and row["input_tokens"] is None

    table = await run(server, stack, "conversations")
    line = next(line for line in table.stdout.splitlines() if line.startswith(workflow_id))
    assert " ? " in line
    assert "no worker answered" in table.stdout

    shown = await run(server, stack, "show", workflow_id)
    assert shown.returncode == 0, shown.stderr
    assert "[U0ALICE] is anyone there?" in shown.stdout  # from history; no names looked up yet
    assert re.search(r"^turns:\s+\?$", shown.stdout, re.M) and "no worker answered" in shown.stdout


async def test_show_prints_the_transcript_then_the_summary(temporal_server, make_stack):
    server = temporal_server[0]
    stack = await make_stack()
    ts = await stack.mention(stack.channel, "plan the launch")
    await stack.replies(stack.channel, ts, 1)
    await stack.say(stack.channel, ts, "and the budget?", user=BOB)
    replies = await stack.replies(stack.channel, ts, 2)
    link = thread_permalink("local", stack.channel, ts)
    workflow_id = conversation_id(TEAM, stack.channel, ts)

    async def shows_everything(ref: str):
        result = await run(server, stack, "show", ref)
        assert result.returncode == 0, result.stderr
        wanted = ["plan the launch", "and the budget?", *(reply["text"] for reply in replies)]
        if re.search(r"^turns:\s+2$", result.stdout, re.M) and all(
            text in result.stdout for text in wanted
        ):
            return result.stdout
        return None

    by_link = await eventually(lambda: shows_everything(link), timeout=30, what="transcript")
    assert workflow_id in by_link and "status:" in by_link and "running" in by_link
    assert f"({ALICE})" in by_link and f"({BOB})" in by_link  # names, with ids
    assert by_link.index("plan the launch") < by_link.index(replies[0]["text"])
    assert by_link.index(replies[0]["text"]) < by_link.index("and the budget?")
    by_id = await shows_everything(workflow_id)
    assert by_id is not None

    await stack.sender.send_command(
        slash_command(command="/endchat", text="", channel_id=stack.channel, user_id=ALICE)
    )
    result = await stack.handle(stack.channel, ts).result()
    assert result.summary

    ended = await run(server, stack, "show", link)
    assert ended.returncode == 0, ended.stderr
    assert "completed" in ended.stdout and "ended by:" in ended.stdout
    assert "command" in ended.stdout
    assert "Summary:" in ended.stdout
    summary_lines = ended.stdout.split("Summary:\n", 1)[1].splitlines()
    assert [line.removeprefix("  ") for line in summary_lines] == result.summary.splitlines()
    assert "plan the launch" in ended.stdout and replies[1]["text"] in ended.stdout
    assert ended.stdout.index("plan the launch") < ended.stdout.index("Summary:")

    as_json = await run(server, stack, "show", workflow_id, "--json")
    assert as_json.returncode == 0, as_json.stderr
    view = json.loads(as_json.stdout)
    assert view["status"] == "completed" and view["summary"] == result.summary
    assert view["turns"] == 2 and view["participants"] == [ALICE, BOB]
    assert [e["kind"] for e in view["entries"]] == ["message", "reply", "message", "reply"]

    # Gone from the list of active conversations.
    assert workflow_id not in await listed(server, stack)


async def test_show_rejects_a_bad_link_in_one_line(temporal_server):
    server = temporal_server[0]
    for ref in ("https://example.com/not-a-thread", "yesterday's chat"):
        result = await run(server, None, "show", ref)
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "not a Slack thread link" in lines[0], result.stderr
        assert result.stdout == ""

    unknown = thread_permalink("local", "C0NOWHERE", "1700000000.000100")
    result = await run(server, None, "show", unknown)
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "no conversation found" in lines[0], result.stderr


async def test_show_and_list_span_continue_as_new(temporal_server, make_stack):
    server = temporal_server[0]
    stack = await make_stack(history_event_cap=20)  # continue as new after every turn
    ts = await stack.mention(stack.channel, "first words")
    await stack.replies(stack.channel, ts, 1)
    for count, text in ((2, "second words"), (3, "third words")):
        await stack.say(stack.channel, ts, text, user=BOB)
        await stack.replies(stack.channel, ts, count)
    workflow_id = conversation_id(TEAM, stack.channel, ts)
    runs = [r async for r in stack.client.list_workflows(f"WorkflowId = '{workflow_id}'")]
    assert len(runs) > 1  # the test means nothing without a continue-as-new

    async def three_turns():
        return (await listed(server, stack)).get(workflow_id, {}).get("turns") == 3

    await eventually(three_turns, timeout=30, what="three turns listed")
    shown = await run(server, stack, "show", workflow_id)
    assert shown.returncode == 0, shown.stderr
    transcript = shown.stdout.split("Transcript:", 1)[1]
    words = ["first words", "second words", "third words"]
    positions = [transcript.index(f"] {w}") for w in words]
    assert positions == sorted(positions)
    assert transcript.count("threadchat:") == 3


async def test_show_invocations_prints_each_model_call(temporal_server, make_stack):
    server = temporal_server[0]
    stack = await make_stack()
    ts = await stack.mention(stack.channel, "one call")
    await stack.replies(stack.channel, ts, 1)
    workflow_id = conversation_id(TEAM, stack.channel, ts)

    table = await run(server, stack, "show", workflow_id, "--invocations")
    assert table.returncode == 0, table.stderr
    header, row = table.stdout.strip().splitlines()
    assert header.split()[:3] == ["TIME", "(UTC)", "KIND"]
    assert " reply " in row and stack.settings.bedrock.model_id in row and "end_turn" in row

    as_json = await run(server, stack, "show", workflow_id, "--invocations", "--json")
    assert as_json.returncode == 0, as_json.stderr
    [call] = json.loads(as_json.stdout)
    assert call["kind"] == "reply" and call["model_id"] == stack.settings.bedrock.model_id
    [served] = [r for r in stack.bedrock.requests if not is_title_request(r.body)]
    assert call["request_id"] == served.request_id


async def test_show_invocations_lists_tool_calls_between_the_model_calls(
    temporal_server, make_stack, tmp_path
):
    from devtools.sample_mcp import SampleMcpProcess
    from tests.test_tools import tools_file, waiting_for_approval
    from threadchat import actions

    server = temporal_server[0]
    directory = SampleMcpProcess(tmp_path / "calls.jsonl")
    await directory.start()
    try:
        stack = await make_stack(tools_file=tools_file(tmp_path, directory.url))
        ts = await stack.mention(
            stack.channel, "use tools find_person, file_ticket name=ada title=Printer body=broken"
        )
        ask = await waiting_for_approval(stack, ts)
        workflow_id = conversation_id(TEAM, stack.channel, ts)
        # While the approval waits, the call shows as waiting.
        waiting = await run(server, stack, "show", workflow_id, "--invocations", "--json")
        assert waiting.returncode == 0, waiting.stderr
        [ticket] = [r for r in json.loads(waiting.stdout) if r.get("tool") == "file_ticket"]
        assert ticket["outcome"] == "waiting" and ticket["approval"] == "waiting"

        assert await stack.click(stack.channel, ask["ts"], actions.TOOL_APPROVE) == 200
        await stack.replies(stack.channel, ts, 2)
        await stack.say(stack.channel, ts, "use file_ticket title=Again body=twice")
        ask = await eventually(lambda: _second_ask(stack, ts, ask["ts"]), what="a second ask")
        assert await stack.click(stack.channel, ask["ts"], actions.TOOL_DENY) == 200
        await stack.replies(stack.channel, ts, 4)
    finally:
        directory.stop()

    as_json = await run(server, stack, "show", workflow_id, "--invocations", "--json")
    assert as_json.returncode == 0, as_json.stderr
    rows = json.loads(as_json.stdout)
    kinds = [(r["kind"], r.get("tool"), r.get("round")) for r in rows if r["kind"] != "title"]
    assert kinds == [
        ("reply", None, None),
        ("tool", "find_person", 1),
        ("tool", "file_ticket", 1),
        ("reply", None, None),
        ("reply", None, None),
        ("tool", "file_ticket", 1),
        ("reply", None, None),
    ], kinds
    find, approved, denied = [r for r in rows if r["kind"] == "tool"]
    assert find["server"] == "directory" and find["outcome"] == "success"
    assert find["approval"] == "" and find["arguments"] == {"name": "ada"}
    assert find["result_chars"] > 0 and find["truncated"] is False
    assert find["duration_ms"] >= 0 and find["attempts"] == 1
    assert approved["outcome"] == "success" and approved["approval"] == "approved"
    assert approved["approved_by"] == ALICE and approved["approved_at"]
    assert approved["arguments"] == {"title": "Printer", "body": "broken"}
    [performed] = directory.calls("file_ticket")
    assert approved["idempotency_key"] == performed["idempotency_key"]
    assert denied["outcome"] == "denied" and denied["approval"] == "denied"
    assert denied["duration_ms"] is None and denied["result_chars"] is None

    table = await run(server, stack, "show", workflow_id, "--invocations")
    assert table.returncode == 0, table.stderr
    tools = [line for line in table.stdout.splitlines() if "  tool  " in line]
    assert len(tools) == 3, table.stdout
    assert "directory/find_person" in tools[0] and "no approval needed" in tools[0]
    assert "round 1" in tools[1] and "success" in tools[1] and " ms" in tools[1]
    assert f"approved by {ALICE} at " in tools[1]
    assert "denied" in tools[2] and f"denied by {ALICE}" in tools[2]


def _second_ask(stack, thread: str, first: str) -> dict | None:
    from threadchat import actions

    asks = [
        message
        for message in stack.slack.bot_replies(stack.channel, thread)
        if message["ts"] != first
        and any(b.get("block_id") == actions.APPROVAL_BLOCK_ID for b in message.get("blocks") or [])
    ]
    return asks[0] if asks else None
