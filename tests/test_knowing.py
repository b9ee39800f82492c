"""What the bot knows, through real conversations on the dev server: a knowledge base answer
cited under it, Slack search that finds only what the asker may see, and each person's
memory in their own turns only. The offline model calls a tool when a message says
`use <tool>` (README: "The offline model and tools")."""

import json

from devtools.knowledge import Passage
from devtools.slack_events import message_deleted_event
from devtools.stack import ALICE, BOB, eventually
from threadchat import texts


def tools_file(tmp_path, channels: str, knowledge: str = "KBSAMPLE01") -> str:
    path = tmp_path / "tools.yaml"
    path.write_text(f"channels:\n  default: [{channels}]\nknowledge:\n  default: [{knowledge}]\n")
    return str(path)


def tool_results(stack) -> list[dict]:
    return [
        block["toolResult"]
        for request in stack.converse_requests()
        for message in request["messages"]
        for block in message["content"]
        if "toolResult" in block
    ]


def prompt_text(request: dict) -> str:
    return "\n".join(str(block) for message in request["messages"] for block in message["content"])


async def test_a_knowledge_base_answer_cites_its_documents(make_stack, tmp_path):
    stack = await make_stack(tools_file=tools_file(tmp_path, "knowledge"))
    thread = await stack.mention(stack.channel, "how many vacation days? use retrieve")
    [answer] = await stack.replies(stack.channel, thread, 1)
    [result] = tool_results(stack)
    assert result["status"] == "success" and "[1]" in result["content"][0]["text"]
    # The sources under the answer link the documents the passages came from.
    [line] = [x for x in answer["text"].splitlines() if x.startswith("Sources:")]
    assert "Vacation policy" in line and "Vacation_policy.md" in line


async def test_a_knowledge_base_error_is_told_and_the_turn_goes_on(make_stack, tmp_path):
    stack = await make_stack(tools_file=tools_file(tmp_path, "knowledge", "KBMISSING1"))
    thread = await stack.mention(stack.channel, "expenses? use retrieve")
    [answer] = await stack.replies(stack.channel, thread, 1)
    [result] = tool_results(stack)
    assert result["status"] == "error"
    assert "Sources:" not in answer["text"]


async def test_slack_search_finds_only_what_the_asker_may_see(make_stack, tmp_path):
    stack = await make_stack(tools_file=tools_file(tmp_path, "slack_search"))
    slack = stack.slack
    slack.join("G0SECRET", BOB)  # a private channel Alice is not in
    slack.add_message("G0SECRET", user=BOB, text="Secret launch plans: layoffs on Friday")
    slack.add_message(stack.channel, user=BOB, text="The launch date moved to Friday")
    token = slack.search.issue(ALICE)
    thread = await stack.mention(
        stack.channel, "what about the launch? use search_slack query=launch", action_token=token
    )
    await stack.replies(stack.channel, thread, 1)
    [result] = tool_results(stack)
    found = result["content"][0]["text"]
    assert "launch date moved" in found and "layoffs" not in found
    # Without the token Slack gives the turn, the tool says it cannot search.
    other = await stack.mention(stack.channel, "use search_slack query=launch")
    await stack.replies(stack.channel, other, 1)
    assert tool_results(stack)[-1]["status"] == "error"


async def test_a_memory_reaches_the_persons_next_conversation_and_no_one_elses(
    make_stack, tmp_path
):
    stack = await make_stack(tools_file=tools_file(tmp_path, "memory"))
    thread = await stack.mention(stack.channel, "Alice likes short answers. use remember")
    await stack.replies(stack.channel, thread, 1)
    assert tool_results(stack)[0]["status"] == "success"
    asked = len(stack.converse_requests())

    # A new conversation of Alice's knows it, as labelled context in her own turn.
    later = await stack.mention(stack.channel, "hello again")
    await stack.replies(stack.channel, later, 1)
    [request] = stack.converse_requests()[asked:]
    assert "Alice likes short answers" in prompt_text(request)
    assert 'kind="memory"' in prompt_text(request)

    # Bob's conversation, and Bob's turn in Alice's thread, do not.
    bobs = await stack.mention(stack.channel, "hello from bob", user=BOB)
    await stack.replies(stack.channel, bobs, 1)
    await stack.say(stack.channel, later, f"<@{stack.slack.bot_user_id}> and me?", user=BOB)
    await stack.replies(stack.channel, later, 2)
    for request in stack.converse_requests()[asked + 1 :]:
        assert "Alice likes short answers" not in prompt_text(request)

    # Forgetting it: the next conversation does not know it any more.
    forget = await stack.mention(stack.channel, "use forget all=true")
    await stack.replies(stack.channel, forget, 1)
    await eventually(lambda: tool_results(stack)[-1]["status"] == "success")
    fresh = await stack.mention(stack.channel, "do you remember me?")
    await stack.replies(stack.channel, fresh, 1)
    assert "Alice likes short answers" not in prompt_text(stack.converse_requests()[-1])
    assert texts.EMPTY_ANSWER not in stack.slack.bot_replies(stack.channel, fresh)[0]["text"]


async def test_a_search_keeps_the_askers_token_when_their_message_is_deleted(make_stack, tmp_path):
    """The token is taken when the turn starts: the asker's message deleted while the model
    writes leaves the search theirs (it took the turn's last message, and with none left the
    workflow task failed on every attempt), and the conversation goes on."""
    stack = await make_stack(tools_file=tools_file(tmp_path, "slack_search"))
    stack.slack.add_message(stack.channel, user=BOB, text="The launch date moved to Friday")
    thread = await stack.mention(stack.channel, "hello")
    await stack.replies(stack.channel, thread, 1)
    stack.bedrock.set_model_latency(60)  # held while the question is deleted
    asked = await stack.mention(
        stack.channel,
        "use search_slack query=launch",
        thread_ts=thread,
        action_token=stack.slack.search.issue(ALICE),
    )
    await eventually(lambda: len(stack.converse_requests()) == 2, what="the model call")
    deleted = message_deleted_event(
        channel=stack.channel, user=ALICE, ts=asked, text="use search", thread_ts=thread
    )
    assert (await stack.sender.send_event(deleted))[0] == 200
    handle = stack.handle(stack.channel, thread)

    async def deletion_recorded() -> bool:
        events = (await handle.fetch_history()).events
        return any(
            e.workflow_execution_signaled_event_attributes.signal_name == "revise" for e in events
        )

    await eventually(deletion_recorded, what="the deletion in the history")
    stack.bedrock.set_model_latency(0)
    await eventually(lambda: tool_results(stack), what="the search's result")
    [result] = tool_results(stack)
    assert result["status"] == "success" and "launch date moved" in result["content"][0]["text"]
    await stack.mention(stack.channel, "thanks", thread_ts=thread)
    await eventually(
        lambda: any("thanks" in prompt_text(r) for r in stack.converse_requests()),
        what="the next message answered",
    )
    events = (await handle.fetch_history()).events
    assert not any(e.HasField("workflow_task_failed_event_attributes") for e in events)


async def test_a_planted_document_pings_nobody_and_forges_no_link(make_stack, tmp_path):
    """A document's title and address come from whoever wrote it: on the task card's sources
    and under the answer they ping nobody, and cannot end the link to start their own."""
    stack = await make_stack(tools_file=tools_file(tmp_path, "knowledge", "KBPLANTED1"))
    stack.bedrock.knowledge.bases["KBPLANTED1"] = [
        Passage(
            "planted.md",
            "Vacation",
            "Vacation days: ask <!channel> and <@U0EVE> for more.",
            {
                "title": "<!channel> Vacation <@U0EVE>",
                "source_url": "https://wiki.example/a)[Reset your password](https://evil.example",
            },
        )
    ]
    thread = await stack.mention(stack.channel, "vacation days? use retrieve")
    [answer] = await stack.replies(stack.channel, thread, 1)
    [line] = [x for x in answer["text"].splitlines() if x.startswith("Sources:")]
    assert line.count("](") == 1 and "](https://evil.example" not in line
    sent = json.dumps([c.params for c in stack.slack.calls if c.method.startswith("chat.")])
    assert "Vacation" in sent and "task_update" in sent  # the card and its source went out
    assert "<!channel>" not in sent and "<@U0EVE>" not in sent
