"""Mentions in model text (issue 19, item 3): threadchat.mentions alone, with many small
cases, and the streaming guard against the whole-text function over random cuts."""

import random

import pytest

from threadchat.mentions import WORD_JOINER, MentionGuard, neutralize

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
