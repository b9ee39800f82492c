"""Slack's Real-time Search (`assistant.search.context`) for the local Slack, over its own
messages, as the person an action token was issued for may see them.

A message event's `action_token` stands for its author: `issue(user)` makes one (the stack and
the playground put it on the events they send), and a search with it sees public channels,
and private channels, group DMs and DMs only where that person is a member (DMs with the app:
theirs, "D" + their id without its "U"). Without a known action token the search is refused
(`invalid_action_token`), as Slack refuses a bot token's search without one; `refuse_with`
makes every search fail with that error (a workspace without the API: `feature_not_enabled`).
Matching is plain: messages holding any of the query's words, most words first, newest first.
"""

import itertools
import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from devtools.slack import LocalSlack

Json = dict[str, Any]
DEFAULT_LIMIT = 20
MAX_LIMIT = 50
CHANNEL_TYPES = ("public_channel", "private_channel", "mpim", "im")
_WORD = re.compile(r"[a-z0-9]{2,}")


class LocalSearch:
    def __init__(self, slack: "LocalSlack") -> None:
        self.slack = slack
        self.tokens: dict[str, str] = {}  # action token -> the user it acts for
        self.private: set[str] = set()  # C… channels that are private (G… always are)
        self.mpims: set[str] = set()
        self.refuse_with: str | None = None
        self._serial = itertools.count(1)

    def issue(self, user: str) -> str:
        """An action token for a message `user` sent, as Slack puts it on the event."""
        token = f"{next(self._serial)}.{abs(hash(user)) % 10**8}.act{user.lower()}"
        self.tokens[token] = user
        return token

    def channel_type(self, channel: str) -> str:
        if channel.startswith("D"):
            return "im"
        if channel in self.mpims:
            return "mpim"
        if channel.startswith("G") or channel in self.private:
            return "private_channel"
        return "public_channel"

    def may_see(self, user: str, channel: str) -> bool:
        if self.channel_type(channel) == "public_channel":
            return True
        if channel == "D" + user.removeprefix("U"):
            return True
        return user in self.slack.members.get(channel, set())

    def context(self, params: Json) -> Json:
        """The method: `query`, `action_token`, `channel_types`, `limit`, `include_bots`."""
        from devtools.slack import SlackError

        if self.refuse_with:
            raise SlackError(self.refuse_with)
        query = str(params.get("query") or "").strip()
        if not query:
            raise SlackError("invalid_arguments", detail="query is required")
        user = self.tokens.get(str(params.get("action_token") or ""))
        if user is None:
            raise SlackError("invalid_action_token")
        types = str(params.get("channel_types") or "public_channel").split(",")
        if not set(types) <= set(CHANNEL_TYPES):
            raise SlackError("invalid_arguments", detail=f"channel_types: {types}")
        limit = min(int(params.get("limit") or DEFAULT_LIMIT), MAX_LIMIT)
        include_bots = str(params.get("include_bots")).lower() in ("true", "1")
        wanted = set(_WORD.findall(query.lower()))
        found = []
        for channel, messages in self.slack._channels.items():
            if self.channel_type(channel) not in types or not self.may_see(user, channel):
                continue
            for message in messages.values():
                is_bot = bool(message.get("bot_id"))
                if is_bot and not include_bots:
                    continue
                hits = len(wanted & set(_WORD.findall(str(message.get("text") or "").lower())))
                if hits:
                    found.append((hits, float(message["ts"]), channel, message, is_bot))
        found.sort(key=lambda item: (-item[0], -item[1]))
        results = [
            {
                "author_user_id": message.get("user") or message.get("bot_id"),
                "team_id": self.slack.team_id,
                "channel_id": channel,
                "message_ts": message["ts"],
                "content": message.get("text") or "",
                "is_author_bot": is_bot,
                "permalink": self.slack._chat_get_permalink(
                    {"channel": channel, "message_ts": message["ts"]}
                )["permalink"],
            }
            for _, _, channel, message, is_bot in found[:limit]
        ]
        return {"results": {"messages": results}, "response_metadata": {"next_cursor": ""}}
