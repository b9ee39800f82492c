"""threadchat: durable Slack thread conversations on Temporal and Amazon Bedrock.

This package holds what the bot, the workflow and the activities share: the configuration,
the payload types that cross Temporal boundaries, and small pure modules (ids, durations,
context budgeting, dedupe, user-facing texts).
"""
