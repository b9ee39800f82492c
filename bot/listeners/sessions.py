"""Agent sessions: Slack's Stop button on a thread's session."""

import logging

from slack_bolt.async_app import AsyncApp, AsyncBoltContext

from bot.conversations import Conversations
from bot.parsing import parse_session_stopped
from threadchat.config import SlackSettings

log = logging.getLogger(__name__)


def register(app: AsyncApp, conversations: Conversations, settings: SlackSettings) -> None:
    @app.event("agent_session_stopped")
    async def session_stopped(event: dict, body: dict, context: AsyncBoltContext) -> None:
        """Stop clicked: the thread's conversation stops the answer it is writing (the
        workflow decides whether the clicker may). A thread with no conversation has
        nothing to stop."""
        parsed = parse_session_stopped(event, context.team_id or "", body.get("event_id") or "")
        if parsed is None:
            log.warning("agent_session_stopped without a thread or user; ignored")
            return
        thread, request = parsed
        if not await conversations.stop(thread, request):
            log.info("Stop for a thread with no conversation running")
