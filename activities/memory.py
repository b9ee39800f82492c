"""The built-in `memory` tools (remember, recall, forget) and the `memories_of` activity.

Memories live in one MemoryWorkflow per person (workflows/memory.py, named here by name:
activities import no workflow). A call changes only the memory of the person whose turn it
is (ToolCall.user), never anyone else's: the workflow id comes from that person, and the
workflow checks the user its updates carry.
"""

import asyncio
import logging
from datetime import timedelta

from temporalio import activity
from temporalio.client import Client, WithStartWorkflowOperation
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.service import RPCError, RPCStatusCode

from threadchat import memories as rules
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
    ToolSpec,
)

log = logging.getLogger(__name__)

# workflows/memory.py, by name (tests/test_memory.py checks them against the definition).
MEMORY_WORKFLOW = "MemoryWorkflow"
REMEMBER_UPDATE = "remember"
FORGET_UPDATE = "forget"
MEMORIES_QUERY = "memories"

SERVER = "memory"
RPC_TIMEOUT = timedelta(seconds=5)

SPECS = [
    (
        "remember",
        "Remember something the person you are answering asked you to remember about "
        "themselves (a preference, a fact, how they like answers). One short sentence, in the "
        "third person. Only when they ask you to remember it.",
        {
            "type": "object",
            "properties": {"text": {"type": "string", "description": "what to remember"}},
            "required": ["text"],
        },
    ),
    (
        "recall",
        "List what the person you are answering asked you to remember, with each memory's id "
        "and date.",
        {"type": "object", "properties": {}},
    ),
    (
        "forget",
        "Forget one memory of the person you are answering (its id, as recall lists it), or "
        "all of them (all: true). Only when they ask you to forget.",
        {
            "type": "object",
            "properties": {
                "memory_id": {"type": "string", "description": "the memory's id, e.g. m3"},
                "all": {"type": "boolean", "description": "forget every memory"},
            },
        },
    ),
]


class MemoryTool:
    """The `memory` built-in: three tools over the asker's own MemoryWorkflow."""

    name = SERVER

    def __init__(self, client: Client, task_queue: str):
        self.client = client
        self.task_queue = task_queue

    def specs(self, thread: ThreadRef, user: str = "", settings: object = None) -> list[ToolSpec]:
        """The three tools, offered wherever the tools file lists `memory`; a turn with no
        asker (none to remember for) gets none."""
        if not user:
            return []
        return [
            ToolSpec(server=SERVER, name=name, description=text, input_schema=schema)
            for name, text, schema in SPECS
        ]

    async def call(self, call: ToolCall) -> ToolOutcome:
        def outcome(text: str, status: str = "success") -> ToolOutcome:
            return ToolOutcome(tool_use_id=call.tool_use_id, status=status, text=text)

        if not call.user:
            return outcome("No one to remember for: this turn has no asker.", "error")
        team = call.thread.team
        if call.name == "remember":
            text = str(call.arguments.get("text") or "").strip()
            if not text:
                return outcome("Nothing to remember: the text is empty.", "error")
            memory = await self.remember(team, call.user, text, call.idempotency_key)
            return outcome(f"Remembered as [{memory.id}]: {memory.text}")
        if call.name == "recall":
            found = await memories_of(self.client, team, call.user)
            return outcome(rules.listed(found) if found else "Nothing remembered yet.")
        if call.name == "forget":
            which = str(call.arguments.get("memory_id") or "").strip()
            if not which and call.arguments.get("all") is not True:
                return outcome("Say which memory to forget (memory_id), or all: true.", "error")
            gone = await forget(self.client, team, call.user, ForgetRequest(call.user, which))
            if which and not gone:
                return outcome(f"There is no memory {which}.", "error")
            return outcome(f"Forgot {len(gone)} memor{'y' if len(gone) == 1 else 'ies'}.")
        return outcome(f"Unknown memory tool {call.name!r}.", "error")

    async def remember(self, team: str, user: str, text: str, key: str) -> Memory:
        """Update-with-start: a person's first memory opens their workflow."""
        start = WithStartWorkflowOperation(
            MEMORY_WORKFLOW,
            MemoryStart(team=team, user=user),
            id=memory_id(team, user),
            task_queue=self.task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        )
        return await self.client.execute_update_with_start_workflow(
            REMEMBER_UPDATE,
            RememberRequest(user=user, text=text, key=key),
            start_workflow_operation=start,
            result_type=Memory,
            rpc_timeout=RPC_TIMEOUT,
        )


async def memories_of(client: Client, team: str, user: str) -> list[Memory]:
    """A person's memories, oldest first; none when they never asked to remember anything."""
    handle = client.get_workflow_handle(memory_id(team, user))
    try:
        # The client retries some errors with a fresh rpc_timeout each (CI saw a look-up
        # take two, 10 s): the bound is on the whole look-up.
        async with asyncio.timeout(RPC_TIMEOUT.total_seconds()):
            return await handle.query(
                MEMORIES_QUERY, result_type=list[Memory], rpc_timeout=RPC_TIMEOUT
            )
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            return []
        raise


async def forget(client: Client, team: str, user: str, request: ForgetRequest) -> list[Memory]:
    """Drop one memory or all of a person's; what went. Nothing when they have none."""
    handle = client.get_workflow_handle(memory_id(team, user))
    try:
        return await handle.execute_update(
            FORGET_UPDATE, request, result_type=list[Memory], rpc_timeout=RPC_TIMEOUT
        )
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            return []
        raise


class MemoryActivities:
    """What a conversation reads of its asker's memory, to show it in their own turns."""

    def __init__(self, client: Client):
        self.client = client

    @activity.defn
    async def memories_of(self, lookup: MemoryLookup) -> list[Memory]:
        """Never fails (fit for a local activity): a turn whose asker's memories cannot be
        read right now goes ahead without them."""
        try:
            return await memories_of(self.client, lookup.team, lookup.user)
        except Exception as err:
            log.warning("could not read a person's memories: %s", type(err).__name__)
            return []
