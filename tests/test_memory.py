"""Each person's memory: the MemoryWorkflow on the real dev server, the `memory` tools that
change it, the App Home that lists it (through the bot, with signed payloads), and the
operator's `forget --user`."""

import asyncio
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
from temporalio import activity, workflow
from temporalio.client import WorkflowUpdateFailedError
from temporalio.common import RetryPolicy
from temporalio.service import RPCError
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from activities.memory import (
    FORGET_UPDATE,
    MEMORIES_QUERY,
    MEMORY_WORKFLOW,
    REMEMBER_UPDATE,
    MemoryActivities,
    MemoryTool,
)
from bot import home
from devtools.playground import Playground
from devtools.stack import SIGNING_SECRET, TEAM, eventually
from threadchat import memories, prompt, texts
from threadchat.commands import operator
from threadchat.ids import memory_id
from threadchat.model import (
    ForgetRequest,
    Memory,
    MemoryLookup,
    MemoryStart,
    RememberRequest,
    ThreadRef,
    ToolCall,
    ToolOutcome,
)
from workflows.memory import NOT_YOURS, MemoryWorkflow


def person() -> str:
    """A fresh user id: memory workflows outlive a test on the shared dev server."""
    return "U" + uuid.uuid4().hex[:10].upper()


def tool_call(user: str, name: str, key: str = "", **arguments) -> ToolCall:
    return ToolCall(
        tool_use_id=f"tu-{uuid.uuid4().hex[:6]}",
        server="memory",
        name=name,
        arguments=arguments,
        idempotency_key=key or uuid.uuid4().hex,
        thread=ThreadRef(TEAM, "C0MEMORY", "1700000000.000100"),
        user=user,
    )


async def stored(stack, user: str) -> list[Memory]:
    return await MemoryActivities(stack.client).memories_of(MemoryLookup(TEAM, user))


# -- pure ----------------------------------------------------------------------------------


def test_a_memory_is_one_short_line():
    assert memories.clipped("  likes\n\n short   answers ") == "likes short answers"
    long = memories.clipped("x" * 1000)
    assert len(long) == memories.MAX_CHARS and long.endswith("…")


def test_the_oldest_memories_go_past_the_cap():
    many = [Memory(f"m{i}", str(i), 0.0) for i in range(memories.MAX_MEMORIES + 5)]
    kept = memories.kept(many)
    assert len(kept) == memories.MAX_MEMORIES and kept[0].id == "m5" and kept[-1] == many[-1]


def test_the_memory_block_is_labelled_user_context_with_ids_and_dates():
    at = datetime(2026, 12, 1, 9, tzinfo=UTC).timestamp()
    block = prompt.memory_block("U0ALICE", [Memory("m1", "prefers <b>tables</b>", at)])
    assert block.startswith('<context kind="memory" user="U0ALICE" about="')
    assert "[m1] (2026-12-01) prefers &lt;b&gt;tables&lt;/b&gt;" in block
    assert block.endswith("</context>")
    assert prompt.memory_block("U0ALICE", []) == ""


def test_the_activities_name_the_memory_workflow_as_it_is_defined():
    definition = workflow._Definition.must_from_class(MemoryWorkflow)
    assert definition.name == MEMORY_WORKFLOW
    assert {REMEMBER_UPDATE, FORGET_UPDATE} <= set(definition.updates)
    assert MEMORIES_QUERY in definition.queries


# -- the workflow and the tools, on the dev server --------------------------------------------


async def test_remember_then_recall_shows_it_dated(make_stack):
    stack = await make_stack(bot=False)
    tool = MemoryTool(stack.client, stack.settings.temporal.task_queue)
    alice = person()
    outcome = await tool.call(tool_call(alice, "remember", text="Alice prefers answers as tables"))
    assert outcome.status == "success" and "[m1]" in outcome.text
    [memory] = await stored(stack, alice)
    assert memory.text == "Alice prefers answers as tables"
    assert abs(memory.at - datetime.now(UTC).timestamp()) < 60
    recalled = await tool.call(tool_call(alice, "recall"))
    assert "[m1]" in recalled.text and "tables" in recalled.text
    thread = ThreadRef(TEAM, "C0MEMORY", "1.0")
    assert [s.name for s in tool.specs(thread, alice, None)] == ["remember", "recall", "forget"]
    assert tool.specs(thread, "", None) == []


async def test_a_retried_remember_stores_once(make_stack):
    """A worker killed mid-call retries the activity with the same key: one memory."""
    stack = await make_stack(bot=False)
    tool = MemoryTool(stack.client, stack.settings.temporal.task_queue)
    alice = person()
    first = await tool.call(tool_call(alice, "remember", key="turn-7/tu-1", text="uses vim"))
    again = await tool.call(tool_call(alice, "remember", key="turn-7/tu-1", text="uses vim"))
    assert first.text == again.text
    # The same words under another key are nothing new either.
    await tool.call(tool_call(alice, "remember", text="uses  vim"))
    assert [m.text for m in await stored(stack, alice)] == ["uses vim"]


async def test_forget_one_then_all(make_stack):
    stack = await make_stack(bot=False)
    tool = MemoryTool(stack.client, stack.settings.temporal.task_queue)
    alice = person()
    for text in ("in Berlin", "on the payments team", "likes short answers"):
        await tool.call(tool_call(alice, "remember", text=text))
    one = await tool.call(tool_call(alice, "forget", memory_id="m2"))
    assert one.status == "success" and "1 memory" in one.text
    assert [m.id for m in await stored(stack, alice)] == ["m1", "m3"]
    missing = await tool.call(tool_call(alice, "forget", memory_id="m2"))
    assert missing.status == "error"
    unsaid = await tool.call(tool_call(alice, "forget"))
    assert unsaid.status == "error"  # neither an id nor all: nothing goes
    everything = await tool.call(tool_call(alice, "forget", all=True))
    assert "2 memories" in everything.text
    assert await stored(stack, alice) == []


async def test_only_the_owner_changes_a_memory(make_stack):
    stack = await make_stack(bot=False)
    tool = MemoryTool(stack.client, stack.settings.temporal.task_queue)
    alice, mallory = person(), person()
    await tool.call(tool_call(alice, "remember", text="the launch code is in the vault"))
    handle = stack.client.get_workflow_handle(memory_id(TEAM, alice))
    with pytest.raises(WorkflowUpdateFailedError) as refused:
        await handle.execute_update(MemoryWorkflow.forget, ForgetRequest(mallory))
    assert refused.value.cause.type == NOT_YOURS
    with pytest.raises(WorkflowUpdateFailedError):
        await handle.execute_update(
            MemoryWorkflow.remember, RememberRequest(mallory, "Alice is wrong", "k")
        )
    assert len(await stored(stack, alice)) == 1
    # Mallory's own tools reach only Mallory's (empty) memory.
    recalled = await tool.call(tool_call(mallory, "recall"))
    assert recalled.text == "Nothing remembered yet."


async def test_at_most_fifty_memories_the_oldest_dropped(make_stack):
    stack = await make_stack(bot=False)
    tool = MemoryTool(stack.client, stack.settings.temporal.task_queue)
    alice = person()
    for i in range(memories.MAX_MEMORIES + 2):
        await tool.remember(TEAM, alice, f"fact number {i}", key=f"k{i}")
    kept = await stored(stack, alice)
    assert len(kept) == memories.MAX_MEMORIES
    assert kept[0].text == "fact number 2" and kept[-1].id == f"m{memories.MAX_MEMORIES + 2}"


# -- App Home, through the bot ------------------------------------------------------------------


def forget_buttons(view: dict) -> list[str]:
    return [
        b["accessory"]["value"]
        for b in view["blocks"]
        if b.get("accessory", {}).get("action_id") == home.FORGET_ACTION
    ]


async def test_app_home_lists_memories_and_forgets_them(make_stack):
    stack = await make_stack()
    tool = MemoryTool(stack.client, stack.settings.temporal.task_queue)
    alice, bob = person(), person()
    view = await stack.open_home(alice)
    assert texts.HOME_MEMORY_NONE in str(view) and not forget_buttons(view)
    for text in ("prefers tables", "works from Lisbon"):
        await tool.call(tool_call(alice, "remember", text=text))
    await tool.call(tool_call(bob, "remember", text="Bob's secret"))
    view = await stack.open_home(alice)
    assert forget_buttons(view) == ["m1", "m2"]
    assert "works from Lisbon" in str(view) and "Bob's secret" not in str(view)

    assert await stack.click_home(home.FORGET_ACTION, "m1", user=alice) == 200
    await eventually(
        lambda: forget_buttons(stack.slack.home_views[alice]) == ["m2"], what="m1 gone"
    )
    assert [m.id for m in await stored(stack, alice)] == ["m2"]

    # Bob clicks Forget everything on his own Home: only his memory goes.
    await stack.open_home(bob)
    assert await stack.click_home(home.FORGET_ALL_ACTION, "all", user=bob) == 200
    await eventually(
        lambda: texts.HOME_MEMORY_NONE in str(stack.slack.home_views[bob]), what="Bob's gone"
    )
    assert [m.id for m in await stored(stack, alice)] == ["m2"]
    assert await stored(stack, bob) == []


# -- the operator ----------------------------------------------------------------------------


async def test_forget_user_deletes_the_memory_workflow(make_stack):
    stack = await make_stack(bot=False)
    tool = MemoryTool(stack.client, stack.settings.temporal.task_queue)
    alice, bob = person(), person()
    await tool.call(tool_call(alice, "remember", text="allergic to peanuts"))
    await tool.call(tool_call(alice, "remember", text="on call on Mondays"))
    await tool.call(tool_call(bob, "remember", text="keep me"))

    async def listed() -> bool:
        query = f"WorkflowId = '{memory_id(TEAM, alice)}'"
        return bool([r async for r in stack.client.list_workflows(query)])

    await eventually(listed, what="visibility lists the memory")
    [forgotten] = await operator.forget_memory(stack.client, alice)
    assert (forgotten.workflow_id, forgotten.memories) == (memory_id(TEAM, alice), 2)
    with pytest.raises(RPCError):
        await stack.client.get_workflow_handle(memory_id(TEAM, alice)).describe()
    assert await stored(stack, alice) == []
    assert len(await stored(stack, bob)) == 1
    assert await operator.forget_memory(stack.client, alice, TEAM) == []
    with pytest.raises(operator.OperatorError):
        await operator.forget_memory(stack.client, "alice")


async def test_a_busy_memory_continues_as_new_with_its_memories_and_keys(make_stack):
    stack = await make_stack(bot=False)
    tool = MemoryTool(stack.client, stack.settings.temporal.task_queue)
    alice = person()
    handle = await stack.client.start_workflow(
        MemoryWorkflow.run,
        MemoryStart(TEAM, alice, history_cap=20),
        id=memory_id(TEAM, alice),
        task_queue=stack.settings.temporal.task_queue,
    )
    for i in range(8):
        await tool.remember(TEAM, alice, f"fact {i}", key=f"k{i}")

    async def runs() -> int:
        query = f"WorkflowId = '{handle.id}'"
        return len([r async for r in stack.client.list_workflows(query)])

    await eventually(lambda: _more_than(runs, 1), what="a second run")
    await tool.remember(TEAM, alice, "fact 0 again", key="k0")  # a key from an earlier run
    assert [m.text for m in await stored(stack, alice)] == [f"fact {i}" for i in range(8)]


async def _more_than(count, n: int) -> bool:
    return await count() > n


async def test_a_remember_retried_by_temporal_after_it_landed_stores_once(make_stack):
    """The worst moment for a worker to die: the update landed, the activity's result did not.
    Temporal retries the activity with the same tool call (same idempotency key)."""
    stack = await make_stack(bot=False)
    tool = MemoryTool(stack.client, stack.settings.temporal.task_queue)
    alice = person()
    attempts = []

    @activity.defn(name="call_memory_tool")
    async def call_memory_tool(call: ToolCall) -> ToolOutcome:
        attempts.append(activity.info().attempt)
        outcome = await tool.call(call)
        if activity.info().attempt == 1:
            raise RuntimeError("worker lost before its result was recorded")
        return outcome

    queue = f"memory-{uuid.uuid4().hex[:8]}"
    async with Worker(
        stack.client,
        task_queue=queue,
        workflows=[CallOnce],
        activities=[call_memory_tool],
        workflow_runner=UnsandboxedWorkflowRunner(),
    ):
        outcome = await stack.client.execute_workflow(
            CallOnce.run,
            tool_call(alice, "remember", key="turn-3/tu-9", text="prefers Portuguese"),
            id=queue,
            task_queue=queue,
        )
    assert attempts == [1, 2] and outcome.status == "success"
    assert [m.text for m in await stored(stack, alice)] == ["prefers Portuguese"]


@workflow.defn(sandboxed=False)
class CallOnce:
    @workflow.run
    async def run(self, call: ToolCall) -> ToolOutcome:
        return await workflow.execute_activity(
            "call_memory_tool",
            call,
            result_type=ToolOutcome,
            start_to_close_timeout=timedelta(seconds=10),
            retry_policy=RetryPolicy(initial_interval=timedelta(milliseconds=50)),
        )


async def test_the_forget_command_says_what_it_removed(make_stack, temporal_server):
    stack = await make_stack(bot=False)
    tool = MemoryTool(stack.client, stack.settings.temporal.task_queue)
    alice = person()
    await tool.call(tool_call(alice, "remember", text="has a dog called Rex"))
    env = {
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", "/tmp"),
        "TEMPORAL_ADDRESS": temporal_server[0].address,
    }

    def forget(*args: str) -> subprocess.CompletedProcess:
        command = [str(Path(sys.executable).with_name("threadchat")), "forget", *args]
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)

    done = await asyncio.to_thread(forget, "--user", alice, "--team", TEAM)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == (
        f"deleted {memory_id(TEAM, alice)}: 1 memory, 1 run(s), from Temporal"
    )
    again = await asyncio.to_thread(forget, "--user", alice, "--team", TEAM)
    assert again.stdout.strip() == f"{alice} has no memory in Temporal: nothing to delete"
    neither = await asyncio.to_thread(forget)
    assert neither.returncode == 2 and "LINK_OR_ID or --user" in neither.stderr


async def test_memories_that_cannot_be_read_leave_the_turn_without_them(client):
    """No worker answers for this memory (its queue is unpolled): the look-up gives up in
    seconds with nothing, instead of failing the turn that asked."""
    alice = person()
    handle = await client.start_workflow(
        MemoryWorkflow.run,
        MemoryStart(TEAM, alice),
        id=memory_id(TEAM, alice),
        task_queue=f"nobody-{uuid.uuid4().hex[:8]}",
    )
    started = asyncio.get_running_loop().time()
    assert await MemoryActivities(client).memories_of(MemoryLookup(TEAM, alice)) == []
    assert asyncio.get_running_loop().time() - started < 10
    await handle.terminate()


async def test_the_playground_shows_memories_on_the_home_tab_and_forgets_them(make_stack):
    stack = await make_stack()
    tool = MemoryTool(stack.client, stack.settings.temporal.task_queue)
    dana = person()
    stack.slack.add_user(dana, "dana")
    await tool.call(tool_call(dana, "remember", text="Dana reviews PRs on Tuesdays"))
    playground = Playground(stack.slack, stack.bot_url, SIGNING_SECRET)
    url = await playground.start()
    try:
        async with aiohttp.ClientSession(base_url=url) as http:
            async with http.post("/api/home/open", json={"user": dana}) as response:
                assert (await response.json())["ok"]
            await eventually(
                lambda: forget_buttons(stack.slack.home_views.get(dana) or {"blocks": []}),
                what="Dana's memories on her Home",
            )
            click = {"user": dana, "action_id": home.FORGET_ALL_ACTION, "value": "all"}
            async with http.post("/api/home/action", json=click) as response:
                assert (await response.json())["ok"]
            await eventually(
                lambda: texts.HOME_MEMORY_NONE in str(stack.slack.home_views[dana]),
                what="forgotten",
            )
            # Messages typed in the playground carry an action token for their author.
            async with http.post(
                "/api/messages",
                json={"channel": playground.channels[0].id, "user": dana, "text": "hi"},
            ) as response:
                assert (await response.json())["ok"]
            assert dana in stack.slack.search.tokens.values()
    finally:
        await playground.stop()
    assert await stored(stack, dana) == []
