"""Tests for devtools.slack (LocalSlack) and devtools.slack_events.

Everything goes through the real slack_sdk AsyncWebClient and, for inbound requests, a real
Bolt AsyncApp served over HTTP, so the local doubles are checked against the libraries the
bot uses rather than against themselves.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
from collections import defaultdict
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import aiohttp
import pytest
from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.async_app import AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient

from devtools.slack import LocalSlack
from devtools.slack_events import (
    EventSender,
    app_mention_event,
    event_callback,
    message_event,
    message_shortcut,
    sign,
    slash_command,
)
from devtools.stack import eventually

CHANNEL = "C0GENERAL"
DM = "D0ALICE"
SECRET = "local-signing-secret"
TS_PATTERN = re.compile(r"^\d{10}\.\d{6}$")


@pytest.fixture
async def slack() -> AsyncIterator[LocalSlack]:
    server = LocalSlack()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
def client(slack: LocalSlack) -> AsyncWebClient:
    # No retry handlers: a lost response must surface instead of being retried.
    return AsyncWebClient(token=slack.bot_token, base_url=slack.base_url, retry_handlers=[])


async def slack_error(call: Any) -> SlackApiError:
    with pytest.raises(SlackApiError) as info:
        await call
    return info.value


# ----------------------------------------------------------------------------------------------
# Auth and plumbing


async def test_auth_test(slack: LocalSlack, client: AsyncWebClient) -> None:
    resp = await client.auth_test()
    assert resp["ok"] is True
    assert resp["url"] == "https://local.slack.com/"
    assert resp["team_id"] == "T0LOCAL"
    assert resp["user_id"] == "U0BOT"
    assert resp["bot_id"] == "B0BOT"
    assert resp["user"] == "threadchat"
    assert slack.base_url.startswith("http://127.0.0.1:") and slack.base_url.endswith("/api/")


async def test_wrong_token_is_invalid_auth(slack: LocalSlack) -> None:
    bad = AsyncWebClient(token="xoxb-wrong", base_url=slack.base_url, retry_handlers=[])
    err = await slack_error(bad.chat_postMessage(channel=CHANNEL, text="hi"))
    assert err.response.status_code == 200
    assert err.response["error"] == "invalid_auth"
    assert slack.messages(CHANNEL) == []


async def test_token_as_form_param_and_missing_token(slack: LocalSlack) -> None:
    async with aiohttp.ClientSession() as http:
        form = {"token": slack.bot_token, "channel": CHANNEL, "text": "via form"}
        async with http.post(slack.base_url + "chat.postMessage", data=form) as resp:
            assert resp.status == 200
            assert (await resp.json())["ok"] is True
        async with http.post(slack.base_url + "auth.test") as resp:
            assert await resp.json() == {"ok": False, "error": "not_authed"}
    assert [m["text"] for m in slack.messages(CHANNEL)] == ["via form"]
    # The token is never recorded.
    assert all("token" not in call.params for call in slack.calls)


async def test_unknown_method(client: AsyncWebClient) -> None:
    err = await slack_error(client.api_call("chat.doesNotExist", json={"channel": CHANNEL}))
    assert err.response["error"] == "unknown_method"


async def test_calls_are_recorded(slack: LocalSlack, client: AsyncWebClient) -> None:
    await client.chat_postMessage(channel=CHANNEL, text="one", unfurl_links=False)
    with pytest.raises(SlackApiError):
        await client.users_info(user="U0NOBODY")
    post, info = slack.calls_to("chat.postMessage")[0], slack.calls_to("users.info")[0]
    assert post.params == {"channel": CHANNEL, "text": "one", "unfurl_links": False}
    assert (post.status, post.error) == (200, None)
    assert info.params == {"user": "U0NOBODY"}  # sent as a GET query string
    assert (info.status, info.error) == (200, "user_not_found")
    assert post.at <= info.at


# ----------------------------------------------------------------------------------------------
# chat.postMessage and friends


async def test_post_message_stores_bot_reply(slack: LocalSlack, client: AsyncWebClient) -> None:
    parent = slack.add_message(CHANNEL, user="U0ALICE", text="question?")
    first = await client.chat_postMessage(channel=CHANNEL, thread_ts=parent["ts"], text="answer")
    second = await client.chat_postMessage(
        channel=CHANNEL, thread_ts=parent["ts"], markdown_text="**more**"
    )

    assert first["channel"] == CHANNEL
    assert TS_PATTERN.match(first["ts"]) and TS_PATTERN.match(parent["ts"])
    assert parent["ts"] < first["ts"] < second["ts"]
    message = first["message"]
    assert message["type"] == "message"
    assert (message["user"], message["bot_id"]) == ("U0BOT", "B0BOT")
    assert (message["text"], message["ts"], message["thread_ts"]) == (
        "answer",
        first["ts"],
        parent["ts"],
    )

    replies = slack.bot_replies(CHANNEL, parent["ts"])
    assert [r["ts"] for r in replies] == [first["ts"], second["ts"]]
    assert replies[1]["markdown_text"] == "**more**"
    assert replies[1]["text"] == "**more**"

    thread = slack.messages(CHANNEL, parent["ts"])
    assert [m["ts"] for m in thread] == [parent["ts"], first["ts"], second["ts"]]
    assert thread[0]["reply_count"] == 2
    assert thread[0]["reply_users"] == ["U0BOT"]
    assert thread[1]["parent_user_id"] == "U0ALICE"
    # Only the parent is top level.
    assert [m["ts"] for m in slack.messages(CHANNEL)] == [parent["ts"]]


async def test_post_message_blocks_and_metadata(slack: LocalSlack, client: AsyncWebClient) -> None:
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "*hi*"}}]
    metadata = {"event_type": "turn", "event_payload": {"turn_id": "t1"}}
    resp = await client.chat_postMessage(
        channel=CHANNEL, text="hi", blocks=blocks, metadata=metadata
    )
    stored = slack.messages(CHANNEL)[0]
    assert stored["ts"] == resp["ts"]
    assert stored["blocks"] == blocks
    assert stored["metadata"] == metadata


async def test_post_message_form_encoded_json_fields(slack: LocalSlack) -> None:
    """Form callers send blocks and metadata as JSON strings; they are stored parsed."""
    form = {
        "token": slack.bot_token,
        "channel": CHANNEL,
        "text": "form",
        "blocks": json.dumps([{"type": "divider"}]),
        "metadata": json.dumps({"event_type": "turn", "event_payload": {"n": 1}}),
    }
    async with (
        aiohttp.ClientSession() as http,
        http.post(slack.base_url + "chat.postMessage", data=form) as resp,
    ):
        assert (await resp.json())["ok"] is True
    stored = slack.messages(CHANNEL)[0]
    assert stored["blocks"] == [{"type": "divider"}]
    assert stored["metadata"] == {"event_type": "turn", "event_payload": {"n": 1}}


# slack_sdk warns, rightly, when a post has no top-level text; some cases here have none.
@pytest.mark.filterwarnings("ignore:The top-level `text` argument is missing:UserWarning")
@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({}, "no_text"),
        ({"text": "x" * 40_001}, "msg_too_long"),
        ({"markdown_text": "x" * 12_001}, "msg_too_long"),
        ({"text": "a", "markdown_text": "b"}, "markdown_text_conflict"),
        ({"blocks": [{"type": "divider"}], "markdown_text": "b"}, "markdown_text_conflict"),
        ({"text": "a", "blocks": [{"type": "divider"}] * 51}, "invalid_blocks"),
        (
            {"blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "x" * 3001}}]},
            "invalid_blocks",
        ),
        ({"text": "a", "blocks": "not json"}, "invalid_blocks_format"),
        ({"text": "a", "metadata": {"event_payload": {}}}, "invalid_metadata_format"),
    ],
)
async def test_post_message_validation(
    slack: LocalSlack, client: AsyncWebClient, kwargs: dict[str, Any], error: str
) -> None:
    err = await slack_error(client.chat_postMessage(channel=CHANNEL, **kwargs))
    assert err.response.status_code == 200
    assert err.response["error"] == error
    assert slack.messages(CHANNEL) == []


async def test_limits_are_inclusive(slack: LocalSlack, client: AsyncWebClient) -> None:
    await client.chat_postMessage(channel=CHANNEL, text="x" * 40_000)
    await client.chat_postMessage(channel=CHANNEL, markdown_text="y" * 12_000)
    await client.chat_postMessage(channel=CHANNEL, text="z", blocks=[{"type": "divider"}] * 50)
    assert len(slack.messages(CHANNEL)) == 3


async def test_update_and_delete(slack: LocalSlack, client: AsyncWebClient) -> None:
    changes: list[dict[str, Any]] = []
    slack.subscribe(changes.append)
    posted = await client.chat_postMessage(
        channel=CHANNEL, text="draft", blocks=[{"type": "divider"}]
    )
    updated = await client.chat_update(channel=CHANNEL, ts=posted["ts"], text="final")
    assert updated["ts"] == posted["ts"]
    assert updated["text"] == "final"
    stored = slack.messages(CHANNEL)[0]
    assert stored["text"] == "final"
    assert stored["blocks"] == [{"type": "divider"}]  # kept: not sent in the update
    assert "edited" in stored

    await client.chat_update(channel=CHANNEL, ts=posted["ts"], markdown_text="**md**")
    stored = slack.messages(CHANNEL)[0]
    assert (stored["markdown_text"], stored["text"]) == ("**md**", "**md**")
    assert "blocks" not in stored
    assert [c["type"] for c in changes] == ["message", "message_changed", "message_changed"]
    assert changes[1]["previous_message"]["text"] == "draft"

    err = await slack_error(client.chat_update(channel=CHANNEL, ts="1.000001", text="x"))
    assert err.response["error"] == "message_not_found"
    human = slack.add_message(CHANNEL, user="U0ALICE", text="mine")
    err = await slack_error(client.chat_update(channel=CHANNEL, ts=human["ts"], text="x"))
    assert err.response["error"] == "cant_update_message"

    await client.chat_delete(channel=CHANNEL, ts=posted["ts"])
    assert [m["ts"] for m in slack.messages(CHANNEL)] == [human["ts"]]
    assert changes[-1]["type"] == "message_deleted"


async def test_post_ephemeral(slack: LocalSlack, client: AsyncWebClient) -> None:
    seen: list[dict[str, Any]] = []
    slack.subscribe(seen.append)
    resp = await client.chat_postEphemeral(
        channel=CHANNEL, user="U0ALICE", text="only you", thread_ts="1700000000.000100"
    )
    assert TS_PATTERN.match(resp["message_ts"])
    assert slack.ephemerals == [
        {
            "channel": CHANNEL,
            "user": "U0ALICE",
            "text": "only you",
            "thread_ts": "1700000000.000100",
            "message_ts": resp["message_ts"],
        }
    ]
    assert slack.messages(CHANNEL) == []
    assert seen[0]["type"] == "ephemeral"


async def test_get_permalink(slack: LocalSlack, client: AsyncWebClient) -> None:
    parent = slack.add_message(CHANNEL, user="U0ALICE", text="q", ts="1732800000.000100")
    reply = await client.chat_postMessage(channel=CHANNEL, thread_ts=parent["ts"], text="a")

    top = await client.chat_getPermalink(channel=CHANNEL, message_ts=parent["ts"])
    assert top["permalink"] == f"https://local.slack.com/archives/{CHANNEL}/p1732800000000100"
    threaded = await client.chat_getPermalink(channel=CHANNEL, message_ts=reply["ts"])
    digits = reply["ts"].replace(".", "")
    assert threaded["permalink"] == (
        f"https://local.slack.com/archives/{CHANNEL}/p{digits}"
        f"?thread_ts={parent['ts']}&cid={CHANNEL}"
    )
    err = await slack_error(client.chat_getPermalink(channel=CHANNEL, message_ts="1.000002"))
    assert err.response["error"] == "message_not_found"


async def test_users_info(client: AsyncWebClient) -> None:
    alice = (await client.users_info(user="U0ALICE"))["user"]
    assert alice["id"] == "U0ALICE"
    assert alice["name"] == "alice"
    assert alice["is_bot"] is False
    assert alice["profile"]["display_name"] == "alice"
    assert alice["profile"]["real_name"] == "alice"
    bot = (await client.users_info(user="U0BOT"))["user"]
    assert bot["is_bot"] is True
    err = await slack_error(client.users_info(user="U0NOBODY"))
    assert err.response["error"] == "user_not_found"


# ----------------------------------------------------------------------------------------------
# conversations.replies


async def test_conversations_replies_pagination_and_metadata(
    slack: LocalSlack, client: AsyncWebClient
) -> None:
    parent = slack.add_message(CHANNEL, user="U0ALICE", text="start")
    expected = [parent["ts"]]
    for i in range(4):
        user_msg = slack.add_message(CHANNEL, user="U0BOB", text=f"q{i}", thread_ts=parent["ts"])
        bot_msg = await client.chat_postMessage(
            channel=CHANNEL,
            thread_ts=parent["ts"],
            text=f"a{i}",
            metadata={"event_type": "turn", "event_payload": {"i": i}},
        )
        expected += [user_msg["ts"], bot_msg["ts"]]
    slack.add_message(CHANNEL, user="U0ALICE", text="unrelated")

    collected: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        resp = await client.conversations_replies(
            channel=CHANNEL, ts=parent["ts"], limit=4, cursor=cursor
        )
        pages += 1
        assert len(resp["messages"]) <= 4
        assert all("metadata" not in m for m in resp["messages"])
        collected += [m["ts"] for m in resp["messages"]]
        cursor = resp["response_metadata"]["next_cursor"]
        assert resp["has_more"] is bool(cursor)
        if not cursor:
            break
    assert collected == expected
    assert pages == 3

    full = await client.conversations_replies(
        channel=CHANNEL, ts=parent["ts"], include_all_metadata=True
    )
    assert [m["ts"] for m in full["messages"]] == expected
    assert full["has_more"] is False
    assert full["messages"][0]["reply_count"] == 8
    bot_meta = [m["metadata"] for m in full["messages"] if m.get("bot_id")]
    assert bot_meta == [{"event_type": "turn", "event_payload": {"i": i}} for i in range(4)]

    # The ts of a reply names the same thread.
    via_reply = await client.conversations_replies(channel=CHANNEL, ts=expected[3])
    assert [m["ts"] for m in via_reply["messages"]] == expected

    # oldest / latest bound the range, exclusive unless inclusive=true.
    after = await client.conversations_replies(channel=CHANNEL, ts=parent["ts"], oldest=expected[6])
    assert [m["ts"] for m in after["messages"]] == expected[7:]
    after_incl = await client.conversations_replies(
        channel=CHANNEL, ts=parent["ts"], oldest=expected[6], inclusive=True
    )
    assert [m["ts"] for m in after_incl["messages"]] == expected[6:]

    err = await slack_error(client.conversations_replies(channel=CHANNEL, ts="1.000003"))
    assert err.response["error"] == "thread_not_found"
    err = await slack_error(
        client.conversations_replies(channel=CHANNEL, ts=parent["ts"], cursor="garbage!")
    )
    assert err.response["error"] == "invalid_cursor"


async def test_thread_without_stored_parent(slack: LocalSlack, client: AsyncWebClient) -> None:
    """Tests may send events without mirroring them; bot replies still form a thread."""
    resp = await client.chat_postMessage(channel=CHANNEL, thread_ts="1700000000.000100", text="a")
    assert slack.bot_replies(CHANNEL, "1700000000.000100")[0]["ts"] == resp["ts"]
    replies = await client.conversations_replies(channel=CHANNEL, ts="1700000000.000100")
    assert [m["ts"] for m in replies["messages"]] == [resp["ts"]]


async def test_conversations_info_names_only_named_channels(
    slack: LocalSlack, client: AsyncWebClient
) -> None:
    slack.name_channel(CHANNEL, "general")
    info = (await client.conversations_info(channel=CHANNEL))["channel"]
    assert (info["id"], info["name"], info["is_channel"]) == (CHANNEL, "general", True)
    assert "name" not in (await client.conversations_info(channel=DM))["channel"]
    with pytest.raises(SlackApiError) as raised:
        await client.conversations_info(channel="C0UNSEEN")
    assert raised.value.response["error"] == "channel_not_found"


# ----------------------------------------------------------------------------------------------
# Status and streaming


async def test_set_status(slack: LocalSlack, client: AsyncWebClient) -> None:
    assert slack.status(CHANNEL, "1700000000.000100") == ""
    await client.assistant_threads_setStatus(
        channel_id=CHANNEL, thread_ts="1700000000.000100", status="is thinking…"
    )
    assert slack.status(CHANNEL, "1700000000.000100") == "is thinking…"
    await client.assistant_threads_setStatus(
        channel_id=CHANNEL, thread_ts="1700000000.000100", status=""
    )
    assert slack.status(CHANNEL, "1700000000.000100") == ""


async def test_a_reply_in_the_thread_clears_its_status(
    slack: LocalSlack, client: AsyncWebClient
) -> None:
    """As Slack documents: the status clears when the app replies, streamed or posted."""
    seen: list[dict] = []
    slack.subscribe(seen.append)
    for start in (
        lambda ts: client.chat_postMessage(channel=CHANNEL, thread_ts=ts, text="done"),
        lambda ts: client.chat_startStream(
            channel=CHANNEL, thread_ts=ts, recipient_user_id="U0A", recipient_team_id="T0A"
        ),
    ):
        parent = slack.add_message(CHANNEL, user="U0ALICE", text="go")
        other = slack.add_message(CHANNEL, user="U0ALICE", text="elsewhere")
        for ts in (parent["ts"], other["ts"]):
            await client.assistant_threads_setStatus(
                channel_id=CHANNEL, thread_ts=ts, status="is thinking…"
            )
        await start(parent["ts"])
        assert slack.status(CHANNEL, parent["ts"]) == ""
        assert slack.status(CHANNEL, other["ts"]) == "is thinking…"
        assert seen[-1] == {
            "type": "status",
            "channel": CHANNEL,
            "thread_ts": parent["ts"],
            "status": "",
        }


async def test_stream_methods(slack: LocalSlack, client: AsyncWebClient) -> None:
    parent = slack.add_message(CHANNEL, user="U0ALICE", text="go")
    err = await slack_error(client.chat_startStream(channel=CHANNEL, thread_ts=parent["ts"]))
    assert err.response["error"] == "missing_recipient_user_id"
    err = await slack_error(
        client.chat_startStream(channel=CHANNEL, thread_ts=parent["ts"], recipient_user_id="U0A")
    )
    assert err.response["error"] == "missing_recipient_team_id"

    started = await client.chat_startStream(
        channel=CHANNEL,
        thread_ts=parent["ts"],
        markdown_text="Hello",
        recipient_user_id="U0ALICE",
        recipient_team_id="T0LOCAL",
    )
    ts = started["ts"]
    assert slack.is_streaming(CHANNEL, ts)
    await client.chat_appendStream(channel=CHANNEL, ts=ts, markdown_text=", world")
    assert slack.bot_replies(CHANNEL, parent["ts"])[0]["text"] == "Hello, world"
    stopped = await client.chat_stopStream(
        channel=CHANNEL, ts=ts, markdown_text="!", blocks=[{"type": "divider"}]
    )
    assert stopped["message"]["text"] == "Hello, world!"
    assert not slack.is_streaming(CHANNEL, ts)
    final = slack.bot_replies(CHANNEL, parent["ts"])
    assert [(m["ts"], m["text"], m["blocks"]) for m in final] == [
        (ts, "Hello, world!", [{"type": "divider"}])
    ]
    err = await slack_error(client.chat_appendStream(channel=CHANNEL, ts=ts, markdown_text="x"))
    assert err.response["error"] == "message_not_in_streaming_state"

    # In a DM no recipient is needed.
    dm = await client.chat_startStream(channel=DM, thread_ts="1700000000.000100")
    assert slack.is_streaming(DM, dm["ts"])


async def test_chat_stream_helper(slack: LocalSlack, client: AsyncWebClient) -> None:
    parent = slack.add_message(CHANNEL, user="U0ALICE", text="tell me a story")
    appends: list[str] = []
    slack.subscribe(
        lambda e: appends.append(e["markdown_text"]) if e["type"] == "stream_append" else None
    )

    streamer = await client.chat_stream(
        channel=CHANNEL,
        thread_ts=parent["ts"],
        recipient_user_id="U0ALICE",
        recipient_team_id="T0LOCAL",
        buffer_size=16,
    )
    pieces = ["Once upon ", "a time, ", "there was ", "a local ", "Slack server."]
    for piece in pieces:
        await streamer.append(markdown_text=piece)
    await streamer.stop(markdown_text=" The end.")

    expected = "".join(pieces) + " The end."
    replies = slack.bot_replies(CHANNEL, parent["ts"])
    assert [(r["ts"], r["text"]) for r in replies] == [(streamer.ts, expected)]
    methods = [c.method for c in slack.calls if c.method.startswith("chat.")]
    assert methods[0] == "chat.startStream" and methods[-1] == "chat.stopStream"
    assert "chat.appendStream" in methods
    assert appends and all(appends)
    assert not slack.is_streaming(CHANNEL, streamer.ts)


async def test_chat_stream_helper_short_reply(slack: LocalSlack, client: AsyncWebClient) -> None:
    """Under the buffer size, the helper starts the stream only at stop()."""
    streamer = await client.chat_stream(channel=DM, thread_ts="1700000000.000100")
    await streamer.append(markdown_text="short")
    await streamer.stop()
    assert [c.method for c in slack.calls] == ["chat.startStream", "chat.stopStream"]
    assert slack.bot_replies(DM, "1700000000.000100")[0]["text"] == "short"


# ----------------------------------------------------------------------------------------------
# Fault injection


async def test_injected_rate_limit(slack: LocalSlack, client: AsyncWebClient) -> None:
    slack.inject("chat.postMessage", status=429, retry_after=7, times=2)
    for _ in range(2):
        err = await slack_error(client.chat_postMessage(channel=CHANNEL, text="hi"))
        assert err.response.status_code == 429
        assert err.response.headers["Retry-After"] == "7"
        assert err.response["error"] == "ratelimited"
    assert slack.messages(CHANNEL) == []
    await client.chat_postMessage(channel=CHANNEL, text="hi")
    assert len(slack.messages(CHANNEL)) == 1
    assert [c.status for c in slack.calls_to("chat.postMessage")] == [429, 429, 200]


async def test_injected_error_only_hits_its_method(
    slack: LocalSlack, client: AsyncWebClient
) -> None:
    slack.inject("users.info", error="internal_error")
    await client.auth_test()
    err = await slack_error(client.users_info(user="U0ALICE"))
    assert (err.response.status_code, err.response["error"]) == (200, "internal_error")
    assert (await client.users_info(user="U0ALICE"))["ok"] is True


async def test_lost_response_is_carried_out(slack: LocalSlack, client: AsyncWebClient) -> None:
    slack.inject_lost_response("chat.postMessage")
    with pytest.raises(aiohttp.ClientError):
        await client.chat_postMessage(channel=CHANNEL, thread_ts="1700000000.000100", text="once")
    # Slack accepted it: the message is there although the bot never learned its ts.
    assert [m["text"] for m in slack.bot_replies(CHANNEL, "1700000000.000100")] == ["once"]
    assert slack.calls_to("chat.postMessage")[0].status is None
    await client.chat_postMessage(channel=CHANNEL, thread_ts="1700000000.000100", text="twice")
    assert len(slack.bot_replies(CHANNEL, "1700000000.000100")) == 2


# ----------------------------------------------------------------------------------------------
# Subscribers


async def test_subscribers_see_every_change(slack: LocalSlack, client: AsyncWebClient) -> None:
    seen: list[dict[str, Any]] = []

    def broken(event: dict[str, Any]) -> None:
        raise RuntimeError("observer bug")

    slack.subscribe(broken)
    slack.subscribe(seen.append)
    user_msg = slack.add_message(CHANNEL, user="U0ALICE", text="hi")
    posted = await client.chat_postMessage(channel=CHANNEL, thread_ts=user_msg["ts"], text="yo")
    await client.chat_update(channel=CHANNEL, ts=posted["ts"], text="yo!")
    await client.assistant_threads_setStatus(
        channel_id=CHANNEL, thread_ts=user_msg["ts"], status="thinking"
    )
    assert [e["type"] for e in seen] == ["message", "message", "message_changed", "status"]
    assert seen[1]["message"]["text"] == "yo" and seen[1]["channel"] == CHANNEL
    slack.unsubscribe(seen.append)
    await client.chat_postMessage(channel=CHANNEL, text="unseen")
    assert len(seen) == 4


# ----------------------------------------------------------------------------------------------
# slack_events


def test_sign_matches_slack_sdk_verifier() -> None:
    body = json.dumps(
        event_callback(message_event(channel=CHANNEL, user="U0A", text="x", ts="1.2"))
    )
    headers = sign(SECRET, body)
    verifier = SignatureVerifier(SECRET)
    assert verifier.is_valid_request(body, headers)
    assert not SignatureVerifier("other-secret").is_valid_request(body, headers)
    assert sign(SECRET, "b", timestamp=1)["X-Slack-Request-Timestamp"] == "1"


def test_payload_shapes() -> None:
    event = message_event(
        channel=CHANNEL,
        user="U0ALICE",
        text="hi",
        ts="1700000000.000200",
        thread_ts="1700000000.000100",
    )
    assert event["type"] == "message" and event["event_ts"] == event["ts"]
    assert event["thread_ts"] == "1700000000.000100" and "client_msg_id" in event
    assert "bot_id" not in event
    bot_event = message_event(channel=CHANNEL, user="U0BOT", text="", ts="1.1", bot_id="B0BOT")
    assert bot_event["bot_id"] == "B0BOT" and "client_msg_id" not in bot_event

    envelope = event_callback(event, event_id="Ev0001")
    assert envelope["type"] == "event_callback"
    assert (envelope["team_id"], envelope["api_app_id"], envelope["event_id"]) == (
        "T0LOCAL",
        "A0LOCAL",
        "Ev0001",
    )
    assert envelope["event"] is event
    assert envelope["authorizations"][0]["user_id"] == "U0BOT"
    assert isinstance(envelope["event_time"], int) and envelope["token"]

    shortcut = message_shortcut(
        callback_id="ask",
        channel_id=CHANNEL,
        user_id="U0ALICE",
        message_ts="1700000000.000200",
        thread_ts="1700000000.000100",
    )
    (raw,) = parse_qs(shortcut)["payload"]
    payload = json.loads(raw)
    assert payload["type"] == "message_action" and payload["callback_id"] == "ask"
    assert payload["team"] == {"id": "T0LOCAL", "domain": "local"}
    assert payload["user"]["id"] == "U0ALICE" and payload["channel"]["id"] == CHANNEL
    assert payload["message"]["ts"] == payload["message_ts"] == "1700000000.000200"
    assert payload["message"]["thread_ts"] == "1700000000.000100"
    assert payload["trigger_id"] and payload["response_url"].startswith("https://")

    command = parse_qs(slash_command(command="/ask", text="a b", channel_id=DM, user_id="U0A"))
    assert command["command"] == ["/ask"] and command["text"] == ["a b"]
    assert command["channel_id"] == [DM] and "thread_ts" not in command


# ----------------------------------------------------------------------------------------------
# Bolt round trip: signed requests in, Web API calls out


async def test_bolt_round_trip(slack: LocalSlack) -> None:
    app = AsyncApp(
        client=AsyncWebClient(token=slack.bot_token, base_url=slack.base_url),
        signing_secret=SECRET,
    )
    received: dict[str, list[dict[str, Any]]] = defaultdict(list)

    @app.event("app_mention")
    async def on_mention(body: dict[str, Any], event: dict[str, Any], client: AsyncWebClient):
        received["app_mention"].append(body)
        thread_ts = event.get("thread_ts") or event["ts"]
        await client.chat_postMessage(channel=event["channel"], thread_ts=thread_ts, text="pong")

    @app.event("message")
    async def on_message(event: dict[str, Any]) -> None:
        received["message"].append(event)

    @app.command("/ask")
    async def on_command(ack: Any, command: dict[str, Any]) -> None:
        await ack()
        received["command"].append(command)

    @app.shortcut("ask_thread")
    async def on_shortcut(ack: Any, shortcut: dict[str, Any]) -> None:
        await ack()
        received["shortcut"].append(shortcut)

    async def endpoint(request: web.Request) -> web.Response:
        return await to_aiohttp_response(await app.async_dispatch(await to_bolt_request(request)))

    web_app = web.Application()
    web_app.router.add_post("/slack/events", endpoint)
    runner = web.AppRunner(web_app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    sender = EventSender(f"http://127.0.0.1:{runner.addresses[0][1]}/slack/events", SECRET)
    try:
        parent = slack.add_message(CHANNEL, user="U0ALICE", text="<@U0BOT> ping")
        mention = app_mention_event(
            channel=CHANNEL, user="U0ALICE", text=parent["text"], ts=parent["ts"]
        )
        assert (await sender.send_event(mention, event_id="Ev0MENTION"))[0] == 200
        replies = await eventually(lambda: slack.bot_replies(CHANNEL, parent["ts"]))
        assert replies[0]["text"] == "pong"
        assert received["app_mention"][0]["event_id"] == "Ev0MENTION"
        assert received["app_mention"][0]["event"]["text"] == "<@U0BOT> ping"

        reply = slack.add_message(CHANNEL, user="U0BOB", text="also", thread_ts=parent["ts"])
        status, _ = await sender.send_event(
            message_event(
                channel=CHANNEL, user="U0BOB", text="also", ts=reply["ts"], thread_ts=parent["ts"]
            ),
            retry_num=1,
        )
        assert status == 200
        messages = await eventually(lambda: received["message"])
        assert (messages[0]["ts"], messages[0]["thread_ts"]) == (reply["ts"], parent["ts"])

        status, _ = await sender.send_command(
            slash_command(command="/ask", text="what now?", channel_id=CHANNEL, user_id="U0ALICE")
        )
        assert status == 200
        commands = await eventually(lambda: received["command"])
        assert (commands[0]["command"], commands[0]["text"]) == ("/ask", "what now?")
        assert commands[0]["channel_id"] == CHANNEL

        status, _ = await sender.send_shortcut(
            message_shortcut(
                callback_id="ask_thread",
                channel_id=CHANNEL,
                user_id="U0ALICE",
                message_ts=reply["ts"],
                thread_ts=parent["ts"],
                message_user="U0BOB",
                message_text="also",
            )
        )
        assert status == 200
        shortcuts = await eventually(lambda: received["shortcut"])
        assert shortcuts[0]["type"] == "message_action"
        assert shortcuts[0]["message"]["thread_ts"] == parent["ts"]
        assert shortcuts[0]["message"]["user"] == "U0BOB"
        assert shortcuts[0]["channel"]["id"] == CHANNEL

        body = json.dumps(event_callback(mention))
        status, _ = await sender.send_raw(
            body, {"Content-Type": "application/json", "X-Slack-Signature": "v0=" + "0" * 64}
        )
        assert status == 401
        stale = sign(SECRET, body, timestamp=1)
        status, _ = await sender.send_raw(body, {"Content-Type": "application/json", **stale})
        assert status == 401

        # Bolt authorised itself against LocalSlack with auth.test.
        assert slack.calls_to("auth.test")
    finally:
        await sender.close()
        await runner.cleanup()


# ----------------------------------------------------------------------------------------------
# Standalone


async def test_runs_standalone() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "devtools.slack",
        "--port",
        "0",
        cwd=Path(__file__).resolve().parents[1],
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), timeout=10)
        base_url = line.decode().strip()
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/api/", base_url), base_url
        client = AsyncWebClient(token="xoxb-local", base_url=base_url, retry_handlers=[])
        assert (await client.auth_test())["user_id"] == "U0BOT"
    finally:
        if proc.returncode is None:
            proc.terminate()
    # SIGTERM is a clean shutdown.
    assert await asyncio.wait_for(proc.wait(), timeout=10) == 0


# Its side of Socket Mode, checked with the real slack_sdk client and raw aiohttp.


async def test_connections_open_needs_the_app_token(slack: LocalSlack) -> None:
    def web(token: str) -> AsyncWebClient:
        return AsyncWebClient(token=token, base_url=slack.base_url, retry_handlers=[])

    opened = await web(slack.bot_token).apps_connections_open(app_token=slack.app_token)
    assert opened["url"].startswith("ws://127.0.0.1:") and "/socket/" in opened["url"]
    for token, error in (
        ("xapp-wrong", "invalid_auth"),
        (slack.bot_token, "not_allowed_token_type"),
    ):
        with pytest.raises(SlackApiError) as info:
            await web(slack.bot_token).apps_connections_open(app_token=token)
        assert info.value.response["error"] == error
    # The app token is no bot token either.
    with pytest.raises(SlackApiError) as info:
        await web(slack.app_token).auth_test()
    assert info.value.response["error"] == "not_allowed_token_type"


async def test_socket_says_hello_and_times_out_without_an_ack(slack: LocalSlack) -> None:
    web = AsyncWebClient(token=slack.bot_token, base_url=slack.base_url)
    url = (await web.apps_connections_open(app_token=slack.app_token))["url"]
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(url) as ws:
            hello = await ws.receive_json(timeout=5)
            assert hello["type"] == "hello" and hello["num_connections"] == 1
            assert hello["connection_info"] == {"app_id": slack.app_id}
            await slack.wait_for_socket(1)

            action = {"type": "block_actions"}
            sending = asyncio.create_task(
                slack.send_socket_event(action, envelope_type="interactive")
            )
            envelope = await ws.receive_json(timeout=5)
            assert envelope["type"] == "interactive" and envelope["accepts_response_payload"]
            assert envelope["payload"] == action
            await ws.send_json({"envelope_id": envelope["envelope_id"], "payload": {"ok": 1}})
            assert await sending == {"envelope_id": envelope["envelope_id"], "payload": {"ok": 1}}

            with pytest.raises(TimeoutError):
                await slack.send_socket_event(event_callback({"type": "x"}), timeout=0.2)
        # A ticket is good for one connection.
        with pytest.raises(aiohttp.WSServerHandshakeError):
            await session.ws_connect(url)


async def test_pings_record_whom_bot_messages_would_notify(
    slack: LocalSlack, client: AsyncWebClient
) -> None:
    parent = slack.add_message(CHANNEL, user="U0ALICE", text="<!channel> from a person")
    posted = await client.chat_postMessage(
        channel=CHANNEL, thread_ts=parent["ts"], text="hi <@U0BOB|bob> and @here"
    )
    await client.chat_update(
        channel=CHANNEL, ts=posted["ts"], text="hi <@U0BOB> <!subteam^S1|@devs> <!date^1^{date}|d>"
    )
    stream = await client.chat_startStream(
        channel=CHANNEL,
        thread_ts=parent["ts"],
        recipient_user_id="U0ALICE",
        recipient_team_id="T0LOCAL",
        markdown_text="<!ch",
    )
    await client.chat_appendStream(channel=CHANNEL, ts=stream["ts"], markdown_text="annel>")
    await client.chat_stopStream(
        channel=CHANNEL,
        ts=stream["ts"],
        blocks=[{"type": "markdown", "text": "<!everyone>"}],
    )
    seen = [(p["ts"], p["mention"]) for p in slack.pings]
    assert seen == [
        (posted["ts"], "@U0BOB"),
        (posted["ts"], "@here"),
        (posted["ts"], "!subteam^S1"),  # the edit notifies the group; the date pings no one
        (stream["ts"], "!channel"),  # a mention streamed in two pieces
        (stream["ts"], "!everyone"),
    ]  # and nothing for the person's own <!channel>


async def test_agent_sessions_are_validated_and_their_statuses_recorded(
    slack: LocalSlack, client: AsyncWebClient
) -> None:
    root = slack.add_message(CHANNEL, user="U0ALICE", text="go")["ts"]
    thread = {"channel_id": CHANNEL, "thread_ts": root}
    for status in ("processing", "processing", "active", "closed"):  # a repeat is one
        await client.agents_sessions_setStatus(status=status, **thread)
    assert slack.session_statuses[(CHANNEL, root)] == ["processing", "active", "closed"]
    await client.agents_sessions_rename(title="Launch plans", **thread)
    assert slack.session_titles[(CHANNEL, root)] == "Launch plans"
    for arguments, error in [
        ({"status": "thinking", **thread}, "invalid_arguments"),
        ({"status": "active", "channel_id": CHANNEL}, "invalid_arguments"),
        ({"status": "active", "channel_id": CHANNEL, "thread_ts": "1.000001"}, "thread_not_found"),
        ({"status": "active", "title": "x" * 201, **thread}, "invalid_arguments"),
    ]:
        with pytest.raises(SlackApiError) as raised:
            await client.agents_sessions_setStatus(**arguments)
        assert raised.value.response["error"] == error
    with pytest.raises(SlackApiError) as raised:
        await client.agents_sessions_rename(title="", **thread)
    assert raised.value.response["error"] == "invalid_arguments"
    slack.sessions_error = "unknown_method"
    with pytest.raises(SlackApiError) as raised:
        await client.agents_sessions_setStatus(status="active", **thread)
    assert raised.value.response["error"] == "unknown_method"


async def test_stop_stream_moves_the_session_and_feedback_blocks_are_checked(
    slack: LocalSlack, client: AsyncWebClient
) -> None:
    root = slack.add_message(CHANNEL, user="U0ALICE", text="go")["ts"]
    stream = {"channel": CHANNEL, "recipient_user_id": "U0A", "recipient_team_id": "T0A"}
    await client.agents_sessions_setStatus(channel_id=CHANNEL, thread_ts=root, status="processing")
    started = await client.chat_startStream(thread_ts=root, markdown_text="hi", **stream)
    with pytest.raises(SlackApiError) as raised:
        await client.chat_stopStream(channel=CHANNEL, ts=started["ts"], session_status="done")
    assert raised.value.response["error"] == "invalid_arguments"
    assert slack.is_streaming(CHANNEL, started["ts"])  # a refused stop changes nothing
    await client.chat_stopStream(channel=CHANNEL, ts=started["ts"], session_status="active")
    assert slack.session(CHANNEL, root) == "active"

    half = {"text": {"type": "plain_text", "text": "👍"}, "value": "up"}
    good = {"type": "feedback_buttons", "positive_button": half, "negative_button": half}
    await client.chat_postMessage(
        channel=CHANNEL, text="x", blocks=[{"type": "context_actions", "elements": [good]}]
    )
    for elements in (
        [],
        [good] * 6,
        [{**good, "negative_button": {"text": {"type": "plain_text", "text": "👎"}}}],
        [{"type": "button", "text": {"type": "plain_text", "text": "no"}}],
    ):
        with pytest.raises(SlackApiError) as raised:
            await client.chat_postMessage(
                channel=CHANNEL,
                text="x",
                blocks=[{"type": "context_actions", "elements": elements}],
            )
        assert raised.value.response["error"] == "invalid_blocks"


async def test_task_cards_are_checked_and_kept_per_task(
    slack: LocalSlack, client: AsyncWebClient
) -> None:
    root = slack.add_message(CHANNEL, user="U0ALICE", text="go")["ts"]
    stream = {"channel": CHANNEL, "recipient_user_id": "U0A", "recipient_team_id": "T0A"}
    source = {"type": "url", "url": "https://docs.example/a", "text": "Doc A"}
    card = {"type": "task_update", "id": "t1", "title": "directory / find_person"}
    started = await client.chat_startStream(
        thread_ts=root, chunks=[{**card, "status": "in_progress", "sources": [source]}], **stream
    )
    ts = started["ts"]
    await client.chat_appendStream(
        channel=CHANNEL,
        ts=ts,
        chunks=[
            {**card, "status": "complete", "output": "o" * 256},
            {**card, "id": "t2", "status": "pending", "details": "waiting"},
        ],
    )
    # One card per task, in the order first streamed, each as its last update left it.
    [first, second] = slack.tasks(CHANNEL, ts)
    assert first["status"] == "complete" and first["sources"] == [source]
    assert second["id"] == "t2" and second["details"] == "waiting"
    for bad in (
        {**card, "status": "done"},
        {**card, "status": "complete", "id": ""},
        {"type": "task_update", "id": "t3", "status": "pending"},
        {**card, "status": "complete", "output": "o" * 257},
        {**card, "status": "complete", "details": 3},
        {**card, "status": "complete", "sources": source},
        {**card, "status": "complete", "sources": [{**source, "type": "file"}]},
        {**card, "status": "complete", "sources": [{"type": "url", "url": "https://x"}]},
    ):
        with pytest.raises(SlackApiError) as raised:
            await client.chat_appendStream(channel=CHANNEL, ts=ts, chunks=[bad])
        assert raised.value.response["error"] == "invalid_chunks", bad
    assert len(slack.tasks(CHANNEL, ts)) == 2  # a refused append changes nothing
    with pytest.raises(SlackApiError) as raised:
        await client.chat_startStream(thread_ts=root, chunks=[{**card, "status": "x"}], **stream)
    assert raised.value.response["error"] == "invalid_chunks"
    assert slack.tasks(CHANNEL, "1.000001") == []
