"""A local stand-in for the Slack Web API.

`LocalSlack` is an aiohttp server that speaks the subset of the Slack Web API threadchat calls,
so the real ``slack_sdk`` ``AsyncWebClient`` (and Bolt on top of it) can run against it with
nothing but ``base_url`` changed. Tests, benchmarks and the offline "Slack playground" use it
to see what the bot posted, to inject failures, and to watch conversations change live.

It keeps messages in memory, per channel, in ts order, and answers the way Slack does: HTTP
200 with ``{"ok": false, "error": ...}`` for API errors, 429 plus ``Retry-After`` when rate
limited. Shapes follow docs.slack.dev; the places where it simplifies are noted in comments.

It also plays Slack's side of Socket Mode: ``apps.connections.open`` (called with the app-level
token) hands out a ``ws://`` URL on the same server, the app connects there and is greeted with
``hello``, and `LocalSlack.send_socket_event` pushes an envelope to it and waits for its ack.

Run it standalone with ``python -m devtools.slack --port 8766``; it prints its base URL.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import contextlib
import copy
import json
import logging
import re
import signal
import time
import urllib.parse
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import WSCloseCode, WSMsgType, web

from devtools.slack_search import LocalSearch

log = logging.getLogger(__name__)

Json = dict[str, Any]
Subscriber = Callable[[Json], None]

# Limits enforced on message content. Slack documents truncation past 40,000 characters of
# `text`; `msg_too_long` is the documented error and what a local double should surface so
# code that produces over-long text fails in tests rather than being silently cut.
TEXT_LIMIT = 40_000
# `markdown_text` is documented as "Limit this field to 12,000 characters". Slack documents no
# dedicated error for exceeding it; `msg_too_long` ("Message text is too long") is the closest.
MARKDOWN_LIMIT = 12_000
MAX_BLOCKS = 50
SESSION_STATUSES = ("processing", "active", "suspended", "closed")
SECTION_TEXT_LIMIT = 3_000
# Cumulative text of `markdown` blocks in one message (Slack answers `msg_blocks_too_long`).
MARKDOWN_BLOCKS_LIMIT = 12_000

REPLIES_DEFAULT_LIMIT = 100
REPLIES_MAX_LIMIT = 1_000

# Auto-assigned timestamps advance by this many microseconds, giving "…000100", "…000200", ….
TS_STEP_MICROS = 100

DEFAULT_USERS: dict[str, str] = {"U0ALICE": "alice", "U0BOB": "bob", "U0CAROL": "carol"}

# Methods called with the app-level token (xapp-…) rather than the bot token.
APP_TOKEN_METHODS = frozenset({"apps.connections.open"})

# What makes Slack notify people, in a message's text, Markdown or blocks (docs.slack.dev,
# "Formatting message text"): `<!channel>`, `<!here>`, `<!everyone>`, `<!subteam^ID>`,
# `<@U…>`, with or without a label; `<!date^…>` only formats a date. And, counted here to be
# safe, the bare words Slack's mrkdwn parsing can link (`@channel` and friends).
_PING = re.compile(r"<((?:!|@)[^<>|\n]+)(?:\|[^<>\n]*)?>")
_BARE_PING = re.compile(r"(?<![\w.+\-@/])@(channel|here|everyone|group)\b", re.IGNORECASE)


def _texts_of(message: Json) -> list[str]:
    texts = [str(message.get(key) or "") for key in ("text", "markdown_text")]
    for block in message.get("blocks") or []:
        text = block.get("text") if isinstance(block, dict) else None
        texts.append(str(text.get("text", "") if isinstance(text, dict) else text or ""))
    return texts


def mentions_in(message: Json) -> list[str]:
    """Whom a message's content would notify, as Slack writes them (`!channel`, `@U0BOB`,
    `@here` for a bare word), in order, once each."""
    found: list[str] = []
    for text in _texts_of(message):
        found += [m for m in _PING.findall(text) if not m.startswith("!date^")]
        found += ["@" + word.lower() for word in _BARE_PING.findall(text)]
    return list(dict.fromkeys(found))


@dataclass
class RecordedCall:
    """One Web API call as the server saw it.

    `params` merges query string, form and JSON body, without the token. `status` is the HTTP
    status that was sent, or None when the response was deliberately lost. `error` is the Slack
    error code when the answer was ``{"ok": false}``.
    """

    method: str
    params: Json
    at: float
    status: int | None = None
    error: str | None = None


class SlackError(Exception):
    """Raised by a method implementation to answer ``{"ok": false, "error": error}``."""

    def __init__(self, error: str, *, detail: str | None = None) -> None:
        super().__init__(error)
        self.error = error
        self.detail = detail

    def body(self) -> Json:
        body: Json = {"ok": False, "error": self.error}
        if self.detail:
            body["response_metadata"] = {"messages": [f"[ERROR] {self.detail}"]}
        return body


@dataclass
class _Injection:
    kind: Literal["fail", "lost", "slow"]
    remaining: int
    error: str = "ratelimited"
    status: int = 200
    retry_after: int | None = None
    delay_s: float = 0.0


@dataclass
class _Stream:
    """Server-side state of a message created by chat.startStream."""

    recipient_user_id: str | None
    recipient_team_id: str | None
    state: Literal["in_progress", "completed"] = "in_progress"
    chunks: list[Json] = field(default_factory=list)


TASK_STATUSES = ("pending", "in_progress", "complete", "error")
# A task card's details and output, as Slack documents them.
TASK_TEXT_LIMIT = 256


def _check_task(chunk: Json) -> None:
    """A `task_update` stream chunk as Slack takes it; anything else is refused whole."""

    def refuse(detail: str) -> SlackError:
        return SlackError("invalid_chunks", detail=f"task_update: {detail}")

    for key in ("id", "title"):
        if not isinstance(chunk.get(key), str) or not chunk[key]:
            raise refuse(f"{key} must be a non-empty string")
    if chunk.get("status") not in TASK_STATUSES:
        raise refuse("status must be one of " + ", ".join(TASK_STATUSES))
    for key in ("details", "output"):
        value = chunk.get(key)
        if value is not None and (not isinstance(value, str) or len(value) > TASK_TEXT_LIMIT):
            raise refuse(f"{key} must be a string of at most {TASK_TEXT_LIMIT} characters")
    sources = chunk.get("sources")
    if sources is None:
        return
    if not isinstance(sources, list):
        raise refuse("sources must be a list")
    for source in sources:
        if (
            not isinstance(source, dict)
            or source.get("type") != "url"
            or not isinstance(source.get("url"), str)
            or not source["url"]
            or not isinstance(source.get("text"), str)
        ):
            raise refuse('each source must be {"type": "url", "url", "text"}')


def ts_key(ts: str) -> tuple[int, int]:
    """Sort key for a Slack ts ("seconds.micros"); malformed values sort first."""
    seconds, _, fraction = ts.partition(".")
    try:
        return int(seconds), int(fraction.ljust(6, "0")[:6] or 0)
    except ValueError:
        return (-1, -1)


def _ts_micros(ts: str) -> int:
    seconds, micros = ts_key(ts)
    return seconds * 1_000_000 + micros


def _format_ts(micros: int) -> str:
    return f"{micros // 1_000_000}.{micros % 1_000_000:06d}"


def _truthy(value: Any) -> bool:
    """Slack booleans arrive as JSON booleans or as form strings ("true", "1")."""
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes")
    return bool(value)


def _json_param(params: Json, name: str, error: str) -> Any:
    """A structured argument, which form-encoded callers send as a JSON string."""
    value = params.get(name)
    if isinstance(value, str):
        if not value.strip():
            return None
        try:
            return json.loads(value)
        except ValueError as exc:
            raise SlackError(error, detail=f"{name} is not valid JSON") from exc
    return value


def _plain_text(value: Any, limit: int) -> bool:
    return (
        isinstance(value, dict)
        and value.get("type") == "plain_text"
        and isinstance(value.get("text"), str)
        and 0 < len(value["text"]) <= limit
    )


def _check_context_actions(block: Json) -> None:
    """A context_actions block as Slack validates it: 1 to 5 feedback or icon buttons."""
    elements = block.get("elements")
    if not isinstance(elements, list) or not 1 <= len(elements) <= 5:
        raise SlackError("invalid_blocks", detail="context_actions: between 1 and 5 elements")
    for element in elements:
        kind = element.get("type") if isinstance(element, dict) else None
        if kind == "feedback_buttons":
            for half in ("positive_button", "negative_button"):
                button = element.get(half)
                if not (
                    isinstance(button, dict)
                    and _plain_text(button.get("text"), 75)
                    and isinstance(button.get("value"), str)
                    and 0 < len(button["value"]) <= 2000
                ):
                    raise SlackError("invalid_blocks", detail=f"feedback_buttons: bad {half}")
        elif kind == "icon_button":
            if not (
                isinstance(element.get("icon"), str)
                and _plain_text(element.get("text"), 75)
                and isinstance(element.get("action_id", ""), str)
            ):
                raise SlackError("invalid_blocks", detail="icon_button: icon and text required")
        else:
            raise SlackError(
                "invalid_blocks", detail="context_actions: only feedback_buttons and icon_button"
            )
        if len(str(element.get("action_id", ""))) > 255:
            raise SlackError("invalid_blocks", detail="action_id: at most 255 characters")


def _encode_cursor(ts: str) -> str:
    # Slack cursors are opaque base64 strings; real ones decode to "next_ts:<ts>" as well.
    return base64.b64encode(f"next_ts:{ts}".encode()).decode()


def _decode_cursor(cursor: str) -> str:
    try:
        decoded = base64.b64decode(cursor.encode(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise SlackError("invalid_cursor") from exc
    prefix, _, ts = decoded.partition(":")
    if prefix != "next_ts" or ts_key(ts) < (0, 0):
        raise SlackError("invalid_cursor")
    return ts


class LocalSlack:
    """A local server speaking the subset of the Slack Web API that threadchat calls.

    Point ``AsyncWebClient(token=bot_token, base_url=server.base_url)`` at it. Inspect what
    happened with `messages`, `bot_replies`, `ephemerals`, `status` and `calls`; make the next
    calls fail with `inject` / `inject_lost_response`; mirror what users type with
    `add_message`; and watch every change with `subscribe`. For an app in Socket Mode (app
    token `app_token`), `wait_for_socket` waits for it to connect and `send_socket_event`
    delivers an envelope and returns the app's ack.
    """

    def __init__(
        self,
        *,
        bot_token: str = "xoxb-local",
        team_id: str = "T0LOCAL",
        team_domain: str = "local",
        bot_user_id: str = "U0BOT",
        bot_id: str = "B0BOT",
        users: dict[str, str] | None = None,
        app_id: str = "A0LOCAL",
        bot_name: str = "threadchat",
        app_token: str = "xapp-local",
    ) -> None:
        self.bot_token = bot_token
        self.app_token = app_token
        self.team_id = team_id
        self.team_domain = team_domain
        self.bot_user_id = bot_user_id
        self.bot_id = bot_id
        self.app_id = app_id
        self.bot_name = bot_name
        self.users: dict[str, str] = dict(DEFAULT_USERS if users is None else users)

        self.calls: list[RecordedCall] = []
        self.ephemerals: list[Json] = []
        # Every notification a bot message would have sent: {"channel", "ts", "mention"}.
        self.pings: list[Json] = []

        self._channels: dict[str, dict[str, Json]] = {}
        self._statuses: dict[tuple[str, str], str] = {}
        # Agent sessions by (channel, thread_ts): every status set, in order, and the title.
        # `sessions_error`: what agents.sessions.* answer when set (an app that is no agent
        # says "not_allowed", an older workspace "unknown_method").
        self.session_statuses: dict[tuple[str, str], list[str]] = {}
        self.session_titles: dict[tuple[str, str], str] = {}
        self.sessions_error: str | None = None
        self._streams: dict[tuple[str, str], _Stream] = {}
        self._injections: dict[str, list[_Injection]] = {}
        self._subscribers: list[Subscriber] = []
        # Seeded from the wall clock so ts values look like real ones; advanced by a counter so
        # they are unique and strictly increasing however fast messages arrive.
        self._last_micros = int(time.time()) * 1_000_000
        self._runner: web.AppRunner | None = None
        self._base_url: str | None = None
        # Socket Mode: tickets handed out by apps.connections.open and not used yet, open
        # connections (oldest first), envelopes waiting for their ack, wait_for_socket callers.
        self._socket_tickets: set[str] = set()
        self._sockets: list[web.WebSocketResponse] = []
        self._pending_acks: dict[str, tuple[web.WebSocketResponse, asyncio.Future[Json]]] = {}
        self._socket_waiters: list[asyncio.Future[None]] = []
        # Uploaded files: their metadata, their bytes, and files Slack will not serve.
        self.files: dict[str, Json] = {}
        self._file_bytes: dict[str, bytes] = {}
        self._withheld: set[str] = set()
        # The assistant panel and App Home: suggested prompts and titles by (channel, thread),
        # each user's published Home view, and channel members (for users.conversations).
        self.suggested_prompts: dict[tuple[str, str], Json] = {}
        self.titles: dict[tuple[str, str], str] = {}
        self.home_views: dict[str, Json] = {}
        self.members: dict[str, set[str]] = {}
        self.channel_names: dict[str, str] = {}  # conversations.info; see name_channel
        self.downloads: list[str] = []  # file ids served, in order
        self.download_requests: list[str] = []  # file ids asked for, as the requests arrive
        self.download_delay_s = 0.0  # a slow file server, to kill a worker mid-download
        # Real-time Search (assistant.search.context) and the action tokens it takes.
        self.search = LocalSearch(self)

        self._methods: dict[str, Callable[[Json], Json]] = {
            "api.test": self._api_test,
            "auth.test": self._auth_test,
            "apps.connections.open": self._apps_connections_open,
            "chat.postMessage": self._chat_post_message,
            "chat.update": self._chat_update,
            "chat.delete": self._chat_delete,
            "chat.postEphemeral": self._chat_post_ephemeral,
            "chat.getPermalink": self._chat_get_permalink,
            "users.info": self._users_info,
            "files.info": self._files_info,
            "assistant.threads.setSuggestedPrompts": self._assistant_set_prompts,
            "assistant.threads.setTitle": self._assistant_set_title,
            "conversations.history": self._conversations_history,
            "users.conversations": self._users_conversations,
            "conversations.info": self._conversations_info,
            "views.publish": self._views_publish,
            "conversations.replies": self._conversations_replies,
            "assistant.threads.setStatus": self._assistant_set_status,
            "chat.startStream": self._chat_start_stream,
            "chat.appendStream": self._chat_append_stream,
            "chat.stopStream": self._chat_stop_stream,
            "agents.sessions.setStatus": self._sessions_set_status,
            "agents.sessions.rename": self._sessions_rename,
            "assistant.search.context": self.search.context,
        }

    # ----------------------------------------------------------------------------------------
    # Server lifecycle

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Start listening (port 0 picks a free port) and return the base URL."""
        if self._runner is not None:
            raise RuntimeError("LocalSlack is already running")
        app = web.Application()
        app.router.add_route("*", "/api/{method}", self._handle)
        app.router.add_post("/response/{channel}/{user}", self._handle_response_url)
        app.router.add_get("/socket/{ticket}", self._handle_socket)
        app.router.add_get("/files/{file}/{name}", self._handle_download)
        # A short shutdown timeout: stop() must not hang on idle keep-alive connections.
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        bound_port = runner.addresses[0][1]
        url_host = "127.0.0.1" if host in ("", "0.0.0.0") else host
        if ":" in url_host:
            url_host = f"[{url_host}]"
        self._runner = runner
        self._base_url = f"http://{url_host}:{bound_port}/api/"
        return self._base_url

    async def stop(self) -> None:
        """Stop listening, closing Socket Mode connections first. Stored state stays readable."""
        if self._runner is not None:
            runner, self._runner = self._runner, None
            self._socket_tickets.clear()
            for ws in list(self._sockets):
                with contextlib.suppress(Exception):
                    await ws.close(code=WSCloseCode.GOING_AWAY, message=b"server stopping")
            await runner.cleanup()

    @property
    def base_url(self) -> str:
        """``http://HOST:PORT/api/``: what to pass as the client's ``base_url``."""
        if self._base_url is None:
            raise RuntimeError("LocalSlack has not been started")
        return self._base_url

    # ----------------------------------------------------------------------------------------
    # Inspection and control, for tests and the playground

    def messages(self, channel: str, thread_ts: str | None = None) -> list[Json]:
        """Current messages, in ts order (copies; edits applied, deleted ones gone).

        With `thread_ts`: the thread's parent (if stored) followed by its replies. Without:
        the channel's top-level messages (thread parents included, replies not, except
        replies broadcast to the channel).
        """
        if thread_ts is not None:
            found = self._thread(channel, thread_ts)
        else:
            found = [
                m
                for m in self._sorted(channel)
                if m.get("thread_ts") in (None, m["ts"]) or m.get("subtype") == "thread_broadcast"
            ]
        return copy.deepcopy(found)

    def bot_replies(self, channel: str, thread_ts: str) -> list[Json]:
        """Replies the bot posted in a thread (the parent excluded), in ts order."""
        return [
            m
            for m in self.messages(channel, thread_ts)
            if m["ts"] != thread_ts and m.get("bot_id") == self.bot_id
        ]

    def message(self, channel: str, ts: str) -> Json | None:
        """One stored message by ts, or None."""
        found = self._channels.get(channel, {}).get(ts)
        return copy.deepcopy(found) if found is not None else None

    def join(self, channel: str, *users: str) -> None:
        """Make users members of a channel (users.conversations lists it for them)."""
        self.members.setdefault(channel, set()).update(users)

    def name_channel(self, channel: str, name: str) -> None:
        """Give a channel its name, as conversations.info answers it (unnamed channels are
        not found, as channels the app cannot see)."""
        self.channel_names[channel] = name

    def workspace(self) -> Json:
        """What a restarted local Slack needs to go on where this one left off, as JSON:
        messages, members, channel names, users, files (without their bytes: see
        `file_contents`), titles, prompts, Home views and private notes. Statuses and streams
        in progress are not kept: they end with the process that set them."""
        return copy.deepcopy(
            {
                "base_url": self._base_url,
                "users": self.users,
                "channels": self._channels,
                "members": {channel: sorted(users) for channel, users in self.members.items()},
                "channel_names": self.channel_names,
                "files": self.files,
                "withheld": sorted(self._withheld),
                "titles": [[c, ts, title] for (c, ts), title in self.titles.items()],
                "suggested_prompts": [[c, ts, p] for (c, ts), p in self.suggested_prompts.items()],
                "home_views": self.home_views,
                "ephemerals": self.ephemerals,
                "last_micros": self._last_micros,
            }
        )

    def file_contents(self) -> dict[str, bytes]:
        """Every uploaded file's bytes, by file id."""
        return dict(self._file_bytes)

    def restore_workspace(self, saved: Json, contents: dict[str, bytes]) -> None:
        """Take up a workspace saved with `workspace` (and its files' `contents`). Call it once
        started: file links saved by a server on another port are moved to this one."""
        old, new = saved.get("base_url"), self._base_url
        if old and new and old != new:
            moved = json.dumps(saved).replace(
                json.dumps(old.removesuffix("/api/") + "/files/")[1:-1],
                json.dumps(new.removesuffix("/api/") + "/files/")[1:-1],
            )
            saved = json.loads(moved)
        self.users.update(saved.get("users") or {})
        self._channels.update(saved.get("channels") or {})
        for channel, users in (saved.get("members") or {}).items():
            self.join(channel, *users)
        self.channel_names.update(saved.get("channel_names") or {})
        self.files.update(saved.get("files") or {})
        self._file_bytes.update(contents)
        self._withheld.update(saved.get("withheld") or [])
        self.titles.update({(c, ts): title for c, ts, title in saved.get("titles") or []})
        self.suggested_prompts.update(
            {(c, ts): prompts for c, ts, prompts in saved.get("suggested_prompts") or []}
        )
        self.home_views.update(saved.get("home_views") or {})
        self.ephemerals.extend(saved.get("ephemerals") or [])
        self._last_micros = max(self._last_micros, int(saved.get("last_micros") or 0))

    def status(self, channel: str, thread_ts: str) -> str:
        """The thread status last set with assistant.threads.setStatus ("" when cleared)."""
        return self._statuses.get((channel, thread_ts), "")

    def session(self, channel: str, thread_ts: str) -> str:
        """The agent session's status ("" when the thread has no session)."""
        return (self.session_statuses.get((channel, thread_ts)) or [""])[-1]

    def is_streaming(self, channel: str, ts: str) -> bool:
        """Whether a message started by chat.startStream has not been stopped yet."""
        stream = self._streams.get((channel, ts))
        return stream is not None and stream.state == "in_progress"

    def tasks(self, channel: str, ts: str) -> list[Json]:
        """The task cards a streamed message shows, as Slack's timeline does: one per task id,
        in the order first streamed, each as its latest `task_update` left it."""
        stream = self._streams.get((channel, ts))
        cards: dict[str, Json] = {}
        for chunk in stream.chunks if stream is not None else []:
            if chunk.get("type") == "task_update":
                cards[chunk["id"]] = {**cards.get(chunk["id"], {}), **chunk}
        return [copy.deepcopy(card) for card in cards.values()]

    def stop_session(self, channel: str, thread_ts: str) -> list[str]:
        """Someone clicked Stop on the thread's agent session. As Slack does, the app's
        streams in the thread stop at once (an append to them fails from now on); returns
        their ts, for the agent_session_stopped event."""
        stopped = []
        for message in self.bot_replies(channel, thread_ts):
            stream = self._streams.get((channel, message["ts"]))
            if stream is not None and stream.state == "in_progress":
                stream.state = "completed"
                stopped.append(message["ts"])
                self._emit(
                    {
                        "type": "stream_stop",
                        "channel": channel,
                        "ts": message["ts"],
                        "markdown_text": "",
                        "message": message,
                    }
                )
        return stopped

    def calls_to(self, method: str) -> list[RecordedCall]:
        """The recorded calls of one method, oldest first."""
        return [c for c in self.calls if c.method == method]

    def add_user(self, user_id: str, name: str) -> None:
        """Make a user known to users.info."""
        self.users[user_id] = name

    def add_message(
        self,
        channel: str,
        *,
        user: str,
        text: str,
        thread_ts: str | None = None,
        ts: str | None = None,
        files: list[Json] | None = None,
    ) -> Json:
        """Store a message a human typed (with `files` shared) and return it (ts
        auto-assigned when None).

        Tests call this to mirror the events they send, so that conversations.replies and
        chat.getPermalink see the user's side of the thread too.
        """
        if ts is None:
            ts = self._next_ts()
        else:
            if ts_key(ts) < (0, 0):
                raise ValueError(f"malformed ts {ts!r}")
            if ts in self._channels.get(channel, {}):
                raise ValueError(f"{channel} already has a message with ts {ts}")
            # Keep later auto-assigned ts values above any explicit one.
            self._last_micros = max(self._last_micros, _ts_micros(ts))
        message: Json = {
            "type": "message",
            "user": user,
            "text": text,
            "ts": ts,
            "team": self.team_id,
        }
        if thread_ts is not None and thread_ts != ts:
            message["thread_ts"] = self._resolve_thread(channel, thread_ts)
        if files:
            message["files"] = [self.share_file(f["id"], channel) for f in files]
            message["upload"] = False
        self._store(channel, message)
        return copy.deepcopy(message)

    def edit_message(self, channel: str, ts: str, *, text: str, user: str) -> Json:
        """A person edits their message: its text changes, marked edited, as Slack keeps it.
        Returns the message as it was (Slack's `previous_message`)."""
        message = self._find(channel, ts)
        previous = copy.deepcopy(message)
        message["text"] = text
        message["edited"] = {"user": user, "ts": self._next_ts()}
        self._emit(
            {
                "type": "message_changed",
                "channel": channel,
                "message": message,
                "previous_message": previous,
            }
        )
        return previous

    def add_app_message(
        self,
        channel: str,
        *,
        bot_id: str,
        name: str,
        text: str = "",
        attachments: list[Json] | None = None,
        blocks: list[Json] | None = None,
        thread_ts: str | None = None,
    ) -> Json:
        """Store a post of another app (a monitoring alert, say) as Slack keeps one made by
        an incoming webhook: subtype ``bot_message``, the app's `bot_id`, `username` and
        `bot_profile`, its body often only in `attachments` or `blocks`. Returns it."""
        message: Json = {
            "type": "message",
            "subtype": "bot_message",
            "text": text,
            "ts": self._next_ts(),
            "username": name,
            "bot_id": bot_id,
            "app_id": "A" + bot_id.removeprefix("B"),
            "bot_profile": {
                "id": bot_id,
                "app_id": "A" + bot_id.removeprefix("B"),
                "name": name,
                "deleted": False,
                "team_id": self.team_id,
            },
        }
        if attachments:
            message["attachments"] = attachments
        if blocks:
            message["blocks"] = blocks
        if thread_ts is not None:
            message["thread_ts"] = self._resolve_thread(channel, thread_ts)
        self._store(channel, message)
        return copy.deepcopy(message)

    def add_file(
        self,
        *,
        user: str,
        name: str,
        mimetype: str,
        content: bytes,
        served: bool = True,
        mode: str = "hosted",
        url: str | None = None,
    ) -> Json:
        """A file a user uploaded, not yet shared anywhere; returns its metadata as Slack
        puts it on a message. With `served` false, downloads of it are refused (a file Slack
        will not serve: deleted, or hidden by the workspace's limits). `mode` "external" is a
        file shared from external storage (Google Drive, Dropbox, …); `url` makes its
        url_private(_download) point there instead of at this server."""
        file_id = "F" + uuid.uuid4().hex[:10].upper()
        filetype = name.rsplit(".", 1)[-1].lower() if "." in name else "binary"
        quoted = urllib.parse.quote(name, safe="")
        self.files[file_id] = {
            "id": file_id,
            "created": int(time.time()),
            "name": name,
            "title": name,
            "mimetype": mimetype,
            "filetype": filetype,
            "user": user,
            "size": len(content),
            "mode": mode,
            "is_external": mode == "external",
            "url_private": url or f"{self.base_url.removesuffix('/api/')}/files/{file_id}/{quoted}",
            "url_private_download": url
            or f"{self.base_url.removesuffix('/api/')}/files/{file_id}/{quoted}?download=1",
            "channels": [],
            "groups": [],
            "ims": [],
        }
        self._file_bytes[file_id] = content
        if not served:
            self._withheld.add(file_id)
        return copy.deepcopy(self.files[file_id])

    def share_file(self, file_id: str, channel: str) -> Json:
        """Note that the file was shared in `channel` (its message was posted there)."""
        file = self.files[file_id]
        kind = (
            "ims"
            if channel.startswith("D")
            else "groups"
            if channel.startswith("G")
            else "channels"
        )
        if channel not in file[kind]:
            file[kind].append(channel)
        return copy.deepcopy(file)

    def inject(
        self,
        method: str,
        *,
        error: str = "ratelimited",
        status: int = 200,
        retry_after: int | None = None,
        times: int = 1,
    ) -> None:
        """Make the next `times` calls of `method` fail without being carried out.

        They are answered with HTTP `status` and ``{"ok": false, "error": error}``; a 429
        also carries ``Retry-After`` (`retry_after`, default 1 second), as Slack sends it.
        """
        self._injections.setdefault(method, []).append(
            _Injection("fail", times, error=error, status=status, retry_after=retry_after)
        )

    def inject_lost_response(self, method: str, *, times: int = 1) -> None:
        """Carry out the next `times` calls of `method`, then drop the connection unanswered.

        This is "Slack accepted the post, the response never came back": the message is
        stored, and the client sees a connection error (aiohttp ServerDisconnectedError).
        """
        self._injections.setdefault(method, []).append(_Injection("lost", times))

    def inject_slow_response(self, method: str, seconds: float, *, times: int = 1) -> None:
        """Carry out the next `times` calls of `method` at once, and answer `seconds` later:
        what the call did shows while the caller still waits for its answer."""
        self._injections.setdefault(method, []).append(_Injection("slow", times, delay_s=seconds))

    def subscribe(self, callback: Subscriber) -> None:
        """Call `callback` with a change notification on every change.

        Notifications are dicts with a "type": "message" (new message; "streaming": true when
        made by chat.startStream), "message_changed", "message_deleted", "ephemeral",
        "status", "stream_append" or "stream_stop", plus "channel" and the details.
        Callbacks run synchronously in the server's event loop and must not block.
        """
        self._subscribers.append(callback)

    def unsubscribe(self, callback: Subscriber) -> None:
        """Stop calling a callback given to `subscribe`."""
        if callback in self._subscribers:
            self._subscribers.remove(callback)

    # ----------------------------------------------------------------------------------------
    # Socket Mode

    @property
    def socket_connections(self) -> int:
        """How many Socket Mode connections are open now."""
        return sum(not ws.closed for ws in self._sockets)

    async def wait_for_socket(self, timeout: float = 5) -> None:
        """Wait until an app is connected over Socket Mode (has been sent ``hello``).

        Raises TimeoutError when none connects within `timeout` seconds.
        """
        if self.socket_connections:
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._socket_waiters.append(waiter)
        try:
            await asyncio.wait_for(waiter, timeout)
        except TimeoutError:
            raise TimeoutError(f"no Socket Mode connection within {timeout}s") from None
        finally:
            if waiter in self._socket_waiters:
                self._socket_waiters.remove(waiter)

    async def send_socket_event(
        self, payload: Json, *, envelope_type: str = "events_api", timeout: float = 5
    ) -> Json:
        """Push `payload` to the connected app in a Socket Mode envelope; return the app's ack.

        `envelope_type` is "events_api" (payload: an ``event_callback``, see
        `devtools.slack_events.event_callback`), "slash_commands" (payload: the command's
        fields as a JSON object) or "interactive" (payload: e.g. a ``message_action``). The
        ack is what the app sent back: ``{"envelope_id": …}`` plus, for acks that carry a
        response (a slash command's ephemeral text), ``"payload"``.

        The envelope goes to the most recently opened connection. Raises ConnectionError
        when no app is connected or the connection closes before the ack, and TimeoutError
        when no ack comes within `timeout` seconds (Slack itself waits 3).
        """
        ws = next((ws for ws in reversed(self._sockets) if not ws.closed), None)
        if ws is None:
            raise ConnectionError("no app is connected over Socket Mode")
        envelope_id = str(uuid.uuid4())
        envelope: Json = {
            "envelope_id": envelope_id,
            "type": envelope_type,
            "payload": payload,
            "accepts_response_payload": envelope_type != "events_api",
            "retry_attempt": 0,
            "retry_reason": "",
        }
        ack: asyncio.Future[Json] = asyncio.get_running_loop().create_future()
        self._pending_acks[envelope_id] = (ws, ack)
        try:
            await ws.send_json(envelope)
            return await asyncio.wait_for(ack, timeout)
        except TimeoutError:
            raise TimeoutError(
                f"no ack for {envelope_type} envelope {envelope_id} within {timeout}s"
            ) from None
        finally:
            self._pending_acks.pop(envelope_id, None)

    async def _handle_socket(self, request: web.Request) -> web.StreamResponse:
        ticket = request.match_info["ticket"]
        # A URL from apps.connections.open is good for one connection, as in Slack.
        if ticket not in self._socket_tickets:
            return web.Response(status=401, text="invalid_ticket")
        self._socket_tickets.discard(ticket)
        # aiohttp answers the client's pings (slack_sdk pings every few seconds and
        # reconnects when no pong comes back).
        # A short close timeout: stop() must not hang on an app that never answers a close.
        ws = web.WebSocketResponse(autoping=True, timeout=2.0)
        await ws.prepare(request)
        self._sockets.append(ws)
        try:
            await ws.send_json(
                {
                    "type": "hello",
                    "num_connections": self.socket_connections,
                    "debug_info": {
                        "host": "applink-local",
                        "build_number": 1,
                        "approximate_connection_time": 18060,
                    },
                    "connection_info": {"app_id": self.app_id},
                }
            )
            for waiter in self._socket_waiters:
                if not waiter.done():
                    waiter.set_result(None)
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    self._on_socket_message(msg.data)
        finally:
            self._sockets.remove(ws)
            for envelope_id, (owner, ack) in list(self._pending_acks.items()):
                if owner is ws and not ack.done():
                    ack.set_exception(
                        ConnectionError(f"Socket Mode connection closed before ack {envelope_id}")
                    )
        return ws

    def _on_socket_message(self, data: str) -> None:
        try:
            message = json.loads(data)
        except ValueError:
            log.warning("LocalSlack: non-JSON Socket Mode message: %.200s", data)
            return
        envelope_id = message.get("envelope_id") if isinstance(message, dict) else None
        pending = self._pending_acks.get(envelope_id) if isinstance(envelope_id, str) else None
        if pending is None:
            log.warning("LocalSlack: Socket Mode message matches no envelope: %.200s", data)
        elif not pending[1].done():
            pending[1].set_result(message)

    # ----------------------------------------------------------------------------------------
    # HTTP plumbing

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        method = request.match_info["method"]
        call = RecordedCall(method=method, params={}, at=time.monotonic())
        self.calls.append(call)
        injection: _Injection | None = None
        status = 200
        headers: dict[str, str] = {}
        try:
            params, token = await self._read_params(request)
            call.params = copy.deepcopy(params)
            if method not in self._methods:
                raise SlackError("unknown_method")
            if not token:
                raise SlackError("not_authed")
            app_level = method in APP_TOKEN_METHODS
            if token != (self.app_token if app_level else self.bot_token):
                # A real token of the other kind is told apart from a bad one, as Slack does.
                other = self.bot_token if app_level else self.app_token
                raise SlackError("not_allowed_token_type" if token == other else "invalid_auth")
            injection = self._take_injection(method)
            if injection is not None and injection.kind == "fail":
                status = injection.status
                if status == 429 or injection.retry_after is not None:
                    headers["Retry-After"] = str(injection.retry_after or 1)
                raise SlackError(injection.error)
            body = {"ok": True, **self._methods[method](params)}
        except SlackError as exc:
            body = exc.body()
            call.error = exc.error

        if injection is not None and injection.kind == "lost":
            # The work is done; now lose the answer. Closing the transport before a response
            # is written makes aiohttp drop the response we return, and the client sees the
            # server disconnect mid-request.
            if request.transport is not None:
                request.transport.close()
            return web.Response(status=500)
        if injection is not None and injection.kind == "slow":
            await asyncio.sleep(injection.delay_s)
        call.status = status
        return web.json_response(body, status=status, headers=headers)

    async def _read_params(self, request: web.Request) -> tuple[Json, str | None]:
        """Merge query, form and JSON arguments; take the token from header or params."""
        params: Json = dict(request.query)
        if request.method == "POST" and request.body_exists:
            if request.content_type == "application/json":
                try:
                    body = await request.json()
                except ValueError as exc:
                    raise SlackError("invalid_json") from exc
                if not isinstance(body, dict):
                    raise SlackError("invalid_json")
                params.update(body)
            else:
                form = await request.post()
                params.update({k: v for k, v in form.items() if isinstance(v, str)})
        token = params.pop("token", None)
        auth = request.headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            token = auth.removeprefix("Bearer ").strip()
        return params, token

    def _take_injection(self, method: str) -> _Injection | None:
        queue = self._injections.get(method)
        if not queue:
            return None
        injection = queue[0]
        injection.remaining -= 1
        if injection.remaining <= 0:
            queue.pop(0)
        return injection

    def _emit(self, event: Json) -> None:
        for callback in list(self._subscribers):
            try:
                callback(copy.deepcopy(event))
            except Exception:
                # A broken observer must not turn into an API failure for the bot.
                log.exception("LocalSlack subscriber failed")

    # ----------------------------------------------------------------------------------------
    # Storage helpers

    def _next_ts(self) -> str:
        # Like Slack's, a ts is the time the message arrived (code that looks for messages
        # "since" a moment relies on that), kept unique and increasing by a small step.
        now = int(time.time() * 1_000_000)
        self._last_micros = max(self._last_micros + TS_STEP_MICROS, now)
        return _format_ts(self._last_micros)

    def _sorted(self, channel: str) -> list[Json]:
        return sorted(self._channels.get(channel, {}).values(), key=lambda m: ts_key(m["ts"]))

    def _thread(self, channel: str, thread_ts: str) -> list[Json]:
        return [
            m
            for m in self._sorted(channel)
            if m["ts"] == thread_ts or m.get("thread_ts") == thread_ts
        ]

    def _resolve_thread(self, channel: str, thread_ts: str) -> str:
        """A reply to a reply lands in the reply's thread, as in Slack."""
        target = self._channels.get(channel, {}).get(thread_ts)
        if target is not None and target.get("thread_ts") not in (None, target["ts"]):
            return str(target["thread_ts"])
        return thread_ts

    def _store(self, channel: str, message: Json, **notify: Any) -> None:
        thread_ts = message.get("thread_ts")
        if thread_ts is not None and thread_ts != message["ts"]:
            parent = self._channels.get(channel, {}).get(thread_ts)
            if parent is not None:
                message["parent_user_id"] = parent.get("user")
        self._channels.setdefault(channel, {})[message["ts"]] = message
        if thread_ts is not None:
            self._refresh_parent(channel, thread_ts)
        self._note_pings(channel, message)
        self._emit({"type": "message", "channel": channel, "message": message, **notify})

    def _note_pings(self, channel: str, message: Json) -> None:
        """Record whom the bot's message, as it now reads, notifies (once per mention)."""
        if message.get("user") != self.bot_user_id:
            return
        noted = {
            p["mention"] for p in self.pings if (p["channel"], p["ts"]) == (channel, message["ts"])
        }
        for mention in mentions_in(message):
            if mention not in noted:
                self.pings.append({"channel": channel, "ts": message["ts"], "mention": mention})

    def _refresh_parent(self, channel: str, thread_ts: str) -> None:
        """Keep the parent's thread summary (reply_count, reply_users, …) like Slack does."""
        parent = self._channels.get(channel, {}).get(thread_ts)
        if parent is None:
            return
        replies = [m for m in self._thread(channel, thread_ts) if m["ts"] != thread_ts]
        if not replies:
            for key in ("reply_count", "reply_users", "reply_users_count", "latest_reply"):
                parent.pop(key, None)
            return
        users = list(dict.fromkeys(str(m.get("user")) for m in replies))
        parent["thread_ts"] = thread_ts
        parent["reply_count"] = len(replies)
        parent["reply_users"] = users
        parent["reply_users_count"] = len(users)
        parent["latest_reply"] = replies[-1]["ts"]

    def _find(self, channel: str, ts: str) -> Json:
        message = self._channels.get(channel, {}).get(ts)
        if message is None:
            raise SlackError("message_not_found")
        return message

    def _bot_message(self, channel: str, thread_ts: str | None) -> Json:
        message: Json = {
            "type": "message",
            "user": self.bot_user_id,
            "bot_id": self.bot_id,
            "app_id": self.app_id,
            "team": self.team_id,
            "text": "",
            "ts": self._next_ts(),
        }
        if thread_ts:
            message["thread_ts"] = self._resolve_thread(channel, thread_ts)
        return message

    # ----------------------------------------------------------------------------------------
    # Argument validation

    @staticmethod
    def _channel(params: Json, name: str = "channel") -> str:
        channel = params.get(name)
        if not channel or not isinstance(channel, str):
            raise SlackError("channel_not_found")
        return channel

    @staticmethod
    def _required(params: Json, name: str) -> str:
        value = params.get(name)
        if value is None or value == "":
            raise SlackError("invalid_arguments", detail=f"missing required field: {name}")
        return str(value)

    @staticmethod
    def _blocks(params: Json) -> list[Json] | None:
        blocks = _json_param(params, "blocks", "invalid_blocks_format")
        if blocks is None:
            return None
        if not isinstance(blocks, list):
            raise SlackError("invalid_blocks_format")
        if len(blocks) > MAX_BLOCKS:
            raise SlackError("invalid_blocks", detail=f"no more than {MAX_BLOCKS} items allowed")
        markdown_total = 0
        for block in blocks:
            if not isinstance(block, dict) or not isinstance(block.get("type"), str):
                raise SlackError("invalid_blocks", detail="each block needs a type")
            text = block.get("text")
            section_text = text.get("text", "") if isinstance(text, dict) else ""
            if block["type"] == "section" and len(str(section_text)) > SECTION_TEXT_LIMIT:
                raise SlackError(
                    "invalid_blocks", detail=f"must be less than {SECTION_TEXT_LIMIT + 1} chars"
                )
            if block["type"] == "markdown" and isinstance(text, str):
                markdown_total += len(text)
            if block["type"] == "context_actions":
                _check_context_actions(block)
        if markdown_total > MARKDOWN_BLOCKS_LIMIT:
            raise SlackError("msg_blocks_too_long")
        return blocks

    @staticmethod
    def _metadata(params: Json) -> Json | None:
        metadata = _json_param(params, "metadata", "invalid_metadata_format")
        if metadata is None:
            return None
        if (
            not isinstance(metadata, dict)
            or not isinstance(metadata.get("event_type"), str)
            or not isinstance(metadata.get("event_payload", {}), dict)
        ):
            raise SlackError("invalid_metadata_format")
        return {
            "event_type": metadata["event_type"],
            "event_payload": metadata.get("event_payload", {}),
        }

    def _content(self, params: Json) -> Json:
        """Validate text / blocks / markdown_text / attachments as chat.postMessage does.

        Returns the content fields to store. A message whose body is `markdown_text` also gets
        it as `text`, so readers find the body in one place.
        """
        text = params.get("text")
        markdown = params.get("markdown_text")
        blocks = self._blocks(params)
        attachments = _json_param(params, "attachments", "invalid_attachments")
        if markdown and (text or blocks):
            raise SlackError("markdown_text_conflict")
        if not (text or markdown or blocks or attachments):
            raise SlackError("no_text")
        if text is not None and len(str(text)) > TEXT_LIMIT:
            raise SlackError("msg_too_long")
        if markdown is not None and len(str(markdown)) > MARKDOWN_LIMIT:
            raise SlackError("msg_too_long")
        content: Json = {}
        if markdown:
            content["text"] = str(markdown)
            content["markdown_text"] = str(markdown)
        elif text is not None:
            content["text"] = str(text)
        if blocks is not None:
            content["blocks"] = blocks
        if attachments is not None:
            content["attachments"] = attachments
        return content

    @staticmethod
    def _chunks(params: Json) -> tuple[str, list[Json]]:
        """Split stream input into appended markdown and the other (task/plan) chunks."""
        text = ""
        markdown = params.get("markdown_text")
        if markdown:
            text += str(markdown)
        others: list[Json] = []
        chunks = _json_param(params, "chunks", "invalid_chunks")
        if chunks is not None:
            if not isinstance(chunks, list):
                raise SlackError("invalid_chunks")
            for chunk in chunks:
                if not isinstance(chunk, dict) or not isinstance(chunk.get("type"), str):
                    raise SlackError("invalid_chunks")
                if chunk["type"] == "markdown_text":
                    if not isinstance(chunk.get("text"), str):
                        raise SlackError("invalid_chunks")
                    text += chunk["text"]
                else:
                    if chunk["type"] == "task_update":
                        _check_task(chunk)
                    others.append(chunk)
        if len(text) > MARKDOWN_LIMIT:
            raise SlackError("msg_too_long")
        return text, others

    # ----------------------------------------------------------------------------------------
    # Web API methods. Each takes the merged params and returns the response minus "ok".

    def _api_test(self, params: Json) -> Json:
        return {"args": params} if params else {}

    def _auth_test(self, params: Json) -> Json:
        return {
            "url": f"https://{self.team_domain}.slack.com/",
            "team": self.team_domain,
            "user": self.bot_name,
            "team_id": self.team_id,
            "user_id": self.bot_user_id,
            "bot_id": self.bot_id,
            "is_enterprise_install": False,
        }

    def _apps_connections_open(self, params: Json) -> Json:
        # Slack's URL is wss://wss-primary.slack.com/link/?ticket=…&app_id=…; ours is a plain
        # ws:// route on this server, the ticket in the path.
        ticket = uuid.uuid4().hex
        self._socket_tickets.add(ticket)
        url = self.base_url.replace("http://", "ws://", 1).removesuffix("/api/")
        return {"url": f"{url}/socket/{ticket}"}

    def _chat_post_message(self, params: Json) -> Json:
        channel = self._channel(params)
        content = self._content(params)
        metadata = self._metadata(params)
        message = self._bot_message(channel, params.get("thread_ts") or None)
        message.update(content)
        if metadata is not None:
            message["metadata"] = metadata
        if message.get("thread_ts") and _truthy(params.get("reply_broadcast")):
            message["subtype"] = "thread_broadcast"
        self._store(channel, message)
        self._replied(channel, message)
        return {"channel": channel, "ts": message["ts"], "message": copy.deepcopy(message)}

    def _chat_update(self, params: Json) -> Json:
        channel = self._channel(params)
        ts = self._required(params, "ts")
        message = self._find(channel, ts)
        if message.get("user") != self.bot_user_id:
            raise SlackError("cant_update_message")
        content = self._content(params)
        metadata = self._metadata(params)
        previous = copy.deepcopy(message)
        # Fields not sent are kept (Slack keeps blocks unless given, [] removes them); a
        # markdown body replaces text and blocks, a text body replaces a markdown one.
        if "markdown_text" in content:
            message.pop("blocks", None)
        elif "text" in content:
            message.pop("markdown_text", None)
        message.update(content)
        if message.get("blocks") == []:
            del message["blocks"]
        if metadata is not None:
            message["metadata"] = metadata
        message["edited"] = {"user": self.bot_user_id, "ts": self._next_ts()}
        self._note_pings(channel, message)
        self._emit(
            {
                "type": "message_changed",
                "channel": channel,
                "message": message,
                "previous_message": previous,
            }
        )
        return {
            "channel": channel,
            "ts": ts,
            "text": message.get("text", ""),
            "message": copy.deepcopy(message),
        }

    def _chat_delete(self, params: Json) -> Json:
        channel = self._channel(params)
        ts = self._required(params, "ts")
        message = self._find(channel, ts)
        if message.get("user") != self.bot_user_id:
            raise SlackError("cant_delete_message")
        del self._channels[channel][ts]
        self._streams.pop((channel, ts), None)
        thread_ts = message.get("thread_ts")
        if thread_ts and thread_ts != ts:
            self._refresh_parent(channel, thread_ts)
        self._emit({"type": "message_deleted", "channel": channel, "previous_message": message})
        return {"channel": channel, "ts": ts}

    def response_url(self, channel: str, user: str) -> str:
        """A `response_url` for a slash command or shortcut that `user` ran in `channel`.

        What an app posts there shows up in `ephemerals` (or in the channel, for
        ``response_type: in_channel``), as Slack shows it.
        """
        return self.base_url.replace("/api/", f"/response/{channel}/{user}")

    async def _handle_response_url(self, request: web.Request) -> web.Response:
        channel, user = request.match_info["channel"], request.match_info["user"]
        try:
            params = await request.json()
        except ValueError:
            return web.Response(status=400, text="invalid_payload")
        if params.get("response_type") == "in_channel":
            message = self._bot_message(channel, params.get("thread_ts"))
            message["text"] = params.get("text", "")
            self._store(channel, message)
        else:
            ephemeral: Json = {
                "channel": channel,
                "user": user,
                "thread_ts": params.get("thread_ts") or None,
                "message_ts": self._next_ts(),
                "text": params.get("text", ""),
            }
            self.ephemerals.append(ephemeral)
            self._emit({"type": "ephemeral", **ephemeral})
        return web.Response(text="ok")

    def _chat_post_ephemeral(self, params: Json) -> Json:
        channel = self._channel(params)
        user = params.get("user")
        if not user:
            raise SlackError("user_not_in_channel")
        content = self._content(params)
        # Ephemeral messages are not stored as messages; their ts cannot be used with
        # chat.update, as in Slack.
        ephemeral: Json = {
            "channel": channel,
            "user": user,
            "thread_ts": params.get("thread_ts") or None,
            "message_ts": self._next_ts(),
            **content,
        }
        self.ephemerals.append(ephemeral)
        self._emit({"type": "ephemeral", **ephemeral})
        return {"message_ts": ephemeral["message_ts"]}

    def _files_info(self, params: Json) -> Json:
        file = self.files.get(str(params.get("file", "")))
        if file is None:
            raise SlackError("file_not_found")
        return {"file": copy.deepcopy(file)}

    async def _handle_download(self, request: web.Request) -> web.StreamResponse:
        """url_private(_download): the bytes, for the bot token only, as Slack serves them."""
        file_id = request.match_info["file"]
        self.download_requests.append(file_id)
        if self.download_delay_s:
            await asyncio.sleep(self.download_delay_s)
        if request.headers.get("Authorization") != f"Bearer {self.bot_token}":
            # Slack answers a missing or wrong token with its sign-in page, not the file.
            return web.Response(status=302, headers={"Location": "https://slack.com/signin"})
        if file_id not in self._file_bytes or file_id in self._withheld:
            return web.Response(status=404, text="file not found")
        self.downloads.append(file_id)
        return web.Response(
            body=self._file_bytes[file_id], content_type=self.files[file_id]["mimetype"]
        )

    def _chat_get_permalink(self, params: Json) -> Json:
        channel = self._channel(params)
        ts = self._required(params, "message_ts")
        message = self._find(channel, ts)
        permalink = (
            f"https://{self.team_domain}.slack.com/archives/{channel}/p{ts.replace('.', '')}"
        )
        thread_ts = message.get("thread_ts")
        if thread_ts and thread_ts != ts:
            permalink += f"?thread_ts={thread_ts}&cid={channel}"
        return {"channel": channel, "permalink": permalink}

    def _users_info(self, params: Json) -> Json:
        user_id = params.get("user")
        if user_id == self.bot_user_id:
            name, is_bot = self.bot_name, True
        elif isinstance(user_id, str) and user_id in self.users:
            name, is_bot = self.users[user_id], False
        else:
            raise SlackError("user_not_found")
        profile: Json = {
            "display_name": name,
            "display_name_normalized": name,
            "real_name": name,
            "real_name_normalized": name,
            "team": self.team_id,
        }
        if is_bot:
            profile["bot_id"] = self.bot_id
        return {
            "user": {
                "id": user_id,
                "team_id": self.team_id,
                "name": name,
                "deleted": False,
                "real_name": name,
                "tz": "Etc/UTC",
                "is_bot": is_bot,
                "is_app_user": False,
                "profile": profile,
            }
        }

    def _conversations_replies(self, params: Json) -> Json:
        channel = self._channel(params)
        ts = self._required(params, "ts")
        # `ts` may name the parent or any reply; either way the whole thread comes back.
        thread_ts = ts
        target = self._channels.get(channel, {}).get(ts)
        if target is not None and target.get("thread_ts"):
            thread_ts = target["thread_ts"]
        thread = self._thread(channel, thread_ts)
        if not thread:
            raise SlackError("thread_not_found")

        # Range filters apply to every message, the parent included. Slack's docs do not say
        # whether the parent survives `oldest`; filtering uniformly is the simple reading.
        inclusive = _truthy(params.get("inclusive"))
        oldest, latest = params.get("oldest"), params.get("latest")
        if oldest:
            low = ts_key(str(oldest))
            thread = [
                m for m in thread if ts_key(m["ts"]) > low or (inclusive and ts_key(m["ts"]) == low)
            ]
        if latest:
            high = ts_key(str(latest))
            thread = [
                m
                for m in thread
                if ts_key(m["ts"]) < high or (inclusive and ts_key(m["ts"]) == high)
            ]

        try:
            limit = int(params.get("limit") or REPLIES_DEFAULT_LIMIT)
        except (TypeError, ValueError) as exc:
            raise SlackError("invalid_limit") from exc
        limit = max(1, min(limit, REPLIES_MAX_LIMIT))
        cursor = params.get("cursor")
        if cursor:
            start = ts_key(_decode_cursor(str(cursor)))
            thread = [m for m in thread if ts_key(m["ts"]) >= start]
        page, rest = thread[:limit], thread[limit:]

        with_metadata = _truthy(params.get("include_all_metadata"))
        messages = []
        for m in page:
            out = copy.deepcopy(m)
            if not with_metadata:
                out.pop("metadata", None)
            messages.append(out)
        return {
            "messages": messages,
            "has_more": bool(rest),
            "response_metadata": {"next_cursor": _encode_cursor(rest[0]["ts"]) if rest else ""},
        }

    def _assistant_set_status(self, params: Json) -> Json:
        channel = self._channel(params, "channel_id")
        thread_ts = self._required(params, "thread_ts")
        if "status" not in params:
            raise SlackError("invalid_arguments", detail="missing required field: status")
        status = str(params["status"])
        self._statuses[(channel, thread_ts)] = status
        loading = _json_param(params, "loading_messages", "invalid_arguments")
        self._emit(
            {
                "type": "status",
                "channel": channel,
                "thread_ts": thread_ts,
                "status": status,
                "loading_messages": loading,
            }
        )
        return {}

    def _session_thread(self, params: Json) -> tuple[str, str]:
        if self.sessions_error:
            raise SlackError(self.sessions_error)
        channel = self._channel(params, "channel_id")
        # Thread-based sessions (the only kind threadchat keeps) need the thread, in channels
        # and DMs alike; it must be a thread in this channel.
        thread_ts = self._required(params, "thread_ts")
        if thread_ts not in self._channels.get(channel, {}):
            raise SlackError("thread_not_found")
        return channel, thread_ts

    def _sessions_set_status(self, params: Json) -> Json:
        channel, thread_ts = self._session_thread(params)
        status = params.get("status")
        if status not in SESSION_STATUSES:
            raise SlackError(
                "invalid_arguments", detail="status: active, processing, suspended, closed"
            )
        title = params.get("title")
        if title is not None and not 1 <= len(str(title)) <= 200:
            raise SlackError("invalid_arguments", detail="title: 1 to 200 characters")
        self._set_session(channel, thread_ts, str(status), title=title)
        return {"status": status, "title": self.session_titles.get((channel, thread_ts), "")}

    def _set_session(self, channel: str, thread_ts: str, status: str, title: Any = None) -> None:
        key = (channel, thread_ts)
        if key not in self.session_statuses and title:
            self.session_titles[key] = str(title)  # only when the session is created
        history = self.session_statuses.setdefault(key, [])
        if history[-1:] == [status]:
            return  # setting the status it has changes nothing
        history.append(status)
        self._emit(
            {"type": "session", "channel": channel, "thread_ts": thread_ts, "status": status}
        )

    def _sessions_rename(self, params: Json) -> Json:
        channel, thread_ts = self._session_thread(params)
        title = str(params.get("title") or "").strip()
        if not 1 <= len(title) <= 200:
            raise SlackError("invalid_arguments", detail="title: 1 to 200 characters")
        self.session_titles[(channel, thread_ts)] = title
        self.titles[(channel, thread_ts)] = title  # what the thread shows, as setTitle's
        self._emit(
            {"type": "session_title", "channel": channel, "thread_ts": thread_ts, "title": title}
        )
        return {"title": title}

    def _replied(self, channel: str, message: Json) -> None:
        """Slack clears a thread's status when the app replies in it."""
        thread_ts = message.get("thread_ts")
        if thread_ts and self._statuses.pop((channel, thread_ts), ""):
            self._emit({"type": "status", "channel": channel, "thread_ts": thread_ts, "status": ""})

    def _assistant_set_prompts(self, params: Json) -> Json:
        channel = self._channel(params, "channel_id")
        # Without a thread: the Messages tab of the agent messaging experience, a DM only.
        # Stored under (channel, "").
        thread_ts = str(params.get("thread_ts") or "")
        if not thread_ts and not channel.startswith("D"):
            raise SlackError("invalid_arguments", detail="missing required field: thread_ts")
        prompts = _json_param(params, "prompts", "invalid_arguments")
        if not isinstance(prompts, list) or not 1 <= len(prompts) <= 4:
            raise SlackError("invalid_arguments", detail="prompts: between 1 and 4 items")
        for prompt in prompts:
            if not (
                isinstance(prompt, dict)
                and isinstance(prompt.get("title"), str)
                and isinstance(prompt.get("message"), str)
                and prompt["title"].strip()
                and prompt["message"].strip()
            ):
                raise SlackError("invalid_arguments", detail="each prompt needs title and message")
        entry = {"title": params.get("title") or "", "prompts": prompts}
        self.suggested_prompts[(channel, thread_ts)] = entry
        self._emit(
            {"type": "suggested_prompts", "channel": channel, "thread_ts": thread_ts, **entry}
        )
        return {}

    def _assistant_set_title(self, params: Json) -> Json:
        channel = self._channel(params, "channel_id")
        thread_ts = self._required(params, "thread_ts")
        title = str(params.get("title") or "").strip()
        if not title:
            raise SlackError("invalid_arguments", detail="missing required field: title")
        self.titles[(channel, thread_ts)] = title
        self._emit({"type": "title", "channel": channel, "thread_ts": thread_ts, "title": title})
        return {}

    def _conversations_history(self, params: Json) -> Json:
        """A channel's top-level messages, newest first, as the bot may read them: in a
        channel it is a member of."""
        channel = self._channel(params)
        if self.members.get(channel) is not None and self.bot_user_id not in self.members[channel]:
            raise SlackError("not_in_channel")
        limit = min(int(params.get("limit") or 100), 999)
        top = [
            m for m in self._sorted(channel) if not m.get("thread_ts") or m["thread_ts"] == m["ts"]
        ]
        newest = list(reversed(top))[:limit]
        return {"messages": copy.deepcopy(newest), "has_more": len(top) > limit}

    def _users_conversations(self, params: Json) -> Json:
        user = str(params.get("user") or "")
        channels = sorted(c for c, members in self.members.items() if user in members)
        return {"channels": [{"id": c} for c in channels], "response_metadata": {"next_cursor": ""}}

    def _conversations_info(self, params: Json) -> Json:
        channel = self._channel(params)
        name = self.channel_names.get(channel)
        if name is None and not channel.startswith("D"):
            raise SlackError("channel_not_found")
        is_im = channel.startswith("D")
        return {
            "channel": {
                "id": channel,
                **({} if is_im else {"name": name, "name_normalized": name}),
                "is_channel": channel.startswith("C"),
                "is_group": channel.startswith("G"),
                "is_im": is_im,
                "is_private": not channel.startswith("C"),
                "is_member": self.bot_user_id in self.members.get(channel, set()),
            }
        }

    def _views_publish(self, params: Json) -> Json:
        user = self._required(params, "user_id")
        view = _json_param(params, "view", "invalid_arguments")
        if not isinstance(view, dict) or view.get("type") != "home":
            raise SlackError("invalid_arguments", detail="view.type must be home")
        blocks = self._blocks({"blocks": view.get("blocks")}) or []
        self.home_views[user] = {**view, "blocks": blocks}
        self._emit({"type": "home", "user": user, "view": self.home_views[user]})
        return {"view": {"id": "V" + user, **view}}

    def _chat_start_stream(self, params: Json) -> Json:
        channel = self._channel(params)
        thread_ts = self._required(params, "thread_ts")
        recipient_user = params.get("recipient_user_id") or None
        recipient_team = params.get("recipient_team_id") or None
        # Slack needs the recipient when streaming into a channel (C…/G…), not into a DM.
        if channel[:1] in ("C", "G"):
            if not recipient_user:
                raise SlackError("missing_recipient_user_id")
            if not recipient_team:
                raise SlackError("missing_recipient_team_id")
        text, others = self._chunks(params)
        message = self._bot_message(channel, thread_ts)
        message["text"] = text
        message["markdown_text"] = text
        stream = _Stream(recipient_user, recipient_team, chunks=others)
        self._streams[(channel, message["ts"])] = stream
        self._store(channel, message, streaming=True)
        self._replied(channel, message)
        return {"channel": channel, "ts": message["ts"]}

    def _streaming_message(self, params: Json) -> tuple[str, str, Json, _Stream]:
        channel = self._channel(params)
        ts = self._required(params, "ts")
        message = self._find(channel, ts)
        stream = self._streams.get((channel, ts))
        if stream is None or stream.state != "in_progress":
            raise SlackError("message_not_in_streaming_state")
        return channel, ts, message, stream

    def _append(self, message: Json, stream: _Stream, params: Json) -> str:
        text, others = self._chunks(params)
        if text:
            message["text"] = message.get("text", "") + text
            message["markdown_text"] = message["text"]
        stream.chunks.extend(others)
        return text

    def _chat_append_stream(self, params: Json) -> Json:
        channel, ts, message, stream = self._streaming_message(params)
        if not params.get("markdown_text") and not params.get("chunks"):
            raise SlackError("no_text")
        delta = self._append(message, stream, params)
        self._note_pings(channel, message)
        self._emit(
            {
                "type": "stream_append",
                "channel": channel,
                "ts": ts,
                "markdown_text": delta,
                "message": message,
            }
        )
        return {"channel": channel, "ts": ts}

    def _chat_stop_stream(self, params: Json) -> Json:
        channel, ts, message, stream = self._streaming_message(params)
        blocks = self._blocks(params)
        metadata = self._metadata(params)
        session_status = params.get("session_status")
        if session_status is not None:
            if self.sessions_error:
                raise SlackError(self.sessions_error)
            if session_status not in SESSION_STATUSES:
                raise SlackError("invalid_arguments", detail="session_status: not a status")
        delta = self._append(message, stream, params)
        if blocks is not None:
            message["blocks"] = blocks
        if metadata is not None:
            message["metadata"] = metadata
        self._note_pings(channel, message)
        stream.state = "completed"
        self._emit(
            {
                "type": "stream_stop",
                "channel": channel,
                "ts": ts,
                "markdown_text": delta,
                "message": message,
            }
        )
        if session_status is not None:
            self._set_session(channel, message["thread_ts"], str(session_status))
        return {"channel": channel, "ts": ts, "message": copy.deepcopy(message)}


async def _serve(host: str, port: int, token: str) -> None:
    server = LocalSlack(bot_token=token)

    def show(event: Json) -> None:
        message = event.get("message") or {}
        text = message.get("text", event.get("text", event.get("status", "")))
        print(f"[{event['type']}] {event.get('channel', '')} {str(text)[:120]}", flush=True)

    server.subscribe(show)
    stopped = asyncio.Event()
    # SIGTERM (from a supervisor or a test) shuts down as cleanly as Ctrl-C.
    with contextlib.suppress(NotImplementedError):
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopped.set)
    print(await server.start(host, port), flush=True)
    try:
        await stopped.wait()
    finally:
        await server.stop()


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``python -m devtools.slack``: serve until interrupted."""
    parser = argparse.ArgumentParser(description="Run a local Slack Web API server.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8766)
    parser.add_argument("--token", default="xoxb-local", help="bot token clients must send")
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args.host, args.port, args.token))


if __name__ == "__main__":
    main()
