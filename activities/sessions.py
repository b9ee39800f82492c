"""Agent sessions: what Slack shows of a conversation (processing, suspended, active, closed,
and its title) mirrors the workflow's state.

Every call is idempotent (setting the status or the title it already has changes nothing), so
activity retries may repeat it. Where Slack refuses `agents.sessions.*` (an app not declared
as an agent, an older workspace) the worker remembers it and uses the assistant thread's
status and title instead, as before sessions.
"""

import logging

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from threadchat.model import ThreadRef
from threadchat.texts import SUSPENDED, THINKING

log = logging.getLogger(__name__)

STATUSES = ("processing", "active", "suspended", "closed")
# Errors that say this app or workspace has no agent sessions, rather than that one call
# failed: after one of these the worker stops asking.
REFUSALS = {
    "unknown_method",
    "not_allowed_token_type",
    "missing_scope",
    "not_allowed",
    "feature_not_enabled",
    "app_not_agent",
}
# The assistant thread's status text for each session status ("" clears it).
FALLBACK_STATUS = {"processing": THINKING, "suspended": SUSPENDED, "active": "", "closed": ""}


class AgentSessions:
    """One per worker, shared by the activities that write to Slack."""

    def __init__(self, client: AsyncWebClient):
        self.client = client
        self.refused = False

    @property
    def stop_stream_status(self) -> str | None:
        """What the last chat.stopStream of an answer passes as `session_status`, so that the
        session leaves `processing` without a call of its own; None without sessions."""
        return None if self.refused else "active"

    async def set_status(
        self,
        thread: ThreadRef,
        status: str,
        *,
        initiator: str = "",
        text: str = "",
        title: str = "",
    ) -> None:
        """Raises SlackApiError for anything but a refusal of sessions. `text`: words a
        session has none for (a busy model), shown as the thread's status beside it."""
        if status not in STATUSES:
            raise ValueError(f"not a session status: {status}")
        if not self.refused:
            try:
                await self.client.agents_sessions_setStatus(
                    channel_id=thread.channel,
                    thread_ts=thread.thread_ts,
                    status=status,
                    initiator_user_id=initiator or None,
                    # Taken when the call creates the session: no rename of its own.
                    title=title or None,
                )
                if not text:
                    return
            except SlackApiError as err:
                self._check_refusal(err)
        await self.client.assistant_threads_setStatus(
            channel_id=thread.channel,
            thread_ts=thread.thread_ts,
            status=text or FALLBACK_STATUS[status],
        )

    async def rename(self, thread: ThreadRef, title: str) -> None:
        """Raises SlackApiError for anything but a refusal of sessions."""
        if not self.refused:
            try:
                await self.client.agents_sessions_rename(
                    channel_id=thread.channel, thread_ts=thread.thread_ts, title=title
                )
                return
            except SlackApiError as err:
                self._check_refusal(err)
        if not thread.channel.startswith("D"):
            return  # assistant threads are in DMs only: the title stays the workflow's
        await self.client.assistant_threads_setTitle(
            channel_id=thread.channel, thread_ts=thread.thread_ts, title=title
        )

    def _check_refusal(self, err: SlackApiError) -> None:
        error = err.response.get("error")
        if error not in REFUSALS:
            raise err
        if not self.refused:
            log.info("agent sessions refused (%s): using assistant thread status", error)
        self.refused = True
