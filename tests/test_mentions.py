"""Mentions in model text (issue 19, item 3): threadchat.mentions alone, with many small
cases, and the streaming guard against the whole-text function over random cuts; then the
activities and a whole conversation, against the local Slack, which records every
notification a bot message would send."""

import random

import pytest
from temporalio.testing import ActivityEnvironment

from activities.bedrock import BedrockActivities
from activities.replies import ReplyActivities
from activities.slack import SlackActivities
from devtools.bedrock import LocalBedrock
from devtools.slack import LocalSlack
from devtools.slack_events import slash_command
from devtools.stack import ALICE, TEAM
from threadchat.config import BedrockSettings
from threadchat.mentions import WORD_JOINER, MentionGuard, neutralize
from threadchat.model import (
    ChatMessage,
    PrivateNote,
    Quote,
    ReplyRequest,
    SlackPost,
    ThreadRef,
    ThreadTitle,
)
from threadchat.slack_client import make_client

WJ = WORD_JOINER
PEOPLE = {"U0ALICE", "W0BOB"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<!channel>", f"@{WJ}channel"),
        ("<!here>", f"@{WJ}here"),
        ("<!everyone>", f"@{WJ}everyone"),
        ("<!group>", f"@{WJ}group"),
        ("<!here|here>", f"@{WJ}here"),
        ("<!channel|@channel>", f"@{WJ}channel"),
        ("<!subteam^S0DEVS>", f"@{WJ}S0DEVS"),
        ("<!subteam^S0DEVS|@devs>", f"@{WJ}devs"),
        ("<!subteam^S0DEVS|devs team>", f"@{WJ}devs team"),
        ("<!CHANNEL>", f"@{WJ}CHANNEL"),
        ("<!something-new>", f"@{WJ}something-new"),  # any special but dates
        ("<!channel|>", f"@{WJ}channel"),
        ("<!|x>", f"@{WJ}x"),
        ("<!>", f"@{WJ}someone"),
        ("hi <!here>, all", f"hi @{WJ}here, all"),
        ("<!here|@channel>", f"@{WJ}channel"),
        ("<!here|ping @everyone>", f"@{WJ}ping @{WJ}everyone"),  # every @ in labels
        ("<!here|a@b>", f"@{WJ}a@{WJ}b"),
        ("<!x@>here", f"@{WJ}x@{WJ}here"),  # no bare @here made of a label and what follows
        ("<!date^1700000000^{date_short}|Nov 14>", "<!date^1700000000^{date_short}|Nov 14>"),
        # Broken or nested forms: the opener is escaped, so nothing can complete it.
        ("<!channel", "&lt;!channel"),
        ("<!chan\nnel>", "&lt;!chan\nnel>"),
        ("<!here|<!channel>>", f"&lt;!here|@{WJ}channel>"),
        ("<<!channel>>", f"&lt;@{WJ}channel>"),  # no `<@` made in front of the `@`
        ("<<@U0EVE>>", f"&lt;@{WJ}U0EVE>"),
        ("<<@U0ALICE>>", "&lt;<@U0ALICE>>"),
        ("x << 2", "x << 2"),
        ("<!channel|" + "x" * 400 + ">", "&lt;!channel|" + "x" * 400 + ">"),
        # User mentions: participants stay, others become text.
        ("<@U0ALICE>", "<@U0ALICE>"),
        ("<@W0BOB|bob>", "<@W0BOB|bob>"),
        ("<@U0MALLORY>", f"@{WJ}U0MALLORY"),
        ("<@U0MALLORY|mallory>", f"@{WJ}mallory"),
        ("<@u0alice>", f"@{WJ}u0alice"),  # not the participant's id as Slack writes it
        ("<@U0ALICE|x> <@U0EVE>", f"<@U0ALICE|x> @{WJ}U0EVE"),
        ("<@here>", f"@{WJ}here"),
        ("<@U0EVE", "&lt;@U0EVE"),
        # Bare words, which mrkdwn `text` can turn into pings.
        ("@channel", f"@{WJ}channel"),
        ("@here please", f"@{WJ}here please"),
        ("Hey @Everyone!", f"Hey @{WJ}Everyone!"),
        ("(@here)", f"(@{WJ}here)"),
        ("`@channel`", f"`@{WJ}channel`"),
        ("@heretic", "@heretic"),
        ("@channels", "@channels"),
        ("@here-and-now", f"@{WJ}here-and-now"),
        ("mail me@here.com", "mail me@here.com"),
        ("a.@here", "a.@here"),
        ("@@here", "@@here"),
        ("see https://x.org/@channel", "see https://x.org/@channel"),
        # Left alone: Slack's escaping, links, channels, plain text.
        ("&lt;!channel&gt;", "&lt;!channel&gt;"),
        ("<#C0GENERAL|general>", "<#C0GENERAL|general>"),
        ("<https://example.com|a link>", "<https://example.com|a link>"),
        ("a < b and c > d", "a < b and c > d"),
        ("x <- y", "x <- y"),
        ("", ""),
    ],
)
def test_neutralize(text, expected):
    assert neutralize(text, PEOPLE) == expected


def test_unknown_participants_keep_user_mentions_but_never_broadcasts():
    text = "<@U0EVE> and <!channel> and @here"
    assert neutralize(text, None) == f"<@U0EVE> and @{WJ}channel and @{WJ}here"
    assert neutralize(text, set()) == f"@{WJ}U0EVE and @{WJ}channel and @{WJ}here"


def test_neutralizing_twice_changes_nothing_more():
    text = "<!channel> <@U0EVE|eve> @here <!here <@U0ALICE> <!subteam^S1|@devs>"
    once = neutralize(text, PEOPLE)
    assert neutralize(once, PEOPLE) == once


def pings(text: str) -> list[str]:
    """What Slack would notify for, as threadchat.mentions understands Slack."""
    import re

    tokens = re.findall(r"<([!@][^<>|\n]*)(?:\|[^<>\n]*)?>", text)
    kept = re.compile(r"<(!date\^|@(U0ALICE|W0BOB)[|>])")
    assert all(kept.match(text, m.start()) for m in re.finditer("<[!@]", text)), text
    bare = re.findall(r"(?<![\w.+\-@/])@(?:channel|here|everyone|group)\b", text, re.I)
    return [t for t in tokens if not t.startswith("!date^") and t[1:] not in PEOPLE] + bare


PIECES = [
    "<!channel>", "<!here|here>", "<!subteam^S1|@devs>", "<@U0ALICE>", "<@U0EVE|eve>",
    "<!date^1^{date}|d>", "@channel", "@here", "@heretic", "<", ">", "!", "@", "|", "\n",
    " ", "  ", "a", "word", "me@here.com", "<#C1|c>", "<https://x.y|l>", "&lt;!here&gt;",
    "x" * 120, "é", "channel", "here", "subteam^", "<!", "<@",
]  # fmt: skip


@pytest.mark.parametrize("seed", range(300))
def test_the_streaming_guard_sends_exactly_what_the_whole_text_would_be(seed):
    rng = random.Random(seed)
    text = "".join(rng.choice(PIECES) for _ in range(rng.randint(1, 60)))
    whole = neutralize(text, PEOPLE)
    assert pings(whole) == []  # nothing left to ping anyone
    assert neutralize(whole, PEOPLE) == whole
    guard = MentionGuard(PEOPLE)
    sent, start = [], 0
    while start < len(text):
        size = rng.choice([1, 1, 2, 3, 5, 12, 40])
        sent.append(guard.feed(text[start : start + size]))
        start += size
    sent.append(guard.flush())
    assert "".join(sent) == whole, text


def test_the_guard_holds_back_only_what_could_still_become_a_mention():
    guard = MentionGuard(PEOPLE)
    assert guard.feed("Hello team, ") == "Hello team, "
    assert guard.feed("ping <!chan") == "ping "  # might still be <!channel>
    assert guard.feed("nel> now ") == f"@{WJ}channel now "
    assert guard.feed("and @ev") == "and "
    assert guard.feed("eryone") == ""
    assert guard.flush() == f"@{WJ}everyone"
    long_wait = MentionGuard(PEOPLE)
    # A `<!` that cannot close as a mention any more is let go, escaped.
    out = long_wait.feed("<!here " + "y " * 300)
    assert out.startswith("&lt;!here y") and len(out) > 500


# --- Against the local Slack ---------------------------------------------------------------

BROADCASTS = "<!channel> <!here|here> <!everyone> <!subteam^S0DEVS|@devs> @channel @here"


@pytest.fixture
async def slack():
    server = LocalSlack()
    await server.start()
    yield server
    await server.stop()


def thread_in(slack: LocalSlack) -> ThreadRef:
    root = slack.add_message("C0TEAM", user=ALICE, text="a question")
    return ThreadRef(TEAM, "C0TEAM", root["ts"])


async def test_posts_titles_and_notes_keep_only_participants_mentions(slack):
    activities = SlackActivities(make_client(slack.bot_token, slack.base_url))
    thread = thread_in(slack)
    text = f"{BROADCASTS} ask <@U0EVE> or <@{ALICE}>, see https://example.com"
    env = ActivityEnvironment()
    await env.run(activities.post_message, SlackPost(thread, text, "k1", participants=[ALICE]))
    [post] = slack.calls_to("chat.postMessage")
    assert post.params["unfurl_links"] is False and post.params["unfurl_media"] is False
    assert f"@{WJ}U0EVE" in post.params["markdown_text"]
    await env.run(activities.set_title, ThreadTitle(thread, "<!here> title", [ALICE]))
    assert slack.session_titles[("C0TEAM", thread.thread_ts)] == f"@{WJ}here title"
    note = PrivateNote(thread, "U0BOB", "<!channel> <@U0BOB> <@U0EVE>", participants=[ALICE])
    await env.run(activities.post_private, note)
    assert slack.ephemerals[-1]["text"] == f"@{WJ}channel <@U0BOB> @{WJ}U0EVE"
    assert [p["mention"] for p in slack.pings] == [f"@{ALICE}"]


async def test_a_streamed_reply_keeps_only_participants_mentions(slack):
    async with LocalBedrock(stream_chunk_chars=2, stream_delay_s=0.02) as bedrock:
        model = BedrockActivities(BedrockSettings(endpoint_url=bedrock.url, read_timeout=10))
        activities = ReplyActivities(model, make_client(slack.bot_token, slack.base_url))
        thread = thread_in(slack)
        said = f"{BROADCASTS} <@U0EVE|eve> <@{ALICE}>"
        question = f"[alice] {said}"
        request = ReplyRequest(
            thread=thread,
            messages=[
                ChatMessage("user", question, quotes=[Quote(ALICE, "alice", "1.000001", said)])
            ],
            context_notes="",
            idempotency_key="reply-1",
            recipient_user=ALICE,
            participants=[ALICE],
        )
        delivered = await ActivityEnvironment().run(activities.stream_reply, request)
    assert "<!channel>" in delivered.text  # the model's words, kept as written...
    [reply] = slack.bot_replies("C0TEAM", thread.thread_ts)
    assert f"@{WJ}channel" in reply["text"] and f"@{WJ}eve" in reply["text"]  # ...not sent
    assert len(slack.calls_to("chat.appendStream")) >= 2  # streamed in pieces
    assert [p["mention"] for p in slack.pings] == [f"@{ALICE}"]


@pytest.mark.parametrize("streaming", [True, False])
async def test_a_reply_and_summary_quoting_broadcasts_ping_no_one(make_stack, streaming):
    stack = await make_stack(streaming=streaming, bedrock_options={"stream_chunk_chars": 3})
    # The offline model quotes the question, so it "says" whatever the question holds.
    ts = await stack.mention(stack.channel, BROADCASTS)
    [reply] = await stack.replies(stack.channel, ts, 1)
    assert f'You said: "[alice] @{WJ}channel @{WJ}here @{WJ}everyone @{WJ}devs' in reply["text"]
    status, _ = await stack.sender.send_command(
        slash_command(command="/endchat", text="", channel_id=stack.channel, user_id=ALICE)
    )
    assert status == 200
    await stack.handle(stack.channel, ts).result()
    replies = await stack.replies(stack.channel, ts, 2)
    summary = replies[1]["text"]
    assert "Summary (offline model)" in summary and f'alice asked: "@{WJ}channel' in summary
    assert "<!" not in summary  # no broadcast left whole, the user group's included
    assert [p for p in stack.slack.pings if p["channel"] == stack.channel] == []
    posts = [c.params for c in stack.slack.calls_to("chat.postMessage")]
    assert posts and all(p.get("unfurl_links") is False for p in posts)
    assert all(p.get("unfurl_media") is False for p in posts)
