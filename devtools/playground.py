"""The Slack playground: a local web page that looks and behaves like a Slack channel with threads.

`Playground` serves the page (``devtools/playground/``) and acts as the Slack client and the
Slack platform in one: what a user types is stored in `LocalSlack` and then delivered to the
bot's Request URL as signed Events API requests, slash commands and message shortcuts, exactly
as Slack sends them. What the bot posts through the Web API reaches the page live, streaming
included, because the page follows `LocalSlack.subscribe` over Server-Sent Events. The bot runs
unmodified; only its Slack API base URL points at `LocalSlack`.

HTTP endpoints (JSON; POST bodies must be ``application/json``):

``GET /``
    The page; its script and style sheet are under ``/static/``.
``GET /api/state``
    Everything the page shows: ``{"team_domain", "bot": {"id", "name"}, "users": [{"id",
    "name", "is_bot"}], "channels": [{"id", "name", "type": "channel"}], "dms": {user id:
    channel id}, "commands": ["/endchat"], "shortcuts": [{"callback_id", "name"}],
    "messages": {channel id: [message, ...]}, "ephemerals": [...], "statuses": {"C…/ts":
    status}, "assistant_threads": [{"user", "channel", "thread_ts", "context_channel"}],
    "titles": {"D…/ts": title}, "sessions": {"C…/ts": agent session status},
    "suggested_prompts": {"D…/ts": {"title", "prompts":
    [{"title", "message"}]}}, "home_views": {user id: view}, "bot_events_url",
    "temporal_ui_url", "offline_model"}``. Messages are LocalSlack's, top level and replies
    together in ts order, each with ``"streaming"``; a streamed answer with task cards also
    has ``"tasks"``: `LocalSlack.tasks`, one ``task_update`` per task as it stands now (the
    messages of change notifications carry them too).
``GET /api/events``
    Server-Sent Events, one JSON object per ``data:`` line. First ``{"type": "snapshot",
    "state": <as /api/state>}``, then every LocalSlack change notification as
    `LocalSlack.subscribe` describes it ("message", "message_changed", "message_deleted",
    "ephemeral", "status", "stream_append", "stream_stop", "suggested_prompts", "title",
    "session", "session_title", "home"), and the playground's own ``{"type":
    "assistant_thread", "user", "channel", "thread_ts", "context_channel"}`` when a panel
    thread opens or its context changes.
``POST /api/upload`` ``{"user", "name", "mimetype", "data"}``
    A user uploads a file (`data` is its bytes in base64, at most `MAX_FILE_BYTES`), not yet
    shared anywhere: it goes to `LocalSlack.add_file`. Answers ``{"ok", "file"}`` with Slack's
    file object; the file is shared by naming its id in a message's ``files``.
``GET /api/files/{id}``
    The bytes of an image uploaded here, for the page's thumbnails; a message's files carry
    this as ``"preview_url"`` on the page only. (The bot downloads files from LocalSlack's
    url_private_download with its token, as from Slack.)
``POST /api/messages`` ``{"channel", "user", "text", "thread_ts"?, "files"?: [file id]}``
    A user types a message. ``@name`` becomes ``<@USER_ID>`` for the bot and known users. The
    message is stored, then delivered as a ``message`` event (channel_type "channel" or "im"),
    and, when it mentions the bot outside a DM, also as an ``app_mention`` with the same ts
    (Slack's double delivery). With ``files`` each file is shared in the channel, the stored
    message lists them under ``"files"``, the ``message`` event is a ``file_share`` and both
    events carry them; the text may then be empty. Answers ``{"ok", "ts", "message",
    "deliveries": [{"event", "status"}]}``; 502 with ``{"ok": false, "error":
    "bot_unreachable"}`` when the bot is down.
``POST /api/commands`` ``{"channel", "user", "command", "text"}``
    A slash command, form-encoded, with ``response_url`` = ``LocalSlack.response_url(channel,
    user)``. The bot's immediate answer is shown as Slack shows it, through that response_url,
    so it lands in ``LocalSlack.ephemerals``. Answers ``{"ok", "status", "response"}`` (the
    answer's JSON, or null when the bot acked with an empty body).
``POST /api/shortcuts`` ``{"channel", "user", "message_ts", "callback_id"?}``
    A message shortcut (default ``end_chat``) on a stored message: a ``message_action`` payload
    with the message's ts and thread_ts. Answers ``{"ok", "status"}``.
``POST /api/action`` ``{"channel", "user", "message_ts", "action_id", "value"?}``
    A click on a button of a stored message's ``actions`` block, or (with ``value``, naming
    the half) on its ``context_actions`` feedback buttons: a ``block_actions`` payload with
    the button's value, the whole message and a ``response_url`` whose answers land in
    ``LocalSlack.ephemerals``. Answers ``{"ok", "status"}``; 404 when the message or a button
    with that action_id is not there.
``POST /api/assistant/open`` ``{"user", "context_channel"?}``
    The user opens the assistant side panel (or starts a new chat in it) while viewing
    `context_channel` (a channel; none for a DM). As in Slack, the panel's conversation is a
    new thread in the user's DM with the app: its root is stored, then the bot gets
    ``assistant_thread_started``. Answers ``{"ok", "status", "channel", "thread_ts"}``.
``POST /api/assistant/context`` ``{"user", "channel", "thread_ts", "context_channel"?}``
    The user, with that panel thread open, moved the main view to another channel: the bot
    gets ``assistant_thread_context_changed``. Answers ``{"ok", "status"}``; 404 for a thread
    that is not one of the user's panel threads. What the user writes in the panel, a
    suggested prompt clicked included, goes through ``POST /api/messages`` with the DM and
    the thread's ts, as any DM thread reply.
``POST /api/session/stop`` ``{"user", "channel", "thread_ts"}``
    The user clicks Stop on the thread's agent session, which the page offers only while the
    session is ``processing``, as Slack does. As in Slack, the app's streams in the thread stop
    at once (`LocalSlack.stop_session`; appends to them fail from then on), then the bot gets
    ``agent_session_stopped`` listing them in ``streaming_message_ts``. The app itself moves
    the session on. Answers ``{"ok", "status", "streaming_message_ts"}``; 404 for an unknown
    thread, 409 ``session_not_processing`` when the session is not processing (a click that
    raced the answer's end: Slack no longer shows the button then).
``POST /api/home/open`` ``{"user"}``
    The user opens the app's Home tab: ``app_home_opened`` for their DM with the app. The bot
    publishes the view with ``views.publish``; it reaches the page as a "home" change.
    Answers ``{"ok", "status"}``.
``POST /api/home/action`` ``{"user", "action_id", "value"?}``
    A click on a button of the user's published Home view (the one with that action_id and,
    when given, that value: several buttons may share an action_id): a ``block_actions``
    payload whose container is the view. Answers ``{"ok", "status"}``; 404 when no view is
    published or no such button is in it.

Errors are ``{"ok": false, "error": ...}`` with a 4xx status (5xx when the bot is unreachable).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import ipaddress
import json
import logging
import re
import secrets
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from devtools.slack import Json, LocalSlack, ts_key
from devtools.slack_events import (
    EventSender,
    agent_session_stopped_event,
    app_home_opened_event,
    app_mention_event,
    app_message_event,
    assistant_thread_event,
    block_action,
    message_changed_event,
    message_event,
    message_shortcut,
    slash_command,
    view_action,
)
from threadchat.ids import conversation_id

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).with_name("playground")

# The app's slash commands and message shortcuts, as in manifest.yml.
COMMANDS = ("/endchat",)
# Another app in the workspace, posting alerts: what people ask the bot about in its threads.
MONITORING_BOT = "B0MONITORING"
MONITORING_ALERT = [
    {
        "color": "danger",
        "fallback": "[FIRING] checkout-api p99 latency",
        "title": "[FIRING] checkout-api p99 latency",
        "text": "p99 is 2.4s (threshold 800ms) for 10 minutes",
        "fields": [
            {"title": "Service", "value": "checkout-api", "short": True},
            {"title": "Runbook", "value": "https://runbooks.example/checkout", "short": True},
        ],
    }
]
MONITORING_BLOCKS = [
    {"type": "header", "text": {"type": "plain_text", "text": "Checkout degraded"}},
    {"type": "section", "text": {"type": "mrkdwn", "text": "*Region:* eu-west-1, 3 of 8 pods"}},
]
SHORTCUTS = {"end_chat": "End chat"}

# Slack gives up on a delivery after 3 s and retries; the playground just reports the failure,
# but waits a little longer so a slow first request (Bolt's lazy auth.test) is not misreported.
DELIVERY_TIMEOUT_S = 10
# A comment line this often keeps idle event streams open through proxies and lets the server
# notice clients that went away.
KEEPALIVE_S = 15

# Big enough that a file past every limit of the bot's (Bedrock takes images up to 3.75 MB
# and documents up to 4.5 MB) can still be shared, so its "too large" answer can be tried.
MAX_FILE_BYTES = 10 * 1024 * 1024
# Slack takes up to 10 files on one message.
MAX_FILES_PER_MESSAGE = 10
# An upload arrives as base64 in JSON: a third larger than the file, plus the other fields.
MAX_REQUEST_BYTES = MAX_FILE_BYTES * 4 // 3 + 64 * 1024
# Only these are served back to the page as thumbnails: none of them can run script in the
# page's origin, as an SVG or HTML "image" could.
THUMBNAIL_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})

_MENTION = re.compile(r"(?<![\w<@])@([A-Za-z0-9_-]+)")

# The saved workspace (see Playground's `workspace`), written this long after a change.
WORKSPACE_FILE = "workspace.json"
SAVE_DELAY_S = 0.5

# The text of a panel thread's root message, which the panel itself never shows. In Slack it
# is the user's, with the subtype "assistant_app_thread".
ASSISTANT_THREAD_ROOT = "New chat"


@dataclass(frozen=True)
class Channel:
    """A channel shown in the sidebar."""

    id: str
    name: str
    type: str = "channel"


@dataclass
class AssistantThread:
    """A conversation in a user's assistant panel: a thread in their DM with the app."""

    user: str
    channel: str
    thread_ts: str
    context_channel: str | None  # the channel in view when it last started or changed


class PlaygroundError(Exception):
    """A request the playground refuses: answered with `status` and ``{"ok": false}``."""

    def __init__(self, error: str, status: int = 400) -> None:
        super().__init__(error)
        self.error = error
        self.status = status


def _random_id(prefix: str) -> str:
    # Fresh ids per new workspace: one started without the saved workspace (a new data
    # directory, `threadchat dev --reset`) must not take over conversations Temporal may still
    # have running in an earlier one's channels.
    return prefix + secrets.token_hex(4).upper()


class Playground:
    """A Slack-like page in the browser, wired to `LocalSlack` and the bot's Request URL."""

    def __init__(
        self,
        slack: LocalSlack,
        bot_events_url: str,
        signing_secret: str,
        *,
        temporal_ui_url: str | None = None,
        offline_model: bool = False,
        workspace: Path | None = None,
    ) -> None:
        """With `workspace` (a directory), the workspace (channel ids, messages, files, panel
        threads) is kept there as it changes, and taken up again by the next playground
        started on it: Temporal keeps its conversations across restarts, and they must go
        on in the same channels."""
        self.slack = slack
        self.bot_events_url = bot_events_url
        self.temporal_ui_url = temporal_ui_url
        self.offline_model = offline_model
        self.channels = [Channel(_random_id("C"), "general"), Channel(_random_id("C"), "random")]
        self._dms: dict[str, str] = {}
        self._sender = EventSender(bot_events_url, signing_secret)
        self._streams: set[asyncio.Queue[Json | None]] = set()
        self._runner: web.AppRunner | None = None
        self._allowed_hosts: set[str] = set()
        self._url: str | None = None
        # LocalSlack stores a user's message without its files, so the playground keeps them,
        # by (channel, ts), to show them on the page.
        self._message_files: dict[tuple[str, str], list[Json]] = {}
        self._sharing: tuple[str, str, list[Json]] | None = None
        self._thumbnails: dict[str, tuple[str, bytes]] = {}
        self._assistant_threads: dict[tuple[str, str], AssistantThread] = {}
        self.workspace = workspace
        self._save_due: asyncio.TimerHandle | None = None

    # ----------------------------------------------------------------------------------------
    # Lifecycle

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve the page (port 0 picks a free port); returns its URL."""
        # The page can make the bot act as any user, with no login: keep it off the network.
        if not ipaddress.ip_address(host).is_loopback:
            raise ValueError(f"the playground only listens on loopback, not {host!r}")
        if self._runner is not None:
            raise RuntimeError("the playground is already running")
        app = web.Application(middlewares=[self._guard], client_max_size=MAX_REQUEST_BYTES)
        app.router.add_get("/", self._index)
        app.router.add_static("/static/", STATIC_DIR)
        app.router.add_get("/api/state", self._get_state)
        app.router.add_get("/api/events", self._get_events)
        app.router.add_post("/api/messages", self._post_message)
        app.router.add_post("/api/upload", self._post_upload)
        app.router.add_post("/api/edit", self._post_edit)
        app.router.add_post("/api/alert", self._post_alert)
        app.router.add_get("/api/files/{file}", self._get_file)
        app.router.add_post("/api/commands", self._post_command)
        app.router.add_post("/api/shortcuts", self._post_shortcut)
        app.router.add_post("/api/action", self._post_action)
        app.router.add_post("/api/assistant/open", self._post_assistant_open)
        app.router.add_post("/api/assistant/context", self._post_assistant_context)
        app.router.add_post("/api/session/stop", self._post_session_stop)
        app.router.add_post("/api/home/open", self._post_home_open)
        app.router.add_post("/api/home/action", self._post_home_action)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port).start()
        except BaseException:
            await runner.cleanup()
            raise
        bound = runner.addresses[0][1]
        url_host = f"[{host}]" if ":" in host else host
        self._allowed_hosts = {f"{url_host}:{bound}", f"localhost:{bound}"}
        self._runner = runner
        if self.workspace is not None:
            self._load_workspace(self.workspace)
        self._join_everyone()
        self.slack.subscribe(self._on_change)
        self._url = f"http://{url_host}:{bound}"
        return self._url

    async def stop(self) -> None:
        """Close the event streams and stop serving."""
        self.slack.unsubscribe(self._on_change)
        if self._save_due is not None:
            self._save_due.cancel()
        if self.workspace is not None:
            self.save_workspace(self.workspace)
        for queue in list(self._streams):
            queue.put_nowait(None)
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()
        await self._sender.close()

    @property
    def url(self) -> str:
        """The page's URL, once started."""
        if self._url is None:
            raise RuntimeError("the playground has not been started")
        return self._url

    # ----------------------------------------------------------------------------------------
    # The saved workspace

    def save_workspace(self, directory: Path) -> None:
        """Write the workspace to `directory`: ``workspace.json``, and each uploaded file's
        bytes once under ``files/``. Replaced whole, so a crash leaves the last good copy."""
        files = directory / "files"
        files.mkdir(parents=True, exist_ok=True)
        for file_id, content in self.slack.file_contents().items():
            if not (files / file_id).exists():
                (files / file_id).write_bytes(content)
        saved = {
            "slack": self.slack.workspace(),
            "channels": [asdict(c) for c in self.channels],
            "dms": self._dms,
            "message_files": [[c, ts, f] for (c, ts), f in self._message_files.items()],
            "thumbnails": {file_id: m for file_id, (m, _) in self._thumbnails.items()},
            "assistant_threads": [asdict(t) for t in self._assistant_threads.values()],
        }
        partial = directory / "workspace.json.partial"
        partial.write_text(json.dumps(saved))
        partial.replace(directory / WORKSPACE_FILE)

    def _load_workspace(self, directory: Path) -> None:
        path = directory / WORKSPACE_FILE
        if not path.exists():
            return
        saved = json.loads(path.read_text())
        slack = saved.get("slack") or {}
        contents = {
            file_id: (directory / "files" / file_id).read_bytes()
            for file_id in slack.get("files") or {}
            if (directory / "files" / file_id).exists()
        }
        self.slack.restore_workspace(slack, contents)
        self.channels = [Channel(**c) for c in saved.get("channels") or []] or self.channels
        self._dms.update(saved.get("dms") or {})
        self._message_files.update({(c, ts): f for c, ts, f in saved.get("message_files") or []})
        self._thumbnails.update(
            {
                file_id: (mimetype, contents[file_id])
                for file_id, mimetype in (saved.get("thumbnails") or {}).items()
                if file_id in contents
            }
        )
        for thread in saved.get("assistant_threads") or []:
            known = AssistantThread(**thread)
            self._assistant_threads[(known.channel, known.thread_ts)] = known

    def _save_soon(self) -> None:
        """Save shortly after a change: a streamed reply is many changes a second."""
        if self.workspace is None or self._save_due is not None:
            return

        def save() -> None:
            self._save_due = None
            try:
                self.save_workspace(self.workspace)
            except OSError as err:
                log.warning("could not save the playground's workspace: %s", err)

        self._save_due = asyncio.get_running_loop().call_later(SAVE_DELAY_S, save)

    # ----------------------------------------------------------------------------------------
    # The simulated workspace

    def dm_channel(self, user: str) -> str:
        """The id of `user`'s DM with the bot (each user has their own, as in Slack)."""
        if user not in self._dms:
            self._dms[user] = _random_id("D")
            self.slack.join(self._dms[user], user, self.slack.bot_user_id)
        return self._dms[user]

    def _join_everyone(self) -> None:
        # As in a small workspace: everyone is in every channel and the app was invited, so
        # the bot may read a channel (conversations.history) and users.conversations answers
        # for each user.
        for channel in self.channels:
            self.slack.name_channel(channel.id, channel.name)
            self.slack.join(channel.id, self.slack.bot_user_id, *self.slack.users)
        for user in self.slack.users:
            self.dm_channel(user)

    def channel_ids(self) -> list[str]:
        """Every channel the page shows: the channels, then each user's DM with the bot."""
        return [c.id for c in self.channels] + [self.dm_channel(u) for u in self.slack.users]

    def _channel_name(self, channel: str) -> str:
        for known in self.channels:
            if known.id == channel:
                return known.name
        # Slack sends this channel_name for a command or shortcut used in a DM.
        return "directmessage" if channel.startswith("D") else channel.lower()

    def _channel_messages(self, channel: str) -> list[Json]:
        found: dict[str, Json] = {}
        for message in self.slack.messages(channel):
            found[message["ts"]] = message
            if message.get("reply_count"):
                for reply in self.slack.messages(channel, message["ts"]):
                    found[reply["ts"]] = reply
        messages = sorted(found.values(), key=lambda m: ts_key(m["ts"]))
        for message in messages:
            message["streaming"] = self.slack.is_streaming(channel, message["ts"])
            self._with_files(channel, message)
            self._with_tasks(channel, message)
        return messages

    def _with_tasks(self, channel: str, message: Json) -> Json:
        # Slack draws a streamed answer's task cards above its text; LocalSlack keeps them
        # with the stream, not in the message, so they travel to the page on the side.
        tasks = self.slack.tasks(channel, message.get("ts", ""))
        if tasks:
            message["tasks"] = tasks
        return message

    def _with_files(self, channel: str, message: Json) -> Json:
        files = self._message_files.get((channel, message.get("ts", "")))
        if files is not None:
            # The preview link goes on a copy: it is the page's own and must not reach the bot.
            message["files"] = [
                {**f, "preview_url": f"/api/files/{f['id']}"} if f["id"] in self._thumbnails else f
                for f in files
            ]
        return message

    def state(self) -> Json:
        """What the page shows, as ``GET /api/state`` answers it."""
        messages = {channel: self._channel_messages(channel) for channel in self.channel_ids()}
        statuses = {
            f"{channel}/{m['ts']}": status
            for channel, listed in messages.items()
            for m in listed
            if (status := self.slack.status(channel, m["ts"]))
        }
        users = [
            {"id": uid, "name": name, "is_bot": False} for uid, name in self.slack.users.items()
        ]
        users.append({"id": self.slack.bot_user_id, "name": self.slack.bot_name, "is_bot": True})
        return {
            "team_domain": self.slack.team_domain,
            "bot": {"id": self.slack.bot_user_id, "name": self.slack.bot_name},
            "users": users,
            "channels": [asdict(c) for c in self.channels],
            "dms": {user: self.dm_channel(user) for user in self.slack.users},
            "commands": list(COMMANDS),
            "shortcuts": [{"callback_id": k, "name": v} for k, v in SHORTCUTS.items()],
            "messages": messages,
            "ephemerals": list(self.slack.ephemerals),
            "statuses": statuses,
            "assistant_threads": [asdict(t) for t in self._assistant_threads.values()],
            "titles": {f"{c}/{ts}": title for (c, ts), title in self.slack.titles.items()},
            "sessions": {
                f"{c}/{ts}": history[-1] for (c, ts), history in self.slack.session_statuses.items()
            },
            "suggested_prompts": {
                f"{c}/{ts}": prompts for (c, ts), prompts in self.slack.suggested_prompts.items()
            },
            "home_views": dict(self.slack.home_views),
            "bot_events_url": self.bot_events_url,
            "temporal_ui_url": self.temporal_ui_url,
            # Each thread links to its conversation's workflow in the Temporal UI.
            "workflow_url": self.temporal_ui_url
            and f"{self.temporal_ui_url}/namespaces/default/workflows/"
            + conversation_id(self.slack.team_id, "{channel}", "{thread_ts}"),
            "offline_model": self.offline_model,
        }

    def with_mentions(self, text: str) -> str:
        """``@name`` as Slack sends it, ``<@USER_ID>``, for the bot and every known user."""
        ids = {name.lower(): uid for uid, name in self.slack.users.items()}
        ids[self.slack.bot_name.lower()] = self.slack.bot_user_id

        def replace(match: re.Match[str]) -> str:
            uid = ids.get(match.group(1).lower())
            return f"<@{uid}>" if uid else match.group(0)

        return _MENTION.sub(replace, text)

    # ----------------------------------------------------------------------------------------
    # What users do

    def upload_file(self, user: str, name: str, mimetype: str, content: bytes) -> Json:
        """Upload a file as `user`, shared nowhere yet; returns Slack's file object."""
        self._check_user(user)
        if not content:
            raise PlaygroundError("no_file_data")  # as Slack refuses an empty upload
        if len(content) > MAX_FILE_BYTES:
            raise PlaygroundError("file_too_large", 413)
        # The name is a path segment of the file's url_private, which the bot downloads.
        if "/" in name or "\\" in name or not name.strip():
            raise PlaygroundError("invalid_name")
        file = self.slack.add_file(user=user, name=name, mimetype=mimetype, content=content)
        if mimetype in THUMBNAIL_TYPES:
            self._thumbnails[file["id"]] = (mimetype, content)
        return file

    async def post_message(
        self,
        channel: str,
        user: str,
        text: str,
        thread_ts: str | None = None,
        files: list[str] | None = None,
    ) -> Json:
        """Store what `user` typed, with the files they attached (ids from `upload_file`), and
        deliver it to the bot as Slack would."""
        self._check_user(user)
        file_ids = list(dict.fromkeys(files or []))
        # Slack posts a file with no comment, but never an empty message.
        if not text.strip() and not file_ids:
            raise PlaygroundError("no_text")
        if len(file_ids) > MAX_FILES_PER_MESSAGE:
            raise PlaygroundError("too_many_files")
        for file_id in file_ids:
            # A user can share only what they uploaded, as nobody else sees it before then.
            known = self.slack.files.get(file_id)
            if known is None or known.get("user") != user:
                raise PlaygroundError("file_not_found", 404)
        if thread_ts and self.slack.message(channel, thread_ts) is None:
            raise PlaygroundError("thread_not_found", 404)
        text = self.with_mentions(text)
        shared = [self.slack.share_file(file_id, channel) for file_id in file_ids]
        # LocalSlack tells the page about the new message while add_message runs, before its
        # ts is known here; _on_change puts the files on that notification.
        self._sharing = (channel, user, shared) if shared else None
        try:
            message = self.slack.add_message(channel, user=user, text=text, thread_ts=thread_ts)
        finally:
            self._sharing = None
        if shared:
            self._message_files[(channel, message["ts"])] = shared
            self._with_files(channel, message)
        thread_ts = message.get("thread_ts")  # a reply to a reply lands in the same thread
        parent = self.slack.message(channel, thread_ts) if thread_ts else None
        is_dm = channel.startswith("D")
        # One token for both deliveries, as Slack gives it: Real-time Search as the author.
        action_token = self.slack.search.issue(user)
        events = [
            message_event(
                channel=channel,
                user=user,
                text=text,
                ts=message["ts"],
                thread_ts=thread_ts,
                channel_type="im" if is_dm else "channel",
                team=self.slack.team_id,
                parent_user_id=parent.get("user") if parent else None,
                files=shared or None,
                action_token=action_token,
            )
        ]
        # Slack sends app_mention only where the app is a member of a conversation, not for
        # messages in a DM with the app, which arrive as message.im alone.
        if f"<@{self.slack.bot_user_id}>" in text and not is_dm:
            events.append(
                app_mention_event(
                    channel=channel,
                    user=user,
                    text=text,
                    ts=message["ts"],
                    thread_ts=thread_ts,
                    team=self.slack.team_id,
                    files=shared or None,
                    action_token=action_token,
                )
            )
        # Both deliveries go out together, as Slack sends them: the bot must cope with either
        # arriving first.
        statuses = await asyncio.gather(*(self._deliver_event(event) for event in events))
        return {
            "ok": all(200 <= s < 300 for s in statuses),
            "ts": message["ts"],
            "message": message,
            "deliveries": [
                {"event": e["type"], "status": s} for e, s in zip(events, statuses, strict=True)
            ],
        }

    async def edit_message(self, channel: str, user: str, ts: str, text: str) -> Json:
        """`user` edits their message: stored, and delivered as Slack's `message_changed`."""
        self._check_user(user)
        message = self.slack.message(channel, ts)
        if message is None:
            raise PlaygroundError("message_not_found", 404)
        if message.get("user") != user or message.get("bot_id"):
            raise PlaygroundError("cant_update_message", 403)
        if not text.strip():
            raise PlaygroundError("no_text")
        text = self.with_mentions(text)
        previous = self.slack.edit_message(channel, ts, text=text, user=user)
        event = message_changed_event(
            channel=channel,
            user=user,
            ts=ts,
            text=text,
            previous_text=previous.get("text", ""),
            thread_ts=message.get("thread_ts"),
        )
        status = await self._deliver_event(event)
        return {
            "ok": 200 <= status < 300,
            "ts": ts,
            "deliveries": [{"event": "message_changed", "status": status}],
        }

    async def post_alert(self, channel: str, thread_ts: str | None = None) -> Json:
        """A monitoring app posts an alert (its body in attachments and blocks, as such apps
        post them), in the thread of `thread_ts` if given, and Slack tells the bot."""
        if channel not in self.channel_ids():
            raise PlaygroundError("channel_not_found", 404)
        if thread_ts and self.slack.message(channel, thread_ts) is None:
            raise PlaygroundError("thread_not_found", 404)
        message = self.slack.add_app_message(
            channel,
            bot_id=MONITORING_BOT,
            name="Monitoring",
            attachments=MONITORING_ALERT,
            blocks=MONITORING_BLOCKS,
            thread_ts=thread_ts,
        )
        status = await self._deliver_event(app_message_event(message, channel=channel))
        return {
            "ok": 200 <= status < 300,
            "ts": message["ts"],
            "deliveries": [{"event": "message", "status": status}],
        }

    async def run_command(self, channel: str, user: str, command: str, text: str = "") -> Json:
        """Run a slash command as `user` in `channel`; its answer shows as ephemeral."""
        self._check_user(user)
        if command not in COMMANDS:
            raise PlaygroundError("unknown_command")
        response_url = self.slack.response_url(channel, user)
        body = slash_command(
            command=command,
            text=text,
            channel_id=channel,
            user_id=user,
            team_id=self.slack.team_id,
            team_domain=self.slack.team_domain,
            response_url=response_url,
            user_name=self.slack.users[user],
            channel_name=self._channel_name(channel),
            api_app_id=self.slack.app_id,
        )
        status, answer = await self._deliver(self._sender.send_command(body))
        response = None
        if answer.strip():
            try:
                response = json.loads(answer)
            except ValueError:
                response = {"text": answer}  # Slack shows a plain-text answer as is
            if 200 <= status < 300:
                # Slack shows the immediate answer just like one posted to the response_url
                # later, so it goes the same way and lands in LocalSlack's ephemerals.
                await self._post_response(response_url, response)
        return {"ok": 200 <= status < 300, "status": status, "response": response}

    async def run_shortcut(
        self, channel: str, user: str, message_ts: str, callback_id: str = "end_chat"
    ) -> Json:
        """Use a message shortcut, as `user`, on a stored message."""
        self._check_user(user)
        if callback_id not in SHORTCUTS:
            raise PlaygroundError("unknown_shortcut")
        message = self.slack.message(channel, message_ts)
        if message is None:
            raise PlaygroundError("message_not_found", 404)
        body = message_shortcut(
            callback_id=callback_id,
            channel_id=channel,
            user_id=user,
            message_ts=message_ts,
            thread_ts=message.get("thread_ts"),
            team_id=self.slack.team_id,
            response_url=self.slack.response_url(channel, user),
            team_domain=self.slack.team_domain,
            message_text=message.get("text", ""),
            message_user=message.get("user"),
            user_name=self.slack.users[user],
            channel_name=self._channel_name(channel),
        )
        status, _ = await self._deliver(self._sender.send_shortcut(body))
        return {"ok": 200 <= status < 300, "status": status}

    async def click_action(
        self, channel: str, user: str, message_ts: str, action_id: str, value: str | None = None
    ) -> Json:
        """Click, as `user`, the button `action_id` under a stored message (for Slack's
        feedback buttons, the half whose value is `value`)."""
        self._check_user(user)
        message = self.slack.message(channel, message_ts)
        if message is None:
            raise PlaygroundError("message_not_found", 404)
        found = _find_button(message, action_id, value)
        if found is None:
            raise PlaygroundError("action_not_found", 404)
        block_id, button = found
        body = block_action(
            action_id=action_id,
            value=str(button.get("value", "")),
            channel_id=channel,
            user_id=user,
            message=message,
            team_id=self.slack.team_id,
            response_url=self.slack.response_url(channel, user),
            team_domain=self.slack.team_domain,
            block_id=block_id,
            user_name=self.slack.users[user],
            channel_name=self._channel_name(channel),
            element_type=str(button.get("type") or "button"),
        )
        status, _ = await self._deliver(self._sender.send_action(body))
        return {"ok": 200 <= status < 300, "status": status}

    async def open_assistant(self, user: str, context_channel: str | None = None) -> Json:
        """Open a new conversation in `user`'s assistant panel while they view
        `context_channel`: a new thread in their DM with the app, announced to the bot."""
        self._check_user(user)
        context_channel = self._context_channel(context_channel)
        channel = self.dm_channel(user)
        root = self.slack.add_message(channel, user=user, text=ASSISTANT_THREAD_ROOT)
        thread = AssistantThread(user, channel, root["ts"], context_channel)
        self._assistant_threads[(channel, thread.thread_ts)] = thread
        self._broadcast({"type": "assistant_thread", **asdict(thread)})
        status = await self._deliver_event(
            assistant_thread_event(
                "started",
                user=user,
                channel=channel,
                thread_ts=thread.thread_ts,
                context_channel=context_channel,
                team=self.slack.team_id,
            )
        )
        return {
            "ok": 200 <= status < 300,
            "status": status,
            "channel": channel,
            "thread_ts": thread.thread_ts,
        }

    async def change_assistant_context(
        self, user: str, channel: str, thread_ts: str, context_channel: str | None
    ) -> Json:
        """Tell the bot that `user`, with a panel thread open, now views `context_channel`."""
        self._check_user(user)
        thread = self._assistant_threads.get((channel, thread_ts))
        if thread is None or thread.user != user:
            raise PlaygroundError("assistant_thread_not_found", 404)
        thread.context_channel = self._context_channel(context_channel)
        self._broadcast({"type": "assistant_thread", **asdict(thread)})
        status = await self._deliver_event(
            assistant_thread_event(
                "context_changed",
                user=user,
                channel=channel,
                thread_ts=thread_ts,
                context_channel=thread.context_channel,
                team=self.slack.team_id,
            )
        )
        return {"ok": 200 <= status < 300, "status": status}

    def _context_channel(self, channel: str | None) -> str | None:
        """The panel's context for the main view `channel`: a channel, or none for a DM."""
        if not channel or channel in self._dms.values():
            return None
        if channel not in {c.id for c in self.channels}:
            raise PlaygroundError("channel_not_found", 404)
        return channel

    async def stop_session(self, user: str, channel: str, thread_ts: str) -> Json:
        """`user` clicks Stop on the thread's agent session: the local Slack stops the app's
        streams in the thread, then the bot is told which, as Slack tells it."""
        self._check_user(user)
        if self.slack.message(channel, thread_ts) is None:
            raise PlaygroundError("thread_not_found", 404)
        if self.slack.session(channel, thread_ts) != "processing":
            raise PlaygroundError("session_not_processing", 409)
        stopped = self.slack.stop_session(channel, thread_ts)
        status = await self._deliver_event(
            agent_session_stopped_event(
                user=user, channel=channel, thread_ts=thread_ts, streaming_message_ts=stopped
            )
        )
        return {"ok": 200 <= status < 300, "status": status, "streaming_message_ts": stopped}

    async def open_home(self, user: str) -> Json:
        """`user` opens the app's Home tab; the bot answers by publishing the view."""
        self._check_user(user)
        status = await self._deliver_event(
            app_home_opened_event(user=user, channel=self.dm_channel(user))
        )
        return {"ok": 200 <= status < 300, "status": status}

    async def click_home_action(self, user: str, action_id: str, value: str | None = None) -> Json:
        """Click, as `user`, a button of their published Home view."""
        self._check_user(user)
        view = self.slack.home_views.get(user)
        if view is None:
            raise PlaygroundError("view_not_found", 404)
        found = _find_button(view, action_id, value)
        if found is None:
            raise PlaygroundError("action_not_found", 404)
        block_id, button = found
        body = view_action(
            action_id=action_id,
            value=str(button.get("value", "")),
            user_id=user,
            view=view,
            team_id=self.slack.team_id,
            team_domain=self.slack.team_domain,
            block_id=block_id,
            user_name=self.slack.users[user],
        )
        status, _ = await self._deliver(self._sender.send_action(body))
        return {"ok": 200 <= status < 300, "status": status}

    def _check_user(self, user: str) -> None:
        if user not in self.slack.users:
            raise PlaygroundError("user_not_found")

    async def _deliver_event(self, event: Json) -> int:
        status, _ = await self._deliver(self._sender.send_event(event, team_id=self.slack.team_id))
        return status

    async def _deliver(self, request: Any) -> tuple[int, str]:
        try:
            async with asyncio.timeout(DELIVERY_TIMEOUT_S):
                return await request
        except (aiohttp.ClientError, TimeoutError) as err:
            log.warning("could not deliver to the bot at %s: %r", self.bot_events_url, err)
            raise PlaygroundError("bot_unreachable", 502) from err

    async def _post_response(self, response_url: str, response: Json) -> None:
        async with aiohttp.ClientSession() as session, session.post(response_url, json=response):
            pass

    # ----------------------------------------------------------------------------------------
    # HTTP

    @web.middleware
    async def _guard(self, request: web.Request, handler: Any) -> web.StreamResponse:
        # A foreign Host is a DNS-rebinding attempt; a POST that is not JSON could come from
        # any web page's form, while a cross-origin JSON POST needs a CORS preflight we never
        # grant. Either way another site could not act as a user here.
        if request.host not in self._allowed_hosts:
            return web.json_response({"ok": False, "error": "forbidden_host"}, status=403)
        if request.method == "POST" and request.content_type != "application/json":
            return web.json_response({"ok": False, "error": "json_required"}, status=415)
        try:
            return await handler(request)
        except PlaygroundError as err:
            return web.json_response({"ok": False, "error": err.error}, status=err.status)

    async def _index(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-store"})

    async def _get_state(self, request: web.Request) -> web.Response:
        return web.json_response(self.state())

    async def _get_events(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store"}
        )
        await response.prepare(request)
        queue: asyncio.Queue[Json | None] = asyncio.Queue()
        # Registered before the snapshot is taken, with no await between: no change can fall
        # between the two.
        self._streams.add(queue)
        snapshot = {"type": "snapshot", "state": self.state()}
        try:
            await response.write(_sse(snapshot))
            while True:
                try:
                    event = await asyncio.wait_for(queue.get(), KEEPALIVE_S)
                except TimeoutError:
                    await response.write(b": keep-alive\n\n")
                    continue
                if event is None:
                    break
                await response.write(_sse(event))
        except ConnectionResetError:
            pass  # the page went away
        finally:
            self._streams.discard(queue)
        with contextlib.suppress(ConnectionResetError):
            await response.write_eof()
        return response

    def _on_change(self, event: Json) -> None:
        channel, message = event.get("channel"), event.get("message")
        if isinstance(channel, str) and isinstance(message, dict):
            sharing = self._sharing
            if (
                event["type"] == "message"
                and sharing is not None
                and sharing[:2] == (channel, message.get("user"))
            ):
                self._message_files[(channel, message["ts"])] = sharing[2]
            self._with_files(channel, message)
            self._with_tasks(channel, message)
        self._broadcast(event)
        self._save_soon()

    def _broadcast(self, event: Json) -> None:
        for queue in self._streams:
            queue.put_nowait(event)

    async def _post_message(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        files = body.get("files") or []
        if not isinstance(files, list) or not all(isinstance(f, str) and f for f in files):
            raise PlaygroundError("invalid_files")
        # A file shared with no comment has no text; anything else must have some.
        text = str(body.get("text") or "") if files else _field(body, "text")
        result = await self.post_message(
            _field(body, "channel"),
            _field(body, "user"),
            text,
            thread_ts=body.get("thread_ts") or None,
            files=files,
        )
        return web.json_response(result)

    async def _post_edit(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        result = await self.edit_message(
            _field(body, "channel"), _field(body, "user"), _field(body, "ts"), _field(body, "text")
        )
        return web.json_response(result)

    async def _post_alert(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        result = await self.post_alert(_field(body, "channel"), body.get("thread_ts") or None)
        return web.json_response(result)

    async def _post_upload(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        user, name = _field(body, "user"), _field(body, "name")
        mimetype, data = _field(body, "mimetype"), _field(body, "data")
        try:
            content = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError) as err:
            raise PlaygroundError("invalid_data") from err
        return web.json_response(
            {"ok": True, "file": self.upload_file(user, name, mimetype, content)}
        )

    async def _get_file(self, request: web.Request) -> web.Response:
        found = self._thumbnails.get(request.match_info["file"])
        if found is None:
            raise PlaygroundError("file_not_found", 404)
        mimetype, content = found
        return web.Response(
            body=content,
            content_type=mimetype,
            headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "private, max-age=3600"},
        )

    async def _post_command(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        result = await self.run_command(
            _field(body, "channel"),
            _field(body, "user"),
            _field(body, "command"),
            str(body.get("text") or ""),
        )
        return web.json_response(result)

    async def _post_shortcut(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        result = await self.run_shortcut(
            _field(body, "channel"),
            _field(body, "user"),
            _field(body, "message_ts"),
            str(body.get("callback_id") or "end_chat"),
        )
        return web.json_response(result)

    async def _post_action(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        result = await self.click_action(
            _field(body, "channel"),
            _field(body, "user"),
            _field(body, "message_ts"),
            _field(body, "action_id"),
            _optional_field(body, "value"),
        )
        return web.json_response(result)

    async def _post_assistant_open(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        result = await self.open_assistant(
            _field(body, "user"), _optional_field(body, "context_channel")
        )
        return web.json_response(result)

    async def _post_assistant_context(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        result = await self.change_assistant_context(
            _field(body, "user"),
            _field(body, "channel"),
            _field(body, "thread_ts"),
            _optional_field(body, "context_channel"),
        )
        return web.json_response(result)

    async def _post_session_stop(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        result = await self.stop_session(
            _field(body, "user"), _field(body, "channel"), _field(body, "thread_ts")
        )
        return web.json_response(result)

    async def _post_home_open(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        return web.json_response(await self.open_home(_field(body, "user")))

    async def _post_home_action(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        result = await self.click_home_action(
            _field(body, "user"), _field(body, "action_id"), _optional_field(body, "value")
        )
        return web.json_response(result)


def _find_button(
    message: Json, action_id: str, value: str | None = None
) -> tuple[str, Json] | None:
    """The block_id and element of the button `action_id` (with `value`, when given) in a
    message's or view's blocks: in an actions block, or a section's accessory; or one half
    of a context_actions block's feedback buttons (its value is required)."""
    for index, block in enumerate(message.get("blocks") or []):
        if not isinstance(block, dict):
            continue
        if block.get("type") == "context_actions" and value is not None:
            for element in block.get("elements") or []:
                if not isinstance(element, dict) or element.get("action_id") != action_id:
                    continue
                halves = [element.get("positive_button"), element.get("negative_button")]
                if any(isinstance(h, dict) and h.get("value") == value for h in halves):
                    block_id = str(block.get("block_id") or f"block{index}")
                    return block_id, {"type": "feedback_buttons", "value": value}
            continue
        if block.get("type") == "actions":
            elements = block.get("elements") or []
        elif block.get("type") == "section":
            elements = [block.get("accessory")]
        else:
            continue
        for element in elements:
            if (
                isinstance(element, dict)
                and element.get("type") == "button"
                and element.get("action_id") == action_id
                and (value is None or str(element.get("value", "")) == value)
            ):
                # Slack makes up a block_id, stable for the message, for a block sent without.
                return str(block.get("block_id") or f"block{index}"), element
    return None


def _sse(event: Json) -> bytes:
    return f"data: {json.dumps(event)}\n\n".encode()


async def _json_body(request: web.Request) -> Json:
    try:
        body = await request.json()
    except web.HTTPRequestEntityTooLarge as err:
        raise PlaygroundError("request_too_large", 413) from err
    except ValueError as err:
        raise PlaygroundError("invalid_json") from err
    if not isinstance(body, dict):
        raise PlaygroundError("invalid_json")
    return body


def _field(body: Json, name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value:
        raise PlaygroundError(f"missing_{name}")
    return value


def _optional_field(body: Json, name: str) -> str | None:
    value = body.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise PlaygroundError(f"invalid_{name}")
    return value
