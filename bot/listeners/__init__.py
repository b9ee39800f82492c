"""Slack listeners, grouped by feature. Each parses, hands over to Temporal, and acks."""

from slack_bolt.async_app import AsyncApp

from bot.conversations import Conversations
from bot.listeners import ending, messages


def register_listeners(app: AsyncApp, conversations: Conversations) -> None:
    ending.register(app, conversations)
    messages.register(app, conversations)  # last: it holds the catch-all event listener
