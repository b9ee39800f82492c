"""Agent sessions mirror the conversation, as the local Slack records them: processing while
a turn is answered, active when answered, closed with the summary, the title after the
first answer; and the assistant thread's status where Slack refuses sessions."""

from devtools.bedrock import Fault
from devtools.stack import ALICE, eventually
from threadchat import actions, texts
from threadchat.model import EndRequest
from workflows.conversation import ConversationWorkflow


def statuses_set(stack, method: str) -> list[str]:
    return [c.params.get("status") for c in stack.slack.calls_to(method) if c.error is None]


async def test_a_conversations_session_goes_processing_active_and_closed(make_stack):
    stack = await make_stack()
    thread = await stack.mention(stack.channel, "first question")
    await stack.replies(stack.channel, thread, 1)
    key = (stack.channel, thread)
    await stack.say(stack.channel, thread, "second question")
    await stack.replies(stack.channel, thread, 2)
    await eventually(lambda: stack.slack.session(*key) == "active", what="answered")
    handle = stack.handle(stack.channel, thread)
    await handle.signal(ConversationWorkflow.end, EndRequest(requested_by=ALICE, via="command"))
    await handle.result()
    assert stack.slack.session_statuses[key] == [
        "processing",
        "active",
        "processing",
        "active",
        "closed",
    ]
    # "active" rode on the answer's last chat.stopStream: no call of its own.
    assert statuses_set(stack, "agents.sessions.setStatus").count("active") == 0
    stops = [c.params.get("session_status") for c in stack.slack.calls_to("chat.stopStream")]
    assert stops.count("active") == 2
    # Sessions, not the assistant thread's status.
    assert not stack.slack.calls_to("assistant.threads.setStatus")
    # Titled by its first question, with its first status: no model call, no rename.
    assert stack.slack.session_titles[key] == "first question"
    assert not stack.slack.calls_to("agents.sessions.rename")
    assert (await handle.query(ConversationWorkflow.status)).title == "first question"


async def test_the_panels_session_is_renamed_after_its_first_answer(make_stack):
    stack = await make_stack()
    dm, thread = await stack.open_panel()
    await stack.replies(dm, thread, 1)  # the greeting
    await stack.panel_say(dm, thread, "how do durable workflows work?")
    await stack.replies(dm, thread, 2)
    key = (dm, thread)
    title = await eventually(lambda: stack.slack.session_titles.get(key), what="its title")
    [rename] = stack.slack.calls_to("agents.sessions.rename")
    assert rename.params == {"channel_id": dm, "thread_ts": thread, "title": title}
    assert not stack.slack.calls_to("assistant.threads.setTitle")
    assert stack.slack.session_statuses[key] == ["processing", "active"]


async def test_a_regenerate_and_a_failed_turn_leave_the_session_active(make_stack):
    stack = await make_stack()
    thread = await stack.mention(stack.channel, "name a colour")
    [first] = await stack.replies(stack.channel, thread, 1)
    key = (stack.channel, thread)

    def regenerated() -> bool:
        message = stack.slack.message(stack.channel, first["ts"])
        return "temperature 0.8" in message.get("text", "") and stack.slack.session(*key)

    # The answer shows before the workflow has recorded its turn: a click in between is
    # refused privately ("not the latest answer"), and the user clicks again.
    for _ in range(10):
        notes = len(stack.private_notes(stack.channel, ALICE))
        assert await stack.click(stack.channel, first["ts"], actions.REGENERATE) == 200

        def answered(notes: int = notes) -> str | None:
            if regenerated():
                return "regenerated"
            if len(stack.private_notes(stack.channel, ALICE)) > notes:
                return "refused"
            return None

        if await eventually(answered, 20, "an answer to the click") == "regenerated":
            break
    await eventually(regenerated, 20, "the regenerated answer")
    await eventually(lambda: stack.slack.session(*key) == "active", what="active again")
    assert stack.slack.session_statuses[key][-3:] == ["active", "processing", "active"]

    stack.bedrock.inject(Fault("AccessDeniedException", operation="converse-stream"))
    await stack.say(stack.channel, thread, "this one fails")
    await stack.replies(stack.channel, thread, 2)  # the notice
    await eventually(lambda: stack.slack.session(*key) == "active", what="active after failing")
    assert stack.slack.session_statuses[key][-2:] == ["processing", "active"]


async def test_where_slack_refuses_sessions_the_assistant_status_is_used_and_remembered(
    make_stack,
):
    stack = await make_stack()
    stack.slack.sessions_error = "unknown_method"  # an older workspace
    dm, first = await stack.open_panel()
    await stack.panel_say(dm, first, "hello")
    await stack.replies(dm, first, 2)
    second = await stack.say(dm, None, "another conversation", channel_type="im")
    await stack.replies(dm, second, 1)
    # Asked once on this worker; then never again.
    assert len(stack.slack.calls_to("agents.sessions.setStatus")) == 1
    assert not stack.slack.calls_to("agents.sessions.rename")
    assert all("session_status" not in c.params for c in stack.slack.calls_to("chat.stopStream"))
    assert statuses_set(stack, "assistant.threads.setStatus").count(texts.THINKING) == 2
    # The panel's title lands as the assistant thread's.
    await eventually(lambda: stack.slack.titles.get((dm, first)), what="the panel's title")
    assert stack.slack.calls_to("assistant.threads.setTitle")
    assert not stack.slack.session_statuses
