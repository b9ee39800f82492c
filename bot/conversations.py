"""The bot's door into Temporal: start, message, find and end conversations.

Each call is one RPC of a few milliseconds that needs no live worker, so listeners can do it
before acking and still answer Slack well within its 3 seconds.
"""

import asyncio
import contextvars
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from temporalio.client import (
    Client,
    WorkflowExecution,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from threadchat import telemetry
from threadchat.ids import budget_id, conversation_id, memory_id, thread_of
from threadchat.model import (
    ApprovalDecision,
    AssistantThread,
    ConversationStart,
    ConversationStatus,
    EndRequest,
    Feedback,
    ForgetRequest,
    Memory,
    MessageRevision,
    RegenerateRequest,
    StopRequest,
    ThreadRef,
    UserMessage,
)
from threadchat.temporal import (
    CONVERSATION_STARTED,
    CONVERSATION_TITLE,
    SLACK_CHANNEL,
    SLACK_PARTICIPANTS,
)
from workflows.budget import TokenBudgetWorkflow
from workflows.conversation import ConversationWorkflow
from workflows.memory import MemoryWorkflow

_SLACK_ID = re.compile(r"^[A-Z0-9]+$")
# Slack waits 3 s for the ack, counted from when it sent the request. The hand-over gets what
# is left of that when the listener runs (a burst can queue requests inside the bot), less a
# margin for the answer's way back; past it, fail fast with a 5xx so Slack delivers again.
SLACK_ACK_SECONDS = 3.0
SAFETY_MARGIN_SECONDS = 0.5
# Too little time for an RPC to succeed: answer 5xx at once instead.
MIN_RPC_SECONDS = 0.05
# Continue-as-new closes one run and opens the next, and visibility records the two apart: for
# a moment a running conversation shows only its closed run (5 of 5,996 polls during 60 hops,
# more under load). Runs that hopped this recently count, once a describe confirms the chain.
RECENT_HOP = timedelta(minutes=1)
# Calls made outside a Slack request (none today) get this long.
HAND_OVER_TIMEOUT = timedelta(seconds=SLACK_ACK_SECONDS - SAFETY_MARGIN_SECONDS)
_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "hand_over_deadline", default=None
)


@dataclass
class OpenConversation:
    """A running conversation, as the App Home lists it."""

    workflow_id: str
    thread: ThreadRef
    title: str
    started: datetime


class TooLateToHandOver(Exception):
    """The request waited so long in the bot that no RPC could finish before Slack gives up."""


def request_arrived(at: float) -> None:
    """Note when the Slack request being handled arrived (time.monotonic())."""
    _deadline.set(at + SLACK_ACK_SECONDS - SAFETY_MARGIN_SECONDS)


def rpc_timeout() -> timedelta:
    """What is left of this request's hand-over budget."""
    due = _deadline.get()
    if due is None:
        return HAND_OVER_TIMEOUT
    left = due - time.monotonic()
    if left < MIN_RPC_SECONDS:
        raise TooLateToHandOver(f"{left:.3f} s left of Slack's ack window")
    return timedelta(seconds=left)


def _conversation(thread: ThreadRef) -> str:
    """The thread's workflow id, also noted for the log lines of this request."""
    workflow_id = conversation_id(thread.team, thread.channel, thread.thread_ts)
    telemetry.current_conversation.set(workflow_id)
    return workflow_id


class Conversations:
    def __init__(self, client: Client, task_queue: str):
        self.client = client
        self.task_queue = task_queue

    async def start_or_continue(self, thread: ThreadRef, message: UserMessage) -> None:
        """Signal-with-start: the message starts the thread's conversation if none is running."""
        await self._start(thread, "user_message", message, message.user)

    async def open_assistant(self, thread: ThreadRef, opened: AssistantThread) -> None:
        """The assistant panel's thread opened: its conversation starts, and greets."""
        await self._start(thread, "assistant_opened", opened, opened.user)

    async def change_context(self, thread: ThreadRef, changed: AssistantThread) -> bool:
        """The panel's user views another channel; False if the thread has no conversation."""
        return await self._signal(thread, ConversationWorkflow.context_changed, changed)

    async def viewing_changed(self, team: str, channel: str, changed: AssistantThread) -> int:
        """Tell the user's running conversations in their DM with the app (`channel`) what
        they view now; how many were told."""
        if not (_SLACK_ID.fullmatch(channel) and _SLACK_ID.fullmatch(changed.user)):
            return 0
        where = (
            f"{SLACK_CHANNEL.name} = '{channel}' AND {SLACK_PARTICIPANTS.name} = '{changed.user}'"
        )
        prefix = conversation_id(team, channel, "")
        threads = [
            ThreadRef(team=team, channel=channel, thread_ts=e.id[len(prefix) :])
            for e in await self._running(where)
            if e.id.startswith(prefix)
        ]
        told = await asyncio.gather(
            *(self._signal(t, ConversationWorkflow.viewing_changed, changed) for t in threads)
        )
        return sum(told)

    async def _start(self, thread: ThreadRef, signal: str, arg: object, user: str) -> None:
        await self.client.start_workflow(
            ConversationWorkflow.run,
            ConversationStart(thread=thread),
            id=_conversation(thread),
            task_queue=self.task_queue,
            start_signal=signal,
            start_signal_args=[arg],
            rpc_timeout=rpc_timeout(),
            search_attributes=TypedSearchAttributes(
                [
                    SearchAttributePair(SLACK_CHANNEL, thread.channel),
                    SearchAttributePair(SLACK_PARTICIPANTS, [user]),
                    # Only a new run takes these, so this is when the conversation began.
                    SearchAttributePair(CONVERSATION_STARTED, datetime.now(UTC)),
                ]
            ),
        )

    async def open_for(self, team: str, user: str) -> list[OpenConversation]:
        """The running conversations `user` takes part in, newest first (the App Home)."""
        if not _SLACK_ID.fullmatch(user):
            return []
        found = []
        for execution in await self._running(f"{SLACK_PARTICIPANTS.name} = '{user}'"):
            thread = thread_of(execution.id)
            if thread is None or thread.team != team:
                continue
            attributes = execution.typed_search_attributes
            found.append(
                OpenConversation(
                    workflow_id=execution.id,
                    thread=thread,
                    title=attributes.get(CONVERSATION_TITLE) or "",
                    started=attributes.get(CONVERSATION_STARTED) or execution.start_time,
                )
            )
        # With history encrypted the title is no search attribute: the conversation tells it.
        # Only panel threads (in the app's DMs) are titled.
        untitled = [c for c in found if not c.title and c.thread.channel.startswith("D")]
        statuses = await asyncio.gather(
            *(self._status(c.workflow_id) for c in untitled), return_exceptions=True
        )
        for conversation, status in zip(untitled, statuses, strict=True):
            if isinstance(status, ConversationStatus):
                conversation.title = status.title
        return sorted(found, key=lambda c: c.started, reverse=True)

    async def _status(self, workflow_id: str) -> ConversationStatus:
        handle = self.client.get_workflow_handle(workflow_id)
        return await handle.query(ConversationWorkflow.status, rpc_timeout=rpc_timeout())

    async def tokens_today(self, team: str, user: str) -> int | None:
        """What `user`'s replies used today (UTC); None when it cannot be told."""
        day = datetime.now(UTC).date().isoformat()
        handle = self.client.get_workflow_handle(budget_id(team, user, day))
        try:
            return await handle.query(TokenBudgetWorkflow.tokens_used, rpc_timeout=rpc_timeout())
        except RPCError as err:
            return 0 if err.status == RPCStatusCode.NOT_FOUND else None
        except Exception:  # a budget no worker answers for: unknown, not zero
            return None

    async def memories_of(self, team: str, user: str) -> list[Memory] | None:
        """What `user` asked the bot to remember; None when it cannot be told."""
        handle = self.client.get_workflow_handle(memory_id(team, user))
        try:
            return await handle.query(MemoryWorkflow.memories, rpc_timeout=rpc_timeout())
        except RPCError as err:
            return [] if err.status == RPCStatusCode.NOT_FOUND else None
        except Exception:  # a memory no worker answers for: unknown, not empty
            return None

    async def forget_memory(self, team: str, request: ForgetRequest) -> bool:
        """Forget one of the requester's own memories (or all): the workflow is theirs by
        id, and it checks the request's user too. False when it could not be done."""
        handle = self.client.get_workflow_handle(memory_id(team, request.user))
        try:
            await handle.execute_update(MemoryWorkflow.forget, request, rpc_timeout=rpc_timeout())
        except (RPCError, WorkflowUpdateFailedError, WorkflowUpdateRPCTimeoutOrCancelledError):
            return False
        return True

    async def wait_closed(self, workflow_id: str, timeout: float) -> bool:
        """Whether the conversation `workflow_id` closed (summary written, or failed) within
        `timeout` seconds. A long poll, for use outside any Slack request."""
        handle = self.client.get_workflow_handle(workflow_id)
        try:
            await asyncio.wait_for(handle.result(), timeout)
        except WorkflowFailureError:
            return True
        except (TimeoutError, RPCError):
            return False
        return True

    async def continue_only(self, thread: ThreadRef, message: UserMessage) -> bool:
        """Add a message to a running conversation; False if the thread has none."""
        return await self._signal(thread, ConversationWorkflow.user_message, message)

    async def revise(self, thread: ThreadRef, revision: MessageRevision) -> bool:
        """Tell a running conversation that one of its messages was edited or deleted."""
        return await self._signal(thread, ConversationWorkflow.revise, revision)

    async def end(self, thread: ThreadRef, request: EndRequest) -> bool:
        """Ask the thread's conversation to end; False if it has none running."""
        return await self._signal(thread, ConversationWorkflow.end, request)

    async def latest_for(self, team: str, channel: str, user: str) -> ThreadRef | None:
        """The most recently started running conversation `user` takes part in, in `channel`."""
        if not (_SLACK_ID.fullmatch(channel) and _SLACK_ID.fullmatch(user)):
            return None
        where = f"{SLACK_CHANNEL.name} = '{channel}' AND {SLACK_PARTICIPANTS.name} = '{user}'"
        prefix = conversation_id(team, channel, "")
        running = [e for e in await self._running(where) if e.id.startswith(prefix)]
        if not running:
            return None
        # Not the run's start time: continue-as-new renews that.
        latest = max(
            running,
            key=lambda execution: (
                execution.typed_search_attributes.get(CONVERSATION_STARTED) or execution.start_time
            ),
        )
        return ThreadRef(team=team, channel=channel, thread_ts=latest.id[len(prefix) :])

    async def _running(self, where: str) -> list[WorkflowExecution]:
        """Running conversations matching `where`, one execution each, including any caught
        between two runs by continue-as-new."""
        since = (datetime.now(UTC) - RECENT_HOP).isoformat()
        query = (
            f"WorkflowType = 'ConversationWorkflow' AND {where} AND (ExecutionStatus = 'Running'"
            f" OR (ExecutionStatus = 'ContinuedAsNew' AND CloseTime > '{since}'))"
        )
        by_id: dict[str, WorkflowExecution] = {}
        async for execution in self.client.list_workflows(query, rpc_timeout=rpc_timeout()):
            if execution.id not in by_id or execution.status == WorkflowExecutionStatus.RUNNING:
                by_id[execution.id] = execution
        hopped = [e.id for e in by_id.values() if e.status != WorkflowExecutionStatus.RUNNING]
        describes = (
            self.client.get_workflow_handle(i).describe(rpc_timeout=rpc_timeout()) for i in hopped
        )
        for current in await asyncio.gather(*describes):
            by_id[current.id] = current
        return [e for e in by_id.values() if e.status == WorkflowExecutionStatus.RUNNING]

    async def includes(self, thread: ThreadRef, user: str) -> bool:
        """Whether `user` takes part in the thread's running conversation."""
        handle = self.client.get_workflow_handle(_conversation(thread))
        try:
            description = await handle.describe(rpc_timeout=rpc_timeout())
        except RPCError as err:
            if err.status == RPCStatusCode.NOT_FOUND:
                return False
            raise
        return user in (description.typed_search_attributes.get(SLACK_PARTICIPANTS) or [])

    async def regenerate(self, thread: ThreadRef, request: RegenerateRequest) -> str:
        """Ask the conversation to answer its latest turn again. "" when accepted, else why
        not: a refusal type of the workflow's, "Ended", or "Unavailable"."""
        # An update, not a signal: the workflow says at once whether it will regenerate.
        return await self._update(thread, ConversationWorkflow.regenerate, request)

    async def decide(self, thread: ThreadRef, decision: ApprovalDecision) -> str:
        """Approve or deny a tool call: "" when taken, else why not, as for `regenerate`."""
        return await self._update(thread, ConversationWorkflow.decide, decision)

    async def _update(self, thread: ThreadRef, update, arg) -> str:
        handle = self.client.get_workflow_handle(_conversation(thread))
        try:
            await handle.execute_update(update, arg, rpc_timeout=rpc_timeout())
        except WorkflowUpdateFailedError as err:
            cause = err.cause
            return cause.type or "" if isinstance(cause, ApplicationError) else "Unavailable"
        except WorkflowUpdateRPCTimeoutOrCancelledError:
            return "Unavailable"  # no worker answered in time
        except RPCError as err:
            return "Ended" if err.status == RPCStatusCode.NOT_FOUND else "Unavailable"
        return ""

    async def stop(self, thread: ThreadRef, request: StopRequest) -> bool:
        """Stop the answer being written; False if no conversation runs in the thread."""
        return await self._signal(thread, ConversationWorkflow.stop, request)

    async def feedback(self, thread: ThreadRef, feedback: Feedback) -> bool:
        """Record a rating on a reply; False if the conversation has ended."""
        return await self._signal(thread, ConversationWorkflow.feedback, feedback)

    async def _signal(self, thread: ThreadRef, signal, arg) -> bool:
        handle = self.client.get_workflow_handle(_conversation(thread))
        try:
            await handle.signal(signal, arg, rpc_timeout=rpc_timeout())
        except RPCError as err:
            if err.status == RPCStatusCode.NOT_FOUND:
                return False
            raise
        return True
