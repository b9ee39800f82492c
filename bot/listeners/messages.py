"""Mentions and thread messages: start or continue the thread's conversation."""

import asyncio
import logging
import re

from slack_bolt.async_app import AsyncApp, AsyncBoltContext
from slack_sdk.web.async_client import AsyncWebClient

from bot.conversations import Conversations
from bot.parsing import Incoming, parse_message_event, parse_revision
from threadchat import texts
from threadchat.config import SlackSettings

log = logging.getLogger(__name__)


def register(app: AsyncApp, conversations: Conversations, settings: SlackSettings) -> None:
    refusals: set[asyncio.Task] = set()

    async def refuse(client: AsyncWebClient, incoming: Incoming) -> None:
        try:
            await client.chat_postEphemeral(
                channel=incoming.thread.channel,
                user=incoming.message.user,
                thread_ts=incoming.thread.thread_ts,
                text=texts.NOT_ENABLED,
            )
        except Exception as err:
            log.warning("could not tell a user the bot is not enabled: %s", type(err).__name__)

    async def hand_over(event: dict, context: AsyncBoltContext, *, is_mention: bool) -> None:
        revised = parse_revision(event, context.team_id or "", context.bot_user_id)
        if revised is not None:
            await conversations.revise(*revised)  # nothing to do in a thread without one
            return
        incoming = parse_message_event(
            event,
            context.team_id or "",
            context.bot_user_id,
            is_mention_event=is_mention,
            bot_id=context.bot_id,
        )
        if incoming is None:
            return
        # Another app's post answers to the channel allowlist only: it is nobody's request.
        if not (
            settings.allows_channel(incoming.thread.channel)
            if incoming.message.app
            else settings.allows(
                incoming.thread.channel, incoming.message.user, guest=incoming.guest
            )
        ):
            log.info("refused a message outside the allowlists: %s", incoming.thread)
            # Only someone who asked for the bot hears why; other thread messages are left
            # out of the conversation quietly. The reply goes out after the ack, not before.
            if incoming.may_start:
                task = asyncio.create_task(refuse(context.client, incoming))
                refusals.add(task)
                task.add_done_callback(refusals.discard)
            return
        if incoming.may_start:
            await conversations.start_or_continue(incoming.thread, incoming.message)
        elif not await conversations.continue_only(incoming.thread, incoming.message):
            log.debug("message in a thread without a conversation: %s", incoming.thread)

    # Bolt acks events itself; with process_before_response the ack goes out only after the
    # hand-over, so a Temporal outage turns into a 5xx and Slack delivers the event again.
    @app.event("app_mention")
    async def on_mention(event: dict, context: AsyncBoltContext) -> None:
        await hand_over(event, context, is_mention=True)

    @app.event("message")
    async def on_message(event: dict, context: AsyncBoltContext) -> None:
        await hand_over(event, context, is_mention=False)

    # Any other event the app is subscribed to gets a 200: without a listener Bolt answers
    # 404, and Slack would retry it.
    @app.event(re.compile(".*"))
    async def on_other_event() -> None:
        return None
