"""The Temporal worker: the conversation workflow and every activity, wired together."""

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

from slack_sdk.web.async_client import AsyncWebClient
from temporalio.client import Client
from temporalio.worker import Worker

from activities import slack as slack_activities
from activities.bedrock import BedrockActivities
from activities.budgets import BudgetActivities
from activities.conversations import ConversationActivities
from activities.replies import ReplyActivities
from activities.slack import SlackActivities
from threadchat import telemetry
from threadchat.config import Settings
from workflows.budget import TokenBudgetWorkflow
from workflows.conversation import ConversationWorkflow

log = logging.getLogger(__name__)

# Bedrock calls block a thread each; this bounds concurrent model calls per worker.
MAX_CONCURRENT_ACTIVITIES = 64


def build_worker(
    client: Client,
    settings: Settings,
    *,
    slack_client: AsyncWebClient | None = None,
    bedrock_client: Any = None,
) -> Worker:
    """A worker for `settings.temporal.task_queue`. Tests pass their own clients."""
    bedrock = BedrockActivities(settings.bedrock, bedrock_client)
    slack_client = slack_client or slack_activities.make_client(
        settings.slack.bot_token or "", settings.slack.api_url
    )
    slack = SlackActivities(slack_client)
    replies = ReplyActivities(bedrock, slack_client)
    conversations = ConversationActivities(client, settings.conversation)
    budgets = BudgetActivities(client, settings.temporal.task_queue, settings.token_limits)
    return Worker(
        client,
        task_queue=settings.temporal.task_queue,
        workflows=[ConversationWorkflow, TokenBudgetWorkflow],
        activities=[
            bedrock.generate_reply,
            bedrock.summarize_conversation,
            replies.stream_reply,
            slack.post_message,
            slack.describe_users,
            slack.notify_ended,
            conversations.open_conversation,
            budgets.check_budget,
            budgets.charge_tokens,
        ],
        activity_executor=ThreadPoolExecutor(MAX_CONCURRENT_ACTIVITIES),
        max_concurrent_activities=MAX_CONCURRENT_ACTIVITIES,
        # A dead worker's sticky queue would otherwise hold the next workflow task for 10 s.
        sticky_queue_schedule_to_start_timeout=timedelta(seconds=3),
        # On SIGTERM, running activities get this long to finish before being cancelled.
        graceful_shutdown_timeout=timedelta(seconds=25),
    )


async def run_worker(worker: Worker, stop: asyncio.Event) -> None:
    """Run until `stop` is set, then drain gracefully."""
    async with worker:
        log.info("worker polling task queue %s", worker.task_queue)
        counting = asyncio.create_task(count_active_conversations(worker.client))
        await stop.wait()
        counting.cancel()
        log.info("worker draining")


async def count_active_conversations(client: Client, every: float = 30) -> None:
    """Keep the active-conversations gauge current from Temporal's visibility."""
    query = "WorkflowType = 'ConversationWorkflow' AND ExecutionStatus = 'Running'"
    while True:
        try:
            telemetry.metrics.active_conversations.set((await client.count_workflows(query)).count)
        except Exception as err:  # visibility hiccups must not stop the worker
            log.debug("could not count conversations: %s", err)
        await asyncio.sleep(every)
