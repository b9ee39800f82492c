"""What the user is looking at, for the assistant panel: the recent messages of the channel in
view, read only if the bot can read it and the user is a member there.

Slack limits conversations.history (for new commercially distributed apps, to one call a
minute), so each worker keeps a channel's recent messages, and a user's channel list, for a
minute.
"""

import logging

from cachetools import TTLCache
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from threadchat.model import Quote
from threadchat.slack_client import HTTP_TIMEOUT_SECONDS

log = logging.getLogger(__name__)

RECENT_MESSAGES = 30
MAX_CHARACTERS = 6_000  # about 1,500 tokens of the prompt
KEPT_SECONDS = 60


class ChannelReader:
    """Synchronous: it runs in the model call's thread, like the file downloads."""

    def __init__(self, token: str, api_url: str):
        self.client = WebClient(
            token=token, base_url=api_url, timeout=HTTP_TIMEOUT_SECONDS, retry_handlers=[]
        )
        self.history: TTLCache[str, list[dict]] = TTLCache(maxsize=1000, ttl=KEPT_SECONDS)
        self.memberships: TTLCache[str, set[str]] = TTLCache(maxsize=10_000, ttl=KEPT_SECONDS)

    def recent(self, channel: str, user: str, message_ts: str = "") -> list[Quote]:
        """The channel's recent messages (or the thread of its message `message_ts`), oldest
        first, each with its author's id as Slack gives it; none when the user is not a
        member there, the bot cannot read it, or Slack says no."""
        try:
            if channel not in self._channels_of(user):
                return []
            messages = self._thread(channel, message_ts) if message_ts else self._history(channel)
        except SlackApiError as err:
            log.info("no channel context: %s", err.response.get("error"))
            return []
        kept: list[Quote] = []
        size = 0
        for message in messages:  # newest first: keep the newest that fit
            text = (message.get("text") or "").strip()
            if not text or message.get("subtype") not in (None, "thread_broadcast", "file_share"):
                continue
            if size + len(text) > MAX_CHARACTERS:
                break
            author = message.get("user") or message.get("bot_id") or "?"
            kept.append(Quote(user=author, name=author, ts=message.get("ts") or "", text=text))
            size += len(text)
        return list(reversed(kept))

    def _channels_of(self, user: str) -> set[str]:
        if user not in self.memberships:
            channels, cursor = set(), None
            while True:
                response = self.client.users_conversations(
                    user=user,
                    types="public_channel,private_channel",
                    exclude_archived=True,
                    limit=1000,
                    cursor=cursor,
                )
                channels |= {c["id"] for c in response.get("channels", [])}
                cursor = (response.get("response_metadata") or {}).get("next_cursor")
                if not cursor:
                    break
            self.memberships[user] = channels
        return self.memberships[user]

    def _thread(self, channel: str, message_ts: str) -> list[dict]:
        """The thread of a message, newest first like the history (its parent included)."""
        key = f"{channel}/{message_ts}"
        if key not in self.history:
            response = self.client.conversations_replies(
                channel=channel, ts=message_ts, limit=RECENT_MESSAGES
            )
            self.history[key] = list(reversed(response.get("messages", [])))
        return self.history[key]

    def _history(self, channel: str) -> list[dict]:
        if channel not in self.history:
            response = self.client.conversations_history(channel=channel, limit=RECENT_MESSAGES)
            self.history[channel] = list(response.get("messages", []))
        return self.history[channel]
