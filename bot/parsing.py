"""Turning Slack event payloads into our own small types, and deciding what deserves an answer.

Pure functions, so every rule about which messages start, continue or are ignored is tested
without Slack or Temporal.
"""

import json
import re
from dataclasses import dataclass
from urllib.parse import parse_qs

from threadchat import actions
from threadchat.model import (
    FileRef,
    MessageRevision,
    ReplyRef,
    StopRequest,
    ThreadRef,
    UserMessage,
)
from threadchat.slack_text import app_name, message_text

# Slack ids and timestamps, as Slack sends them. Anything else is not from Slack, and would
# make a workflow id or search attribute Temporal refuses.
_ID = re.compile(r"^[A-Z0-9]{1,32}$")
_TS = re.compile(r"^\d{1,12}\.\d{1,9}$")


def _ids(*values: object) -> bool:
    return all(isinstance(v, str) and _ID.fullmatch(v) for v in values)


def _ts(*values: object) -> bool:
    return all(isinstance(v, str) and _TS.fullmatch(v) for v in values)


# Subtypes that are still a person writing in the thread; everything else (edits, deletions,
# joins, bot messages, ...) is not a message to answer.
_CONVERSATIONAL_SUBTYPES = {None, "thread_broadcast", "file_share"}


@dataclass(frozen=True)
class Incoming:
    """A message worth passing on: where it belongs and whether it may start a conversation."""

    thread: ThreadRef
    message: UserMessage
    may_start: bool

    @property
    def guest(self) -> bool:
        """Written by a Slack Connect user of another organisation."""
        return self.message.team != self.thread.team


def _author_team(event: dict, team_id: str) -> str:
    """The team of a message's author: in a Slack Connect channel, a guest's own."""
    team = event.get("user_team") or event.get("source_team") or team_id
    return team if _ids(team) else team_id


def _without_mention(text: str, bot_user_id: str | None) -> str:
    if bot_user_id:
        text = re.sub(rf"<@{re.escape(bot_user_id)}(\|[^>]*)?>", "", text)
    return text.strip()


def parse_message_event(
    event: dict,
    team_id: str,
    bot_user_id: str | None,
    *,
    is_mention_event: bool = False,
    bot_id: str | None = None,
) -> Incoming | None:
    """Classify an `app_mention` or `message` event; None means acknowledge and ignore."""
    subtype = event.get("subtype")
    if event.get("bot_id"):
        return _app_message(event, team_id, bot_user_id, bot_id)
    if not isinstance(subtype, str | None) or subtype not in _CONVERSATIONAL_SUBTYPES:
        return None
    user, ts, channel = event.get("user"), event.get("ts"), event.get("channel")
    thread_ts = event.get("thread_ts")
    text = event.get("text") or ""
    if not (_ids(user, channel, team_id) and _ts(ts) and isinstance(text, str)):
        return None
    if user == bot_user_id or (thread_ts is not None and not _ts(thread_ts)):
        return None
    files = _files(event.get("files"))
    mentioned = is_mention_event or bool(bot_user_id and f"<@{bot_user_id}" in text)
    # Everything in a DM with the app is for it, threads too (the assistant panel's are).
    in_dm = event.get("channel_type") == "im"
    if not (mentioned or in_dm or thread_ts):
        return None  # channel chatter outside any thread of ours
    may_start = mentioned or in_dm
    return Incoming(
        thread=ThreadRef(team=team_id, channel=channel, thread_ts=thread_ts or ts),
        message=UserMessage(
            ts=ts,
            user=user,
            text=_without_mention(text, bot_user_id),
            may_start=may_start,
            files=files,
            team=_author_team(event, team_id),
            action_token=_action_token(event),
        ),
        may_start=may_start,
    )


def _action_token(event: dict) -> str:
    """Slack's action token for the message (Real-time Search, as its author); "" if none."""
    token = event.get("action_token")
    if token is None:
        token = (event.get("assistant_thread") or {}).get("action_token")
    return token if isinstance(token, str) and 0 < len(token) <= 200 else ""


def _app_message(
    event: dict, team_id: str, bot_user_id: str | None, own_bot_id: str | None
) -> Incoming | None:
    """Another app's post in a thread (an alert, a ticket, a deploy): context for the
    conversation there, never answered. The bot's own posts are dropped: they are in the
    conversation already, and answering them would loop."""
    app, user, subtype = event.get("bot_id"), event.get("user"), event.get("subtype")
    if app == own_bot_id or (user and user == bot_user_id):
        return None
    if subtype not in (None, "bot_message", "thread_broadcast", "file_share"):
        return None
    ts, channel, thread_ts = event.get("ts"), event.get("channel"), event.get("thread_ts")
    if not (_ids(app, channel, team_id) and _ts(ts, thread_ts)) or thread_ts == ts:
        return None  # only replies in a thread: a top-level post is no conversation's
    text = message_text(event)
    if not text:
        return None
    return Incoming(
        thread=ThreadRef(team=team_id, channel=channel, thread_ts=thread_ts),
        message=UserMessage(ts=ts, user=app, text=text, team=team_id, app=app_name(event)),
        may_start=False,
    )


def parse_revision(
    event: dict, team_id: str, bot_user_id: str | None
) -> tuple[ThreadRef, MessageRevision] | None:
    """A person's message edited (`message_changed`) or deleted (`message_deleted`), with the
    thread it is in; None for anything else (the bot's own edits included)."""
    subtype, channel = event.get("subtype"), event.get("channel")
    if subtype == "message_changed":
        message = event.get("message")
        if not isinstance(message, dict) or message.get("bot_id"):
            return None
        ts, user, text = message.get("ts"), message.get("user"), message.get("text")
        thread_ts = message.get("thread_ts") or ts
        if not (_ids(channel, user, team_id) and _ts(ts, thread_ts) and isinstance(text, str)):
            return None
        revision = MessageRevision(ts, user, _without_mention(text, bot_user_id))
    elif subtype == "message_deleted":
        ts, previous = event.get("deleted_ts"), event.get("previous_message")
        thread_ts = (previous.get("thread_ts") if isinstance(previous, dict) else None) or ts
        if not (_ids(channel, team_id) and _ts(ts, thread_ts)):
            return None
        revision = MessageRevision(ts)
    else:
        return None
    return ThreadRef(team_id, channel, thread_ts), revision


_FILE_ID = re.compile(r"^F[A-Z0-9]{1,31}$")
MAX_FILES_PER_MESSAGE = 20  # what Slack lets a person attach to one message


def _files(files: object) -> list[FileRef]:
    """References to the files of a message; files Slack only lists (deleted, hidden by
    the workspace's limits, external links) are left out."""
    if not isinstance(files, list):
        return []
    refs = []
    for file in files[:MAX_FILES_PER_MESSAGE]:
        if not isinstance(file, dict) or file.get("mode") in ("tombstone", "hidden_by_limit"):
            continue
        file_id, name, size = file.get("id"), file.get("name"), file.get("size")
        mimetype = file.get("mimetype") or "application/octet-stream"
        if not (isinstance(file_id, str) and _FILE_ID.fullmatch(file_id)):
            continue
        if not (isinstance(name, str) and isinstance(mimetype, str) and isinstance(size, int)):
            continue
        refs.append(FileRef(id=file_id, name=name[:200], mimetype=mimetype[:200], size=size))
    return refs


@dataclass(frozen=True)
class EndCommand:
    """An /endchat: who ran it where, and the thread link they gave, if any."""

    team: str
    channel: str
    user: str
    link: str
    team_domain: str


def parse_end_command(command: dict) -> EndCommand | None:
    team, channel, user = command.get("team_id"), command.get("channel_id"), command.get("user_id")
    text = command.get("text") or ""
    if not (_ids(team, channel, user) and isinstance(text, str)):
        return None
    domain = command.get("team_domain")
    return EndCommand(
        team, channel, user, text.strip(), domain if isinstance(domain, str) else "app"
    )


@dataclass(frozen=True)
class AssistantEvent:
    """assistant_thread_started / _context_changed: the panel's thread and who is in it."""

    thread: ThreadRef
    user: str
    context_channel: str


def parse_assistant_event(event: dict, team_id: str) -> AssistantEvent | None:
    panel = event.get("assistant_thread")
    if not isinstance(panel, dict):
        return None
    user, channel, thread_ts = panel.get("user_id"), panel.get("channel_id"), panel.get("thread_ts")
    context = panel.get("context") if isinstance(panel.get("context"), dict) else {}
    in_view = context.get("channel_id") or ""
    if not (_ids(user, channel, team_id) and _ts(thread_ts)) or (in_view and not _ids(in_view)):
        return None
    return AssistantEvent(ThreadRef(team_id, channel, thread_ts), user, in_view)


@dataclass(frozen=True)
class ViewingChange:
    """app_context_changed: who, in which DM with the app, now views which channel ("" for
    nothing readable) or which message in it."""

    user: str
    channel: str
    context_channel: str
    context_message_ts: str


def parse_app_context(event: dict) -> ViewingChange | None:
    """The most relevant channel or message the user views (Slack orders the entities by
    relevance; canvases and lists are not read). None for a payload we cannot trust."""
    user, channel = event.get("user"), event.get("channel")
    context = event.get("context")
    if not (_ids(user, channel) and isinstance(context, dict)):
        return None
    entities = context.get("entities") or []
    for entity in entities if isinstance(entities, list) else []:
        kind = entity.get("type") if isinstance(entity, dict) else None
        value = entity.get("value") if isinstance(entity, dict) else None
        if kind == "slack#/types/channel_id" and _ids(value) and value[:1] in "CG":
            return ViewingChange(user, channel, value, "")
        if kind == "slack#/types/message_context" and isinstance(value, dict):
            in_channel, ts = value.get("channel_id"), value.get("message_ts")
            if _ids(in_channel) and in_channel[:1] in "CG" and _ts(ts):
                return ViewingChange(user, channel, in_channel, ts)
    return ViewingChange(user, channel, "", "")


def parse_session_stopped(
    event: dict, team_id: str, event_id: str
) -> tuple[ThreadRef, StopRequest] | None:
    """`agent_session_stopped`: who clicked Stop on which thread's session, and the streams
    Slack stopped. None for a payload we cannot trust."""
    user, channel, thread_ts = event.get("user"), event.get("channel"), event.get("thread_ts")
    if not (_ids(user, channel, team_id) and _ts(thread_ts) and event_id):
        return None
    streams = event.get("streaming_message_ts") or []
    streaming = [ts for ts in streams if _ts(ts)] if isinstance(streams, list) else []
    return ThreadRef(team_id, channel, thread_ts), StopRequest(user, str(event_id), streaming)


def user_team(payload: dict) -> str:
    """The team of whoever sent an interaction (a guest's own in a Slack Connect channel)."""
    user, team = payload.get("user"), payload.get("team")
    own = user.get("team_id") if isinstance(user, dict) else None
    return own or (team.get("id") if isinstance(team, dict) else "") or ""


def parse_end_shortcut(shortcut: dict) -> tuple[ThreadRef, str] | None:
    """The thread an End chat shortcut was used in, and who used it."""

    def id_of(field: str) -> object:
        value = shortcut.get(field)
        return value.get("id") if isinstance(value, dict) else None

    message = shortcut.get("message")
    if not isinstance(message, dict):
        return None
    team, channel, user = id_of("team"), id_of("channel"), id_of("user")
    thread_ts = message.get("thread_ts") or message.get("ts")
    if not (_ids(team, channel, user) and _ts(thread_ts)):
        return None
    return ThreadRef(team=team, channel=channel, thread_ts=thread_ts), user


@dataclass(frozen=True)
class ReplyAction:
    """A click on one of the buttons under a reply: who, in which thread, on which reply."""

    thread: ThreadRef
    user: str
    action_id: str
    reply: ReplyRef
    guest: bool = False  # a Slack Connect user of another organisation


def parse_reply_action(body: dict) -> ReplyAction | None:
    """A `block_actions` payload from a reply's buttons; None for anything else."""

    def id_of(field: str) -> object:
        value = body.get(field)
        return value.get("id") if isinstance(value, dict) else None

    container, clicked = body.get("container"), body.get("actions")
    if not (isinstance(container, dict) and isinstance(clicked, list) and clicked):
        return None
    action = clicked[0]
    if not isinstance(action, dict):
        return None
    action_id = str(action.get("action_id"))
    if action_id == actions.FEEDBACK:
        # Slack's feedback buttons: one action id, the rating in the clicked button's value.
        rated = actions.decode_feedback(action.get("value"))
        rating, reply = rated if rated else ("", None)
        action_id = {v: k for k, v in actions.RATINGS.items()}.get(rating, action_id)
    else:
        reply = actions.decode(action.get("value"))
    team, channel, user = id_of("team"), id_of("channel"), id_of("user")
    thread_ts = container.get("thread_ts") or container.get("message_ts")
    if reply is None or not (_ids(team, channel, user) and _ts(thread_ts)):
        return None
    return ReplyAction(
        thread=ThreadRef(team=team, channel=channel, thread_ts=thread_ts),
        user=user,
        action_id=action_id,
        reply=reply,
        guest=user_team(body) not in ("", team),
    )


@dataclass(frozen=True)
class ApprovalClick:
    """Approve or Deny on a tool call waiting for approval."""

    thread: ThreadRef
    user: str
    key: str  # the call's idempotency key
    approve: bool
    guest: bool = False


def parse_approval(body: dict) -> ApprovalClick | None:
    """A `block_actions` payload from an approval message's buttons; None for anything else."""
    container, clicked = body.get("container"), body.get("actions")
    if not (isinstance(container, dict) and isinstance(clicked, list) and clicked):
        return None
    action = clicked[0] if isinstance(clicked[0], dict) else {}
    action_id, key = action.get("action_id"), action.get("value")
    ids = [
        (body.get(f) or {}).get("id") if isinstance(body.get(f), dict) else None
        for f in ("team", "channel", "user")
    ]
    team, channel, user = ids
    thread_ts = container.get("thread_ts") or container.get("message_ts")
    if action_id not in (actions.TOOL_APPROVE, actions.TOOL_DENY) or not isinstance(key, str):
        return None
    if not (_ids(team, channel, user) and _ts(thread_ts) and 0 < len(key) <= 500):
        return None
    return ApprovalClick(
        thread=ThreadRef(team, channel, thread_ts),
        user=user,
        key=key,
        approve=action_id == actions.TOOL_APPROVE,
        guest=user_team(body) not in ("", team),
    )


def malformed(body: str) -> bool:
    """Payload shapes Bolt itself trips over (it answers them 500, as if we had failed):
    an event that is not an object or has no string type, or an interaction without its
    parts. Slack never sends these."""
    try:
        if body.startswith("{"):
            data = json.loads(body)
            if isinstance(data, dict) and data.get("type") == "event_callback":
                event = data.get("event")
                return not (isinstance(event, dict) and isinstance(event.get("type"), str))
            return False
        payload = parse_qs(body).get("payload")
        if payload:
            data = json.loads(payload[0])
            if not isinstance(data, dict) or not isinstance(data.get("type"), str):
                return True
            actions = data.get("actions")
            return data["type"] == "block_actions" and not (isinstance(actions, list) and actions)
    except ValueError:
        return True
    return False
