"""A whole threadchat on one machine, for tests and benchmarks: a worker and the bot on a fresh
task queue of a real Temporal server, wired to the local Slack and Bedrock servers over HTTP,
with helpers that act as Slack users do."""

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from temporalio.client import Client
from temporalio.worker import Worker

from bot.app import EVENTS_PATH, bound_port, build_app, build_web_app, start_http
from devtools.bedrock import LocalBedrock
from devtools.slack import LocalSlack
from devtools.slack_events import (
    EventSender,
    agent_session_stopped_event,
    app_context_changed_event,
    app_home_opened_event,
    app_mention_event,
    assistant_thread_event,
    block_action,
    message_event,
    view_action,
)
from threadchat import actions, texts
from threadchat.channels import load as load_channels
from threadchat.commands.worker import build_workers
from threadchat.config import (
    BedrockSettings,
    Settings,
    SlackSettings,
    TemporalSettings,
    load_tools_file,
)
from threadchat.ids import conversation_id
from threadchat.model import ConversationResult, ConversationSettings
from threadchat.slack_client import http_session, make_client

SIGNING_SECRET = "local-signing-secret"
TEAM = "T0LOCAL"
# Overrides that are the worker's settings, which a conversation takes when it opens.
WORKER_WIDE = ("max_tool_rounds", "approval_timeout_seconds", "encryption_keys")
ALICE, BOB = "U0ALICE", "U0BOB"


async def eventually(
    condition: Callable[[], Any], timeout: float = 20, what: str = "condition"
) -> Any:
    """Poll `condition` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if isinstance(result, Awaitable):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)


def conversation_settings(**overrides: Any) -> ConversationSettings:
    values = dict(
        inactivity_timeout_seconds=300,
        context_budget_tokens=6000,
        history_event_cap=2000,
        model_timeout_seconds=20,
        streaming=True,
    )
    values.update(overrides)
    return ConversationSettings(**values)


@dataclass
class Stack:
    """A worker and the bot on a fresh task queue, with the local Slack and Bedrock servers."""

    client: Client
    slack: LocalSlack
    bedrock: LocalBedrock
    settings: Settings
    workers: list[Worker] = field(default_factory=list)
    bot_url: str = ""
    sender: EventSender | None = None
    # Each test gets its own channel: ts values only need to be unique per channel, and
    # workflow ids must not collide with another test's conversations.
    channel: str = field(default_factory=lambda: "C" + uuid.uuid4().hex[:10].upper())
    _closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    def handle(self, channel: str, thread_ts: str):
        return self.client.get_workflow_handle(
            conversation_id(TEAM, channel, thread_ts), result_type=ConversationResult
        )

    async def start_worker(self, settings: Settings | None = None) -> None:
        """Workers for the stack's queues (with other `settings`: another build, say)."""
        settings = settings or self.settings
        slack = settings.slack
        session = http_session()
        slack_client = make_client(slack.bot_token or "", slack.api_url, session)
        workers = build_workers(self.client, settings, slack_client=slack_client)
        self.workers = workers
        tasks = [asyncio.create_task(worker.run()) for worker in workers]

        async def stop() -> None:
            # shutdown() is safe to repeat, also after a test stopped the workers itself.
            await asyncio.gather(*(worker.shutdown() for worker in workers))
            await asyncio.gather(*tasks, return_exceptions=True)
            await session.close()

        self._closers.append(stop)

    async def start_bot(self) -> None:
        app = build_app(
            self.settings.slack,
            self.client,
            self.settings.temporal.task_queue,
            self.settings.token_limits,
        )
        secret = self.settings.slack.signing_secret or ""
        web_app = build_web_app(app, self.client, signing_secret=secret)
        runner = await start_http(web_app, "127.0.0.1", 0)
        self.bot_url = f"http://127.0.0.1:{bound_port(runner)}{EVENTS_PATH}"
        self.sender = EventSender(self.bot_url, SIGNING_SECRET)
        self._closers.append(runner.cleanup)
        self._closers.append(self.sender.close)

    async def mention(
        self,
        channel: str,
        text: str,
        *,
        user: str = ALICE,
        thread_ts: str | None = None,
        files: list[dict] | None = None,
        action_token: str | None = None,
    ) -> str:
        """A user mentions the bot (with `files` from LocalSlack.add_file attached, and the
        `action_token` Slack gives the event); returns the message ts (the thread, when top
        level)."""
        message = self.slack.add_message(
            channel,
            user=user,
            text=f"<@{self.slack.bot_user_id}> {text}",
            thread_ts=thread_ts,
            files=files,
        )
        event = app_mention_event(
            channel=channel,
            user=user,
            text=message["text"],
            ts=message["ts"],
            thread_ts=thread_ts,
            files=message.get("files"),
            action_token=action_token,
        )
        status, _ = await self.sender.send_event(event)
        assert status == 200
        return message["ts"]

    async def say(
        self,
        channel: str,
        thread_ts: str,
        text: str,
        *,
        user: str = ALICE,
        files: list[dict] | None = None,
        channel_type: str = "channel",
    ) -> str:
        """A plain message in a thread, without a mention (with `files` attached)."""
        message = self.slack.add_message(
            channel, user=user, text=text, thread_ts=thread_ts, files=files
        )
        event = message_event(
            channel=channel,
            user=user,
            text=text,
            ts=message["ts"],
            thread_ts=thread_ts,
            files=message.get("files"),
            channel_type=channel_type,
        )
        status, _ = await self.sender.send_event(event)
        assert status == 200
        return message["ts"]

    async def open_panel(self, *, user: str = ALICE, viewing: str | None = None) -> tuple[str, str]:
        """`user` opens the assistant panel while viewing `viewing`; returns its thread (the
        DM channel and thread ts), whose root Slack makes."""
        dm = "D" + user.removeprefix("U")
        root = self.slack.add_message(dm, user=user, text="")
        await self.panel_event("started", dm, root["ts"], user=user, viewing=viewing)
        return dm, root["ts"]

    async def panel_event(
        self, kind: str, dm: str, thread_ts: str, *, user: str = ALICE, viewing: str | None = None
    ) -> None:
        event = assistant_thread_event(
            kind, user=user, channel=dm, thread_ts=thread_ts, context_channel=viewing
        )
        status, _ = await self.sender.send_event(event)
        assert status == 200

    async def panel_say(self, dm: str, thread_ts: str, text: str, *, user: str = ALICE) -> str:
        """A message in the panel's thread (a DM thread)."""
        return await self.say(dm, thread_ts, text, user=user, channel_type="im")

    async def open_home(self, user: str = ALICE) -> dict:
        """`user` opens the App Home tab; returns the view the bot published."""
        self.slack.home_views.pop(user, None)
        event = app_home_opened_event(user=user, channel="D" + user.removeprefix("U"))
        status, _ = await self.sender.send_event(event)
        assert status == 200
        return await eventually(lambda: self.slack.home_views.get(user), what="the Home view")

    async def open_messages_tab(self, user: str = ALICE) -> str:
        """`user` opens the app's Messages tab (agent messaging); returns their DM channel."""
        dm = "D" + user.removeprefix("U")
        event = app_home_opened_event(user=user, channel=dm, tab="messages")
        status, _ = await self.sender.send_event(event)
        assert status == 200
        return dm

    async def view(
        self, viewing: str | None, message_ts: str | None = None, *, user: str = ALICE
    ) -> None:
        """`user` now views the channel `viewing` (or its message `message_ts`, or nothing),
        as app_context_changed tells it."""
        dm = "D" + user.removeprefix("U")
        event = app_context_changed_event(
            user=user, channel=dm, viewing=viewing, message_ts=message_ts
        )
        status, _ = await self.sender.send_event(event)
        assert status == 200

    async def click_home(self, action_id: str, value: str, *, user: str = ALICE) -> int:
        body = view_action(
            action_id=action_id, value=value, user_id=user, view=self.slack.home_views[user]
        )
        status, _ = await self.sender.send_action(body)
        return status

    async def click(self, channel: str, ts: str, action_id: str, *, user: str = ALICE) -> int:
        """`user` clicks the button `action_id` on the bot's message `ts` (FEEDBACK_UP and
        FEEDBACK_DOWN: a half of Slack's feedback buttons); returns the status the bot
        answered the click with."""
        message = self.slack.message(channel, ts)
        blocks = message.get("blocks") or []
        half = {actions.FEEDBACK_UP: "positive_button", actions.FEEDBACK_DOWN: "negative_button"}
        element_type, block_id = "button", actions.BLOCK_ID
        if action_id in half:
            [value] = [
                element[half[action_id]]["value"]
                for block in blocks
                if block.get("type") == "context_actions"
                for element in block["elements"]
                if element.get("type") == "feedback_buttons"
            ]
            action_id, element_type = actions.FEEDBACK, "feedback_buttons"
            block_id = actions.FEEDBACK_BLOCK_ID
        else:
            [value] = [
                element["value"]
                for block in blocks
                if block.get("type") == "actions"
                for element in block["elements"]
                if element.get("action_id") == action_id
            ]
        body = block_action(
            action_id=action_id,
            value=value,
            channel_id=channel,
            user_id=user,
            message=message,
            team_id=TEAM,
            response_url=self.slack.response_url(channel, user),
            block_id=block_id,
            element_type=element_type,
        )
        status, _ = await self.sender.send_action(body)
        return status

    async def click_stop(
        self, channel: str, thread_ts: str, *, user: str = ALICE, event_id: str | None = None
    ) -> tuple[list[str], str]:
        """`user` clicks Stop on the thread's session: the local Slack stops the streams, as
        Slack does, and sends agent_session_stopped. Returns the streams it stopped and the
        event's id (to deliver it again as Slack's retry)."""
        stopped = self.slack.stop_session(channel, thread_ts)
        event = agent_session_stopped_event(
            user=user, channel=channel, thread_ts=thread_ts, streaming_message_ts=stopped
        )
        event_id = event_id or f"Ev{len(self.slack.calls):08d}STOP"
        status, _ = await self.sender.send_event(event, event_id=event_id, team_id=TEAM)
        assert status == 200
        return stopped, event_id

    def private_notes(self, channel: str, user: str) -> list[str]:
        """Texts of the ephemeral messages `user` was shown in `channel`."""
        return [
            e.get("text", "")
            for e in self.slack.ephemerals
            if e["channel"] == channel and e["user"] == user
        ]

    async def replies(self, channel: str, thread_ts: str, count: int, timeout: float = 60):
        """Wait until the bot has `count` finished messages in the thread (none still
        streaming); return them."""

        def finished() -> list[dict] | None:
            replies = self.slack.bot_replies(channel, thread_ts)
            if len(replies) < count or any(
                self.slack.is_streaming(channel, r["ts"]) for r in replies
            ):
                return None
            return replies

        return await eventually(finished, timeout, f"{count} bot replies in {channel}/{thread_ts}")

    def converse_requests(self) -> list[dict]:
        """Bodies of the model calls, streamed or not (summaries included, each
        conversation's title left out)."""
        return [
            r.body
            for r in self.bedrock.requests
            if r.operation in ("converse", "converse-stream") and not is_title_request(r.body)
        ]

    async def close(self) -> None:
        for closer in reversed(self._closers):
            await closer()


def is_title_request(body: dict) -> bool:
    """The call that titles a conversation after its first answer."""
    return any(b.get("text") == texts.TITLE_PROMPT for b in body.get("system") or [])


async def start_stack(
    client: Client,
    *,
    bot: bool = True,
    worker: bool = True,
    bedrock_options: dict[str, Any] | None = None,
    max_tokens: int = 2048,
    bedrock_settings: dict[str, Any] | None = None,
    channels_file: str | None = None,
    tools_file: str | None = None,
    **overrides: Any,
) -> Stack:
    """Start the local Slack and Bedrock servers, and (by default) a worker and the bot on a
    fresh task queue. `overrides` are ConversationSettings fields, `bedrock_settings`
    BedrockSettings fields; `channels_file` is THREADCHAT_CHANNELS_FILE, `tools_file`
    THREADCHAT_TOOLS_FILE (devtools/sample_mcp.py's SampleMcpProcess serves a real MCP
    server to name in it)."""
    slack, bedrock = LocalSlack(), LocalBedrock(**{"stream_delay_s": 0, **(bedrock_options or {})})
    api_url = await slack.start()
    endpoint = await bedrock.start()
    queue = f"test-{uuid.uuid4().hex[:12]}"
    settings = Settings(
        slack=SlackSettings(
            bot_token=slack.bot_token, signing_secret=SIGNING_SECRET, api_url=api_url, port=0
        ),
        temporal=TemporalSettings(
            target_host="unused",
            task_queue=queue,
            bedrock_task_queue=f"{queue}-bedrock",
            tools_task_queue=f"{queue}-tools",
        ),
        bedrock=BedrockSettings(
            endpoint_url=endpoint,
            read_timeout=10,
            max_tokens=max_tokens,
            # The local Bedrock serves the knowledge tool's Retrieve too.
            **{"knowledge_endpoint_url": endpoint, **(bedrock_settings or {})},
        ),
        conversation=conversation_settings(
            **{k: v for k, v in overrides.items() if k not in WORKER_WIDE}
        ),
        channels_file=channels_file,
        channels=load_channels(channels_file) if channels_file else {},
        tools_file=tools_file,
        **({"tools": load_tools_file(tools_file)} if tools_file else {}),
        **{k: v for k, v in overrides.items() if k in WORKER_WIDE},
    )
    stack = Stack(client=client, slack=slack, bedrock=bedrock, settings=settings)
    stack._closers += [slack.stop, bedrock.stop]
    if worker:
        await stack.start_worker()
    if bot:
        await stack.start_bot()
    return stack


async def record_histories(stack: Stack, directory: Path, name: str) -> None:
    """Save every run's history on the stack's task queue, for the replay test."""
    directory.mkdir(parents=True, exist_ok=True)
    query = f"TaskQueue = '{stack.settings.temporal.task_queue}'"
    runs = [run async for run in stack.client.list_workflows(query)]
    for index, run in enumerate(sorted(runs, key=lambda r: r.start_time)):
        handle = stack.client.get_workflow_handle(run.id, run_id=run.run_id)
        history = await handle.fetch_history()
        (directory / f"{name}-{index}.json").write_text(history.to_json())
