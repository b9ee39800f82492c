"""The activities a conversation runs, each one awaitable step with its timeout and retries.

Workflow code, deterministic: it only schedules activities. The conversation and its turns
call these instead of spelling out activity options, so each reads as what it does.
"""

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.workflow import ActivityCancellationType, ActivityHandle

with workflow.unsafe.imports_passed_through():
    from activities.bedrock import BedrockActivities
    from activities.budgets import BudgetActivities
    from activities.conversations import ConversationActivities
    from activities.memory import MemoryActivities
    from activities.replies import ReplyActivities
    from activities.slack import SlackActivities
    from activities.tools import ToolActivities
    from threadchat.model import (
        ApprovalRequest,
        AssistantGreeting,
        BudgetCheck,
        BudgetVerdict,
        ConversationSettings,
        ConversationSetup,
        DeliveredReply,
        EndNotice,
        GeneratedReply,
        Memory,
        MemoryLookup,
        PostedMessage,
        PrivateNote,
        ReplyRequest,
        SlackPost,
        StoppedReply,
        Summary,
        SummaryRequest,
        ThreadContext,
        ThreadRead,
        ThreadRef,
        ThreadTitle,
        TitleRequest,
        TokenCharge,
        ToolCall,
        ToolCatalog,
        ToolCatalogRequest,
        ToolOutcome,
    )

# Temporal owns retries (botocore makes one attempt). Throttling and 5xx back off up to about
# two minutes in all; errors that cannot succeed are non-retryable and fail at once. A worker
# lost mid-answer costs an attempt too (its heartbeat times out): ten ride out a run of
# crashes (the soak kills a worker every few seconds) where six did not always.
BEDROCK_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=20),
    maximum_attempts=10,
)
SLACK_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=10,
)
# Niceties (names, titles, private notes) give up sooner than the answer does.
FEW_TRIES = RetryPolicy(maximum_attempts=3)
SLACK_TIMEOUT = timedelta(seconds=30)
# Budget calls are short Temporal RPCs, run as local activities: no extra round trip per turn.
BUDGET_TIMEOUT = timedelta(seconds=5)
# A streamed answer may take minutes in all. Every model call heartbeats (a blocking one from
# beside the call), so a dead worker is caught by its heartbeat timeout, not the call's. The
# activities beat every 0.5 s and the worker sends a beat at least every second, so 5 s is
# five missed beats: a reader waits 5 s, not 10 (or, without streaming, the call's 75 s), for
# an answer a crash cut off, and a run of crashes (the soak) costs each hit that much less.
STREAMING_TIMEOUT = timedelta(minutes=10)
MODEL_HEARTBEAT = timedelta(seconds=5)


def failure_type(err: ActivityError) -> str | None:
    """The error type an activity failed with, as texts.turn_failure knows them."""
    cause = err.cause
    return cause.type if isinstance(cause, ApplicationError) else type(cause).__name__


# -- Opening ----------------------------------------------------------------------------------


async def open_conversation(thread: ThreadRef, look_back: bool) -> ConversationSetup:
    # Local: a first turn costs no more round trips to the server than a later one.
    return await workflow.execute_local_activity_method(
        ConversationActivities.open_conversation,
        args=[thread, look_back],
        start_to_close_timeout=timedelta(seconds=30),
        retry_policy=SLACK_RETRY,
        summary="open conversation",
    )


async def read_thread(read: ThreadRead) -> ThreadContext:
    """The thread's earlier messages. A nicety for the first answer, which waits for it: a
    read Slack refuses or a Slack that stays down is told, not waited out."""
    try:
        # Local: no extra round trip to the server on the first turn.
        return await workflow.execute_local_activity_method(
            SlackActivities.read_thread,
            read,
            start_to_close_timeout=SLACK_TIMEOUT,
            retry_policy=FEW_TRIES,
            summary="read the thread",
        )
    except ActivityError as err:
        workflow.logger.warning("could not read the thread: %s", failure_type(err))
        return ThreadContext(unread=failure_type(err) or "failed")


async def describe_users(users: list[str]) -> dict[str, str]:
    """Display names; {} when Slack will not say (ids are labels enough)."""
    try:
        return await workflow.execute_local_activity_method(
            SlackActivities.describe_users,
            users,
            start_to_close_timeout=SLACK_TIMEOUT,
            retry_policy=FEW_TRIES,
            summary="look up names",
        )
    except ActivityError:
        return {}


# -- The model ----------------------------------------------------------------------------------


def _model_options(settings: ConversationSettings) -> dict:
    return {
        # Model calls' own queue, rate limited across workers.
        "task_queue": settings.bedrock_task_queue or None,
        "start_to_close_timeout": timedelta(seconds=settings.model_timeout_seconds),
        "heartbeat_timeout": MODEL_HEARTBEAT,
    }


def stream_reply(
    settings: ConversationSettings, request: ReplyRequest, summary: str
) -> ActivityHandle[DeliveredReply]:
    """Started, not awaited: a Stop cancels it. The activity hears of the cancel with its
    next heartbeat and returns what it showed, which the workflow waits for."""
    return workflow.start_activity_method(
        ReplyActivities.stream_reply,
        request,
        task_queue=settings.bedrock_task_queue or None,
        start_to_close_timeout=STREAMING_TIMEOUT,
        heartbeat_timeout=MODEL_HEARTBEAT,
        retry_policy=BEDROCK_RETRY,
        cancellation_type=ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
        summary=summary,
    )


def generate_reply(
    settings: ConversationSettings, request: ReplyRequest, summary: str
) -> ActivityHandle[GeneratedReply]:
    """Started, not awaited: a Stop abandons it (nothing of it showed). The cancel reaches
    the worker with a heartbeat, and ends the activity once the blocking call returns."""
    return workflow.start_activity_method(
        BedrockActivities.generate_reply,
        request,
        **_model_options(settings),
        retry_policy=BEDROCK_RETRY,
        cancellation_type=ActivityCancellationType.TRY_CANCEL,
        summary=summary,
    )


async def summarize(settings: ConversationSettings, request: SummaryRequest) -> Summary:
    return await workflow.execute_activity_method(
        BedrockActivities.summarize_conversation,
        request,
        **_model_options(settings),
        retry_policy=BEDROCK_RETRY,
        summary="final summary" if request.final else "rolling summary",
    )


async def write_title(settings: ConversationSettings, request: TitleRequest) -> Summary:
    return await workflow.execute_activity_method(
        BedrockActivities.name_conversation,
        request,
        **_model_options(settings),
        retry_policy=FEW_TRIES,
        summary="write a title",
    )


# -- Tools ------------------------------------------------------------------------------------

# The activity holds a call to its server's timeout; this margin covers starting a stdio
# server and the session around the call. A worker that dies mid-call is caught sooner, by
# its heartbeat (the activity beats every 2 s).
TOOL_MARGIN_SECONDS = 30
TOOL_HEARTBEAT = timedelta(seconds=10)
# Connection trouble is retried with the same idempotency key; errors the tool reports are
# results, told to the model, never retried.
TOOL_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=20),
    maximum_attempts=5,
)


async def list_tools(
    settings: ConversationSettings, request: ToolCatalogRequest, servers: list[str]
) -> ToolCatalog:
    """The turn's tools; none (each server told as unavailable) if the list cannot be had."""
    try:
        return await workflow.execute_activity_method(
            ToolActivities.list_tools,
            request,
            task_queue=settings.tools_task_queue or None,
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=FEW_TRIES,
            summary="list tools",
        )
    except ActivityError as err:
        workflow.logger.warning("could not list tools: %s", failure_type(err))
        return ToolCatalog(unavailable=list(servers))


def call_tool(
    settings: ConversationSettings, call: ToolCall, timeout_seconds: float
) -> ActivityHandle[ToolOutcome]:
    """Started, not awaited: a Stop abandons it (its key keeps a later retry from doing it
    twice)."""
    return workflow.start_activity_method(
        ToolActivities.call_tool,
        call,
        task_queue=settings.tools_task_queue or None,
        start_to_close_timeout=timedelta(seconds=timeout_seconds + TOOL_MARGIN_SECONDS),
        heartbeat_timeout=TOOL_HEARTBEAT,
        retry_policy=TOOL_RETRY,
        cancellation_type=ActivityCancellationType.TRY_CANCEL,
        summary=f"tool {call.server}/{call.name} (round {call.round})",
    )


async def memories_of(lookup: MemoryLookup) -> list[Memory]:
    """The asker's memories; never fails (the activity answers [] when it cannot read them,
    within its own RPC timeout, well inside this one: a local activity must not time out)."""
    return await workflow.execute_local_activity_method(
        MemoryActivities.memories_of,
        lookup,
        start_to_close_timeout=timedelta(seconds=30),
        summary="read the asker's memories",
    )


async def ask_approval(ask: ApprovalRequest) -> str:
    """The approval message with its buttons; its ts ("" if Slack stayed down: the call
    then waits out the timeout, as nobody can click)."""
    try:
        return await workflow.execute_activity_method(
            SlackActivities.ask_approval,
            ask,
            start_to_close_timeout=SLACK_TIMEOUT,
            retry_policy=SLACK_RETRY,
            summary=f"ask approval for {ask.tool}",
        )
    except ActivityError as err:
        workflow.logger.error("could not ask for approval: %s", failure_type(err))
        return ""


async def settle_approval(ask: ApprovalRequest) -> None:
    """The approval message says how it ended, without its buttons."""
    if ask.ts:
        await _best_effort("settle approval", SlackActivities.settle_approval, ask, SLACK_RETRY)


# -- Slack ------------------------------------------------------------------------------------


async def post_message(post: SlackPost, summary: str) -> PostedMessage:
    return await workflow.execute_activity_method(
        SlackActivities.post_message,
        post,
        start_to_close_timeout=SLACK_TIMEOUT,
        retry_policy=SLACK_RETRY,
        summary=summary,
    )


async def mark_stopped(stopped: StoppedReply) -> str:
    """The stopped answer's message, with who stopped it; returns the ts of the message
    that says it."""
    return await workflow.execute_activity_method(
        SlackActivities.mark_stopped,
        stopped,
        start_to_close_timeout=SLACK_TIMEOUT,
        retry_policy=SLACK_RETRY,
        summary="mark the answer stopped",
    )


async def post(
    thread: ThreadRef,
    text: str,
    key: str,
    what: str,
    participants: list[str],
    session_status: str = "",
) -> str | None:
    """Post a notice or summary (`what`) and return its ts; if Slack stays down, log it
    rather than fail the conversation. Only `participants` may be mentioned in it; the
    agent session then shows `session_status` (if given)."""
    post = SlackPost(thread, text, key, participants=participants, session_status=session_status)
    try:
        posted = await post_message(post, f"post {what}")
    except ActivityError as err:
        workflow.logger.error("could not post %s: %s", what, failure_type(err))
        return None
    return posted.ts


async def _best_effort(what: str, method, arg, retry: RetryPolicy = FEW_TRIES) -> None:
    try:
        await workflow.execute_activity_method(
            method, arg, start_to_close_timeout=SLACK_TIMEOUT, retry_policy=retry, summary=what
        )
    except ActivityError as err:
        workflow.logger.warning("could not %s: %s", what, failure_type(err))


async def tell(thread: ThreadRef, user: str, text: str, key: str, participants: list[str]) -> None:
    """A note only `user` sees in the thread; best effort."""
    note = PrivateNote(thread, user, text, participants=participants)
    await _best_effort(f"tell {key}", SlackActivities.post_private, note)


async def tell_who_ended_it(thread: ThreadRef, user: str, summary_ts: str) -> None:
    """Answer the /endchat or End chat user privately, with a link to the summary."""
    await _best_effort(
        "tell who ended it", SlackActivities.notify_ended, EndNotice(thread, user, summary_ts)
    )


async def greet(greeting: AssistantGreeting) -> None:
    await _best_effort("greet", SlackActivities.greet, greeting, SLACK_RETRY)


async def set_title(title: ThreadTitle) -> None:
    """Raises ActivityError: the caller keeps a title only once Slack has it."""
    await workflow.execute_activity_method(
        SlackActivities.set_title,
        title,
        start_to_close_timeout=SLACK_TIMEOUT,
        retry_policy=FEW_TRIES,
        summary="set the title",
    )


# -- Allowances ---------------------------------------------------------------------------------


async def check_budget(check: BudgetCheck) -> BudgetVerdict:
    """Failed checks answer anyway (a Temporal hiccup should not silence the bot), and the
    turn is still charged."""
    try:
        return await _budget(BudgetActivities.check_budget, check, "check token budget")
    except ActivityError as err:
        workflow.logger.warning("token budget check failed: %s", failure_type(err))
        return BudgetVerdict(charge_user=True)


async def charge_tokens(charge: TokenCharge) -> None:
    try:
        await _budget(BudgetActivities.charge_tokens, charge, "charge tokens")
    except ActivityError as err:
        workflow.logger.warning("could not charge tokens: %s", failure_type(err))


async def _budget(method, arg, summary: str):
    return await workflow.execute_local_activity_method(
        method,
        arg,
        start_to_close_timeout=BUDGET_TIMEOUT,
        retry_policy=FEW_TRIES,
        summary=summary,
    )
