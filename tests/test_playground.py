"""The Slack playground's JSON endpoints over real HTTP, driving a real bot, worker and Temporal:
the same path the page in the browser takes, without the browser."""

import asyncio
import json
from types import SimpleNamespace
from urllib.parse import parse_qs

import aiohttp
import pytest
from aiohttp import web
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient

from devtools.playground import Playground
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
