"""The bot's door into Temporal: start, message, find and end conversations.

Each call is one RPC of a few milliseconds that needs no live worker, so listeners can do it
before acking and still answer Slack well within its 3 seconds.
"""

import contextvars
import re
import time
from datetime import UTC, datetime, timedelta

from temporalio.client import (
    Client,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from threadchat import telemetry
from threadchat.ids import conversation_id
from threadchat.model import (
    ConversationStart,
    EndRequest,
    Feedback,
    RegenerateRequest,
    ThreadRef,
    UserMessage,
)
from threadchat.temporal import CONVERSATION_STARTED, SLACK_CHANNEL, SLACK_PARTICIPANTS
from workflows.conversation import ConversationWorkflow

_SLACK_ID = re.compile(r"^[A-Z0-9]+$")
# Slack waits 3 s for the ack, counted from when it sent the request. The hand-over gets what
# is left of that when the listener runs (a burst can queue requests inside the bot), less a
# margin for the answer's way back; past it, fail fast with a 5xx so Slack delivers again.
SLACK_ACK_SECONDS = 3.0
SAFETY_MARGIN_SECONDS = 0.5
# Too little time for an RPC to succeed: answer 5xx at once instead.
MIN_RPC_SECONDS = 0.05
# Calls made outside a Slack request (none today) get this long.
HAND_OVER_TIMEOUT = timedelta(seconds=SLACK_ACK_SECONDS - SAFETY_MARGIN_SECONDS)
_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "hand_over_deadline", default=None
)


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
        await self.client.start_workflow(
            ConversationWorkflow.run,
            ConversationStart(thread=thread),
            id=_conversation(thread),
            task_queue=self.task_queue,
            start_signal="user_message",
            start_signal_args=[message],
            rpc_timeout=rpc_timeout(),
            search_attributes=TypedSearchAttributes(
                [
                    SearchAttributePair(SLACK_CHANNEL, thread.channel),
                    SearchAttributePair(SLACK_PARTICIPANTS, [message.user]),
                    # Only a new run takes these, so this is when the conversation began.
                    SearchAttributePair(CONVERSATION_STARTED, datetime.now(UTC)),
                ]
            ),
        )

    async def continue_only(self, thread: ThreadRef, message: UserMessage) -> bool:
        """Add a message to a running conversation; False if the thread has none."""
        return await self._signal(thread, ConversationWorkflow.user_message, message)

    async def end(self, thread: ThreadRef, request: EndRequest) -> bool:
        """Ask the thread's conversation to end; False if it has none running."""
        return await self._signal(thread, ConversationWorkflow.end, request)

    async def latest_for(self, team: str, channel: str, user: str) -> ThreadRef | None:
        """The most recently started running conversation `user` takes part in, in `channel`."""
        if not (_SLACK_ID.fullmatch(channel) and _SLACK_ID.fullmatch(user)):
            return None
        query = (
            f"WorkflowType = 'ConversationWorkflow' AND ExecutionStatus = 'Running' "
            f"AND {SLACK_CHANNEL.name} = '{channel}' AND {SLACK_PARTICIPANTS.name} = '{user}'"
        )
        prefix = conversation_id(team, channel, "")
        running = [
            execution
            async for execution in self.client.list_workflows(query, rpc_timeout=rpc_timeout())
            if execution.id.startswith(prefix)
        ]
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
        handle = self.client.get_workflow_handle(_conversation(thread))
        try:
            # An update, not a signal: the workflow says at once whether it will regenerate.
            await handle.execute_update(
                ConversationWorkflow.regenerate, request, rpc_timeout=rpc_timeout()
            )
        except WorkflowUpdateFailedError as err:
            cause = err.cause
            return cause.type or "" if isinstance(cause, ApplicationError) else "Unavailable"
        except WorkflowUpdateRPCTimeoutOrCancelledError:
            return "Unavailable"  # no worker answered in time
        except RPCError as err:
            return "Ended" if err.status == RPCStatusCode.NOT_FOUND else "Unavailable"
        return ""

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
