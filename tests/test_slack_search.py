"""The `slack_search` tool: Real-time Search with the action token of the message that started
the turn, against the local Slack over real HTTP (real slack_sdk), which honours channel
membership; refusals told to the model; a rate limit raised for Temporal's retry; and the
bot carrying the event's action token into the conversation."""

import json
import uuid
from datetime import timedelta

import pytest
from temporalio.exceptions import ApplicationError

from activities.slack_search import SlackSearchTool
from bot.parsing import parse_message_event
from devtools.slack import LocalSlack
from devtools.slack_events import app_mention_event, message_event
from devtools.stack import ALICE, BOB, eventually
from threadchat.model import EndRequest, ThreadRef, ToolCall
from threadchat.slack_client import make_client
from workflows.conversation import ConversationWorkflow

PUBLIC, SECRET, TEAM_ROOM = "C0PUBLIC", "G0SECRET", "G0TEAMROOM"
BOTS_DM = "D0BOTALICE"  # a conversation only the asker reads (the assistant panel's too)


@pytest.fixture
async def slack():
    server = LocalSlack()
    await server.start()
    yield server
    await server.stop()


def search(slack: LocalSlack, query: str, token: str, channel: str = BOTS_DM) -> ToolCall:
    return ToolCall(
        tool_use_id="tu-1",
        server="slack_search",
        name="search_slack",
        arguments={"query": query},
        idempotency_key=uuid.uuid4().hex,
        thread=ThreadRef(slack.team_id, channel, "1700000000.000100"),
        user=ALICE,
        action_token=token,
    )


def tool(slack: LocalSlack) -> SlackSearchTool:
    return SlackSearchTool(make_client(slack.bot_token, slack.base_url))


def seed(slack: LocalSlack) -> None:
    slack.join(SECRET, BOB)  # Alice is not in it
    slack.join(TEAM_ROOM, ALICE, BOB)
    slack.add_message(PUBLIC, user=BOB, text="The launch date moved to Friday")
    slack.add_message(SECRET, user=BOB, text="Secret launch plans: layoffs on Friday")
    slack.add_message(TEAM_ROOM, user=BOB, text="Launch checklist is in the wiki")
    slack.add_message("D0BOB", user=BOB, text="my launch password is hunter2")
    slack.add_message("D0ALICE", user=ALICE, text="note to self: launch retro on Monday")
    slack.add_message(PUBLIC, user=ALICE, text="lunch anyone?")


async def test_search_returns_only_what_the_asker_may_see(slack):
    seed(slack)
    outcome = await tool(slack).call(search(slack, "launch", slack.search.issue(ALICE)))
    assert outcome.status == "success"
    channels = {s.url.split("/archives/")[1].split("/")[0] for s in outcome.sources}
    assert channels == {PUBLIC, TEAM_ROOM, "D0ALICE"}
    assert "layoffs" not in outcome.text and "hunter2" not in outcome.text
    assert outcome.text.count("\n[") == len(outcome.sources) == 3
    assert "[1] in channel" in outcome.text and "<https://local.slack.com/archives/" in outcome.text
    # Bob, a member of the private channel, does find it.
    bobs = await tool(slack).call(search(slack, "layoffs", slack.search.issue(BOB)))
    assert [s.title for s in bobs.sources] == ["Secret launch plans: layoffs on Friday"]
    [call] = [c for c in slack.calls_to("assistant.search.context")][:1]
    assert call.params["channel_types"] == "public_channel,private_channel,mpim,im"


async def test_in_a_channels_thread_only_public_channels_are_searched(slack):
    """Others read the answer there, its task card and its sources: nothing of the asker's
    private channels and DMs may reach them, though the asker may see it."""
    seed(slack)
    searching = tool(slack)
    assert (
        "public channels" in searching.specs(ThreadRef(slack.team_id, PUBLIC, "1.2"))[0].description
    )
    assert "DMs" in searching.specs(ThreadRef(slack.team_id, BOTS_DM, "1.2"))[0].description
    outcome = await searching.call(search(slack, "launch", slack.search.issue(ALICE), PUBLIC))
    channels = {s.url.split("/archives/")[1].split("/")[0] for s in outcome.sources}
    assert channels == {PUBLIC}
    assert "Launch checklist" not in outcome.text and "retro" not in outcome.text
    assert (
        slack.calls_to("assistant.search.context")[-1].params["channel_types"] == "public_channel"
    )


async def test_nothing_found_is_said(slack):
    seed(slack)
    outcome = await tool(slack).call(search(slack, "zebra", slack.search.issue(ALICE)))
    assert outcome.status == "success" and not outcome.sources
    assert "No Slack messages found" in outcome.text


async def test_without_an_action_token_the_tool_says_so(slack):
    outcome = await tool(slack).call(search(slack, "launch", ""))
    assert outcome.status == "error" and "no action token" in outcome.text
    assert not slack.calls_to("assistant.search.context")


@pytest.mark.parametrize(
    ("error", "said"),
    [
        ("feature_not_enabled", "not enabled for this workspace"),
        ("missing_scope", "search:read.private"),
        ("something_new", "Slack answered something_new"),
    ],
)
async def test_a_refused_search_is_told_to_the_model(slack, error, said):
    slack.search.refuse_with = error
    outcome = await tool(slack).call(search(slack, "launch", slack.search.issue(ALICE)))
    assert outcome.status == "error" and said in outcome.text
    assert outcome.text.startswith("Slack search is not available")


async def test_an_unknown_action_token_is_refused(slack):
    outcome = await tool(slack).call(search(slack, "launch", "1.2.forged"))
    assert outcome.status == "error" and "action token" in outcome.text


async def test_a_rate_limit_raises_for_a_retry_after_slacks_wait(slack):
    slack.inject("assistant.search.context", error="ratelimited", status=429, retry_after=7)
    with pytest.raises(ApplicationError) as raised:
        await tool(slack).call(search(slack, "launch", slack.search.issue(ALICE)))
    assert raised.value.type == "SlackRateLimited" and not raised.value.non_retryable
    assert raised.value.next_retry_delay == timedelta(seconds=7)


def test_the_bot_reads_the_action_token_of_a_message():
    event = message_event(
        channel="D0ALICE",
        user=ALICE,
        text="hi",
        ts="1.000100",
        channel_type="im",
        action_token="9.9.abc",
    )
    assert parse_message_event(event, "T0LOCAL", "U0BOT").message.action_token == "9.9.abc"
    nested = {**event, "assistant_thread": {"action_token": "8.8.def"}}
    del nested["action_token"]
    assert parse_message_event(nested, "T0LOCAL", "U0BOT").message.action_token == "8.8.def"
    mention = app_mention_event(channel=PUBLIC, user=ALICE, text="<@U0BOT> hi", ts="2.000100")
    incoming = parse_message_event(mention, "T0LOCAL", "U0BOT", is_mention_event=True)
    assert incoming.message.action_token == ""
    too_long = {**event, "action_token": "x" * 500}
    assert parse_message_event(too_long, "T0LOCAL", "U0BOT").message.action_token == ""


async def test_a_mentions_action_token_reaches_the_conversation(make_stack):
    stack = await make_stack()
    token = stack.slack.search.issue(ALICE)
    ts = await stack.mention(stack.channel, "what changed about the launch?", action_token=token)
    await stack.replies(stack.channel, ts, 1)
    handle = stack.handle(stack.channel, ts)

    async def signalled() -> list[dict]:
        found = []
        async for event in handle.fetch_history_events():
            attributes = event.workflow_execution_signaled_event_attributes
            if event.HasField("workflow_execution_signaled_event_attributes"):
                found += [json.loads(p.data) for p in attributes.input.payloads]
        return found

    messages = await eventually(signalled, what="the signalled message")
    assert messages[0]["action_token"] == token
    # Only that turn's search could use it: the conversation keeps none once it is answered.
    await handle.signal(ConversationWorkflow.end, EndRequest(requested_by=ALICE, via="command"))
    assert token not in str(await handle.result())
