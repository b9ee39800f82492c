"""Slack's AI-app surface: the agent messaging experience (the Messages tab, what the user
views), the older assistant panel's threads, and the App Home tab."""

import asyncio
import contextvars
import logging

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncBoltContext

from bot import home
from bot.channel_names import ChannelNames
from bot.conversations import Conversations
from bot.parsing import parse_app_context, parse_assistant_event
from threadchat import texts
from threadchat.config import SlackSettings
from threadchat.ids import thread_of
from threadchat.model import AssistantThread, EndRequest, ForgetRequest, TokenLimits

log = logging.getLogger(__name__)

# How long the App Home waits for an ended conversation's summary before it stops waiting to
# publish the view again (the user's next visit to the tab shows it then).
ENDING_WAIT_SECONDS = 300


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

    @app.event("app_context_changed")
    async def viewing_changed(event: dict, context: AsyncBoltContext) -> None:
        """Agent messaging: the user now views another channel or message. Their
        conversations in the Messages tab read it (if they may) from their next turn."""
        viewing = parse_app_context(event)
        if viewing is None or not context.team_id:
            return
        if not settings.allows(viewing.channel, viewing.user):
            return
        await conversations.viewing_changed(
            context.team_id,
            viewing.channel,
            AssistantThread(viewing.user, viewing.context_channel, viewing.context_message_ts),
        )

    async def suggest_prompts(context: AsyncBoltContext, channel: str, user: str) -> None:
        """Agent messaging: the Messages tab opened; prompts above its composer (Slack
        keeps them there, so a repeated event only sets the same ones again)."""
        if not settings.allows(channel, user):
            return
        try:
            await context.client.assistant_threads_setSuggestedPrompts(
                channel_id=channel,
                title=texts.PROMPTS_TITLE,
                prompts=texts.messages_tab_prompts(),
            )
        except Exception as err:
            log.warning("could not suggest prompts: %s", type(err).__name__)

    channel_names = ChannelNames()
    republishing: set[asyncio.Task] = set()

    async def publish_home(
        context: AsyncBoltContext,
        team: str,
        user: str,
        ending: frozenset[str] = frozenset(),
        closed: frozenset[str] = frozenset(),
    ) -> None:
        """The user's open conversations (visibility), their tokens today, an End button
        each. Best effort: the event is acked whatever Slack or Temporal say. `ending` are
        listed as ending; `closed` are left out even if visibility still shows them running."""
        try:
            listed = [
                c for c in await conversations.open_for(team, user) if c.workflow_id not in closed
            ]
            channels = sorted({c.thread.channel for c in listed})
            view = home.home_view(
                user,
                listed,
                await conversations.tokens_today(team, user),
                limits.per_user,
                # Bolt's cached auth.test: no call of our own per Home opened.
                (context.authorize_result and context.authorize_result.team) or "app",
                await channel_names.of(context.client, [c for c in channels if c[:1] != "D"]),
                ending,
                await conversations.memories_of(team, user),
            )
            await context.client.views_publish(user_id=user, view=view)
        except Exception as err:
            log.warning("could not publish the App Home: %s", type(err).__name__)

    async def publish_when_closed(
        context: AsyncBoltContext, team: str, user: str, workflow_id: str
    ) -> None:
        if await conversations.wait_closed(workflow_id, ENDING_WAIT_SECONDS):
            await publish_home(context, team, user, closed=frozenset({workflow_id}))

    @app.event("app_home_opened")
    async def home_opened(event: dict, context: AsyncBoltContext) -> None:
        user, channel = event.get("user"), event.get("channel")
        if not isinstance(user, str) or not context.team_id:
            return
        if event.get("tab") == "messages" and isinstance(channel, str):
            await suggest_prompts(context, channel, user)
        elif event.get("tab") == "home":
            await publish_home(context, context.team_id, user)

    @app.action(home.FORGET_ACTION)
    @app.action(home.FORGET_ALL_ACTION)
    async def forget_from_home(ack: AsyncAck, body: dict, context: AsyncBoltContext) -> None:
        """Forget one memory, or all: only the clicker's own (their workflow, which checks
        the request's user again). The Home is published again to show what is left."""
        await ack()
        user = (body.get("user") or {}).get("id")
        action = (body.get("actions") or [{}])[0]
        if not isinstance(user, str) or not context.team_id:
            return
        which = "" if action.get("action_id") == home.FORGET_ALL_ACTION else action.get("value")
        if not isinstance(which, str) or (
            action.get("action_id") == home.FORGET_ACTION and not which
        ):
            return
        await conversations.forget_memory(context.team_id, ForgetRequest(user, which))
        await publish_home(context, context.team_id, user)

    @app.action(home.END_ACTION)
    async def end_from_home(ack: AsyncAck, body: dict, context: AsyncBoltContext) -> None:
        """Only a participant's own conversation ends. The view shows it ending at once, and
        is published again when the workflow has closed: ending takes a summary, which may
        take longer than Slack waits for the ack."""
        await ack()
        user = (body.get("user") or {}).get("id")
        actions = body.get("actions") or [{}]
        workflow_id = str(actions[0].get("value") or "")
        thread = thread_of(workflow_id)
        if not isinstance(user, str) or thread is None or thread.team != context.team_id:
            return
        if not await conversations.includes(thread, user):
            await publish_home(context, thread.team, user)
            return
        await conversations.end(thread, EndRequest(requested_by=user, via="home"))
        await publish_home(context, thread.team, user, ending=frozenset({workflow_id}))
        # A context of its own: the wait outlives this request's hand-over deadline.
        task = asyncio.create_task(
            publish_when_closed(context, thread.team, user, workflow_id),
            context=contextvars.Context(),
        )
        republishing.add(task)
        task.add_done_callback(republishing.discard)
