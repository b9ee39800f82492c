"""The Slack Web API client that the bot and the worker share.

Built with no retry handlers of its own: a connection error after Slack accepted a post would
make slack_sdk post again. Temporal retries activities instead, and the bot answers Slack's
own retries.
"""

import contextlib
from collections.abc import AsyncIterator

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from threadchat import telemetry


class CountingWebClient(AsyncWebClient):
    """A Web API client that counts every error Slack answers, by its name, for operators."""

    async def api_call(self, api_method: str, **kwargs):  # type: ignore[override]
        try:
            return await super().api_call(api_method, **kwargs)
        except SlackApiError as err:
            status = err.response.status_code
            telemetry.record_error(
                "SlackRateLimited" if status == 429 else f"Slack:{err.response.get('error')}"
            )
            raise


# Per call. With a session of its own, slack_sdk applies the session's timeout, not its own.
HTTP_TIMEOUT_SECONDS = 10


def make_client(
    token: str, api_url: str, session: aiohttp.ClientSession | None = None
) -> AsyncWebClient:
    return CountingWebClient(
        token=token,
        base_url=api_url,
        retry_handlers=[],
        timeout=HTTP_TIMEOUT_SECONDS,
        session=session,
    )


def http_session() -> aiohttp.ClientSession:
    """One pool of connections to Slack. Without a session of its own, slack_sdk opens a new
    one, and so a new TLS connection, for every call; a streamed reply makes several calls a
    second."""
    return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=HTTP_TIMEOUT_SECONDS))


@contextlib.asynccontextmanager
async def pooled_client(token: str, api_url: str) -> AsyncIterator[AsyncWebClient]:
    """A client that keeps its connections open for as long as it is used."""
    async with http_session() as session:
        yield make_client(token, api_url, session)
