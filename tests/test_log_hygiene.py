"""Logs keep secrets and conversation text out, and name the conversation they are about.

An end-to-end conversation (mention, follow-up, /endchat) runs with a unique phrase in every
message, a model whose replies carry a unique marker, and a unique signing secret and bot
token. Everything logged at INFO or above must contain none of them: not the message texts,
not the replies, not the secrets. Lines about the conversation must carry its workflow id.

In-process, logging is set up by the product's own `telemetry.configure_logging` (JSON), plus
a capturing handler with `ConversationFilter` on the root logger. Then a real
`threadchat worker` process runs the same conversation with `LOG_FORMAT=json`: each line it
writes must be a JSON object, and none may hold a secret or message text.
"""

import contextlib
import dataclasses
import io
import json
import logging
import signal
import uuid
from typing import Any
from unittest import mock

from devtools.bedrock import Fault, offline_reply
from devtools.processes import Workers
from devtools.slack_events import EventSender, slash_command
from devtools.stack import ALICE, BOB, TEAM, Stack, eventually, start_stack
from threadchat import telemetry
from threadchat.ids import conversation_id

RUN = uuid.uuid4().hex[:12]
PHRASE = f"quartz-{RUN}-zebra"  # in every user message
REPLY_MARK = f"heliotrope-{RUN}"  # in every model reply, never in a user message
SIGNING_SECRET = f"signing-secret-{RUN}"
BOT_TOKEN = f"xoxb-token-{RUN}"
AWS_SECRET = f"aws-secret-{RUN}"


def marked_reply(body: dict[str, Any]) -> str:
    """The offline model's answer with a marker that only model output contains."""
    return f"{REPLY_MARK}: {offline_reply(body)}"


class Capture(logging.Handler):
    """Every record at INFO or above, with `record.conversation` set by ConversationFilter."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.addFilter(telemetry.ConversationFilter())
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        self.records: list[logging.LogRecord] = []
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        # The formatted line includes a traceback, if any: that is what an operator sees.
        self.lines.append(self.format(record))


@contextlib.contextmanager
def production_logging(json_stream: io.StringIO):
    """`telemetry.configure_logging("INFO", json)` as the commands call it, except that its
    handler writes to `json_stream` and is added beside pytest's (not instead of them), and a
    `Capture` handler is added too. Everything is restored afterwards."""
    root = logging.getLogger()
    names = ["", "slack_bolt", "aiohttp.access"]
    saved = {name: logging.getLogger(name).level for name in names}
    installed: list[logging.Handler] = []

    def basic_config(*, level, handlers, **_: Any) -> None:
        for handler in handlers:
            handler.setStream(json_stream)
            root.addHandler(handler)
            installed.append(handler)
        root.setLevel(level)

    capture = Capture()
    try:
        with mock.patch.object(logging, "basicConfig", basic_config):
            telemetry.configure_logging("INFO", json_format=True)
        assert installed, "configure_logging installed no handler"
        root.addHandler(capture)
        yield capture
    finally:
        root.removeHandler(capture)
        for handler in installed:
            root.removeHandler(handler)
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)


async def secret_stack(client, **options: Any) -> Stack:
    """A Stack whose bot token and signing secret are this run's unique ones."""
    stack = await start_stack(
        client, bot=False, worker=False, bedrock_options={"responder": marked_reply}, **options
    )
    stack.slack.bot_token = BOT_TOKEN
    stack.settings = dataclasses.replace(
        stack.settings,
        slack=dataclasses.replace(
            stack.settings.slack, bot_token=BOT_TOKEN, signing_secret=SIGNING_SECRET
        ),
    )
    await stack.start_bot()
    # start_bot signs with devtools.stack.SIGNING_SECRET; this run signs with its own.
    stack.sender = EventSender(stack.bot_url, SIGNING_SECRET)
    stack._closers.append(stack.sender.close)
    return stack


async def converse(stack: Stack, *, until_replies) -> tuple[str, list[str], list[str]]:
    """Mention, follow-up and /endchat; returns the thread ts, the user texts and the bot's
    messages (replies and summary) as Slack shows them."""
    first = f"please remember {PHRASE} number one"
    second = f"and what about {PHRASE} number two?"
    ts = await stack.mention(stack.channel, first)
    await until_replies(ts, 1)
    await stack.say(stack.channel, ts, second, user=BOB)
    await until_replies(ts, 2)
    status, body = await stack.sender.send_command(
        slash_command(command="/endchat", text="", channel_id=stack.channel, user_id=ALICE)
    )
    assert status == 200, body
    replies = await until_replies(ts, 3)
    assert "Summary" in replies[-1]["text"], replies[-1]
    texts = [r["text"] for r in replies]
    assert all(REPLY_MARK in text for text in texts), texts  # replies are model output
    assert all(PHRASE in text for text in texts), texts  # ...that quotes the messages
    return ts, [first, second, f"<@{stack.slack.bot_user_id}> {first}"], texts


def forbidden_in(line: str, values: list[str]) -> list[str]:
    return [value for value in values if value and value in line]


def secrets_and_texts(user_texts: list[str], replies: list[str]) -> list[str]:
    return [PHRASE, REPLY_MARK, SIGNING_SECRET, BOT_TOKEN, AWS_SECRET, *user_texts, *replies]


def about(record: logging.LogRecord, workflow_id: str) -> bool:
    """Whether a record is about the conversation: logged by its workflow or activities, or
    naming it."""
    for source in ("temporal_workflow", "temporal_activity"):
        details = getattr(record, source, None)
        if isinstance(details, dict) and details.get("workflow_id") == workflow_id:
            return True
    return workflow_id in record.getMessage() or record.name.startswith(
        ("activities.", "workflows.")
    )


async def test_in_process_logs_hold_no_text_or_secrets_and_name_the_conversation(client):
    json_stream = io.StringIO()
    with production_logging(json_stream) as capture:
        # Not streamed: each reply then logs a line at INFO (model, tokens) from its activity.
        stack = await secret_stack(client, streaming=False)
        try:
            await stack.start_worker()
            # One throttled model call and one rate-limited post: retries log WARNINGs about
            # the conversation (with their tracebacks), which must stay clean too.
            stack.bedrock.inject(Fault(error_code="ThrottlingException", times=1))
            stack.slack.inject("chat.postMessage", error="ratelimited", status=429, retry_after=1)

            async def until_replies(ts: str, count: int):
                return await stack.replies(stack.channel, ts, count)

            ts, user_texts, replies = await converse(stack, until_replies=until_replies)
        finally:
            await stack.close()

    workflow_id = conversation_id(TEAM, stack.channel, ts)
    forbidden = secrets_and_texts(user_texts, replies)
    leaks = [
        (line[:300], found)
        for line in capture.lines + json_stream.getvalue().splitlines()
        if (found := forbidden_in(line, forbidden))
    ]
    assert not leaks, f"secrets or conversation text in logs at INFO+: {leaks}"

    mine = [r for r in capture.records if about(r, workflow_id)]
    assert len(mine) >= 3, f"too few lines about the conversation: {capture.lines}"
    assert any(r.levelno >= logging.WARNING for r in mine), capture.lines  # the retries
    untagged = [
        f"{r.levelname} {r.name}: {r.getMessage()[:200]} -> {getattr(r, 'conversation', None)}"
        for r in mine
        if getattr(r, "conversation", None) != workflow_id
    ]
    assert not untagged, f"lines about {workflow_id} without its id: {untagged}"

    entries = [json.loads(line) for line in json_stream.getvalue().splitlines()]
    assert entries and all(isinstance(e, dict) and e.get("message") for e in entries)
    tagged = [e for e in entries if e.get("conversation") == workflow_id]
    assert len(tagged) >= len(mine), (len(tagged), len(mine))


async def test_worker_process_json_logs_hold_no_text_or_secrets(client, temporal_server):
    server, _ = temporal_server
    stack = await secret_stack(client)
    workers = Workers(stack, server.address)
    workers.env.update(
        {
            "LOG_FORMAT": "json",
            "SLACK_BOT_TOKEN": BOT_TOKEN,
            "SLACK_SIGNING_SECRET": SIGNING_SECRET,  # the worker has it too: it must not log it
            "AWS_SECRET_ACCESS_KEY": AWS_SECRET,
        }
    )
    try:
        worker = await workers.start("json")
        stack.bedrock.inject(Fault(error_code="ThrottlingException", times=1))

        async def until_replies(ts: str, count: int):
            return await stack.replies(stack.channel, ts, count)

        ts, user_texts, replies = await converse(stack, until_replies=until_replies)
        worker.send(signal.SIGTERM)  # a clean exit flushes everything it logged
        assert await worker.wait_exit(40) == 0, worker.tail()
        output = worker.output()
    finally:
        workers.stop_all()
        await stack.close()

    workflow_id = conversation_id(TEAM, stack.channel, ts)
    lines = [line for line in output.splitlines() if line.strip()]
    assert lines, "the worker logged nothing"
    not_json = []
    entries = []
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            not_json.append(line[:300])
            continue
        if not isinstance(entry, dict):
            not_json.append(line[:300])
        else:
            entries.append(entry)
    assert not not_json, f"worker lines that are not JSON objects: {not_json}"
    assert all({"time", "level", "logger", "message"} <= entry.keys() for entry in entries)
    assert any("worker polling task queue" in entry["message"] for entry in entries)

    forbidden = secrets_and_texts(user_texts, replies)
    leaks = [(line[:300], found) for line in lines if (found := forbidden_in(line, forbidden))]
    assert not leaks, f"secrets or conversation text in the worker's logs: {leaks}"

    # The throttled model call was retried: its warning names the conversation.
    mine = [e for e in entries if e.get("conversation") == workflow_id]
    assert mine, f"no worker line names {workflow_id}: {entries}"
    about_it = [e for e in entries if workflow_id in json.dumps(e)]
    assert all(e.get("conversation") == workflow_id for e in about_it), about_it


# The SDK core logs to stderr itself, as ANSI-coloured text, unless the runtime forwards its
# logs to Python logging (threadchat.telemetry.make_runtime does).
async def test_worker_process_json_logs_stay_json_when_a_workflow_task_fails(
    client, temporal_server
):
    """The Temporal SDK's core (Rust) logs too, e.g. when a workflow task fails (a bad
    payload, a non-determinism error after a deploy): with LOG_FORMAT=json, that must be JSON."""
    server, _ = temporal_server
    stack = await secret_stack(client)
    workers = Workers(stack, server.address)
    workers.env["LOG_FORMAT"] = "json"
    try:
        worker = await workers.start("json-failure")
        workflow_id = f"threadchat-log-hygiene-{RUN}"
        # Arguments no ConversationWorkflow can decode: its first workflow task fails.
        handle = await client.start_workflow(
            "ConversationWorkflow",
            {"thread": 12345},
            id=workflow_id,
            task_queue=stack.settings.temporal.task_queue,
        )

        async def task_failed() -> bool:
            events = (await handle.fetch_history()).events
            return any(e.HasField("workflow_task_failed_event_attributes") for e in events)

        await eventually(task_failed, 30, "a failed workflow task")
        await handle.terminate("log hygiene test")
        worker.send(signal.SIGTERM)
        assert await worker.wait_exit(40) == 0, worker.tail()
        output = worker.output()
    finally:
        workers.stop_all()
        await stack.close()
    not_json = []
    for line in output.splitlines():
        if not line.strip():
            continue
        try:
            assert isinstance(json.loads(line), dict)
        except (ValueError, AssertionError):
            not_json.append(line[:300])
    assert not not_json, f"worker lines that are not JSON objects: {not_json}"


async def test_the_bot_starts_without_bolts_unused_token_warning(client, monkeypatch, caplog):
    from bot.app import build_app
    from threadchat.config import SlackSettings

    # Bolt reads this from the environment itself, as production sets it.
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-from-the-environment")
    settings = SlackSettings(bot_token="xoxb-from-the-environment", signing_secret="s")
    with caplog.at_level(logging.DEBUG):
        app = build_app(settings, client, "any-queue")
    assert app.client.token == "xoxb-from-the-environment"
    assert not [r for r in caplog.records if "will be unused" in r.getMessage()]
    assert "xoxb-from-the-environment" not in caplog.text
