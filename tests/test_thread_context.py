"""The bot sees what the people in the thread see (issue 20), on the real dev server with
Slack's own payload shapes: a mention inside a thread reads the thread so far, other apps'
posts are context and never answered, and in a group thread only mentions are answered."""

import tempfile

from activities.bedrock import BedrockActivities
from devtools.slack_events import app_message_event, message_changed_event, message_event
from devtools.stack import ALICE, BOB, Stack, eventually
from threadchat import texts
from threadchat.config import BedrockSettings
from threadchat.model import (
    ChatMessage,
    EndRequest,
    Quote,
    ReplyRequest,
    SummaryRequest,
    ThreadContext,
    ThreadRef,
)
from workflows.conversation import ConversationWorkflow

MONITOR = "B0MONITOR"
ALERT = [
    {
        "color": "danger",
        "fallback": "[FIRING] checkout latency",
        "title": "[FIRING] checkout-api p99 latency",
        "text": "p99 is 2.4s (threshold 800ms) since 09:12 UTC",
        "fields": [{"title": "Runbook", "value": "https://runbooks.local/checkout", "short": 1}],
    }
]
ALERT_BLOCKS = [
    {"type": "header", "text": {"type": "plain_text", "text": "Checkout degraded"}},
    {"type": "section", "text": {"type": "mrkdwn", "text": "*Region:* eu-west-1, pods 3/8"}},
    {"type": "actions", "elements": [{"type": "button", "text": {"type": "plain_text"}}]},
]


def user_blocks(stack: Stack, number: int = -1) -> str:
    """The user-role content of a model call (the latest by default), as the model reads it."""
    body = stack.converse_requests()[number]
    return "\n".join(
        str(block) for m in body["messages"] if m["role"] == "user" for block in m["content"]
    )


def system_prompt(stack: Stack, number: int = -1) -> str:
    return str(stack.converse_requests()[number].get("system", []))


async def kept(stack: Stack, thread_ts: str, count: int) -> None:
    """Wait until the conversation keeps `count` messages unanswered: they were taken in and
    set aside, not answered (an answered one would be pending, then a turn)."""

    async def holds() -> bool:
        status = await stack.handle(stack.channel, thread_ts).query(ConversationWorkflow.status)
        return status.kept == count and status.pending == 0

    await eventually(holds, what=f"{count} messages kept unanswered")


def thread_reads(stack: Stack) -> list:
    """conversations.replies calls that read a thread's past (retried posts read forward)."""
    return [c for c in stack.slack.calls_to("conversations.replies") if "latest" in c.params]


async def post_alert(stack: Stack, thread_ts: str, *, event: bool = True) -> dict:
    """The monitoring app posts its alert in the thread (and Slack sends the event)."""
    alert = stack.slack.add_app_message(
        stack.channel,
        bot_id=MONITOR,
        name="Monitoring",
        attachments=ALERT,
        blocks=ALERT_BLOCKS,
        thread_ts=thread_ts,
    )
    if event:
        status, _ = await stack.sender.send_event(app_message_event(alert, channel=stack.channel))
        assert status == 200
    return alert


# -- 1. The thread so far ----------------------------------------------------------------------


async def test_a_mention_inside_a_thread_reads_the_thread_so_far(make_stack):
    stack = await make_stack()
    stack.slack.add_user(ALICE, "alice")
    root = stack.slack.add_message(stack.channel, user=ALICE, text="checkout is slow again")
    await post_alert(stack, root["ts"], event=False)  # before the bot was in: no event of ours
    stack.slack.add_message(
        stack.channel, user=BOB, text="I restarted two pods, no change", thread_ts=root["ts"]
    )
    mention = await stack.mention(
        stack.channel, "what do you make of this?", user=BOB, thread_ts=root["ts"]
    )
    assert mention != root["ts"]  # the mention's ts differs from its thread_ts
    await stack.replies(stack.channel, root["ts"], 1)

    prompt = user_blocks(stack)
    assert "kind=&quot;thread&quot;" in prompt or 'kind="thread"' in prompt
    for said in (
        "checkout is slow again",
        "I restarted two pods, no change",
        "p99 is 2.4s (threshold 800ms)",  # the attachment's text
        "Region:* eu-west-1",  # the blocks'
        "Runbook: https://runbooks.local/checkout",
    ):
        assert said in prompt, said
    assert 'from=\\"Monitoring (app)\\"' in prompt or 'from="Monitoring (app)"' in prompt
    assert 'from="alice"' in prompt or 'from=\\"alice\\"' in prompt  # labelled by author
    assert "checkout is slow" not in system_prompt(stack)  # never the system prompt
    # The mention is the question, not part of what came before.
    assert prompt.count("what do you make of this?") == 1
    assert len(thread_reads(stack)) == 1

    # Read once: the next turn carries what was read, and reads nothing more.
    await stack.say(stack.channel, root["ts"], "and the runbook?", user=BOB)
    await stack.replies(stack.channel, root["ts"], 2)
    assert "p99 is 2.4s" in user_blocks(stack)
    assert len(thread_reads(stack)) == 1


async def test_a_mention_at_the_top_of_a_thread_reads_nothing(make_stack):
    stack = await make_stack()
    ts = await stack.mention(stack.channel, "hello")
    await stack.replies(stack.channel, ts, 1)
    assert thread_reads(stack) == []
    assert "thread" not in user_blocks(stack).split("message from")[0]


async def test_the_newest_of_a_long_thread_are_kept_and_the_rest_counted(make_stack):
    stack = await make_stack(context_budget_tokens=2000)  # 500 tokens for the thread
    root = stack.slack.add_message(stack.channel, user=ALICE, text="message 0 " + "x" * 150)
    for number in range(1, 50):
        stack.slack.add_message(
            stack.channel,
            user=ALICE if number % 2 else BOB,
            text=f"message {number} " + "x" * 150,
            thread_ts=root["ts"],
        )
    await stack.mention(stack.channel, "sum it up", thread_ts=root["ts"])
    await stack.replies(stack.channel, root["ts"], 1)
    prompt = user_blocks(stack)
    assert "message 49 " in prompt and "message 0 " not in prompt
    shown = sum(f"message {n} " in prompt for n in range(50))
    assert 3 <= shown < 50
    assert f"({50 - shown} older messages not shown.)" in prompt


async def test_the_bots_own_earlier_answers_come_in_as_its_own(make_stack):
    stack = await make_stack()
    first = await stack.mention(stack.channel, "what is 2+2?")
    [answer] = await stack.replies(stack.channel, first, 1)
    await stack.handle(stack.channel, first).signal(
        ConversationWorkflow.end, EndRequest(requested_by="", via="operator")
    )
    await stack.handle(stack.channel, first).result()
    await stack.mention(stack.channel, "and again?", thread_ts=first)
    await stack.replies(stack.channel, first, 3)  # answer, summary, new answer
    prompt = user_blocks(stack)
    assert 'from="you"' in prompt or 'from=\\"you\\"' in prompt
    assert 'from="Monitoring' not in prompt and answer["ts"] in prompt


async def test_a_thread_slack_will_not_let_us_read_is_said_under_the_answer(make_stack):
    stack = await make_stack()
    root = stack.slack.add_message(stack.channel, user=ALICE, text="the alert fired")
    stack.slack.inject("conversations.replies", error="ratelimited", status=429, times=10)
    await stack.mention(stack.channel, "what does it mean?", thread_ts=root["ts"])
    [reply] = await stack.replies(stack.channel, root["ts"], 1)
    assert texts.THREAD_UNREAD in reply["text"]
    assert "the alert fired" not in user_blocks(stack)


# -- 2. Other apps' posts in a conversation's thread --------------------------------------------


async def test_another_apps_post_is_context_for_the_next_answer_and_never_answered(make_stack):
    stack = await make_stack()
    ts = await stack.mention(stack.channel, "watch checkout with me")
    await stack.replies(stack.channel, ts, 1)
    calls = len(stack.converse_requests())
    await post_alert(stack, ts)
    # The bot's own post, delivered as Slack would: dropped, never context twice.
    own = stack.slack.add_message(stack.channel, user=stack.slack.bot_user_id, text="own words")
    own_event = message_event(
        channel=stack.channel,
        user=stack.slack.bot_user_id,
        text="own words",
        ts=own["ts"],
        thread_ts=ts,
        bot_id=stack.slack.bot_id,
    )
    assert (await stack.sender.send_event(own_event))[0] == 200
    await kept(stack, ts, 1)  # the alert, and only the alert
    assert len(stack.slack.bot_replies(stack.channel, ts)) == 1
    await stack.say(stack.channel, ts, "what does this alert mean?")
    replies = await stack.replies(stack.channel, ts, 2)
    assert len(replies) == 2 and len(stack.converse_requests()) == calls + 1  # alert: no turn
    prompt = user_blocks(stack)
    assert "p99 is 2.4s" in prompt and "Checkout degraded" in prompt
    assert "Monitoring (app)" in prompt
    assert "own words" not in prompt
    status = await stack.handle(stack.channel, ts).query(ConversationWorkflow.status)
    assert status.participants == [ALICE] and status.turn_count == 2


# -- 4. When to answer ----------------------------------------------------------------------------


async def test_once_a_second_person_writes_only_mentions_are_answered(make_stack):
    stack = await make_stack(reply_mode="auto")
    ts = await stack.mention(stack.channel, "help me plan the launch", user=ALICE)
    await stack.replies(stack.channel, ts, 1)
    await stack.say(stack.channel, ts, "first, the date", user=ALICE)  # one person: answered
    await stack.replies(stack.channel, ts, 2)
    calls = len(stack.converse_requests())
    await stack.say(stack.channel, ts, "Alice, I think Friday works", user=BOB)
    await stack.say(stack.channel, ts, "Friday it is, Bob", user=ALICE)
    edited = await stack.say(stack.channel, ts, "budget is 5k", user=BOB)
    changed = message_changed_event(
        channel=stack.channel,
        user=BOB,
        ts=edited,
        text="budget is 7k",
        previous_text="budget is 5k",
        thread_ts=ts,
    )
    assert (await stack.sender.send_event(changed))[0] == 200
    await kept(stack, ts, 3)
    assert len(stack.slack.bot_replies(stack.channel, ts)) == 2
    await stack.mention(stack.channel, "can you write the checklist?", user=BOB, thread_ts=ts)
    replies = await stack.replies(stack.channel, ts, 3)
    assert len(replies) == 3 and len(stack.converse_requests()) == calls + 1
    assert replies[-1]["text"].rstrip().endswith(texts.MENTIONS_ONLY)
    prompt = user_blocks(stack)
    for said in ("I think Friday works", "Friday it is, Bob", "budget is 7k"):
        assert said in prompt, said
    assert "budget is 5k" not in prompt

    # The switch is told once; a mention is still answered, plain messages are not.
    await stack.say(stack.channel, ts, "thanks!", user=ALICE)
    await kept(stack, ts, 1)
    await stack.mention(stack.channel, "one more thing", user=ALICE, thread_ts=ts)
    replies = await stack.replies(stack.channel, ts, 4)
    assert len(replies) == 4 and texts.MENTIONS_ONLY not in replies[-1]["text"]
    assert "thanks!" in user_blocks(stack)


async def test_a_channel_set_to_mentions_answers_only_mentions(make_stack):
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as channels:
        stack = await make_stack(channels_file=channels.name, reply_mode="auto")
        channels.write(f"{stack.channel}:\n  reply: mentions\n")
        channels.flush()
        ts = await stack.mention(stack.channel, "note this: the code is 42")
        await stack.replies(stack.channel, ts, 1)
        calls = len(stack.converse_requests())
        await stack.say(stack.channel, ts, "and the door is blue")  # not a mention: kept
        await kept(stack, ts, 1)
        await stack.mention(stack.channel, "what did I tell you?", thread_ts=ts)
        replies = await stack.replies(stack.channel, ts, 2)
        assert len(replies) == 2 and len(stack.converse_requests()) == calls + 1
        assert "and the door is blue" in user_blocks(stack)
        assert texts.MENTIONS_ONLY not in replies[-1]["text"]


async def test_in_a_dm_everything_is_answered_whatever_the_mode(make_stack):
    stack = await make_stack(reply_mode="mentions")
    dm = "D" + ALICE.removeprefix("U")
    ts = await stack.mention(dm, "hi")
    await stack.replies(dm, ts, 1)
    await stack.say(dm, ts, "still there?", channel_type="im")
    await stack.replies(dm, ts, 2)


def test_a_rolling_summary_continues_the_prompt_with_the_thread_as_the_reply_had_it():
    """Same prefix, same cache: a fold asked of the conversation itself opens with the thread
    as the reply's prompt did (the workflow passes it in both requests)."""
    model = BedrockActivities(BedrockSettings(endpoint_url="http://127.0.0.1:9"), client=object())
    thread = ThreadContext([Quote("B0MON", "Monitoring (app)", "1.1", "disk full")], left_out=2)
    question = ChatMessage("user", "", quotes=[Quote(ALICE, "alice", "1.2", "why?")])
    common = dict(thread_context=thread, context_notes=[], cache=False)
    reply = model.reply_request(
        ReplyRequest(
            thread=ThreadRef("T0", "C0", "1.0"), messages=[question], idempotency_key="k", **common
        ),
        streaming=False,
    )
    fold = model._continuation(
        SummaryRequest(
            earlier_summary="",
            turns=[],
            names={},
            final=False,
            conversation=[question, ChatMessage("assistant", "because")],
            **common,
        )
    )
    opening = reply.arguments["messages"][0]["content"]
    assert opening[0]["text"].startswith('<context kind="thread"')
    assert "(2 older messages not shown.)" in opening[0]["text"]
    assert fold.arguments["messages"][0]["content"] == opening
