"""The Temporal workers: the conversation workflow and every activity, wired together.

Model calls poll a task queue of their own, so that Temporal's task-queue rate limit holds
Bedrock's quota across every worker, and a Bedrock backlog never delays Slack work. Tool calls
(MCP servers and built-in tools) poll a third, so a slow tool delays neither."""

import asyncio
import atexit
import contextlib
import functools
import logging
import os
import shutil
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

from slack_sdk.web.async_client import AsyncWebClient
from temporalio.client import Client
from temporalio.common import VersioningBehavior, WorkerDeploymentVersion
from temporalio.worker import Worker, WorkerDeploymentConfig

from activities.bedrock import BedrockActivities
from activities.budgets import BudgetActivities
from activities.channel_context import ChannelReader
from activities.conversations import ChannelDirectory, ConversationActivities
from activities.files import SlackFiles
from activities.knowledge import KnowledgeTool
from activities.knowledge import make_client as knowledge_client
from activities.memory import MemoryActivities, MemoryTool
from activities.replies import ReplyActivities
from activities.sessions import AgentSessions
from activities.slack import SlackActivities
from activities.slack_search import SlackSearchTool
from activities.tools import BuiltinTool, ToolActivities, ToolsDirectory
from threadchat import telemetry
from threadchat.config import Settings, load_tools_file
from threadchat.slack_client import make_client
from workflows.budget import TokenBudgetWorkflow
from workflows.conversation import ConversationWorkflow
from workflows.memory import MemoryWorkflow

log = logging.getLogger(__name__)

MAX_CONCURRENT_ACTIVITIES = 64
# Tool calls at once per worker: mostly waiting on servers, each stdio call a process.
MAX_CONCURRENT_TOOL_CALLS = 32
GRACEFUL_SHUTDOWN = timedelta(seconds=25)
STOP_WITHIN = timedelta(seconds=1)


def keep_bytecode() -> None:
    """Make sure compiled workflow modules are cached somewhere. The workflow sandbox imports
    the workflow module afresh for every workflow it loads; with no bytecode cache (as under
    PYTHONDONTWRITEBYTECODE, common in container images, or a read-only install) each load
    compiles its source again: 7.6 ms of CPU per new conversation instead of 1.9. The cache
    goes to a directory of this process's own, removed at exit."""
    source = os.path.dirname(sys.modules[ConversationWorkflow.__module__].__file__ or "")
    if sys.pycache_prefix or not (sys.dont_write_bytecode or not os.access(source, os.W_OK)):
        return
    sys.pycache_prefix = tempfile.mkdtemp(prefix="threadchat-bytecode-")
    sys.dont_write_bytecode = False
    atexit.register(shutil.rmtree, sys.pycache_prefix, ignore_errors=True)


def build_workers(
    client: Client,
    settings: Settings,
    *,
    slack_client: AsyncWebClient | None = None,
    bedrock_client: Any = None,
) -> list[Worker]:
    """The main worker (conversations, Slack, budgets), the model-call worker and the tools
    worker, on their three task queues. Tests pass their own clients."""
    keep_bytecode()
    token = settings.slack.bot_token or ""
    bedrock = BedrockActivities(
        settings.bedrock,
        bedrock_client,
        files=SlackFiles(token, settings.slack.api_url),
        channels=ChannelReader(token, settings.slack.api_url),
    )
    channels = ChannelDirectory(settings.channels_file, settings.channels)
    slack_client = slack_client or make_client(
        settings.slack.bot_token or "", settings.slack.api_url
    )
    # Whether Slack takes agent sessions here is learnt once per worker, by both.
    sessions = AgentSessions(slack_client)
    slack = SlackActivities(slack_client, prompts_for=channels.prompts, sessions=sessions)
    replies = ReplyActivities(bedrock, slack_client, sessions=sessions)
    tools = ToolsDirectory(settings.tools_file, settings.tools, load_tools_file)
    conversations = ConversationActivities(client, settings, channels, tools.current)
    budgets = BudgetActivities(client, settings.temporal.task_queue, settings.token_limits)
    model_calls = [
        bedrock.generate_reply,
        bedrock.summarize_conversation,
        bedrock.name_conversation,
        replies.stream_reply,
    ]
    main = Worker(
        client,
        task_queue=settings.temporal.task_queue,
        workflows=[ConversationWorkflow, TokenBudgetWorkflow, MemoryWorkflow],
        activities=[
            slack.post_message,
            slack.describe_users,
            slack.read_thread,
            slack.notify_ended,
            slack.post_private,
            slack.mark_stopped,
            slack.ask_approval,
            slack.settle_approval,
            slack.greet,
            slack.set_title,
            conversations.open_conversation,
            budgets.check_budget,
            budgets.charge_tokens,
            MemoryActivities(client).memories_of,
        ],
        max_concurrent_activities=MAX_CONCURRENT_ACTIVITIES,
        deployment_config=deployment_config(settings),
        # A dead worker's sticky queue would otherwise hold the next workflow task for 10 s.
        sticky_queue_schedule_to_start_timeout=timedelta(seconds=3),
        # On SIGTERM, running activities get this long to finish before being cancelled.
        graceful_shutdown_timeout=GRACEFUL_SHUTDOWN,
    )
    calls = settings.bedrock.max_concurrent_calls
    model = Worker(
        client,
        task_queue=settings.temporal.bedrock_task_queue,
        activities=model_calls,
        activity_executor=ThreadPoolExecutor(calls, thread_name_prefix="bedrock"),
        max_concurrent_activities=calls,
        # Enforced by the server across every worker of the queue: one Bedrock quota. The
        # server's bucket lets a short burst through; each worker also paces its own calls.
        max_task_queue_activities_per_second=settings.bedrock.max_calls_per_second,
        max_activities_per_second=settings.bedrock.max_calls_per_second,
        deployment_config=deployment_config(settings),
        graceful_shutdown_timeout=GRACEFUL_SHUTDOWN,
        # A Stop reaches a streaming answer with the answer to its heartbeat: one a second
        # at most (not 80% of the heartbeat timeout), so it stops within about a second.
        max_heartbeat_throttle_interval=STOP_WITHIN,
    )
    tool_calls = ToolActivities(
        tools, builtin_tools(settings, tools, client=client, slack_client=slack_client)
    )
    # Always polled, tools file or not: a conversation that asks for its catalog gets an
    # (empty) answer instead of waiting on a queue nobody polls.
    tool_worker = Worker(
        client,
        task_queue=settings.temporal.tools_task_queue,
        activities=[tool_calls.list_tools, tool_calls.call_tool],
        max_concurrent_activities=MAX_CONCURRENT_TOOL_CALLS,
        deployment_config=deployment_config(settings),
        graceful_shutdown_timeout=GRACEFUL_SHUTDOWN,
    )
    return [main, model, tool_worker]


def builtin_tools(
    settings: Settings,
    tools: ToolsDirectory,
    *,
    client: Client,
    slack_client: AsyncWebClient,
) -> list[BuiltinTool]:
    """The built-in tools (`knowledge`, `slack_search`, `memory`) this worker serves: each
    is constructed here (see activities/tools.py for the protocol), and a tools file may
    then name it in `channels:`."""
    return [
        # The channel's bases as the tools file has them at the call, not at the catalog.
        KnowledgeTool(
            functools.partial(knowledge_client, settings.bedrock),
            lambda channel: tools.current().knowledge_for(channel),
        ),
        SlackSearchTool(slack_client),
        MemoryTool(client, settings.temporal.task_queue),
    ]


def deployment_config(settings: Settings) -> WorkerDeploymentConfig | None:
    """Worker Versioning, when TEMPORAL_DEPLOYMENT_NAME and TEMPORAL_WORKER_BUILD_ID are set:
    conversations are Pinned to the build they started on (docs/upgrading.md)."""
    temporal = settings.temporal
    if not temporal.deployment_name:
        return None
    return WorkerDeploymentConfig(
        version=WorkerDeploymentVersion(temporal.deployment_name, temporal.build_id),
        use_worker_versioning=True,
        default_versioning_behavior=VersioningBehavior.PINNED,
    )


async def run_workers(workers: list[Worker], stop: asyncio.Event) -> None:
    """Run until `stop` is set, then drain gracefully."""
    async with contextlib.AsyncExitStack() as running:
        for worker in workers:
            await running.enter_async_context(worker)
            log.info("worker polling task queue %s", worker.task_queue)
        counting = asyncio.create_task(count_active_conversations(workers[0].client))
        await stop.wait()
        counting.cancel()
        log.info("worker draining")
        # Both queues drain at once: a long reply must not hold up the other's drain.
        await asyncio.gather(*(worker.shutdown() for worker in workers))


async def count_active_conversations(client: Client, every: float = 30) -> None:
    """Keep the active-conversations gauge current from Temporal's visibility."""
    query = "WorkflowType = 'ConversationWorkflow' AND ExecutionStatus = 'Running'"
    while True:
        try:
            telemetry.metrics.active_conversations.set((await client.count_workflows(query)).count)
        except Exception as err:  # visibility hiccups must not stop the worker
            log.debug("could not count conversations: %s", err)
        await asyncio.sleep(every)
