"""Allowlists: only listed channels and users reach the model. Anyone else who asks for the bot
hears, privately, that it is not enabled here, and no conversation starts."""

import dataclasses

import pytest
from temporalio.service import RPCError, RPCStatusCode

from devtools.slack_events import slash_command
from devtools.stack import ALICE, BOB, Stack, eventually
from threadchat import texts
from threadchat.config import ConfigError, load_settings
from workflows.conversation import ConversationWorkflow

OTHER_CHANNEL = "C0ELSEWHERE"


async def allowlisted_stack(make_stack) -> Stack:
    stack = await make_stack(bot=False)
    slack = dataclasses.replace(
        stack.settings.slack,
        allowed_channels=frozenset({stack.channel}),
        allowed_users=frozenset({ALICE}),
    )
    stack.settings = dataclasses.replace(stack.settings, slack=slack)
    await stack.start_bot()
    return stack


async def assert_no_conversation(stack: Stack, channel: str, thread_ts: str) -> None:
    with pytest.raises(RPCError) as raised:
        await stack.handle(channel, thread_ts).describe()
    assert raised.value.status == RPCStatusCode.NOT_FOUND


def refusals_to(stack: Stack, user: str) -> list[dict]:
    return [
        e for e in stack.slack.ephemerals if e["user"] == user and e["text"] == texts.NOT_ENABLED
    ]


async def test_only_listed_users_in_listed_channels_reach_the_model(make_stack):
    stack = await allowlisted_stack(make_stack)

    # Bob is not on the list: a private "not enabled here" and nothing else.
    bob_ts = await stack.mention(stack.channel, "bob's secret question", user=BOB)
    [refusal] = await eventually(lambda: refusals_to(stack, BOB), what="Bob's refusal")
    assert refusal["channel"] == stack.channel and refusal.get("thread_ts") == bob_ts
    # Alice is, but not in another channel.
    other_ts = await stack.mention(OTHER_CHANNEL, "alice elsewhere")
    await eventually(lambda: refusals_to(stack, ALICE), what="Alice's refusal elsewhere")
    await assert_no_conversation(stack, stack.channel, bob_ts)
    await assert_no_conversation(stack, OTHER_CHANNEL, other_ts)

    # Alice in the listed channel is answered; Bob's message in her thread stays out of it.
    ts = await stack.mention(stack.channel, "alice asks")
    await stack.replies(stack.channel, ts, 1)
    await stack.say(stack.channel, ts, "bob chimes in", user=BOB)
    await stack.say(stack.channel, ts, "alice follows up")
    replies = await stack.replies(stack.channel, ts, 2)
    assert "alice follows up" in replies[1]["text"]

    prompts = str(stack.converse_requests())
    assert "alice asks" in prompts
    for kept_out in ("bob's secret question", "alice elsewhere", "bob chimes in"):
        assert kept_out not in prompts
    # Bob heard only once: quiet thread messages are not answered with refusals.
    assert len(refusals_to(stack, BOB)) == 1
    assert len(stack.slack.bot_replies(stack.channel, ts)) == 2


async def test_endchat_from_someone_not_listed_is_refused(make_stack):
    stack = await allowlisted_stack(make_stack)
    ts = await stack.mention(stack.channel, "alice asks")
    await stack.replies(stack.channel, ts, 1)
    status, body = await stack.sender.send_command(
        slash_command(command="/endchat", text="", channel_id=stack.channel, user_id=BOB)
    )
    assert status == 200 and "not enabled here" in body
    status = await stack.handle(stack.channel, ts).query(ConversationWorkflow.status)
    assert not status.ending


@pytest.mark.parametrize("variable", ["THREADCHAT_ALLOWED_CHANNELS", "THREADCHAT_ALLOWED_USERS"])
def test_allowlists_are_slack_ids(variable):
    settings = load_settings({variable: "C0AAA, C0BBB  U0CCC"})
    assert getattr(settings.slack, variable.removeprefix("THREADCHAT_").lower()) == {
        "C0AAA",
        "C0BBB",
        "U0CCC",
    }
    with pytest.raises(ConfigError) as raised:
        load_settings({variable: "C0AAA,#general"})
    assert raised.value.variable == variable and "'#general'" in str(raised.value)


def test_empty_allowlists_let_everyone_in():
    slack = load_settings({}).slack
    assert slack.allows("C0ANY", "U0ANY")
    assert not dataclasses.replace(slack, allowed_users=frozenset({"U0A"})).allows("C0ANY", "U0B")
