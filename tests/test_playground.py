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
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient

from devtools.playground import MAX_FILE_BYTES, Playground, PlaygroundError
from devtools.slack import LocalSlack
from devtools.stack import ALICE, BOB, SIGNING_SECRET, eventually


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
    shown = await eventually(lambda: pg.stack.slack.ephemerals, 5, "the ephemeral answer")
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
    assert "status" in types  # "is thinking…" before the first words
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

    bot_app = web.Application()
    bot_app.router.add_post("/slack/events", bot)
    bot_runner = web.AppRunner(bot_app, access_log=None, shutdown_timeout=1.0)
    await bot_runner.setup()
    await web.TCPSite(bot_runner, "127.0.0.1", 0).start()
    bot_url = f"http://127.0.0.1:{bot_runner.addresses[0][1]}/slack/events"
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
        await bot_runner.cleanup()
        await slack.stop()


# Only its first bytes need to look like a PNG: neither the playground nor LocalSlack decodes it.
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 24
PDF = b"%PDF-1.4\n%%EOF\n"


@contextlib.asynccontextmanager
async def recording_bot() -> AsyncIterator[tuple[str, list[tuple[dict[str, str], str]]]]:
    """A stand-in for the bot's Request URL that acks every event and keeps what it got."""
    received: list[tuple[dict[str, str], str]] = []

    async def bot(request: web.Request) -> web.Response:
        received.append((dict(request.headers), await request.text()))
        return web.Response()

    app = web.Application()
    app.router.add_post("/slack/events", bot)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/slack/events", received
    finally:
        await runner.cleanup()


@pytest.fixture
async def files_playground() -> AsyncIterator[SimpleNamespace]:
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


async def test_files_attached_to_a_mention_are_shared_and_reach_the_bot(files_playground):
    pg = files_playground
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


async def test_a_file_shared_without_a_comment_is_a_message(files_playground):
    pg = files_playground
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


async def test_bad_uploads_and_unknown_files_are_refused(files_playground):
    pg = files_playground
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
