"""Ending conversations: the /endchat command and the "End chat" message shortcut."""

import logging

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncRespond

from bot.conversations import Conversations
from bot.parsing import parse_end_command, parse_end_shortcut, user_team
from threadchat import texts
from threadchat.config import SlackSettings
from threadchat.ids import parse_thread_link
from threadchat.model import EndRequest, ThreadRef

log = logging.getLogger(__name__)


def register(app: AsyncApp, conversations: Conversations, settings: SlackSettings) -> None:
    @app.command("/endchat")
    async def end_chat_command(ack: AsyncAck, command: dict) -> None:
        """Slash commands can't run in threads, so /endchat ends the user's latest
        conversation in the channel, or the thread of a link given as its text."""
        parsed = parse_end_command(command)
        if parsed is None:
            await ack(text=texts.BAD_COMMAND, response_type="ephemeral")
            return
        team, user, link = parsed.team, parsed.user, parsed.link
        if not settings.allows(parsed.channel, user):
            await ack(text=texts.NOT_ENABLED, response_type="ephemeral")
            return
        if link:
            location = parse_thread_link(link)
            if location is None:
                await ack(text=texts.BAD_THREAD_LINK, response_type="ephemeral")
                return
            thread: ThreadRef | None = ThreadRef(team, location.channel, location.thread_ts)
            # A link is not proof of access: only participants may end a conversation this
            # way, and others learn nothing about whether it exists.
            if not await conversations.includes(thread, user):
                thread = None
        else:
            thread = await conversations.latest_for(team, parsed.channel, user)
        if thread is None or not await conversations.end(thread, EndRequest(user, "command")):
            await ack(
                text=texts.NOTHING_TO_END_IN_THREAD if link else texts.NOTHING_TO_END,
                response_type="ephemeral",
            )
            return
        await ack(text=texts.ended_link(parsed.team_domain, thread), response_type="ephemeral")

    @app.shortcut("end_chat")
    async def end_chat_shortcut(ack: AsyncAck, shortcut: dict, respond: AsyncRespond) -> None:
        """The in-thread way to end: a message shortcut knows the message's thread."""
        await ack()
        parsed = parse_end_shortcut(shortcut)
        if parsed is None:
            return
        thread, user = parsed
        guest = user_team(shortcut) not in ("", thread.team)
        if not settings.allows(thread.channel, user, guest=guest):
            answer = texts.NOT_ENABLED
        # Only participants may end it, as with /endchat: others learn nothing more. The
        # workflow checks again, for every other way an end request could reach it.
        elif await conversations.includes(thread, user) and await conversations.end(
            thread, EndRequest(user, "shortcut")
        ):
            answer = texts.ENDING_FROM_SHORTCUT
        else:
            answer = texts.NOTHING_TO_END_IN_THREAD
        try:
            # A message shortcut's ack cannot carry text; its response_url is the way to
            # answer the person who used it.
            await respond(answer, response_type="ephemeral")
        except Exception as err:
            log.warning("could not answer the End chat shortcut: %s", type(err).__name__)
