"""Worker Versioning on the dev server, as docs/upgrading.md tells operators to roll out: a
conversation stays on the build it started on, new ones go to the current build, and a long
conversation moves to the current build at its next continue-as-new."""

import asyncio
import dataclasses

from temporalio.api.enums.v1 import RoutingConfigUpdateState
from temporalio.api.workflowservice.v1 import DescribeWorkerDeploymentRequest

from devtools.stack import TEAM, Stack, eventually
from devtools.temporal_server import temporal_cli
from threadchat.ids import conversation_id

DEPLOYMENT = "threadchat-test"


async def start_build(stack: Stack, build_id: str) -> None:
    """Both workers (conversations and model calls) of one build, on the stack's queues."""
    temporal = dataclasses.replace(
        stack.settings.temporal, deployment_name=DEPLOYMENT, build_id=build_id
    )
    await stack.start_worker(dataclasses.replace(stack.settings, temporal=temporal))


async def make_current(stack: Stack, address: str, build_id: str) -> None:
    """The operator's command (it fails until both queues of the build have been polled),
    then until the change reached the task queues: the command returns before it has, and a
    workflow started at once could still go to the old build (CI once saw it)."""

    async def done() -> bool:
        process = await asyncio.create_subprocess_exec(
            temporal_cli(),
            "worker",
            "deployment",
            "set-current-version",
            "--deployment-name",
            DEPLOYMENT,
            "--build-id",
            build_id,
            "--address",
            address,
            "--yes",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        return await process.wait() == 0

    await eventually(done, timeout=30, what=f"build {build_id} current")

    async def routed() -> bool:
        response = await stack.client.workflow_service.describe_worker_deployment(
            DescribeWorkerDeploymentRequest(namespace="default", deployment_name=DEPLOYMENT)
        )
        info = response.worker_deployment_info
        current = info.routing_config.current_deployment_version.build_id
        propagating = (
            info.routing_config_update_state
            == RoutingConfigUpdateState.ROUTING_CONFIG_UPDATE_STATE_IN_PROGRESS
        )
        return current == build_id and not propagating

    await eventually(routed, timeout=30, what=f"build {build_id} routed")


async def builds(stack: Stack, thread_ts: str, run_id: str | None = None) -> list[str]:
    """The build that completed each workflow task of a run (the latest by default)."""
    handle = stack.client.get_workflow_handle(
        conversation_id(TEAM, stack.channel, thread_ts), run_id=run_id
    )
    history = await handle.fetch_history()
    return [
        e.workflow_task_completed_event_attributes.deployment_version.build_id
        for e in history.events
        if e.HasField("workflow_task_completed_event_attributes")
    ]


async def runs(stack: Stack, thread_ts: str) -> list[str]:
    workflow_id = conversation_id(TEAM, stack.channel, thread_ts)
    found = [r async for r in stack.client.list_workflows(f"WorkflowId = '{workflow_id}'")]
    return [r.run_id for r in sorted(found, key=lambda r: r.start_time)]


async def test_conversations_stay_on_their_build_and_move_at_continue_as_new(
    temporal_server, make_stack
):
    server, _ = temporal_server
    # A small history cap: the old conversation continues as new after a few turns.
    stack = await make_stack(worker=False, history_event_cap=40)
    await start_build(stack, "A")
    await make_current(stack, server.address, "A")

    old = await stack.mention(stack.channel, "started on A")
    await stack.replies(stack.channel, old, 1)
    assert set(await builds(stack, old)) == {"A"}

    await start_build(stack, "B")
    await make_current(stack, server.address, "B")

    new = await stack.mention(stack.channel, "started on B")
    await stack.replies(stack.channel, new, 1)
    assert set(await builds(stack, new)) == {"B"}

    await stack.say(stack.channel, old, "still on A?")
    await stack.replies(stack.channel, old, 2)
    assert len(await runs(stack, old)) == 1
    assert set(await builds(stack, old)) == {"A"}  # Pinned: B never touched it

    # Turns until the history cap makes it continue as new; the new run starts on B.
    for turn in range(3, 12):
        if len(await runs(stack, old)) > 1:
            break
        await stack.say(stack.channel, old, f"turn {turn}")
        await stack.replies(stack.channel, old, turn)
    all_runs = await eventually(
        lambda: _more_than_one(stack, old), what="a continue-as-new of the old conversation"
    )
    assert set(await builds(stack, old, all_runs[0])) == {"A"}
    latest = all_runs[-1]
    assert await eventually(lambda: _builds_of(stack, old, latest), what="the new run's task")
    assert set(await builds(stack, old, latest)) == {"B"}

    answered = len(stack.slack.bot_replies(stack.channel, old))
    await stack.say(stack.channel, old, "answered by B")
    await stack.replies(stack.channel, old, answered + 1)
    assert set(await builds(stack, old, latest)) == {"B"}


async def _more_than_one(stack: Stack, thread_ts: str) -> list[str] | None:
    found = await runs(stack, thread_ts)
    return found if len(found) > 1 else None


async def _builds_of(stack: Stack, thread_ts: str, run_id: str) -> list[str]:
    return await builds(stack, thread_ts, run_id)
