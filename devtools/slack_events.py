"""Inbound Slack requests, built and signed as Slack sends them to an app's Request URL.

The payload builders are pure functions returning what Slack would POST: Events API
``event_callback`` envelopes (JSON), slash commands (form-encoded) and message shortcuts
(form-encoded ``payload=<json>``). `sign` produces Slack's request-signing headers, and
`EventSender` delivers signed requests over real HTTP, including Slack's retry headers, so the
bot's Bolt app is exercised exactly as in production.

Shapes follow docs.slack.dev (Events API envelope, message / app_mention events, slash
command and message_action payloads). Fields Bolt and threadchat do not read, such as the
rich_text `blocks` of user messages, are left out.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
import uuid
from typing import Any
from urllib.parse import urlencode

import aiohttp

Json = dict[str, Any]

# The legacy verification token Slack still puts in payloads; Bolt ignores it unless the app
# is configured with one.
VERIFICATION_TOKEN = "local-verification-token"
DEFAULT_RESPONSE_URL = "https://hooks.slack.com/commands/T0LOCAL/0000000000/local"
_ID_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def _random_id(prefix: str, length: int = 10) -> str:
    return prefix + "".join(secrets.choice(_ID_ALPHABET) for _ in range(length))


def _trigger_id() -> str:
    # Real trigger ids look like "13345224609.738474920.8088930838d88f008e0".
    return f"{secrets.randbelow(10**11)}.{secrets.randbelow(10**9)}.{secrets.token_hex(16)}"


def _now_ts() -> str:
    return f"{time.time():.6f}"


def sign(signing_secret: str, body: str, timestamp: int | None = None) -> dict[str, str]:
    """Slack's signing headers for `body`.

    ``X-Slack-Signature`` is ``v0=`` + hex HMAC-SHA256 of ``v0:{timestamp}:{body}`` keyed with
    the app's signing secret. Bolt rejects timestamps more than 5 minutes off with 401.
    """
    if timestamp is None:
        timestamp = int(time.time())
    base = f"v0:{timestamp}:{body}".encode()
    digest = hmac.new(signing_secret.encode(), base, hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": str(timestamp), "X-Slack-Signature": f"v0={digest}"}


def event_callback(
    event: Json,
    *,
    team_id: str = "T0LOCAL",
    api_app_id: str = "A0LOCAL",
    event_id: str | None = None,
    bot_user_id: str = "U0BOT",
    event_time: int | None = None,
) -> Json:
    """The Events API envelope around `event`.

    `event_id` stays the same across Slack's retries of one delivery; pass the same value when
    simulating a retry. `authorizations` names the installation the event is for (our bot).
    """
    context = {"et": event.get("type"), "tid": team_id, "aid": api_app_id}
    if "channel" in event:
        context["cid"] = event["channel"]
    event_context = "4-" + base64.b64encode(json.dumps(context).encode()).decode()
    return {
        "token": VERIFICATION_TOKEN,
        "team_id": team_id,
        "context_team_id": team_id,
        "context_enterprise_id": None,
        "api_app_id": api_app_id,
        "event": event,
        "type": "event_callback",
        "event_id": event_id or _random_id("Ev"),
        "event_time": int(time.time()) if event_time is None else event_time,
        "authorizations": [
            {
                "enterprise_id": None,
                "team_id": team_id,
                "user_id": bot_user_id,
                "is_bot": True,
                "is_enterprise_install": False,
            }
        ],
        "is_ext_shared_channel": False,
        "event_context": event_context,
    }


def message_event(
    *,
    channel: str,
    user: str,
    text: str,
    ts: str,
    thread_ts: str | None = None,
    channel_type: str = "channel",
    subtype: str | None = None,
    bot_id: str | None = None,
    team: str = "T0LOCAL",
    parent_user_id: str | None = None,
    files: list[Json] | None = None,
    user_team: str | None = None,
    action_token: str | None = None,
) -> Json:
    """A ``message`` event (message.channels / message.im / … subscriptions).

    `channel_type` is "channel", "group", "im" or "mpim". Human messages carry a
    ``client_msg_id``; messages from bots carry ``bot_id`` instead. With `files` (as
    LocalSlack.add_file returns them) it is a ``file_share`` message, as Slack sends one.
    """
    event: Json = {"type": "message"}
    if files:
        subtype = subtype or "file_share"
    if subtype is not None:
        event["subtype"] = subtype
    event.update({"user": user, "text": text, "ts": ts, "team": team})
    if files:
        event["files"] = files
        event["upload"] = False
    if bot_id is not None:
        event["bot_id"] = bot_id
    else:
        event["client_msg_id"] = str(uuid.uuid4())
    if thread_ts is not None:
        event["thread_ts"] = thread_ts
        if parent_user_id is not None:
            event["parent_user_id"] = parent_user_id
    event.update({"channel": channel, "event_ts": ts, "channel_type": channel_type})
    if action_token is not None:
        event["action_token"] = action_token
    return _from_team(event, user_team)


def app_message_event(message: Json, *, channel: str, channel_type: str = "channel") -> Json:
    """The ``message`` event Slack sends for another app's post (as LocalSlack.add_app_message
    stores it): the stored message with where it was posted."""
    event = {k: v for k, v in message.items() if k != "type"}
    return {
        "type": "message",
        **event,
        "channel": channel,
        "event_ts": message["ts"],
        "channel_type": channel_type,
    }


def _from_team(event: Json, user_team: str | None) -> Json:
    """A message by a Slack Connect user of `user_team`, in a channel shared with us: Slack
    names the author's team in `user_team` and `source_team`."""
    if user_team:
        event.update({"team": user_team, "user_team": user_team, "source_team": user_team})
    return event


def message_changed_event(
    *, channel: str, user: str, ts: str, text: str, previous_text: str, thread_ts: str | None
) -> Json:
    """What Slack sends when a person edits their message: the whole new message, and the
    old one, under a ``message_changed`` message event of its own ts."""
    message: Json = {"type": "message", "user": user, "text": text, "ts": ts}
    message["edited"] = {"user": user, "ts": _now_ts()}
    previous: Json = {"type": "message", "user": user, "text": previous_text, "ts": ts}
    if thread_ts is not None:
        message["thread_ts"] = previous["thread_ts"] = thread_ts
    return _hidden_event("message_changed", channel, message=message, previous_message=previous)


def message_deleted_event(
    *, channel: str, user: str, ts: str, text: str, thread_ts: str | None
) -> Json:
    """What Slack sends when a message is deleted: its ts as ``deleted_ts``, and the message
    as it was."""
    previous: Json = {"type": "message", "user": user, "text": text, "ts": ts}
    if thread_ts is not None:
        previous["thread_ts"] = thread_ts
    return _hidden_event("message_deleted", channel, deleted_ts=ts, previous_message=previous)


def _hidden_event(subtype: str, channel: str, **fields: object) -> Json:
    """A message event about another message (an edit, a deletion), with a ts of its own."""
    now = _now_ts()
    return {
        "type": "message",
        "subtype": subtype,
        **fields,
        "channel": channel,
        "hidden": True,
        "ts": now,
        "event_ts": now,
        "channel_type": "channel",
    }


def app_mention_event(
    *,
    channel: str,
    user: str,
    text: str,
    ts: str,
    thread_ts: str | None = None,
    team: str = "T0LOCAL",
    files: list[Json] | None = None,
    user_team: str | None = None,
    action_token: str | None = None,
) -> Json:
    """An ``app_mention`` event; `text` should contain the mention, e.g. ``"<@U0BOT> hi"``.
    A mention with files attached carries them, as Slack sends it."""
    event: Json = {
        "type": "app_mention",
        "client_msg_id": str(uuid.uuid4()),
        "user": user,
        "text": text,
        "ts": ts,
        "team": team,
        "channel": channel,
        "event_ts": ts,
    }
    if thread_ts is not None:
        event["thread_ts"] = thread_ts
    if files:
        event["files"] = files
    if action_token is not None:
        event["action_token"] = action_token
    return _from_team(event, user_team)


def assistant_thread_event(
    kind: str,
    *,
    user: str,
    channel: str,
    thread_ts: str,
    context_channel: str | None = None,
    team: str = "T0LOCAL",
) -> Json:
    """``assistant_thread_started`` or ``assistant_thread_context_changed`` (kind "started"
    or "context_changed"): the user opened the assistant panel (a thread in their DM with
    the app, `channel`), or moved to another channel while it is open."""
    context: Json = {"team_id": team, "enterprise_id": None}
    if context_channel is not None:
        context["channel_id"] = context_channel
    return {
        "type": f"assistant_thread_{kind}",
        "assistant_thread": {
            "user_id": user,
            "context": context,
            "channel_id": channel,
            "thread_ts": thread_ts,
        },
        "event_ts": _now_ts(),
    }


def app_home_opened_event(*, user: str, channel: str, tab: str = "home") -> Json:
    """The user opened the app's Home tab (or its Messages tab)."""
    return {
        "type": "app_home_opened",
        "user": user,
        "channel": channel,
        "tab": tab,
        "event_ts": _now_ts(),
    }


def app_context_changed_event(
    *,
    user: str,
    channel: str,
    viewing: str | None = None,
    message_ts: str | None = None,
    team: str = "T0LOCAL",
) -> Json:
    """``app_context_changed`` (agent_view): what `user`, in their DM with the app
    `channel`, is viewing: a channel, a message in one (`message_ts`), or nothing (an empty
    ``context``, as Slack sends it)."""
    context: Json = {}
    if viewing and message_ts:
        value = {"channel_id": viewing, "message_ts": message_ts}
        context = {"entities": [{"type": "slack#/types/message_context", "value": value}]}
    elif viewing:
        entity = {"type": "slack#/types/channel_id", "value": viewing, "team_id": team}
        context = {"entities": [entity]}
    return {
        "type": "app_context_changed",
        "user": user,
        "channel": channel,
        "context": context,
        "event_ts": _now_ts(),
    }


def agent_session_stopped_event(
    *, user: str, channel: str, thread_ts: str, streaming_message_ts: list[str]
) -> Json:
    """``agent_session_stopped``: `user` clicked Stop on the thread's session; Slack has
    already stopped the streams it lists."""
    return {
        "type": "agent_session_stopped",
        "user": user,
        "channel": channel,
        "thread_ts": thread_ts,
        "streaming_message_ts": list(streaming_message_ts),
        "event_ts": _now_ts(),
    }


def slash_command(
    *,
    command: str,
    text: str,
    channel_id: str,
    user_id: str,
    team_id: str = "T0LOCAL",
    team_domain: str = "local",
    response_url: str = DEFAULT_RESPONSE_URL,
    trigger_id: str | None = None,
    user_name: str | None = None,
    channel_name: str = "general",
    api_app_id: str = "A0LOCAL",
) -> str:
    """The form-encoded body Slack posts for a slash command.

    Slash commands cannot be invoked inside threads, so there is no ``thread_ts``.
    """
    fields = {
        "token": VERIFICATION_TOKEN,
        "team_id": team_id,
        "team_domain": team_domain,
        "channel_id": channel_id,
        "channel_name": channel_name,
        "user_id": user_id,
        "user_name": user_name or user_id.lower(),
        "command": command,
        "text": text,
        "api_app_id": api_app_id,
        "is_enterprise_install": "false",
        "response_url": response_url,
        "trigger_id": trigger_id or _trigger_id(),
    }
    return urlencode(fields)


def message_shortcut(
    *,
    callback_id: str,
    channel_id: str,
    user_id: str,
    message_ts: str,
    thread_ts: str | None,
    team_id: str = "T0LOCAL",
    response_url: str = DEFAULT_RESPONSE_URL,
    team_domain: str = "local",
    message_text: str = "",
    message_user: str | None = None,
    user_name: str | None = None,
    channel_name: str = "general",
    trigger_id: str | None = None,
    user_team: str | None = None,
) -> str:
    """The form-encoded ``payload=<json>`` Slack posts for a message shortcut.

    `user_id` is who invoked the shortcut; `message_user` (default: the same user) wrote the
    message it was invoked on. `thread_ts` is set when that message is in a thread; this is
    how a shortcut learns the thread a slash command cannot.
    """
    name = user_name or user_id.lower()
    message: Json = {
        "type": "message",
        "user": message_user or user_id,
        "ts": message_ts,
        "text": message_text,
        "team": team_id,
    }
    if thread_ts is not None:
        message["thread_ts"] = thread_ts
    payload = {
        "type": "message_action",
        "token": VERIFICATION_TOKEN,
        "action_ts": _now_ts(),
        "team": {"id": team_id, "domain": team_domain},
        "user": {"id": user_id, "username": name, "team_id": user_team or team_id, "name": name},
        "channel": {"id": channel_id, "name": channel_name},
        "is_enterprise_install": False,
        "enterprise": None,
        "callback_id": callback_id,
        "trigger_id": trigger_id or _trigger_id(),
        "response_url": response_url,
        "message_ts": message_ts,
        "message": message,
    }
    return urlencode({"payload": json.dumps(payload)})


def block_action(
    *,
    action_id: str,
    value: str,
    channel_id: str,
    user_id: str,
    message: Json,
    team_id: str = "T0LOCAL",
    response_url: str = DEFAULT_RESPONSE_URL,
    team_domain: str = "local",
    block_id: str = "threadchat_reply_actions",
    user_name: str | None = None,
    channel_name: str = "general",
    trigger_id: str | None = None,
    action_ts: str | None = None,
    user_team: str | None = None,
    element_type: str = "button",
) -> str:
    """The form-encoded ``payload=<json>`` Slack posts when someone clicks a button
    (`element_type` "feedback_buttons" for one of Slack's feedback buttons).

    `message` is the message the button is on (its ``ts``, ``thread_ts``, text and blocks), as
    Slack includes it; ``container.thread_ts`` is how the app learns the thread. A double
    click is two payloads with different `action_ts`.
    """
    container: Json = {
        "type": "message",
        "message_ts": message["ts"],
        "channel_id": channel_id,
        "is_ephemeral": False,
    }
    if message.get("thread_ts"):
        container["thread_ts"] = message["thread_ts"]
    where = {
        "container": container,
        "channel": {"id": channel_id, "name": channel_name},
        "message": message,
        "response_url": response_url,
    }
    return _click(
        where,
        action_id,
        value,
        block_id,
        user_id,
        user_name,
        team_id,
        team_domain,
        trigger_id,
        action_ts,
        user_team,
        element_type,
    )


def view_action(
    *,
    action_id: str,
    value: str,
    user_id: str,
    view: Json,
    team_id: str = "T0LOCAL",
    team_domain: str = "local",
    block_id: str = "home",
    user_name: str | None = None,
    trigger_id: str | None = None,
) -> str:
    """The ``payload=<json>`` Slack posts for a button in a view (the App Home tab): there is
    no message, channel or response_url; ``container`` names the view."""
    view_id = view.get("id") or f"V{user_id}"
    where = {"container": {"type": "view", "view_id": view_id}, "view": {**view, "id": view_id}}
    return _click(
        where, action_id, value, block_id, user_id, user_name, team_id, team_domain, trigger_id
    )


def _click(
    where: Json,
    action_id: str,
    value: str,
    block_id: str,
    user_id: str,
    user_name: str | None,
    team_id: str,
    team_domain: str,
    trigger_id: str | None,
    action_ts: str | None = None,
    user_team: str | None = None,
    element_type: str = "button",
) -> str:
    """A block_actions payload: who clicked which button, `where` (a message or a view);
    `user_team` for a Slack Connect user of another organisation."""
    name = user_name or user_id.lower()
    payload = {
        "type": "block_actions",
        "token": VERIFICATION_TOKEN,
        "api_app_id": "A0LOCAL",
        "team": {"id": team_id, "domain": team_domain},
        "user": {"id": user_id, "username": name, "team_id": user_team or team_id, "name": name},
        **where,
        "is_enterprise_install": False,
        "enterprise": None,
        "trigger_id": trigger_id or _trigger_id(),
        "state": {"values": {}},
        "actions": [
            {
                "type": element_type,
                "action_id": action_id,
                "block_id": block_id,
                "value": value,
                "text": {"type": "plain_text", "text": action_id},
                "action_ts": action_ts or _now_ts(),
            }
        ],
    }
    return urlencode({"payload": json.dumps(payload)})


class EventSender:
    """Posts signed requests to a bot's Request URL over real HTTP (aiohttp)."""

    def __init__(self, url: str, signing_secret: str) -> None:
        self.url = url
        self.signing_secret = signing_secret
        self._session: aiohttp.ClientSession | None = None

    async def send_event(
        self,
        event: Json,
        *,
        retry_num: int | None = None,
        event_id: str | None = None,
        team_id: str = "T0LOCAL",
        retry_reason: str = "http_timeout",
    ) -> tuple[int, str]:
        """Deliver `event` in an event_callback envelope; returns (status, body).

        With `retry_num`, adds ``X-Slack-Retry-Num`` / ``X-Slack-Retry-Reason`` as Slack does
        on redeliveries; pass the original `event_id` to make it the same delivery.
        """
        body = json.dumps(event_callback(event, team_id=team_id, event_id=event_id))
        headers = {"Content-Type": "application/json"}
        if retry_num is not None:
            headers["X-Slack-Retry-Num"] = str(retry_num)
            headers["X-Slack-Retry-Reason"] = retry_reason
        return await self.send_raw(body, headers)

    async def send_command(self, body: str) -> tuple[int, str]:
        """Deliver a `slash_command` body; returns (status, body)."""
        return await self.send_raw(body, {"Content-Type": "application/x-www-form-urlencoded"})

    async def send_shortcut(self, body: str) -> tuple[int, str]:
        """Deliver a `message_shortcut` body; returns (status, body)."""
        return await self.send_raw(body, {"Content-Type": "application/x-www-form-urlencoded"})

    async def send_action(self, body: str) -> tuple[int, str]:
        """Deliver a `block_action` body; returns (status, body)."""
        return await self.send_raw(body, {"Content-Type": "application/x-www-form-urlencoded"})

    async def send_raw(self, body: bytes | str, headers: dict[str, str]) -> tuple[int, str]:
        """Sign `body` and post it with `headers` added; returns (status, body).

        Signature headers given in `headers` win over the computed ones, which lets tests
        send a bad or stale signature.
        """
        text = body.decode() if isinstance(body, bytes) else body
        overridden = {name.lower() for name in headers}
        all_headers = {
            name: value
            for name, value in sign(self.signing_secret, text).items()
            if name.lower() not in overridden
        }
        all_headers.update(headers)
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
        async with self._session.post(self.url, data=text.encode(), headers=all_headers) as resp:
            return resp.status, await resp.text()

    async def close(self) -> None:
        """Close the HTTP session."""
        if self._session is not None:
            await self._session.close()
            self._session = None
