"""SIGTERM to a real `threadchat bot` process while Slack requests are in flight.

The bot runs as its own OS process (HTTP on a free port, configured only through the
environment), next to a `threadchat worker` process; the local Slack and Bedrock servers and
the Temporal dev server are the tests' own. A burst of mentions, each starting its own thread,
is fired at once, and the bot gets SIGTERM as soon as the first of them is answered. While it
drains, more mentions arrive, and a request whose headers it read before SIGTERM sends the
rest of its body (and, like Slack, waits 3 s for the answer).

What must hold: the bot exits 0 promptly; every request either got a 200, and then its message
is answered, or failed (refused, reset or unanswered, which Slack retries); a new bot process
on the same port serves Slack's retries (of every request, whatever its first answer: Slack
also retries when an answer is late); and every message gets exactly one reply.
"""

import asyncio
import contextlib
import json
import os
import signal
import time
from collections import Counter

import aiohttp
import pytest

from devtools.processes import ChildProcess, Workers, until, worker_env
from devtools.slack_events import EventSender, app_mention_event, event_callback, sign
from devtools.stack import ALICE, SIGNING_SECRET, Stack, eventually
from devtools.temporal_server import free_port
from workflows.conversation import ConversationWorkflow

BURST = 30
LATE = 10  # deliveries sent while the bot drains
# Slack gives up on an answer after 3 s, and delivers the event again.
SLACK_ACK_TIMEOUT = 3
# From SIGTERM to exit: in-flight hand-overs take milliseconds.
EXIT_WITHIN = 10


class BotProcess(ChildProcess):
    """`threadchat bot` as a child process on `port`."""

    def __init__(self, name: str, env: dict[str, str], port: int):
        super().__init__("bot", name, env)
        self.port = port
        self.url = f"http://127.0.0.1:{port}/slack/events"

    async def wait_serving(self, timeout: float = 30) -> None:
        """Until /healthz answers 200 (Temporal reachable, HTTP up)."""
        health = f"http://127.0.0.1:{self.port}/healthz"

        async def healthy() -> bool:
            assert self.process.poll() is None, f"bot exited early\n{self.tail()}"
            try:
                async with aiohttp.ClientSession() as session, session.get(health) as response:
                    return response.status == 200
            except aiohttp.ClientError:
                return False

        await until(healthy, timeout, f"bot {self.name} to serve", self.tail)


def bot_env(stack: Stack, temporal_address: str, port: int) -> dict[str, str]:
    env = worker_env(stack, temporal_address)  # Temporal, Slack and AWS settings, nothing else
    env.update(
        {
            "PORT": str(port),
            "HOST": "127.0.0.1",
            "SLACK_SIGNING_SECRET": SIGNING_SECRET,
            "SLACK_BOT_TOKEN": stack.slack.bot_token,
            "SLACK_API_URL": stack.slack.base_url,
        }
    )
    env.pop("SLACK_APP_TOKEN", None)  # HTTP mode
    return env


class Delivery:
    """One mention: its event (with a stable event_id, for retries) and what happened."""

    def __init__(self, stack: Stack, index: int):
        text = f"message number {index} of the burst"
        message = stack.slack.add_message(
            stack.channel, user=ALICE, text=f"<@{stack.slack.bot_user_id}> {text}"
        )
        self.ts = message["ts"]
        self.text = text
        self.event = app_mention_event(
            channel=stack.channel, user=ALICE, text=message["text"], ts=self.ts
        )
        self.event_id = f"EvBURST{index:04d}"
        self.first: int | str | None = None  # status, or the error's name
        self.answered_at = 0.0

    def body(self) -> str:
        return json.dumps(event_callback(self.event, event_id=self.event_id))


async def deliver(url: str, delivery: Delivery) -> int | str:
    """One POST on its own connection; the status, or the name of the connection error."""
    body = delivery.body()
    headers = {"Content-Type": "application/json", **sign(SIGNING_SECRET, body)}
    timeout = aiohttp.ClientTimeout(total=30)
    try:
        async with (
            aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(force_close=True), timeout=timeout
            ) as session,
            session.post(url, data=body.encode(), headers=headers) as response,
        ):
            return response.status
    except (aiohttp.ClientError, TimeoutError) as err:
        return type(err).__name__


async def start_half_sent(port: int, delivery: Delivery):
    """Open a connection, send the headers with ``Expect: 100-continue``, and once the bot
    answers "100 Continue" (its handler is running: the request is in flight), half the body.
    Returns the streams and the rest of the body."""
    body = delivery.body().encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    headers = {
        "Host": f"127.0.0.1:{port}",
        "Content-Type": "application/json",
        "Content-Length": str(len(body)),
        "Connection": "close",
        "Expect": "100-continue",
        **sign(SIGNING_SECRET, body.decode()),
    }
    head = "POST /slack/events HTTP/1.1\r\n"
    head += "".join(f"{name}: {value}\r\n" for name, value in headers.items()) + "\r\n"
    writer.write(head.encode())
    await writer.drain()
    interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    assert interim.startswith(b"HTTP/1.1 100"), interim
    half = len(body) // 2
    writer.write(body[:half])
    await writer.drain()
    return reader, writer, body[half:]


async def finish_half_sent(reader, writer, rest: bytes, timeout: float) -> int | str:
    """Send the rest of the body and wait up to `timeout` for the status line; then close."""
    try:
        writer.write(rest)
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), timeout)
        if not status_line:
            return "closed without an answer"
        return int(status_line.split()[1])
    except (ConnectionError, TimeoutError) as err:
        return type(err).__name__
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


async def start_bot(name: str, env: dict[str, str], port: int, bots: list) -> BotProcess:
    bot = BotProcess(name, env, port)
    bots.append(bot)
    await bot.wait_serving()
    return bot


async def test_sigterm_mid_burst_loses_and_doubles_nothing(make_stack, temporal_server):
    server, _ = temporal_server
    stack = await make_stack(worker=False, bot=False)
    workers = Workers(stack, server.address)
    port = free_port()
    env = bot_env(stack, server.address, port)
    bots: list[BotProcess] = []

    def logs() -> str:
        return "\n".join([workers.logs(), *(bot.tail() for bot in bots)])

    try:
        await workers.start("A")
        first_bot = await start_bot("first", env, port, bots)

        # A normal mention first: the process serves.
        warmup = Delivery(stack, 0)
        assert await deliver(first_bot.url, warmup) == 200, logs()
        await until(
            lambda: stack.slack.bot_replies(stack.channel, warmup.ts), 30, "a warm-up reply", logs
        )

        # One request half-sent (the bot has read its headers and waits for its body), then
        # a burst; SIGTERM as soon as the first answer of the burst arrives.
        half_sent = Delivery(stack, 1)
        reader, writer, rest = await start_half_sent(port, half_sent)
        burst = [Delivery(stack, i) for i in range(2, 2 + BURST)]
        answered = asyncio.Event()
        termed_at: list[float] = []

        async def fire(delivery: Delivery) -> None:
            delivery.first = await deliver(first_bot.url, delivery)
            delivery.answered_at = time.monotonic()
            if not answered.is_set():
                answered.set()
                os.kill(first_bot.pid, signal.SIGTERM)
                termed_at.append(time.monotonic())

        tasks = [asyncio.create_task(fire(d)) for d in burst]
        await asyncio.wait_for(answered.wait(), 30)
        await until(
            lambda: "bot shutting down" in first_bot.output(), 10, "the bot to shut down", logs
        )
        # Deliveries that arrive while it drains, and the rest of the half-sent one, which
        # Slack gives up on after 3 s.
        late = [Delivery(stack, i) for i in range(2 + BURST, 2 + BURST + LATE)]
        tasks += [asyncio.create_task(fire(d)) for d in late]
        half_sent.first = await finish_half_sent(reader, writer, rest, SLACK_ACK_TIMEOUT)
        await asyncio.gather(*tasks)
        code = await first_bot.wait_exit(EXIT_WITHIN + 60)
        exited_in = time.monotonic() - termed_at[0]
        deliveries = [half_sent, *burst, *late]
        outcomes = Counter(str(d.first) for d in deliveries)
        drained = sum(d.first == 200 and d.answered_at > termed_at[0] for d in burst)
        print(
            f"\nSIGTERM mid-burst: bot exited rc={code} {exited_in:.2f} s after SIGTERM;"
            f" first deliveries: {dict(outcomes)} ({drained} answered 200 after SIGTERM);"
            f" half-sent request: {half_sent.first}"
        )
        assert code == 0, logs()
        assert exited_in < EXIT_WITHIN, logs()
        # Each first delivery got a 200 or failed (refused, reset, unanswered: Slack retries);
        # a 4xx would mean the bot refused a valid request.
        assert all(isinstance(d.first, str) or d.first == 200 for d in deliveries), outcomes
        assert sum(d.first == 200 for d in burst) >= 1

        # Every 200 meant a durable hand-over: the message is answered before any retry.
        for delivery in deliveries:
            if delivery.first == 200:
                await until(
                    lambda d=delivery: stack.slack.bot_replies(stack.channel, d.ts),
                    30,
                    f"a reply to acked {d_name(delivery)}",
                    logs,
                )

        # Slack delivers every event again (the failed ones, and any it deems late) to a new
        # bot process on the same Request URL.
        second_bot = await start_bot("second", env, port, bots)
        sender = EventSender(second_bot.url, SIGNING_SECRET)
        try:
            for delivery in deliveries:
                status, body = await sender.send_event(
                    delivery.event, retry_num=1, event_id=delivery.event_id
                )
                assert status == 200, (d_name(delivery), status, body)
        finally:
            await sender.close()

        # Exactly one reply each: visible in Slack, and one recorded turn with nothing pending
        # (a duplicate would have become a pending message or a second turn).
        for delivery in [warmup, *deliveries]:
            await until(
                lambda d=delivery: stack.slack.bot_replies(stack.channel, d.ts),
                30,
                f"a reply to {d_name(delivery)}",
                logs,
            )

            async def settled(d=delivery) -> bool:
                status = await stack.handle(stack.channel, d.ts).query(ConversationWorkflow.status)
                return status.turn_count >= 1 and status.pending == 0

            await eventually(settled, 30, f"the turn of {d_name(delivery)}")
            status = await stack.handle(stack.channel, delivery.ts).query(
                ConversationWorkflow.status
            )
            replies = stack.slack.bot_replies(stack.channel, delivery.ts)
            assert status.turn_count == 1 and len(replies) == 1, (d_name(delivery), replies)
            assert delivery.text in replies[0]["text"]
    finally:
        for bot in bots:
            bot.stop()
        workers.stop_all()


# aiohttp drops the bytes that arrive once shutdown has begun, so a request still arriving at
# SIGTERM can never finish: the bot must not wait long for it (Slack retries it anyway).
@pytest.mark.timeout(180)
async def test_sigterm_exits_promptly_despite_a_stalled_request(make_stack, temporal_server):
    server, _ = temporal_server
    stack = await make_stack(worker=False, bot=False)
    port = free_port()
    bots: list[BotProcess] = []
    try:
        bot = await start_bot("stalled", bot_env(stack, server.address, port), port, bots)
        reader, writer, _ = await start_half_sent(port, Delivery(stack, 1))
        os.kill(bot.pid, signal.SIGTERM)
        termed_at = time.monotonic()
        try:
            assert await bot.wait_exit(EXIT_WITHIN) == 0, bot.tail()
        finally:
            writer.close()
        print(f"\nSIGTERM with a stalled request: exited in {time.monotonic() - termed_at:.1f} s")
    finally:
        for bot in bots:
            bot.stop()


def d_name(delivery: Delivery) -> str:
    return f"{delivery.event_id} (ts {delivery.ts})"
