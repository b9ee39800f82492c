"""Turning Slack event payloads into our own small types, and deciding what deserves an answer.

Pure functions, so every rule about which messages start, continue or are ignored is tested
without Slack or Temporal.
"""

import re
from dataclasses import dataclass

from threadchat.model import ThreadRef, UserMessage

# Subtypes that are still a person writing in the thread; everything else (edits, deletions,
# joins, bot messages, ...) is not a message to answer.
_CONVERSATIONAL_SUBTYPES = {None, "thread_broadcast", "file_share"}


@dataclass(frozen=True)
class Incoming:
    """A message worth passing on: where it belongs and whether it may start a conversation."""

    thread: ThreadRef
    message: UserMessage
    may_start: bool


def _without_mention(text: str, bot_user_id: str | None) -> str:
    if bot_user_id:
        text = re.sub(rf"<@{re.escape(bot_user_id)}(\|[^>]*)?>", "", text)
    return text.strip()


def parse_message_event(
    event: dict, team_id: str, bot_user_id: str | None, *, is_mention_event: bool = False
) -> Incoming | None:
    """Classify an `app_mention` or `message` event; None means acknowledge and ignore."""
    if event.get("subtype") not in _CONVERSATIONAL_SUBTYPES or event.get("bot_id"):
        return None
    user, ts, channel = event.get("user"), event.get("ts"), event.get("channel")
    if not (user and ts and channel and team_id) or user == bot_user_id:
        return None
    text = event.get("text") or ""
    thread_ts = event.get("thread_ts")
    mentioned = is_mention_event or bool(bot_user_id and f"<@{bot_user_id}" in text)
    top_level_dm = event.get("channel_type") == "im" and not thread_ts
    if not (mentioned or top_level_dm or thread_ts):
        return None  # channel chatter outside any thread of ours
    may_start = mentioned or top_level_dm
    return Incoming(
        thread=ThreadRef(team=team_id, channel=channel, thread_ts=thread_ts or ts),
        message=UserMessage(
            ts=ts, user=user, text=_without_mention(text, bot_user_id), may_start=may_start
        ),
        may_start=may_start,
    )
