"""Channel names for the App Home: looked up with conversations.info, kept for an hour."""

import logging

from cachetools import TTLCache
from slack_sdk.web.async_client import AsyncWebClient

log = logging.getLogger(__name__)

# Channels are renamed rarely; a Home opened often should not cost a call per channel each time.
NAMES_KEPT = 10_000
NAMES_TTL_SECONDS = 3600


class ChannelNames:
    """Names of channels by id; a channel that cannot be looked up has none."""

    def __init__(self) -> None:
        self.names: TTLCache[str, str] = TTLCache(maxsize=NAMES_KEPT, ttl=NAMES_TTL_SECONDS)

    async def of(self, client: AsyncWebClient, channels: list[str]) -> dict[str, str]:
        found: dict[str, str] = {}
        for channel in dict.fromkeys(channels):
            if channel in self.names:
                found[channel] = self.names[channel]
                continue
            try:
                response = await client.conversations_info(channel=channel)
            except Exception as err:  # a nicety: the Home is published without the name
                log.info("no name for a channel: %s", type(err).__name__)
                continue
            name = (response.get("channel") or {}).get("name")
            if isinstance(name, str) and name:
                found[channel] = self.names[channel] = name
        return found
