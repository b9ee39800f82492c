"""Slack listeners, grouped by feature. Each parses, hands over to Temporal, and acks."""

from slack_bolt.async_app import AsyncApp

from bot.conversations import Conversations
from bot.listeners import assistant, ending, messages, replies, sessions
from threadchat.config import SlackSettings
from threadchat.model import TokenLimits


def register_listeners(
    app: AsyncApp, conversations: Conversations, settings: SlackSettings, limits: TokenLimits
) -> None:
    ending.register(app, conversations, settings)
    replies.register(app, conversations, settings)
    assistant.register(app, conversations, settings, limits)
    sessions.register(app, conversations, settings)
    messages.register(app, conversations, settings)  # last: it holds the catch-all event listener
