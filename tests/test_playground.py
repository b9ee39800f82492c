"""The Slack playground's JSON endpoints over real HTTP, driving a real bot, worker and Temporal:
the same path the page in the browser takes, without the browser."""

import asyncio
import base64
import contextlib
import json
from collections.abc import AsyncIterator
from types import SimpleNamespace
from urllib.parse import parse_qs

import aiohttp
import pytest
from aiohttp import web
from slack_sdk.errors import SlackApiError
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient

from devtools.playground import MAX_FILE_BYTES, Playground, PlaygroundError
from devtools.slack import LocalSlack
from devtools.stack import ALICE, BOB, SIGNING_SECRET, eventually
from threadchat import actions
from threadchat.model import ReplyRef


@pytest.fixture
async def playground(make_stack):
    stack = await make_stack()
    server = Playground(stack.slack, stack.bot_url, SIGNING_SECRET)
    url = await server.start()
    async with aiohttp.ClientSession(base_url=url) as http:
        yield SimpleNamespace(
            stack=stack,
            server=server,
            http=http,
            general=server.channels[0].id,
        )
    await server.stop()


async def post(http: aiohttp.ClientSession, path: str, body: dict) -> tuple[int, dict]:
    async with http.post(path, json=body) as response:
        return response.status, await response.json()


async def say(pg, text: str, *, user: str = ALICE, channel: str | None = None, thread_ts=None):
    status, result = await post(
        pg.http,
        "/api/messages",
        {"channel": channel or pg.general, "user": user, "text": text, "thread_ts": thread_ts},
    )
    assert status == 200 and result["ok"], result
    return result


async def test_a_mention_gets_a_reply_and_a_follow_up_is_answered_with_history(playground):
    pg = playground
    sent = await say(pg, "@threadchat what is Temporal?")
    # Stored as Slack stores it, and delivered twice, as Slack does for a mention in a channel.
    assert sent["message"]["text"] == "<@U0BOT> what is Temporal?"
    assert sorted(d["event"] for d in sent["deliveries"]) == ["app_mention", "message"]
    assert all(d["status"] == 200 for d in sent["deliveries"])
    ts = sent["ts"]
    [reply] = await pg.stack.replies(pg.general, ts, 1)
    assert "You said:" in reply["text"] and "what is Temporal?" in reply["text"]

    await say(pg, "and what is a workflow?", user=BOB, thread_ts=ts)
    replies = await pg.stack.replies(pg.general, ts, 2)
    # The offline model quotes the previous turn: the conversation's history reached it.
    assert "what is Temporal?" in replies[1]["text"].partition("Before that:")[2]

    async with pg.http.get("/api/state") as response:
        state = await response.json()
    thread = [m for m in state["messages"][pg.general] if m.get("thread_ts") == ts]
    assert [m["user"] for m in thread] == [ALICE, "U0BOT", BOB, "U0BOT"]
    assert not any(m["streaming"] for m in thread)


async def test_a_direct_message_starts_a_conversation_without_a_mention(playground):
    pg = playground
    dm = pg.server.dm_channel(ALICE)
    sent = await say(pg, "hello in private", channel=dm)
    # Slack sends no app_mention in a DM with the app: message.im alone.
    assert [d["event"] for d in sent["deliveries"]] == ["message"]
    [reply] = await pg.stack.replies(dm, sent["ts"], 1)
    assert "hello in private" in reply["text"]


async def test_endchat_answers_privately_and_posts_the_summary(playground):
    pg = playground
    ts = (await say(pg, "@threadchat plan the launch"))["ts"]
    await pg.stack.replies(pg.general, ts, 1)
    status, result = await post(
        pg.http, "/api/commands", {"channel": pg.general, "user": ALICE, "command": "/endchat"}
    )
    assert status == 200 and result["ok"], result
    assert "Ending" in result["response"]["text"]
    # The immediate answer is shown to Alice alone, as Slack shows it.
    shown = await eventually(lambda: pg.stack.slack.ephemerals, what="the ephemeral answer")
    assert shown[0]["user"] == ALICE and shown[0]["channel"] == pg.general
    assert "Ending" in shown[0]["text"]
    replies = await pg.stack.replies(pg.general, ts, 2)
    assert "Summary" in replies[-1]["text"]
    # Then a second private note links to the summary itself.
    ended = await eventually(
        lambda: len(pg.stack.slack.ephemerals) > 1 and pg.stack.slack.ephemerals[1],
        5,
        "the link to the summary",
    )
    assert replies[-1]["ts"].replace(".", "") in ended["text"] and ended["user"] == ALICE


async def test_the_end_chat_shortcut_ends_the_thread_it_is_used_in(playground):
    pg = playground
    ts = (await say(pg, "@threadchat shortcut me"))["ts"]
    [reply] = await pg.stack.replies(pg.general, ts, 1)
    status, result = await post(
        pg.http,
        "/api/shortcuts",
        {"channel": pg.general, "user": ALICE, "message_ts": reply["ts"]},
    )
    assert status == 200 and result["ok"], result
    replies = await pg.stack.replies(pg.general, ts, 2)
    assert "Summary" in replies[-1]["text"]
    answers = await eventually(
        lambda: len(pg.stack.slack.ephemerals) > 1 and pg.stack.slack.ephemerals, 5, "answers"
    )
    assert all(answer["user"] == ALICE for answer in answers)
    assert "Ending" in answers[0]["text"] and "summary" in answers[1]["text"]


async def test_the_event_stream_delivers_the_bots_messages_live(playground):
    pg = playground
    async with pg.http.get("/api/events") as stream:
        assert stream.headers["Content-Type"].startswith("text/event-stream")

        async def next_event() -> dict:
            while True:
                line = (await stream.content.readline()).decode()
                if line.startswith("data: "):
                    return json.loads(line.removeprefix("data: "))

        first = await asyncio.wait_for(next_event(), 5)
        assert first["type"] == "snapshot" and pg.general in first["state"]["messages"]

        ts = (await say(pg, "@threadchat stream to me"))["ts"]
        seen = []

        async def until_the_reply_is_complete() -> None:
            while not any(e["type"] == "stream_stop" for e in seen):
                seen.append(await next_event())

        await asyncio.wait_for(until_the_reply_is_complete(), 20)
    types = [e["type"] for e in seen]
    assert seen[0]["message"]["ts"] == ts  # the user's own message comes back too
    started = next(e for e in seen if e["type"] == "message" and e.get("streaming"))
    assert started["message"]["thread_ts"] == ts and started["message"]["bot_id"]
    assert "session" in types  # the session is processing before the first words
    stopped = seen[-1]
    assert stopped["message"]["ts"] == started["message"]["ts"]
    assert "stream to me" in stopped["message"]["text"]


async def test_refusals():
    slack = LocalSlack()
    await slack.start()
    # Nothing listens on port 9 of loopback: the bot is "down".
    server = Playground(slack, "http://127.0.0.1:9/slack/events", SIGNING_SECRET)
    url = await server.start()
    try:
        async with aiohttp.ClientSession(base_url=url) as http:
            general = server.channels[0].id
            body = {"channel": general, "user": ALICE, "text": "hi"}
            assert await post(http, "/api/messages", body) == (
                502,
                {"ok": False, "error": "bot_unreachable"},
            )
            status, result = await post(http, "/api/messages", {**body, "user": "U0NOBODY"})
            assert (status, result["error"]) == (400, "user_not_found")
            status, result = await post(http, "/api/commands", {**body, "command": "/nope"})
            assert (status, result["error"]) == (400, "unknown_command")
            # Another web page's form post, or a rebound DNS name, cannot act as a user.
            async with http.post("/api/messages", data=body) as response:
                assert response.status == 415
            async with http.get("/api/state", headers={"Host": "evil.example:80"}) as response:
                assert response.status == 403
        # The message was stored, as in Slack, even though the app never got it.
        assert [m["text"] for m in slack.messages(general)] == ["hi"]
        with pytest.raises(ValueError):
            await Playground(slack, "http://127.0.0.1:9/", "s").start(host="0.0.0.0")
    finally:
        await server.stop()
        await slack.stop()


REPLY_ACTIONS = {
    "type": "actions",
    "block_id": "threadchat_reply_actions",
    "elements": [
        {
            "type": "button",
            "action_id": action_id,
            "text": {"type": "plain_text", "text": label},
            "value": "reply-v1",
        }
        for action_id, label in [
            ("threadchat_regenerate", "Regenerate"),
            ("threadchat_feedback_up", "👍"),
            ("threadchat_feedback_down", "👎"),
        ]
    ],
}


async def test_slacks_feedback_buttons_are_clicked_by_half_and_sessions_are_shown():
    slack = LocalSlack()
    await slack.start()
    received: list[dict] = []

    async def bot(request: web.Request) -> web.Response:
        received.append(json.loads(parse_qs(await request.text())["payload"][0]))
        return web.Response()

    async with stand_in_bot(bot) as (bot_url, bot_runner):
        server = Playground(slack, bot_url, SIGNING_SECRET)
        url = await server.start()
        try:
            general = server.channels[0].id
            question = slack.add_message(general, user=ALICE, text="<@U0BOT> hi")
            web_api = AsyncWebClient(token=slack.bot_token, base_url=slack.base_url)
            thread = {"channel_id": general, "thread_ts": question["ts"]}
            await web_api.agents_sessions_setStatus(status="processing", **thread)
            blocks = actions.reply_actions(ReplyRef("key", 1))
            posted = await web_api.chat_postMessage(
                channel=general, thread_ts=question["ts"], text="answer", blocks=blocks
            )
            await web_api.agents_sessions_setStatus(status="active", **thread)
            async with aiohttp.ClientSession(base_url=url) as http:
                async with http.get("/api/state") as response:
                    state = await response.json()
                assert state["sessions"] == {f"{general}/{question['ts']}": "active"}
                down = actions.feedback_value(ReplyRef("key", 1), "down")
                click = {
                    "channel": general,
                    "user": ALICE,
                    "message_ts": posted["ts"],
                    "action_id": actions.FEEDBACK,
                    "value": down,
                }
                assert await post(http, "/api/action", click) == (200, {"ok": True, "status": 200})
                [payload] = received
                [action] = payload["actions"]
                assert action["type"] == "feedback_buttons"
                assert action["action_id"] == actions.FEEDBACK
                assert (action["value"], action["block_id"]) == (down, actions.FEEDBACK_BLOCK_ID)
                # A value neither half has is no button.
                forged = {**click, "value": "up/forged:1:0"}
                status, result = await post(http, "/api/action", forged)
                assert (status, result["error"]) == (404, "action_not_found")
                assert len(received) == 1
        finally:
            await server.stop()
            await slack.stop()


async def test_a_button_click_reaches_the_bot_signed_and_its_answer_shows_privately():
    slack = LocalSlack()
    await slack.start()
    # A stand-in for the bot's Request URL that answers a click as threadchat does: privately,
    # through the response_url, before it acks.
    received: list[tuple[dict[str, str], str]] = []

    async def bot(request: web.Request) -> web.Response:
        body = await request.text()
        received.append((dict(request.headers), body))
        payload = json.loads(parse_qs(body)["payload"][0])
        answer = {
            "text": "Thanks for the feedback!",
            "thread_ts": payload["container"]["thread_ts"],
        }
        async with (
            aiohttp.ClientSession() as session,
            session.post(payload["response_url"], json=answer) as response,
        ):
            assert response.status == 200
        return web.Response()

    async with stand_in_bot(bot) as (bot_url, bot_runner):
        server = Playground(slack, bot_url, SIGNING_SECRET)
        url = await server.start()
        try:
            general = server.channels[0].id
            question = slack.add_message(general, user=ALICE, text="<@U0BOT> hi")
            body = "Hello, *Alice*."
            web_api = AsyncWebClient(token=slack.bot_token, base_url=slack.base_url)
            posted = await web_api.chat_postMessage(
                channel=general,
                thread_ts=question["ts"],
                text=body,
                blocks=[{"type": "markdown", "text": body}, REPLY_ACTIONS],
            )
            reply_ts = posted["ts"]
            async with aiohttp.ClientSession(base_url=url) as http:
                click = {
                    "channel": general,
                    "user": ALICE,
                    "message_ts": reply_ts,
                    "action_id": "threadchat_feedback_up",
                }
                assert await post(http, "/api/action", click) == (200, {"ok": True, "status": 200})

                [(headers, raw)] = received
                assert headers["Content-Type"] == "application/x-www-form-urlencoded"
                assert SignatureVerifier(SIGNING_SECRET).is_valid(
                    raw, headers["X-Slack-Request-Timestamp"], headers["X-Slack-Signature"]
                )
                payload = json.loads(parse_qs(raw)["payload"][0])
                assert payload["type"] == "block_actions"
                [action] = payload["actions"]
                assert action["action_id"] == "threadchat_feedback_up"
                assert action["value"] == "reply-v1"
                assert action["block_id"] == "threadchat_reply_actions"
                # The container is how the bot learns the thread, as with a shortcut's thread_ts.
                assert payload["container"] == {
                    "type": "message",
                    "message_ts": reply_ts,
                    "channel_id": general,
                    "is_ephemeral": False,
                    "thread_ts": question["ts"],
                }
                assert payload["user"]["id"] == ALICE and payload["user"]["name"] == "alice"
                assert payload["channel"] == {"id": general, "name": "general"}
                assert payload["team"]["id"] == slack.team_id
                assert payload["response_url"] == slack.response_url(general, ALICE)
                # The message comes along whole, as Slack sends it.
                assert payload["message"]["ts"] == reply_ts
                assert payload["message"]["text"] == body
                assert payload["message"]["blocks"][1] == REPLY_ACTIONS

                # The bot's answer is Alice's alone, in the thread the button is in.
                async with http.get("/api/state") as response:
                    state = await response.json()
                [note] = state["ephemerals"]
                assert (note["user"], note["channel"]) == (ALICE, general)
                assert note["thread_ts"] == question["ts"] and "feedback" in note["text"]

                for wrong, error in [
                    ({"action_id": "threadchat_no_such_button"}, "action_not_found"),
                    ({"message_ts": question["ts"]}, "action_not_found"),  # no buttons at all
                    ({"message_ts": "1.000001"}, "message_not_found"),
                ]:
                    status, result = await post(http, "/api/action", {**click, **wrong})
                    assert (status, result) == (404, {"ok": False, "error": error})
                status, result = await post(http, "/api/action", {**click, "user": "U0NOBODY"})
                assert (status, result["error"]) == (400, "user_not_found")
                status, result = await post(http, "/api/action", {**click, "action_id": ""})
                assert (status, result["error"]) == (400, "missing_action_id")
                assert len(received) == 1  # none of those reached the bot

                await bot_runner.cleanup()
                assert await post(http, "/api/action", click) == (
                    502,
                    {"ok": False, "error": "bot_unreachable"},
                )
        finally:
            await server.stop()
            await slack.stop()


# Only its first bytes need to look like a PNG: neither the playground nor LocalSlack decodes it.
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 24
PDF = b"%PDF-1.4\n%%EOF\n"


@contextlib.asynccontextmanager
async def stand_in_bot(handler) -> AsyncIterator[tuple[str, web.AppRunner]]:
    """A stand-in for the bot's Request URL, answering with `handler`: its URL and runner
    (a test stops it to see the playground say the bot is unreachable)."""
    app = web.Application()
    app.router.add_post("/slack/events", handler)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/slack/events", runner
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def recording_bot() -> AsyncIterator[tuple[str, list[tuple[dict[str, str], str]]]]:
    """A stand-in for the bot's Request URL that acks every event and keeps what it got."""
    received: list[tuple[dict[str, str], str]] = []

    async def bot(request: web.Request) -> web.Response:
        received.append((dict(request.headers), await request.text()))
        return web.Response()

    async with stand_in_bot(bot) as (url, _):
        yield url, received


@pytest.fixture
async def recorded_playground() -> AsyncIterator[SimpleNamespace]:
    """A playground on LocalSlack whose bot is `recording_bot`."""
    slack = LocalSlack()
    await slack.start()
    try:
        async with recording_bot() as (bot_url, received):
            server = Playground(slack, bot_url, SIGNING_SECRET)
            url = await server.start()
            try:
                async with aiohttp.ClientSession(base_url=url) as http:
                    yield SimpleNamespace(
                        slack=slack,
                        server=server,
                        http=http,
                        received=received,
                        general=server.channels[0].id,
                    )
            finally:
                await server.stop()
    finally:
        await slack.stop()


async def upload(pg, name: str, mimetype: str, content: bytes, *, user: str = ALICE) -> dict:
    body = {"user": user, "name": name, "mimetype": mimetype}
    status, result = await post(
        pg.http, "/api/upload", {**body, "data": base64.b64encode(content).decode()}
    )
    assert status == 200 and result["ok"], result
    return result["file"]


def events_received(pg) -> list[dict]:
    """The events the bot got, each checked to be signed as Slack signs them."""
    events = []
    for headers, raw in pg.received:
        assert SignatureVerifier(SIGNING_SECRET).is_valid(
            raw, headers["X-Slack-Request-Timestamp"], headers["X-Slack-Signature"]
        )
        events.append(json.loads(raw)["event"])
    return events


async def test_files_attached_to_a_mention_are_shared_and_reach_the_bot(recorded_playground):
    pg = recorded_playground
    chart = await upload(pg, "chart.png", "image/png", PNG)
    plan = await upload(pg, "plan.pdf", "application/pdf", PDF)
    assert chart["id"].startswith("F") and chart["size"] == len(PNG)
    assert (plan["name"], plan["mimetype"], plan["filetype"]) == (
        "plan.pdf",
        "application/pdf",
        "pdf",
    )
    assert pg.slack.files[chart["id"]]["channels"] == []  # uploaded, shared nowhere yet
    ids = [chart["id"], plan["id"]]

    async with pg.http.get("/api/events") as stream:

        async def next_event() -> dict:
            while True:
                line = (await stream.content.readline()).decode()
                if line.startswith("data: "):
                    return json.loads(line.removeprefix("data: "))

        assert (await asyncio.wait_for(next_event(), 5))["type"] == "snapshot"
        status, sent = await post(
            pg.http,
            "/api/messages",
            {
                "channel": pg.general,
                "user": ALICE,
                "text": "@threadchat what do these show?",
                "files": ids,
            },
        )
        assert status == 200 and sent["ok"], sent
        # The page hears of the message with its files, in the one notification.
        shown = await asyncio.wait_for(next_event(), 5)
    assert shown["type"] == "message" and shown["message"]["ts"] == sent["ts"]
    assert [f["id"] for f in shown["message"]["files"]] == ids

    # Both deliveries carry the files, as Slack sends a mention with files in a channel.
    assert sorted(d["event"] for d in sent["deliveries"]) == ["app_mention", "message"]
    events = {event["type"]: event for event in events_received(pg)}
    assert events["message"]["subtype"] == "file_share"
    assert events["app_mention"]["text"] == "<@U0BOT> what do these show?"
    for event in events.values():
        assert event["ts"] == sent["ts"]
        assert [f["id"] for f in event["files"]] == ids
        assert all(f["channels"] == [pg.general] for f in event["files"])
        # The page's own thumbnail link stays on the page.
        assert not any("preview_url" in f for f in event["files"])

    # Shared in the channel, and LocalSlack answers for them as Slack would: files.info, and
    # the bytes at url_private_download for the bot's token.
    web_api = AsyncWebClient(token=pg.slack.bot_token, base_url=pg.slack.base_url)
    info = await web_api.files_info(file=plan["id"])
    assert info["file"]["channels"] == [pg.general]
    headers = {"Authorization": f"Bearer {pg.slack.bot_token}"}
    async with (
        aiohttp.ClientSession() as session,
        session.get(events["message"]["files"][0]["url_private_download"], headers=headers) as got,
    ):
        assert got.status == 200 and await got.read() == PNG

    # The page shows them on the message, and the image's thumbnail comes from the page.
    async with pg.http.get("/api/state") as response:
        state = await response.json()
    [message] = state["messages"][pg.general]
    assert [(f["name"], f["size"]) for f in message["files"]] == [
        ("chart.png", len(PNG)),
        ("plan.pdf", len(PDF)),
    ]
    thumbnail, document = message["files"]
    async with pg.http.get(thumbnail["preview_url"]) as response:
        assert response.status == 200 and response.content_type == "image/png"
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert await response.read() == PNG
    assert "preview_url" not in document
    async with pg.http.get(f"/api/files/{plan['id']}") as response:
        assert response.status == 404


async def test_a_file_shared_without_a_comment_is_a_message(recorded_playground):
    pg = recorded_playground
    status, first = await post(
        pg.http, "/api/messages", {"channel": pg.general, "user": ALICE, "text": "the numbers:"}
    )
    assert status == 200, first
    chart = await upload(pg, "chart.png", "image/png", PNG)
    body = {"channel": pg.general, "user": ALICE, "thread_ts": first["ts"], "files": [chart["id"]]}
    for text in ({"text": ""}, {}):
        status, sent = await post(pg.http, "/api/messages", {**body, **text})
        assert status == 200 and sent["ok"], sent
        # No mention: the message event alone, a file_share in the thread.
        assert [d["event"] for d in sent["deliveries"]] == ["message"]
        assert sent["message"]["text"] == "" and sent["message"]["thread_ts"] == first["ts"]
    *_, reply = events_received(pg)
    assert (reply["subtype"], reply["text"], reply["thread_ts"]) == ("file_share", "", first["ts"])
    assert [f["id"] for f in reply["files"]] == [chart["id"]]
    assert pg.slack.files[chart["id"]]["channels"] == [pg.general]

    # Without files, an empty message is still refused, and reaches nobody.
    before = len(pg.received)
    status, result = await post(pg.http, "/api/messages", {**body, "files": [], "text": ""})
    assert (status, result["error"]) == (400, "missing_text")
    with pytest.raises(PlaygroundError, match="no_text"):
        await pg.server.post_message(pg.general, ALICE, "  ")
    assert len(pg.received) == before


async def test_bad_uploads_and_unknown_files_are_refused(recorded_playground):
    pg = recorded_playground
    good = {"user": ALICE, "name": "chart.png", "mimetype": "image/png", "data": "iVBORw0KGgo="}
    for wrong, error in [
        ({"data": "not base64!"}, "invalid_data"),
        ({"data": "iVBORw0KGgo"}, "invalid_data"),  # padding missing
        ({"data": ""}, "missing_data"),
        ({"name": None}, "missing_name"),
        ({"mimetype": 7}, "missing_mimetype"),
        ({"user": "U0NOBODY"}, "user_not_found"),
        ({"name": "../chart.png"}, "invalid_name"),
    ]:
        status, result = await post(pg.http, "/api/upload", {**good, **wrong})
        assert (status, result) == (400, {"ok": False, "error": error}), wrong
    assert pg.slack.files == {}

    # Big enough for a file past the bot's limits, so its "too large" answer can be tried;
    # past the playground's own limit, refused.
    big = await upload(pg, "scan.png", "image/png", PNG + bytes(6_000_000))
    assert big["size"] == len(PNG) + 6_000_000
    status, result = await post(
        pg.http,
        "/api/upload",
        {**good, "data": base64.b64encode(bytes(MAX_FILE_BYTES + 1)).decode()},
    )
    assert (status, result) == (413, {"ok": False, "error": "file_too_large"})

    bobs = await upload(pg, "bob.pdf", "application/pdf", PDF, user=BOB)
    message = {"channel": pg.general, "user": ALICE, "text": "look"}
    for files, status, error in [
        (["F0NOSUCHFILE"], 404, "file_not_found"),
        ([bobs["id"]], 404, "file_not_found"),  # nobody shares another's upload
        ("F0NOTALIST", 400, "invalid_files"),
        ([""], 400, "invalid_files"),
        ([big["id"]] * 2 + [7], 400, "invalid_files"),
    ]:
        answer = await post(pg.http, "/api/messages", {**message, "files": files})
        assert answer == (status, {"ok": False, "error": error}), files
    assert pg.slack.files[bobs["id"]]["channels"] == []
    assert pg.received == [] and pg.slack.messages(pg.general) == []


def received_as_slack_sent(pg) -> list[dict]:
    """Everything the bot got, each checked to be signed: events as their ``event``, button
    clicks as their form's payload."""
    bodies = []
    for headers, raw in pg.received:
        assert SignatureVerifier(SIGNING_SECRET).is_valid(
            raw, headers["X-Slack-Request-Timestamp"], headers["X-Slack-Signature"]
        )
        if headers["Content-Type"] == "application/x-www-form-urlencoded":
            bodies.append(json.loads(parse_qs(raw)["payload"][0]))
        else:
            bodies.append(json.loads(raw)["event"])
    return bodies


async def test_opening_the_assistant_panel_starts_a_thread_in_the_users_dm(recorded_playground):
    pg = recorded_playground
    dm = pg.server.dm_channel(ALICE)
    random = pg.server.channels[1].id
    status, opened = await post(
        pg.http, "/api/assistant/open", {"user": ALICE, "context_channel": pg.general}
    )
    assert status == 200 and opened["ok"], opened
    assert opened["channel"] == dm
    thread_ts = opened["thread_ts"]
    # As in Slack, the panel's conversation is a thread in Alice's DM with the app: its root
    # is stored first, so the bot can post into the thread and read it back.
    [root] = pg.slack.messages(dm)
    assert (root["ts"], root["user"]) == (thread_ts, ALICE)
    [started] = received_as_slack_sent(pg)
    assert started["type"] == "assistant_thread_started"
    assert started["assistant_thread"] == {
        "user_id": ALICE,
        "channel_id": dm,
        "thread_ts": thread_ts,
        "context": {"team_id": pg.slack.team_id, "enterprise_id": None, "channel_id": pg.general},
    }

    # Alice moves the main view to #random with the panel open.
    context = {"user": ALICE, "channel": dm, "thread_ts": thread_ts, "context_channel": random}
    assert await post(pg.http, "/api/assistant/context", context) == (
        200,
        {"ok": True, "status": 200},
    )
    changed = received_as_slack_sent(pg)[-1]
    assert changed["type"] == "assistant_thread_context_changed"
    assert changed["assistant_thread"]["thread_ts"] == thread_ts
    assert changed["assistant_thread"]["context"]["channel_id"] == random
    # A DM in view is no channel context.
    status, _ = await post(pg.http, "/api/assistant/context", {**context, "context_channel": dm})
    assert status == 200
    assert "channel_id" not in received_as_slack_sent(pg)[-1]["assistant_thread"]["context"]

    # A reload finds the panel's thread and what the page needs to show it.
    async with pg.http.get("/api/state") as response:
        state = await response.json()
    assert state["assistant_threads"] == [
        {"user": ALICE, "channel": dm, "thread_ts": thread_ts, "context_channel": None}
    ]

    # "New chat", opened from a DM: another thread, with no channel in view.
    status, again = await post(pg.http, "/api/assistant/open", {"user": ALICE})
    assert status == 200 and again["thread_ts"] != thread_ts
    second = received_as_slack_sent(pg)[-1]
    assert second["type"] == "assistant_thread_started"
    assert second["assistant_thread"]["context"] == {
        "team_id": pg.slack.team_id,
        "enterprise_id": None,
    }

    before = len(pg.received)
    change, open_ = "/api/assistant/context", "/api/assistant/open"
    for path, body, error in [
        (change, {**context, "user": BOB}, (404, "assistant_thread_not_found")),
        (change, {**context, "thread_ts": "1.000001"}, (404, "assistant_thread_not_found")),
        (change, {**context, "context_channel": "C0NOWHERE"}, (404, "channel_not_found")),
        (change, {**context, "context_channel": 7}, (400, "invalid_context_channel")),
        (open_, {"user": ALICE, "context_channel": "C0NOWHERE"}, (404, "channel_not_found")),
        (open_, {"user": "U0NOBODY"}, (400, "user_not_found")),
    ]:
        status, result = await post(pg.http, path, body)
        assert (status, result["error"]) == error, body
    assert len(pg.received) == before


async def test_the_panel_shows_what_the_bot_sets_and_a_suggested_prompt_is_a_dm_reply(
    recorded_playground,
):
    pg = recorded_playground
    dm = pg.server.dm_channel(ALICE)
    _, opened = await post(pg.http, "/api/assistant/open", {"user": ALICE})
    thread_ts = opened["thread_ts"]
    web_api = AsyncWebClient(token=pg.slack.bot_token, base_url=pg.slack.base_url)
    prompts = [{"title": "Summarize this channel", "message": "Summarize #general for me"}]
    header = {"type": "header", "text": {"type": "plain_text", "text": "Hi"}}
    home = {"type": "home", "blocks": [header]}

    async with pg.http.get("/api/events") as stream:

        async def next_event() -> dict:
            while True:
                line = (await stream.content.readline()).decode()
                if line.startswith("data: "):
                    return json.loads(line.removeprefix("data: "))

        assert (await asyncio.wait_for(next_event(), 5))["type"] == "snapshot"
        # What the bot sets through the Web API reaches the page live.
        await web_api.assistant_threads_setSuggestedPrompts(
            channel_id=dm, thread_ts=thread_ts, title="Try one of these", prompts=prompts
        )
        await web_api.assistant_threads_setTitle(
            channel_id=dm, thread_ts=thread_ts, title="Launch plans"
        )
        await web_api.views_publish(user_id=ALICE, view=home)
        seen = [await asyncio.wait_for(next_event(), 5) for _ in range(3)]
    assert [e["type"] for e in seen] == ["suggested_prompts", "title", "home"]
    assert seen[0]["prompts"] == prompts and seen[0]["thread_ts"] == thread_ts
    assert (seen[1]["channel"], seen[1]["title"]) == (dm, "Launch plans")
    assert seen[2]["user"] == ALICE and seen[2]["view"]["blocks"] == [header]

    # And a reload shows them too.
    async with pg.http.get("/api/state") as response:
        state = await response.json()
    key = f"{dm}/{thread_ts}"
    assert state["suggested_prompts"][key] == {"title": "Try one of these", "prompts": prompts}
    assert state["titles"][key] == "Launch plans"
    assert state["home_views"][ALICE]["blocks"] == [header]

    # A click on the prompt is Alice's message in the panel's thread, as Slack posts it: the
    # page sends it as any reply in a DM thread.
    sent = await say(pg, prompts[0]["message"], channel=dm, thread_ts=thread_ts)
    assert [d["event"] for d in sent["deliveries"]] == ["message"]
    message = received_as_slack_sent(pg)[-1]
    assert message["type"] == "message" and message["channel_type"] == "im"
    assert (message["channel"], message["thread_ts"]) == (dm, thread_ts)
    assert (message["user"], message["text"]) == (ALICE, "Summarize #general for me")
    assert message["parent_user_id"] == ALICE


async def test_the_home_tab_is_opened_and_its_buttons_clicked_as_in_slack(recorded_playground):
    pg = recorded_playground
    dm = pg.server.dm_channel(ALICE)
    assert await post(pg.http, "/api/home/open", {"user": ALICE}) == (
        200,
        {"ok": True, "status": 200},
    )
    [opened] = received_as_slack_sent(pg)
    assert (opened["type"], opened["user"], opened["channel"], opened["tab"]) == (
        "app_home_opened",
        ALICE,
        dm,
        "home",
    )

    # One button per conversation under one action_id: the value tells them apart.
    end = [
        {
            "type": "button",
            "action_id": "threadchat_end_conversation",
            "text": {"type": "plain_text", "text": "End"},
            "value": value,
        }
        for value in ("conversation-1", "conversation-2")
    ]
    view = {
        "type": "home",
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": "Your conversations"}},
            {"type": "section", "text": {"type": "mrkdwn", "text": "*Launch plans*"}},
            {"type": "actions", "block_id": "conversations", "elements": end},
        ],
    }
    web_api = AsyncWebClient(token=pg.slack.bot_token, base_url=pg.slack.base_url)
    await web_api.views_publish(user_id=ALICE, view=view)
    click = {"user": ALICE, "action_id": "threadchat_end_conversation", "value": "conversation-2"}
    assert await post(pg.http, "/api/home/action", click) == (200, {"ok": True, "status": 200})
    payload = received_as_slack_sent(pg)[-1]
    assert payload["type"] == "block_actions"
    # A click in a view has no channel, message or response_url: the container is the view.
    assert payload["container"]["type"] == "view"
    assert payload["view"]["id"] == payload["container"]["view_id"]
    assert payload["view"]["blocks"] == view["blocks"]
    assert not {"channel", "message", "response_url"} & payload.keys()
    [action] = payload["actions"]
    assert (action["action_id"], action["value"], action["block_id"]) == (
        "threadchat_end_conversation",
        "conversation-2",
        "conversations",
    )
    assert payload["user"]["id"] == ALICE and payload["team"]["id"] == pg.slack.team_id

    before = len(pg.received)
    for body, error in [
        ({**click, "user": BOB}, (404, "view_not_found")),  # Bob's Home was never published
        ({**click, "value": "conversation-3"}, (404, "action_not_found")),
        ({**click, "action_id": "threadchat_nothing"}, (404, "action_not_found")),
        ({**click, "user": "U0NOBODY"}, (400, "user_not_found")),
    ]:
        status, result = await post(pg.http, "/api/home/action", body)
        assert (status, result["error"]) == error, body
    assert len(pg.received) == before


async def test_a_restarted_playground_goes_on_where_it_left_off(make_stack, tmp_path):
    """`threadchat dev` keeps Temporal's data across restarts: the playground keeps its
    workspace beside it, so conversations go on in the channels they started in."""
    stack = await make_stack()
    first = Playground(stack.slack, stack.bot_url, SIGNING_SECRET, workspace=tmp_path)
    async with aiohttp.ClientSession(base_url=await first.start()) as http:
        pg = SimpleNamespace(stack=stack, http=http, general=first.channels[0].id)
        chart = await upload(pg, "chart.png", "image/png", PNG)
        status, sent = await post(
            http,
            "/api/messages",
            {
                "channel": pg.general,
                "user": ALICE,
                "text": "@threadchat remember the pelican",
                "files": [chart["id"]],
            },
        )
        assert status == 200, sent
        await stack.replies(pg.general, sent["ts"], 1)
    channels, dm = list(first.channels), first.dm_channel(BOB)
    await first.stop()
    # Everything the local Slack knew is gone with it; the bot still calls the same address.
    port = int(stack.slack.base_url.split(":")[2].split("/")[0])
    await stack.slack.stop()
    stack.slack = LocalSlack()
    stack._closers.append(stack.slack.stop)
    await stack.slack.start(port=port)

    second = Playground(stack.slack, stack.bot_url, SIGNING_SECRET, workspace=tmp_path)
    async with aiohttp.ClientSession(base_url=await second.start()) as http:
        assert second.channels == channels and second.dm_channel(BOB) == dm
        async with http.get("/api/state") as response:
            state = await response.json()
        thread = [m for m in state["messages"][pg.general] if m.get("thread_ts") == sent["ts"]]
        assert [m["user"] for m in thread] == [ALICE, "U0BOT"]
        assert "remember the pelican" in thread[1]["text"]
        async with http.get(thread[0]["files"][0]["preview_url"]) as response:
            assert await response.read() == PNG
        # The same conversation answers the follow-up, with its history.
        status, _ = await post(
            http,
            "/api/messages",
            {
                "channel": pg.general,
                "user": ALICE,
                "text": "what did I ask?",
                "thread_ts": sent["ts"],
            },
        )
        assert status == 200
        replies = await stack.replies(pg.general, sent["ts"], 2)
        assert "Turn 2" in replies[1]["text"] and "pelican" in replies[1]["text"]
    await second.stop()

    # A fresh workspace (a new data directory, or `threadchat dev --reset`) has new ids.
    fresh = Playground(stack.slack, stack.bot_url, SIGNING_SECRET, workspace=tmp_path / "new")
    await fresh.start()
    assert {c.id for c in fresh.channels}.isdisjoint(c.id for c in channels)
    await fresh.stop()


async def test_a_saved_workspace_moves_file_links_to_the_new_address():
    before, after = LocalSlack(), LocalSlack()
    await before.start()
    file = before.add_file(user=ALICE, name="notes.txt", mimetype="text/plain", content=b"hi")
    saved, contents = before.workspace(), before.file_contents()
    await before.stop()
    await after.start()
    try:
        after.restore_workspace(json.loads(json.dumps(saved)), contents)
        moved = after.files[file["id"]]["url_private_download"]
        assert moved.startswith(after.base_url.removesuffix("/api/") + "/files/")
        headers = {"Authorization": f"Bearer {after.bot_token}"}
        async with aiohttp.ClientSession() as session, session.get(moved, headers=headers) as got:
            assert got.status == 200 and await got.read() == b"hi"
    finally:
        await after.stop()


async def test_a_mid_thread_mention_sees_the_alert_an_edit_and_a_second_person(make_stack):
    """The playground's thread as issue 20 tells it: a monitoring app's alert in a thread
    people were having, a mention in the middle of it, an edit, and a second person."""
    stack = await make_stack(reply_mode="auto")
    server = Playground(stack.slack, stack.bot_url, SIGNING_SECRET)
    url = await server.start()
    try:
        async with aiohttp.ClientSession(base_url=url) as http:
            pg = SimpleNamespace(
                stack=stack, server=server, http=http, general=server.channels[0].id
            )
            root = (await say(pg, "checkout feels slow"))["ts"]
            status, alert = await post(
                http, "/api/alert", {"channel": pg.general, "thread_ts": root}
            )
            assert status == 200 and alert["ok"], alert
            await say(pg, "restarting pods did nothing", user=BOB, thread_ts=root)
            asked = await say(pg, "@threadchat what does the alert say?", thread_ts=root)
            assert asked["ts"] != root
            [reply] = await stack.replies(pg.general, root, 1)
            prompt = json.dumps(stack.converse_requests()[-1]["messages"])
            assert "p99 is 2.4s" in prompt and "Monitoring (app)" in prompt
            assert "restarting pods did nothing" in prompt

            # Alice goes on alone with the bot, then edits what she said.
            own = (await say(pg, "the threshold is 500ms", thread_ts=root))["ts"]
            await stack.replies(pg.general, root, 2)
            status, edited = await post(
                http,
                "/api/edit",
                {"channel": pg.general, "user": ALICE, "ts": own, "text": "the threshold is 800ms"},
            )
            assert status == 200 and edited["ok"], edited
            assert stack.slack.message(pg.general, own)["text"] == "the threshold is 800ms"
            status, refused = await post(
                http,
                "/api/edit",
                {"channel": pg.general, "user": BOB, "ts": own, "text": "forged"},
            )
            assert status == 403 and refused["error"] == "cant_update_message"

            # Bob now answers Alice without a mention: kept, not answered; his mention is.
            await say(pg, "Alice, I'll page the on-call", user=BOB, thread_ts=root)
            await say(pg, "@threadchat who is on call?", user=BOB, thread_ts=root)
            replies = await stack.replies(pg.general, root, 3)
            assert len(replies) == 3
            said = [m for m in stack.converse_requests()[-1]["messages"] if m["role"] == "user"]
            prompt = json.dumps(said)  # the model's own answers quote the old text
            assert "I'll page the on-call" in prompt and "the threshold is 800ms" in prompt
            assert "the threshold is 500ms" not in prompt
    finally:
        await server.stop()


async def test_stop_on_a_processing_session_stops_its_streams_and_tells_the_bot(
    recorded_playground,
):
    pg = recorded_playground
    question = pg.slack.add_message(pg.general, user=ALICE, text="<@U0BOT> tell me everything")
    web_api = AsyncWebClient(token=pg.slack.bot_token, base_url=pg.slack.base_url)
    thread = {"channel_id": pg.general, "thread_ts": question["ts"]}
    await web_api.agents_sessions_setStatus(status="processing", **thread)
    started = await web_api.chat_startStream(
        channel=pg.general,
        thread_ts=question["ts"],
        markdown_text="So far",
        recipient_user_id=ALICE,
        recipient_team_id=pg.slack.team_id,
    )
    click = {"user": BOB, "channel": pg.general, "thread_ts": question["ts"]}
    status, result = await post(pg.http, "/api/session/stop", click)
    assert (status, result) == (
        200,
        {"ok": True, "status": 200, "streaming_message_ts": [started["ts"]]},
    )
    # Slack stopped the stream before telling the app: the app can write no more to it.
    assert not pg.slack.is_streaming(pg.general, started["ts"])
    with pytest.raises(SlackApiError) as refused:
        await web_api.chat_appendStream(channel=pg.general, ts=started["ts"], markdown_text="!")
    assert refused.value.response["error"] == "message_not_in_streaming_state"
    [event] = events_received(pg)
    assert {k: v for k, v in event.items() if k != "event_ts"} == {
        "type": "agent_session_stopped",
        "user": BOB,
        "channel": pg.general,
        "thread_ts": question["ts"],
        "streaming_message_ts": [started["ts"]],
    }
    # Moving the session on is the app's work, not Slack's.
    assert pg.slack.session(pg.general, question["ts"]) == "processing"

    # Once the session is active, Slack shows no Stop: a late click delivers nothing.
    await web_api.agents_sessions_setStatus(status="active", **thread)
    status, result = await post(pg.http, "/api/session/stop", click)
    assert (status, result["error"]) == (409, "session_not_processing")
    unknown = {**click, "thread_ts": "1.000001"}
    status, result = await post(pg.http, "/api/session/stop", unknown)
    assert (status, result["error"]) == (404, "thread_not_found")
    assert len(pg.received) == 1


async def test_an_answers_task_cards_reach_the_page_with_it(recorded_playground):
    pg = recorded_playground
    question = pg.slack.add_message(pg.general, user=ALICE, text="<@U0BOT> who is she?")
    web_api = AsyncWebClient(token=pg.slack.bot_token, base_url=pg.slack.base_url)
    card = {"type": "task_update", "id": "call1", "title": "directory / find_person"}
    source = {"type": "url", "url": "http://127.0.0.1:3004/mcp", "text": "directory"}
    async with pg.http.get("/api/events") as stream:

        async def next_event() -> dict:
            while True:
                line = (await stream.content.readline()).decode()
                if line.startswith("data: "):
                    return json.loads(line.removeprefix("data: "))

        assert (await asyncio.wait_for(next_event(), 5))["type"] == "snapshot"
        started = await web_api.chat_startStream(
            channel=pg.general,
            thread_ts=question["ts"],
            recipient_user_id=ALICE,
            recipient_team_id=pg.slack.team_id,
            chunks=[{**card, "status": "in_progress", "sources": [source]}],
        )
        first = await asyncio.wait_for(next_event(), 5)
        assert first["type"] == "message" and first["message"]["tasks"][0]["status"] == (
            "in_progress"
        )
        done = {**card, "status": "complete", "output": "Alice Smith, SRE"}
        await web_api.chat_appendStream(channel=pg.general, ts=started["ts"], chunks=[done])
        appended = await asyncio.wait_for(next_event(), 5)
    # One card per task, as its last update left it, with the sources it was given before.
    [shown] = appended["message"]["tasks"]
    assert appended["type"] == "stream_append"
    assert shown == {**done, "sources": [source]}
    async with pg.http.get("/api/state") as response:
        state = await response.json()
    [answer] = [m for m in state["messages"][pg.general] if m["ts"] == started["ts"]]
    assert answer["tasks"] == [shown]
    assert all("tasks" not in m for m in state["messages"][pg.general] if m is not answer)
