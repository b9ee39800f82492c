"""Agent sessions: Slack's Stop button on a thread's session."""

import logging

from slack_bolt.async_app import AsyncApp, AsyncBoltContext

from bot.conversations import Conversations
from threadchat.config import SlackSettings

log = logging.getLogger(__name__)


def register(app: AsyncApp, conversations: Conversations, settings: SlackSettings) -> None:
    @app.event("agent_session_stopped")
    async def session_stopped(event: dict, context: AsyncBoltContext) -> None:
        """Acknowledged so that Slack does not retry it; the turn in flight runs to its end
        (stopping it is not built yet), and the session leaves `processing` with it."""
        log.info("agent session stopped; the turn in flight finishes")
