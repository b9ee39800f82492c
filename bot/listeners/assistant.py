"""Slack's AI-app surface: the assistant panel's threads, and the App Home tab."""

import logging

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncBoltContext

from bot import home
from bot.conversations import Conversations
from bot.parsing import parse_assistant_event
from threadchat.config import SlackSettings
from threadchat.ids import thread_of
from threadchat.model import AssistantThread, EndRequest, TokenLimits

log = logging.getLogger(__name__)


def register(
    app: AsyncApp, conversations: Conversations, settings: SlackSettings, limits: TokenLimits
) -> None:
    @app.event("assistant_thread_started")
    async def panel_opened(event: dict, context: AsyncBoltContext) -> None:
        """The panel's thread is a conversation from its first moment: it greets. Slack's
        retries of the event reach the same conversation, which greets once."""
        panel = parse_assistant_event(event, context.team_id or "")
        if panel is None or not settings.allows(panel.thread.channel, panel.user):
            return
        await conversations.open_assistant(
            panel.thread, AssistantThread(panel.user, panel.context_channel)
        )

    @app.event("assistant_thread_context_changed")
    async def context_changed(event: dict, context: AsyncBoltContext) -> None:
        panel = parse_assistant_event(event, context.team_id or "")
        if panel is None or not settings.allows(panel.thread.channel, panel.user):
            return
        await conversations.change_context(
            panel.thread, AssistantThread(panel.user, panel.context_channel)
        )

    async def publish_home(context: AsyncBoltContext, team: str, user: str) -> None:
        """The user's open conversations (visibility), their tokens today, an End button
        each. Best effort: the event is acked whatever Slack or Temporal say."""
        try:
            view = home.home_view(
                user,
                await conversations.open_for(team, user),
                await conversations.tokens_today(team, user),
                limits.per_user,
                # Bolt's cached auth.test: no call of our own per Home opened.
                (context.authorize_result and context.authorize_result.team) or "app",
            )
            await context.client.views_publish(user_id=user, view=view)
        except Exception as err:
            log.warning("could not publish the App Home: %s", type(err).__name__)

    @app.event("app_home_opened")
    async def home_opened(event: dict, context: AsyncBoltContext) -> None:
        user = event.get("user")
        if event.get("tab") != "home" or not isinstance(user, str) or not context.team_id:
            return
        await publish_home(context, context.team_id, user)

    @app.action(home.END_ACTION)
    async def end_from_home(ack: AsyncAck, body: dict, context: AsyncBoltContext) -> None:
        """Only a participant's own conversation ends; the view is then published again."""
        await ack()
        user = (body.get("user") or {}).get("id")
        actions = body.get("actions") or [{}]
        thread = thread_of(str(actions[0].get("value") or ""))
        if not isinstance(user, str) or thread is None or thread.team != context.team_id:
            return
        if await conversations.includes(thread, user):
            await conversations.end(thread, EndRequest(requested_by=user, via="home"))
        await publish_home(context, thread.team, user)
