"""Durable tools end to end: a real MCP server process (our sample team directory), the real
dev server, the local Bedrock's offline model calling tools as a message asks
(README: "The offline model and tools"), and the local Slack showing task cards and the
approval buttons."""

import asyncio
import json
import socket

from devtools.stack import ALICE, BOB, eventually
from threadchat import actions, texts
from threadchat.model import EndRequest
from workflows.conversation import ConversationWorkflow


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def tools_file(tmp_path, url: str, *, extra: str = "", channels: str = "default: [directory]"):
    path = tmp_path / "tools.yaml"
    path.write_text(
        "servers:\n"
        "  directory:\n"
        f"    url: {url}\n"
        "    approval: [file_ticket]\n"
        "    timeout: 20s\n"
        f"{extra}"
        "channels:\n"
        f"  {channels}\n"
    )
    return str(path)


def model_requests(stack) -> list[dict]:
    return stack.converse_requests()


def tool_results(request: dict) -> list[dict]:
    return [
        block["toolResult"]
        for message in request["messages"]
        for block in message["content"]
        if "toolResult" in block
    ]


def task_cards(stack, ts: str) -> list[dict]:
    """Every task_update chunk the answer's stream got, in order."""
    cards = []
    for method in ("chat.startStream", "chat.appendStream", "chat.stopStream"):
        for call in stack.slack.calls_to(method):
            if call.error is None and (call.params.get("ts") in (ts, None)):
                chunks = call.params.get("chunks") or []
                if isinstance(chunks, str):
                    chunks = json.loads(chunks)
                cards += [c for c in chunks if c.get("type") == "task_update"]
    return cards


async def ended(stack, thread: str):
    handle = stack.handle(stack.channel, thread)
    await handle.signal(ConversationWorkflow.end, EndRequest(requested_by=ALICE, via="command"))
    return await handle.result()


async def test_one_tool_round_answers_from_the_result_in_one_message(
    make_stack, directory, tmp_path
):
    stack = await make_stack(tools_file=tools_file(tmp_path, directory.url))
    thread = await stack.mention(stack.channel, "who is she? use find_person name=alice")
    [answer] = await stack.replies(stack.channel, thread, 1)
    [first, second] = model_requests(stack)
    names = [t["toolSpec"]["name"] for t in first["toolConfig"]["tools"]]
    assert "directory__find_person" in names and "directory__file_ticket" in names
    [result] = tool_results(second)
    assert result["status"] == "success"
    person = result["content"][0]["text"]
    assert directory.calls("find_person")[0]["arguments"] == {"name": "alice"}
    # The model got the result, and the one answer says what it found.
    assert person.splitlines()[0][:30] in answer["text"]
    cards = task_cards(stack, answer["ts"])
    assert [c["status"] for c in cards] == ["in_progress", "complete"]
    assert cards[-1]["title"] == "directory / find_person"
    assert cards[-1]["sources"][0]["url"] == directory.url
    result = await ended(stack, thread)
    assert result.transcript[0].reply.strip() in answer["text"]


async def test_several_rounds_and_parallel_calls(make_stack, directory, tmp_path):
    stack = await make_stack(tools_file=tools_file(tmp_path, directory.url))
    thread = await stack.mention(
        stack.channel, "use tools find_person, slow_lookup name=bob seconds=1 tool_rounds=2"
    )
    [answer] = await stack.replies(stack.channel, thread, 1)
    requests = model_requests(stack)
    assert len(requests) == 3  # two rounds of tools, then the answer
    assert len(tool_results(requests[-1])) == 4
    # One round's two calls ran at once: the lookup that takes a second overlapped the other.
    finds = directory.calls("find_person")
    slows = [c for c in directory.calls("slow_lookup") if c.get("outcome") == "answered"]
    assert len(finds) == len(slows) == 2
    # Answered a second after it began, the slow lookup's round did not wait for the other.
    assert finds[0]["at"] < slows[0]["at"] - 0.5
    assert len(stack.slack.bot_replies(stack.channel, thread)) == 1
    assert "find_person" in answer["text"] and "slow_lookup" in answer["text"]


async def test_a_tool_error_and_a_server_down_are_told_and_the_turn_goes_on(
    make_stack, directory, tmp_path
):
    down = f"  gone:\n    url: http://127.0.0.1:{closed_port()}/mcp\n"
    path = tools_file(tmp_path, directory.url, extra=down, channels="default: [directory, gone]")
    stack = await make_stack(tools_file=path)
    thread = await stack.mention(stack.channel, "use broken_lookup name=carol")
    [answer] = await stack.replies(stack.channel, thread, 1)
    [_, second] = model_requests(stack)
    [result] = tool_results(second)
    assert result["status"] == "error"
    assert texts.tools_unavailable(["gone"]) in answer["text"]
    assert [c["status"] for c in task_cards(stack, answer["ts"])][-1] == "error"
    await stack.say(stack.channel, thread, "thanks")
    await stack.replies(stack.channel, thread, 2)


async def test_a_channel_without_tools_sends_no_tool_config(make_stack, directory, tmp_path):
    path = tools_file(tmp_path, directory.url, channels="C0OTHER: [directory]")
    stack = await make_stack(tools_file=path)
    thread = await stack.mention(stack.channel, "use find_person name=alice")
    await stack.replies(stack.channel, thread, 1)
    [request] = model_requests(stack)
    assert "toolConfig" not in request
    assert not directory.calls()


async def test_the_round_limit_makes_the_model_answer(make_stack, directory, tmp_path):
    stack = await make_stack(tools_file=tools_file(tmp_path, directory.url), max_tool_rounds=2)
    thread = await stack.mention(stack.channel, "use find_person name=alice tool_rounds=5")
    [answer] = await stack.replies(stack.channel, thread, 1)
    assert len(model_requests(stack)) == 3
    assert len(directory.calls("find_person")) == 2
    assert texts.TOOL_ROUNDS_USED in answer["text"]


def approval_message(stack, thread: str) -> dict | None:
    for message in stack.slack.bot_replies(stack.channel, thread):
        for block in message.get("blocks") or []:
            if block.get("block_id") == actions.APPROVAL_BLOCK_ID:
                return message
    return None


async def waiting_for_approval(stack, thread: str) -> dict:
    message = await eventually(lambda: approval_message(stack, thread), what="the approval ask")
    await eventually(lambda: stack.slack.session(stack.channel, thread) == "suspended")
    return message


TICKET = "use file_ticket title=Printer body=broken"


async def test_an_approved_call_runs_once_and_the_answer_goes_on(make_stack, directory, tmp_path):
    stack = await make_stack(tools_file=tools_file(tmp_path, directory.url))
    thread = await stack.mention(stack.channel, TICKET)
    ask = await waiting_for_approval(stack, thread)
    assert not directory.calls("file_ticket")  # nothing runs before the asker says so
    # Someone else's click changes nothing, and they learn why.
    await stack.say(stack.channel, thread, "hi, I'm here too", user=BOB)
    assert await stack.click(stack.channel, ask["ts"], actions.TOOL_APPROVE, user=BOB) == 200
    await eventually(
        lambda: texts.APPROVAL_REFUSED["NotAsker"] in stack.private_notes(stack.channel, BOB)
    )
    assert not directory.calls("file_ticket")
    double_click = [stack.click(stack.channel, ask["ts"], actions.TOOL_APPROVE) for _ in "12"]
    assert await asyncio.gather(*double_click) == [200, 200]
    await eventually(
        lambda: stack.slack.session(stack.channel, thread) == "active", what="the answer"
    )
    [_, answer] = await stack.replies(stack.channel, thread, 2)
    assert "file_ticket" in answer["text"]
    [performed] = directory.calls("file_ticket")
    assert performed["outcome"] == "performed"
    settled = stack.slack.message(stack.channel, ask["ts"])
    assert texts.approval_decided(True, "alice") in settled["text"]
    assert not [b for b in settled.get("blocks") or [] if b.get("type") == "actions"]
    statuses = stack.slack.session_statuses[(stack.channel, thread)]
    assert statuses[:3] == ["processing", "suspended", "processing"] and statuses[-1] == "active"


async def test_a_denied_call_is_told_to_the_model(make_stack, directory, tmp_path):
    stack = await make_stack(tools_file=tools_file(tmp_path, directory.url))
    thread = await stack.mention(stack.channel, TICKET)
    ask = await waiting_for_approval(stack, thread)
    assert await stack.click(stack.channel, ask["ts"], actions.TOOL_DENY) == 200
    await eventually(lambda: len(model_requests(stack)) == 2, what="the model told")
    [result] = tool_results(model_requests(stack)[-1])
    assert result["status"] == "error"
    assert result["content"][0]["text"] == texts.not_approved("alice")
    assert not directory.calls("file_ticket")
    await eventually(lambda: stack.slack.session(stack.channel, thread) == "active")
    assert (
        texts.approval_decided(False, "alice")
        in stack.slack.message(stack.channel, ask["ts"])["text"]
    )


async def test_an_approval_nobody_gives_times_out_as_denied(make_stack, directory, tmp_path):
    stack = await make_stack(
        tools_file=tools_file(tmp_path, directory.url), approval_timeout_seconds=2
    )
    thread = await stack.mention(stack.channel, TICKET)
    ask = await waiting_for_approval(stack, thread)
    await eventually(lambda: len(model_requests(stack)) == 2, timeout=30, what="timed out")
    [result] = tool_results(model_requests(stack)[-1])
    assert result["content"][0]["text"] == texts.approval_timed_out("alice")
    assert texts.APPROVAL_TIMED_OUT in stack.slack.message(stack.channel, ask["ts"])["text"]
    assert not directory.calls("file_ticket")
