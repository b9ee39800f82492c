"""The buttons under each reply (Slack's 👍/👎 feedback buttons, and Regenerate), and on a
tool call waiting for approval (Approve, Deny)."""

import logging
import re

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncRespond

from bot.conversations import Conversations
from bot.parsing import parse_approval, parse_reply_action
from threadchat import actions, texts
from threadchat.config import SlackSettings
from threadchat.model import ApprovalDecision, Feedback, RegenerateRequest

log = logging.getLogger(__name__)


def register(app: AsyncApp, conversations: Conversations, settings: SlackSettings) -> None:
    async def answer(respond: AsyncRespond, text: str, thread_ts: str) -> None:
        """A note only the clicker sees; never replaces the message the button is on."""
        try:
            await respond(
                text, response_type="ephemeral", replace_original=False, thread_ts=thread_ts
            )
        except Exception as err:
            log.warning("could not answer a button click: %s", type(err).__name__)

    @app.action(actions.REGENERATE)
    async def regenerate(ack: AsyncAck, body: dict, respond: AsyncRespond) -> None:
        await ack()
        click = parse_reply_action(body)
        if click is None:
            return
        if not settings.allows(click.thread.channel, click.user, guest=click.guest):
            await answer(respond, texts.NOT_ENABLED, click.thread.thread_ts)
            return
        refusal = await conversations.regenerate(
            click.thread, RegenerateRequest(user=click.user, reply=click.reply)
        )
        if refusal:
            log.info("regenerate refused: %s", refusal)
            text = texts.REGENERATE_REFUSED.get(refusal)
            if refusal == "Ended":
                text = texts.CONVERSATION_OVER
            await answer(respond, text or texts.TRY_AGAIN, click.thread.thread_ts)

    # Slack's feedback buttons; the older 👍/👎 buttons on answers written before them.
    @app.action(re.compile(f"^({actions.FEEDBACK}|{actions.FEEDBACK_UP}|{actions.FEEDBACK_DOWN})$"))
    async def feedback(ack: AsyncAck, body: dict, respond: AsyncRespond) -> None:
        await ack()
        click = parse_reply_action(body)
        if click is None or click.action_id not in actions.RATINGS:
            return
        if not settings.allows(click.thread.channel, click.user, guest=click.guest):
            await answer(respond, texts.NOT_ENABLED, click.thread.thread_ts)
            return
        rating = actions.RATINGS[click.action_id]
        if not await conversations.feedback(
            click.thread, Feedback(user=click.user, reply=click.reply, rating=rating)
        ):
            await answer(respond, texts.FEEDBACK_TOO_LATE, click.thread.thread_ts)
            return
        await answer(respond, texts.FEEDBACK_THANKS[rating], click.thread.thread_ts)

    @app.action(re.compile(f"^({actions.TOOL_APPROVE}|{actions.TOOL_DENY})$"))
    async def decide(ack: AsyncAck, body: dict, respond: AsyncRespond) -> None:
        """The conversation decides who may approve (only the asker, once); anyone else
        learns why privately."""
        await ack()
        click = parse_approval(body)
        if click is None:
            return
        if not settings.allows(click.thread.channel, click.user, guest=click.guest):
            await answer(respond, texts.NOT_ENABLED, click.thread.thread_ts)
            return
        refusal = await conversations.decide(
            click.thread, ApprovalDecision(click.key, click.user, click.approve)
        )
        if refusal:
            log.info("approval click refused: %s", refusal)
            text = texts.APPROVAL_REFUSED.get(refusal) or texts.TRY_AGAIN
            await answer(respond, text, click.thread.thread_ts)
