"""Unit tests of the pure modules: durations, ids, dedupe, context budgeting, parsing."""

import pytest

from bot.parsing import parse_message_event, parse_reply_action
from threadchat import actions, context, dedupe, inference, texts
from threadchat.durations import parse_duration
from threadchat.ids import conversation_id, parse_thread_link, thread_permalink
from threadchat.model import (
    ChatMessage,
    ContextNote,
    FileRef,
    InferenceSettings,
    Quote,
    ReplyRef,
    ThreadRef,
    Turn,
    UserMessage,
)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("45s", 45), ("30m", 1800), ("2h", 7200), ("90", 90), (" 1.5m ", 90), ("1d", 86400)],
)
def test_durations_parse(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "abc", "10x", "-5s", "0", "m30"])
def test_bad_durations_are_rejected(text):
    with pytest.raises(ValueError):
        parse_duration(text)


def test_conversation_id_is_stable_and_distinct():
    assert conversation_id("T1", "C1", "1.2") == conversation_id("T1", "C1", "1.2")
    assert conversation_id("T1", "C1", "1.2") != conversation_id("T1", "C2", "1.2")
    assert conversation_id("T1", "C1", "1.2").startswith("threadchat-")


@pytest.mark.parametrize(
    ("link", "channel", "thread_ts"),
    [
        (
            "https://acme.slack.com/archives/C012AB3CD/p1700000000123456",
            "C012AB3CD",
            "1700000000.123456",
        ),
        (
            "<https://acme.slack.com/archives/C1/p1700000001000200?thread_ts=1700000000.000100"
            "&cid=C1>",
            "C1",
            "1700000000.000100",
        ),
        ("<https://acme.slack.com/archives/D9/p1700000000000001|link>", "D9", "1700000000.000001"),
    ],
)
def test_thread_links_parse(link, channel, thread_ts):
    location = parse_thread_link(link)
    assert (location.channel, location.thread_ts) == (channel, thread_ts)


@pytest.mark.parametrize("link", ["hello", "https://example.com/x", "archives/C1/p123"])
def test_non_links_are_rejected(link):
    assert parse_thread_link(link) is None


def test_permalink_round_trips():
    link = thread_permalink("acme", "C1", "1700000000.000100")
    location = parse_thread_link(link)
    assert (location.channel, location.thread_ts) == ("C1", "1700000000.000100")


def test_dedupe_window_is_bounded_and_remembers_recent():
    seen: list[str] = []
    assert dedupe.remember(seen, "1", limit=3)
    assert not dedupe.remember(seen, "1", limit=3)
    for ts in "234":
        assert dedupe.remember(seen, ts, limit=3)
    assert seen == ["2", "3", "4"]
    assert dedupe.remember(seen, "1", limit=3)  # forgotten once out of the window


def _shown(message: ChatMessage) -> str:
    """A prompt message's text: its quotes as "[name] text" lines, or an answer's text."""
    return "\n".join(f"[{q.name}] {q.text}" for q in message.quotes) or message.text


def _turn(i: int, size: int = 40) -> Turn:
    return Turn(messages=[UserMessage(str(i), "U1", f"q{i} " + "x" * size)], reply="a" * size)


def test_prompt_alternates_and_ends_with_the_new_messages():
    turns = [_turn(i) for i in range(3)]
    new = [UserMessage("9", "U1", "first"), UserMessage("10", "U2", "second")]
    prompt = context.prompt_messages(turns, new, {"U1": "alice"}, budget_tokens=10_000)
    assert [m.role for m in prompt] == ["user", "assistant"] * 3 + ["user"]
    assert prompt[-1].quotes == [
        Quote("U1", "alice", "9", "first"),
        Quote("U2", "U2", "10", "second"),
    ]
    assert prompt[-1].text == ""  # the quotes alone say who wrote what


def test_prompt_keeps_only_the_newest_turns_within_budget():
    turns = [_turn(i, size=400) for i in range(50)]
    prompt = context.prompt_messages(turns, [UserMessage("x", "U1", "hi")], {}, budget_tokens=1000)
    assert sum(context.estimate_tokens(_shown(m)) for m in prompt) <= 1000
    assert "q49" in _shown(prompt[-3])  # the newest answered turn is kept
    assert all("q0 " not in _shown(m) for m in prompt)


def test_prompt_skips_failed_turns():
    turns = [_turn(1), Turn(messages=[UserMessage("2", "U1", "lost")], reply=None), _turn(3)]
    prompt = context.prompt_messages(turns, [UserMessage("4", "U1", "now")], {}, 10_000)
    assert all("lost" not in _shown(m) for m in prompt)
    assert [m.role for m in prompt] == ["user", "assistant", "user", "assistant", "user"]


def test_blank_messages_are_never_sent_blank():
    text = context.user_turn_text([UserMessage("1", "U1", "   ")], {})
    assert text.strip() and "(no text)" in text


def test_folding_starts_over_budget_and_goes_down_to_half():
    turns = [_turn(i, size=400) for i in range(10)]  # about 200 tokens each
    assert context.turns_to_fold(turns[:2], {}, budget_tokens=1000) == 0
    count = context.turns_to_fold(turns, {}, budget_tokens=1000)
    remaining = turns[count:]
    assert sum(context.turn_tokens(t, {}) for t in remaining) <= 500
    assert count < len(turns)  # the newest turn always stays


def test_context_notes_are_the_summaries_then_the_files_left_out():
    chart = FileRef("F1", "chart.png", "image/png", 10)
    notes = context.context_notes("old talk", "recent talk", [chart])
    assert notes == [
        ContextNote("previous_summary", "old talk"),
        ContextNote("rolling_summary", "recent talk"),
        ContextNote("files_left_out", "chart.png"),
    ]
    assert context.context_notes("", "") == []


BOT = "U0BOT"


def _event(**fields):
    event = {"type": "message", "channel": "C1", "user": "U1", "text": "hi", "ts": "1.000001"}
    event.update(fields)
    return event


def test_mention_at_top_level_starts_a_thread_on_its_ts():
    incoming = parse_message_event(
        _event(type="app_mention", text=f"<@{BOT}> hello"), "T1", BOT, is_mention_event=True
    )
    assert incoming.may_start
    assert incoming.thread.thread_ts == "1.000001"
    assert incoming.message.text == "hello"


def test_mention_inside_a_thread_uses_the_thread():
    incoming = parse_message_event(_event(text=f"hey <@{BOT}>", thread_ts="0.5"), "T1", BOT)
    assert incoming.may_start and incoming.thread.thread_ts == "0.5"


def test_follow_up_in_thread_may_not_start():
    incoming = parse_message_event(_event(thread_ts="0.5"), "T1", BOT)
    assert not incoming.may_start and incoming.thread.thread_ts == "0.5"


def test_top_level_dm_starts_and_channel_chatter_is_ignored():
    assert parse_message_event(_event(channel_type="im", channel="D1"), "T1", BOT).may_start
    assert parse_message_event(_event(), "T1", BOT) is None


@pytest.mark.parametrize(
    "fields",
    [
        {"subtype": "message_changed"},
        {"subtype": "message_deleted"},
        {"subtype": "channel_join"},
        {"subtype": "bot_message", "thread_ts": "0.5"},
        {"bot_id": "B123"},  # another app's post outside any thread
        {"user": BOT, "thread_ts": "0.5"},
        {"user": None, "thread_ts": "0.5"},
    ],
)
def test_edits_joins_and_bot_messages_are_ignored(fields):
    assert parse_message_event(_event(**fields), "T1", BOT) is None


def test_summary_message_has_header_people_turns_and_duration():
    text = texts.summary_message(
        "- decided X",
        ended_by="command",
        participants=["alice", "bob"],
        turns=3,
        duration_seconds=3720,
    )
    header, facts, _, body = text.split("\n", 3)
    assert header == "### Conversation summary"
    assert "/endchat" in facts and "alice, bob" in facts and "3 turns" in facts
    assert "1 h 2 min" in facts
    assert body == "- decided X"


def test_summary_message_without_a_summary_says_why():
    text = texts.summary_message(
        "", ended_by="inactivity", participants=["alice"], turns=1, duration_seconds=5
    )
    assert "quiet" in text and "1 turn ·" in text and "5 s" in text and ":warning:" in text


@pytest.mark.parametrize(
    ("error_type", "words"),
    [
        ("ThrottlingException", "busy"),
        ("AccessDeniedException", "not allowed"),
        ("Slack:msg_too_long", "Slack"),
        (None, "couldn't reach"),
    ],
)
def test_turn_failures_start_with_a_warning_and_say_what_happened(error_type, words):
    notice = texts.turn_failure(error_type)
    assert notice.startswith(":warning:") and words in notice


# -- The buttons under a reply, and how answers end ------------------------------------------


def test_reply_buttons_name_one_version_of_one_reply():
    reply = ReplyRef("run-1", turn=3, version=2)
    assert actions.decode(actions.encode(reply)) == reply
    feedback, regenerate = actions.reply_actions(reply)
    assert feedback["type"] == "context_actions"
    [buttons] = feedback["elements"]
    assert (buttons["type"], buttons["action_id"]) == ("feedback_buttons", actions.FEEDBACK)
    assert actions.decode_feedback(buttons["positive_button"]["value"]) == ("up", reply)
    assert actions.decode_feedback(buttons["negative_button"]["value"]) == ("down", reply)
    assert regenerate["elements"] == [
        {
            "type": "button",
            "action_id": actions.REGENERATE,
            "text": {"type": "plain_text", "text": "Regenerate", "emoji": True},
            "value": actions.encode(reply),
        }
    ]


@pytest.mark.parametrize("value", [None, 3, "", "up", "up/", "meh/k:1:0", "up/k:1", "/k:1:0"])
def test_feedback_values_we_did_not_write_are_refused(value):
    assert actions.decode_feedback(value) is None


@pytest.mark.parametrize("value", [None, 3, "", "key", "key:1", "key:x:0", ":1:0", "k:1:0" * 50])
def test_button_values_we_did_not_write_are_refused(value):
    assert actions.decode(value) is None


def test_a_message_with_buttons_carries_its_markdown_in_a_block():
    assert actions.message_body("**hi**", None) == {"markdown_text": "**hi**"}
    body = actions.message_body("**hi**", ReplyRef("k", 1))
    assert body["text"] == "**hi**"
    assert body["blocks"][0] == {"type": "markdown", "text": "**hi**"}
    assert [b["type"] for b in body["blocks"][1:]] == ["context_actions", "actions"]


def test_a_regenerate_samples_more_freely_up_to_the_top_of_the_range():
    settings = InferenceSettings(model_id="m", max_tokens=10, temperature=0.5)
    assert inference.for_regenerate(settings).temperature == 0.8
    hot = InferenceSettings(model_id="m", max_tokens=10, temperature=0.9)
    assert inference.for_regenerate(hot).temperature == 1.0
    assert inference.for_regenerate(settings).model_id == "m"


def test_what_the_thread_shows_of_an_answer():
    assert texts.reply_text("answer", "end_turn") == "answer"
    assert texts.reply_text("answer", "max_tokens").endswith(texts.ANSWER_CUT)
    assert texts.reply_text("The guardrail says no.", "guardrail_intervened") == (
        "The guardrail says no."
    )
    assert texts.reply_text(texts.EMPTY_ANSWER, "content_filtered") == texts.ANSWER_BLOCKED


def test_blocked_turns_stay_out_of_the_prompt():
    turns = [
        Turn([UserMessage("1.1", "U1", "bad")], "blocked text", stop_reason="guardrail_intervened"),
        Turn([UserMessage("1.2", "U1", "good")], "fine answer", stop_reason="end_turn"),
    ]
    prompt = context.prompt_messages(turns, [UserMessage("1.3", "U1", "next")], {}, 10_000)
    assert [_shown(m) for m in prompt] == ["[U1] good", "fine answer", "[U1] next"]
    assert "blocked text" not in str(context.history_messages(turns, {}))


def _click(**changes):
    body = {
        "type": "block_actions",
        "team": {"id": "T1"},
        "channel": {"id": "C1"},
        "user": {"id": "U1"},
        "container": {"type": "message", "message_ts": "2.0", "thread_ts": "1.0"},
        "actions": [{"action_id": actions.REGENERATE, "value": "key:1:0"}],
    }
    body.update(changes)
    return body


def test_a_click_on_a_reply_button_is_parsed_into_its_thread_and_reply():
    click = parse_reply_action(_click())
    assert click.thread == ThreadRef("T1", "C1", "1.0")
    assert (click.user, click.action_id, click.reply) == (
        "U1",
        actions.REGENERATE,
        ReplyRef("key", 1),
    )


@pytest.mark.parametrize(
    ("rating", "action_id"), [("up", actions.FEEDBACK_UP), ("down", actions.FEEDBACK_DOWN)]
)
def test_a_click_on_slacks_feedback_buttons_carries_its_rating(rating, action_id):
    clicked = {
        "type": "feedback_buttons",
        "action_id": actions.FEEDBACK,
        "value": f"{rating}/k:1:0",
    }
    click = parse_reply_action(_click(actions=[clicked]))
    assert (click.action_id, click.reply) == (action_id, ReplyRef("k", 1))


@pytest.mark.parametrize(
    "changes",
    [
        {"actions": []},
        {"actions": [{"action_id": actions.FEEDBACK, "value": "k:1:0"}]},
        {"actions": [{"action_id": actions.REGENERATE, "value": "forged"}]},
        {"container": None},
        {"user": {"id": "not an id"}},
        {"container": {"type": "message", "message_ts": "x"}},
    ],
)
def test_clicks_we_cannot_trust_are_ignored(changes):
    assert parse_reply_action(_click(**changes)) is None
