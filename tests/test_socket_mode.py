"""Socket Mode end to end: the real `bot.app.serve` connects to LocalSlack over a WebSocket
(apps.connections.open, then `hello`), receives envelopes, acks them, and hands over to a worker
on the real Temporal dev server. No HTTP request URL is involved: the stack runs no HTTP bot."""

import asyncio
import dataclasses
from urllib.parse import parse_qsl

import pytest

from bot.app import serve
from devtools.slack_events import app_mention_event, event_callback, slash_command
from devtools.stack import ALICE, Stack, eventually
from threadchat.config import ConfigError
from threadchat.ids import thread_permalink


class SocketBot:
    """`serve` running in Socket Mode as a task, with the event that stops it."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.slack = stack.slack
        self.stop = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    async def start(self, app_token: str | None = None) -> None:
        slack_settings = dataclasses.replace(
            self.stack.settings.slack, app_token=app_token or self.slack.app_token, port=0
        )
        settings = dataclasses.replace(self.stack.settings, slack=slack_settings)
        self.task = asyncio.create_task(serve(settings, self.stack.client, self.stop, "127.0.0.1"))

    async def connected(self, timeout: float = 10) -> None:
        """Wait for the bot's WebSocket; fail at once if serve itself fails first."""
        connected = asyncio.create_task(self.slack.wait_for_socket(timeout))
        await asyncio.wait({connected, self.task}, return_when=asyncio.FIRST_COMPLETED)
        if not connected.done():
            connected.cancel()
            await self.task  # raises serve's error, or fails below if it returned
            raise AssertionError("serve returned before connecting")
        await connected

    async def shutdown(self, timeout: float = 10) -> None:
        self.stop.set()
        if self.task is not None and not self.task.done():
            done, _ = await asyncio.wait({self.task}, timeout=timeout)
            if not done:
                self.task.cancel()
                await asyncio.gather(self.task, return_exceptions=True)
                raise AssertionError(f"serve did not return within {timeout}s of stop")

    async def mention(self, channel: str, text: str) -> tuple[str, dict]:
        """Alice mentions the bot at the channel's top level; returns (ts, the app's ack)."""
        message = self.slack.add_message(
            channel, user=ALICE, text=f"<@{self.slack.bot_user_id}> {text}"
        )
        event = app_mention_event(
            channel=channel, user=ALICE, text=message["text"], ts=message["ts"]
        )
        ack = await self.slack.send_socket_event(event_callback(event))
        return message["ts"], ack

    async def finished_replies(self, channel: str, thread_ts: str, count: int) -> list[dict]:
        """Wait for `count` bot replies in the thread, none of them still streaming."""

        def done() -> list[dict] | None:
            replies = self.slack.bot_replies(channel, thread_ts)
            if len(replies) < count:
                return None
            if any(self.slack.is_streaming(channel, r["ts"]) for r in replies):
                return None
            return replies

        return await eventually(done, 20, f"{count} finished bot replies in {thread_ts}")


@pytest.fixture
async def socket_bot(make_stack):
    """A worker on a fresh task queue (no HTTP bot) and `serve` connected in Socket Mode."""
    stack = await make_stack(bot=False)
    bot = SocketBot(stack)
    await bot.start()
    try:
        await bot.connected()
        yield bot
    finally:
        await bot.shutdown()


async def test_mention_over_the_socket_is_acked_and_answered_in_its_thread(socket_bot):
    slack, channel = socket_bot.slack, socket_bot.stack.channel
    connects = slack.calls_to("apps.connections.open")
    assert connects and all(c.error is None for c in connects)  # the app token was accepted

    ts, ack = await socket_bot.mention(channel, "what is Socket Mode?")
    # An Events API ack is the envelope id alone.
    assert set(ack) == {"envelope_id"}

    [reply] = await socket_bot.finished_replies(channel, ts, 1)
    assert reply["thread_ts"] == ts
    assert "what is Socket Mode?" in reply["text"]
    assert [m["ts"] for m in slack.messages(channel)] == [ts]  # nothing else at the top level


async def test_endchat_over_the_socket_acks_ephemerally_and_posts_the_summary(socket_bot):
    slack, stack, channel = socket_bot.slack, socket_bot.stack, socket_bot.stack.channel
    ts, _ = await socket_bot.mention(channel, "plan the launch")
    await socket_bot.finished_replies(channel, ts, 1)

    form = slash_command(
        command="/endchat",
        text="",
        channel_id=channel,
        user_id=ALICE,
        response_url=slack.response_url(channel, ALICE),
    )
    ack = await slack.send_socket_event(dict(parse_qsl(form)), envelope_type="slash_commands")

    payload = ack["payload"]
    assert payload.get("response_type") == "ephemeral"
    assert thread_permalink("local", channel, ts) in payload["text"]
    replies = await socket_bot.finished_replies(channel, ts, 2)
    assert "Summary" in replies[-1]["text"]
    result = await stack.handle(channel, ts).result()
    assert result.ended_by == "command"
    assert result.summary and result.summary in replies[-1]["text"]


async def test_stop_closes_the_socket_and_serve_returns(socket_bot):
    slack = socket_bot.slack
    assert slack.socket_connections == 1
    socket_bot.stop.set()
    assert await asyncio.wait_for(socket_bot.task, 10) is None
    await eventually(lambda: slack.socket_connections == 0, what="the socket to close")
    with pytest.raises(ConnectionError):
        await slack.send_socket_event(event_callback({"type": "reaction_added"}))


async def test_a_refused_app_token_stops_the_bot_with_a_config_error(make_stack):
    stack = await make_stack(bot=False)
    settings = dataclasses.replace(
        stack.settings,
        slack=dataclasses.replace(stack.settings.slack, app_token="xapp-wrong", port=0),
    )
    with pytest.raises(ConfigError) as raised:
        await asyncio.wait_for(serve(settings, stack.client, asyncio.Event(), "127.0.0.1"), 10)
    assert raised.value.variable == "SLACK_APP_TOKEN"
