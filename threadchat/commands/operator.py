"""Operator views of conversations: `threadchat conversations` and `threadchat show`.

Everything here goes through the normal Temporal client, so it works against the dev server
and any cluster: visibility lists and finds conversations, the workflow's `status` query gives
live turn and token counts, and a run's history (or a finished run's result) gives the
transcript. A query needs a live worker; without one, what visibility knows is still shown
and the unknowns are marked "?".
"""

import asyncio
import json
import logging
import re
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from activities.memory import MEMORIES_QUERY, MEMORY_WORKFLOW
from threadchat import texts
from threadchat.codec import EncryptedPayloadError
from threadchat.ids import WORKFLOW_ID_PREFIX, memory_id, parse_thread_link
from threadchat.model import (
    ApprovalDecision,
    ApprovalRequest,
    ConversationResult,
    ConversationSetup,
    ConversationStart,
    ConversationStatus,
    DeliveredReply,
    EndRequest,
    Feedback,
    GeneratedReply,
    Memory,
    ReplyRequest,
    Summary,
    SummaryRequest,
    ToolCall,
    ToolOutcome,
    Turn,
    UserMessage,
)
from threadchat.temporal import (
    CONVERSATION_STARTED,
    CONVERSATION_TITLE,
    SLACK_CHANNEL,
    SLACK_PARTICIPANTS,
)

log = logging.getLogger(__name__)

WORKFLOW_TYPE = "ConversationWorkflow"
QUERY_TIMEOUT = timedelta(seconds=3)
# At most this many status queries in flight while listing.
QUERY_CONCURRENCY = 16
BOT_LABEL = "threadchat"

_SLACK_ID = re.compile(r"^[A-Z0-9]+$")
_WORKFLOW_ID = re.compile(
    rf"^{WORKFLOW_ID_PREFIX}-(?P<team>[A-Z0-9]+)-(?P<channel>[A-Z0-9]+)-(?P<ts>\d+\.\d+)$"
)
# Characters a task queue may have and still be quoted safely in a visibility query.
_QUOTABLE = re.compile(r"^[^'\"\\\n\r]+$")
_REPLY_ACTIVITIES = {"stream_reply", "generate_reply"}


class OperatorError(Exception):
    """A problem with what the operator asked for; the CLI prints it as one line."""

    exit_code = 2


class ConversationNotFound(OperatorError):
    exit_code = 1


class HistoryEncrypted(OperatorError):
    """Encrypted history read without THREADCHAT_ENCRYPTION_KEY."""

    def __init__(self, key_id: str):
        super().__init__(
            f"the conversation history is encrypted (key id {key_id}): set "
            f"THREADCHAT_ENCRYPTION_KEY to the key the bot and workers use"
        )


# -- Listing -------------------------------------------------------------------------------


@dataclass
class ConversationRow:
    """One running conversation. None means unknown: no worker answered the status query."""

    workflow_id: str
    run_id: str
    team: str
    channel: str
    thread_ts: str
    participants: list[str]
    started: datetime
    last_activity: datetime
    turns: int | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    pending: int | None = None
    ending: bool | None = None
    title: str = ""  # the assistant panel's thread title

    @property
    def status_known(self) -> bool:
        return self.turns is not None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["started"] = self.started.isoformat()
        data["last_activity"] = self.last_activity.isoformat()
        return data


def _check_slack_id(value: str, option: str, example: str) -> str:
    if not _SLACK_ID.match(value):
        raise OperatorError(f"{option} must be a Slack id like {example}, got {value!r}")
    return value


def running_query(
    *, channel: str | None = None, user: str | None = None, task_queue: str | None = None
) -> str:
    """The visibility query for running conversations. Every value is validated first, so
    nothing the operator types can change the query's meaning."""
    clauses = [f"WorkflowType = '{WORKFLOW_TYPE}'", "ExecutionStatus = 'Running'"]
    if task_queue:
        if not _QUOTABLE.match(task_queue):
            raise OperatorError(f"task queue {task_queue!r} cannot be used in a query")
        clauses.append(f"TaskQueue = '{task_queue}'")
    if channel is not None:
        _check_slack_id(channel, "--channel", "C0123ABCD")
        clauses.append(f"{SLACK_CHANNEL.name} = '{channel}'")
    if user is not None:
        _check_slack_id(user, "--user", "U0123ABCD")
        clauses.append(f"{SLACK_PARTICIPANTS.name} = '{user}'")
    return " AND ".join(clauses)


def split_workflow_id(workflow_id: str) -> tuple[str, str, str]:
    """(team, channel, thread_ts) of a conversation's workflow id; blanks if not one."""
    match = _WORKFLOW_ID.match(workflow_id)
    return (match["team"], match["channel"], match["ts"]) if match else ("", "", "")


async def _query_status(client: Client, workflow_id: str, run_id: str | None = None):
    """The conversation's `status` query, or None when no worker answers in time."""
    from workflows.conversation import ConversationWorkflow

    handle = client.get_workflow_handle(workflow_id, run_id=run_id)
    try:
        # The RPC deadline alone is not always kept when no worker polls; bound the wait too.
        return await asyncio.wait_for(
            handle.query(ConversationWorkflow.status, rpc_timeout=QUERY_TIMEOUT),
            QUERY_TIMEOUT.total_seconds(),
        )
    except EncryptedPayloadError as err:
        raise HistoryEncrypted(err.key_id) from None
    except Exception as err:  # no worker, a timeout, a failing query: all mean "unknown"
        log.debug("status query of %s failed: %s: %s", workflow_id, type(err).__name__, err)
        return None


def _last_activity(status: ConversationStatus | None) -> datetime | None:
    # `last_activity` (epoch seconds) is newer than some workers; 0 means not reported.
    seconds = getattr(status, "last_activity", 0) or None
    return datetime.fromtimestamp(seconds, UTC) if seconds else None


async def list_conversations(
    client: Client,
    *,
    channel: str | None = None,
    user: str | None = None,
    task_queue: str | None = None,
) -> list[ConversationRow]:
    """Running conversations (of one task queue, if given), most recently active first."""
    query = running_query(channel=channel, user=user, task_queue=task_queue)
    executions = [execution async for execution in client.list_workflows(query)]
    limit = asyncio.Semaphore(QUERY_CONCURRENCY)

    async def row(execution) -> ConversationRow:
        async with limit:
            status = await _query_status(client, execution.id, execution.run_id)
        team, id_channel, thread_ts = split_workflow_id(execution.id)
        attributes = execution.typed_search_attributes
        participants = list(attributes.get(SLACK_PARTICIPANTS) or [])
        if status is not None and status.participants:
            participants = list(status.participants)  # in order of first message
        result = ConversationRow(
            workflow_id=execution.id,
            run_id=execution.run_id,
            team=team,
            channel=attributes.get(SLACK_CHANNEL) or id_channel,
            thread_ts=thread_ts,
            participants=participants,
            started=attributes.get(CONVERSATION_STARTED) or execution.start_time,
            last_activity=_last_activity(status) or execution.start_time,
            title=attributes.get(CONVERSATION_TITLE) or (status.title if status else ""),
        )
        if status is not None:
            result.turns = status.turn_count
            result.input_tokens = status.input_tokens
            result.output_tokens = status.output_tokens
            result.pending = status.pending
            result.ending = status.ending
        return result

    rows = await asyncio.gather(*(row(execution) for execution in executions))
    return sorted(rows, key=lambda r: r.last_activity, reverse=True)


def ago(when: datetime | None, now: datetime | None = None) -> str:
    """A relative time for people: "just now", "42 s ago", "5 min ago", "3 h ago", "2 d ago"."""
    if when is None:
        return "?"
    seconds = ((now or datetime.now(UTC)) - when).total_seconds()
    if seconds < 5:
        return "just now"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{int(seconds // size)} {unit} ago"
    return f"{int(seconds)} s ago"


def format_table(rows: list[ConversationRow], now: datetime | None = None) -> str:
    """The rows as a plain-text table."""
    if not rows:
        return "No active conversations."
    header = ("ID", "CHANNEL", "PARTICIPANTS", "TURNS", "LAST ACTIVITY", "TOKENS IN/OUT", "TITLE")
    lines = [
        (
            row.workflow_id,
            row.channel,
            ",".join(row.participants) or "-",
            "?" if row.turns is None else str(row.turns) + (" (ending)" if row.ending else ""),
            ago(row.last_activity, now),
            "?" if row.input_tokens is None else f"{row.input_tokens}/{row.output_tokens}",
            row.title or "-",
        )
        for row in rows
    ]
    widths = [max(len(cells[i]) for cells in [header, *lines]) for i in range(len(header))]
    text = [
        "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)).rstrip()
        for cells in [header, *lines]
    ]
    if any(not row.status_known for row in rows):
        text.append("")
        text.append("? = no worker answered the status query; turns and tokens are unknown.")
    return "\n".join(text)


def rows_json(rows: list[ConversationRow]) -> str:
    return json.dumps([row.to_json() for row in rows], indent=2)


# -- One conversation ----------------------------------------------------------------------


@dataclass
class Entry:
    """One line of a transcript.

    kind: "message" (a user), "reply" (the bot), "regenerated" (the bot's new answer in place
    of its last reply), "no_reply" (a turn without an answer), "end" (someone asked to end
    it), or "next" (a mention for the next conversation).
    """

    kind: str
    text: str
    user: str = ""


@dataclass
class ConversationView:
    """Everything `show` prints about one conversation (its latest run)."""

    workflow_id: str
    run_id: str
    status: str  # "running", "completed", "failed", "terminated", ...
    team: str
    channel: str
    thread_ts: str
    participants: list[str] = field(default_factory=list)
    names: dict[str, str] = field(default_factory=dict)
    turns: int | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    ending: bool = False
    ended_by: str = ""
    started: datetime | None = None
    last_activity: datetime | None = None
    closed: datetime | None = None
    previous_summary: str = ""
    rolling_summary: str = ""
    summary: str = ""
    entries: list[Entry] = field(default_factory=list)
    feedback: list[Feedback] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("started", "last_activity", "closed"):
            value = getattr(self, key)
            data[key] = value.isoformat() if value else None
        return data


def parse_ref(ref: str) -> tuple[str | None, Any]:
    """(workflow id, None) or (None, thread location) for what the operator typed."""
    ref = ref.strip()
    if ref.startswith(f"{WORKFLOW_ID_PREFIX}-"):
        return ref, None
    location = parse_thread_link(ref)
    if location is None:
        raise OperatorError(
            f"not a Slack thread link or a conversation workflow id: {ref!r} "
            f"(expected https://<team>.slack.com/archives/C.../p... or threadchat-...)"
        )
    return None, location


async def resolve(client: Client, ref: str) -> str:
    """The workflow id of a thread link or workflow id.

    A link does not name the team, so the conversation is found by its channel (a search
    attribute) and the end of its id, `-{channel}-{thread_ts}`.
    """
    workflow_id, location = parse_ref(ref)
    if workflow_id is not None:
        return workflow_id
    suffix = f"-{location.channel}-{location.thread_ts}"
    # parse_thread_link only accepts [A-Z0-9] channel ids: safe to quote.
    query = f"WorkflowType = '{WORKFLOW_TYPE}' AND {SLACK_CHANNEL.name} = '{location.channel}'"
    async for execution in client.list_workflows(query):
        if execution.id.startswith(f"{WORKFLOW_ID_PREFIX}-") and execution.id.endswith(suffix):
            return execution.id
    raise ConversationNotFound(
        f"no conversation found for thread {location.thread_ts} in channel {location.channel}"
    )


@dataclass
class _History:
    """What one run's history says."""

    names: dict[str, str] = field(default_factory=dict)
    previous_summary: str = ""
    rolling_summary: str = ""
    summary: str = ""
    entries: list[Entry] = field(default_factory=list)
    feedback: list[Feedback] = field(default_factory=list)
    last_event: datetime | None = None


def _turn_entries(turn: Turn) -> list[Entry]:
    entries = [Entry("message", m.text, m.user) for m in turn.messages]
    if turn.reply is None:
        entries.append(Entry("no_reply", "no reply"))
    else:
        entries.append(Entry("reply", turn.reply))
    return entries


async def _decode(client: Client, payloads: Any, hint: type) -> Any:
    if not payloads.payloads:
        return None
    try:
        values = await client.data_converter.decode(payloads.payloads, [hint])
    except EncryptedPayloadError as err:
        raise HistoryEncrypted(err.key_id) from None
    except Exception as err:  # an older or newer payload shape: skip it, show the rest
        log.debug("could not decode a %s payload: %s", hint.__name__, err)
        return None
    return values[0] if values else None


async def _read_history(client: Client, workflow_id: str, run_id: str) -> _History:
    """Replay a run's history the way the workflow sees it: the carried state, the
    user_message and end signals (repeats ignored, as the workflow does), and the results of
    the reply, summary and name activities."""
    history = await client.get_workflow_handle(workflow_id, run_id=run_id).fetch_history()
    facts = _History()
    seen: set[str] = set()
    ended = False
    scheduled: dict[int, tuple[str, bool]] = {}  # event id -> (activity, final summary)
    for event in history.events:
        kind = event.WhichOneof("attributes")
        if kind == "workflow_execution_started_event_attributes":
            start = await _decode(
                client, event.workflow_execution_started_event_attributes.input, ConversationStart
            )
            state = start.state if start else None
            if state is not None:
                facts.names.update(state.names)
                facts.previous_summary = state.previous_summary
                facts.rolling_summary = state.rolling_summary
                for turn in state.turns:
                    facts.entries += _turn_entries(turn)
                facts.entries += [Entry("message", m.text, m.user) for m in state.pending]
                seen.update(state.seen_ts)
        elif kind == "workflow_execution_signaled_event_attributes":
            attrs = event.workflow_execution_signaled_event_attributes
            if attrs.signal_name == "user_message":
                message = await _decode(client, attrs.input, UserMessage)
                if message is None or (ended and not message.may_start) or message.ts in seen:
                    continue
                seen.add(message.ts)
                facts.entries.append(
                    Entry("next" if ended else "message", message.text, message.user)
                )
            elif attrs.signal_name == "feedback":
                rating = await _decode(client, attrs.input, Feedback)
                if rating is not None:
                    facts.feedback = _rate(facts.feedback, rating)
            elif attrs.signal_name == "end" and not ended:
                ended = True
                request = await _decode(client, attrs.input, EndRequest)
                if request is not None:
                    facts.entries.append(Entry("end", request.via, request.requested_by))
        elif kind == "activity_task_scheduled_event_attributes":
            attrs = event.activity_task_scheduled_event_attributes
            name = attrs.activity_type.name
            final = False
            if name == "summarize_conversation":
                request = await _decode(client, attrs.input, SummaryRequest)
                final = bool(request and request.final)
            scheduled[event.event_id] = (name, final)
        elif kind == "activity_task_completed_event_attributes":
            attrs = event.activity_task_completed_event_attributes
            name, final = scheduled.get(attrs.scheduled_event_id, ("", False))
            await _apply_result(client, facts, name, final, attrs.result)
        elif kind == "marker_recorded_event_attributes":
            local = _local_activity(event.marker_recorded_event_attributes)
            if local is not None:
                await _apply_result(client, facts, local[0], False, local[1])
        elif kind in (
            "activity_task_failed_event_attributes",
            "activity_task_timed_out_event_attributes",
        ):
            attrs = getattr(event, kind)
            name, _ = scheduled.get(attrs.scheduled_event_id, ("", False))
            if name in _REPLY_ACTIVITIES:
                facts.entries.append(Entry("no_reply", f"no reply: {attrs.failure.message}"))
    if history.events:
        facts.last_event = history.events[-1].event_time.ToDatetime().replace(tzinfo=UTC)
    return facts


def _local_activity(marker: Any) -> tuple[str, Any] | None:
    """(activity type, result payloads) of a local activity's marker. The SDK writes its
    bookkeeping as plain JSON, also under a payload codec; the result is encoded."""
    if marker.marker_name != "core_local_activity" or "result" not in marker.details:
        return None
    try:
        [data] = marker.details["data"].payloads
        activity_type = json.loads(data.data)["activity_type"]
    except (KeyError, ValueError, TypeError):
        return None
    return activity_type, marker.details["result"]


async def _apply_result(
    client: Client, facts: _History, name: str, final: bool, result: Any
) -> None:
    if name in _REPLY_ACTIVITIES:
        reply = await _decode(
            client, result, DeliveredReply if name == "stream_reply" else GeneratedReply
        )
        if reply is None:
            return
        if reply.call is not None and reply.call.kind == "regenerate":
            facts.entries.append(Entry("regenerated", reply.text))
            return
        if facts.entries and facts.entries[-1].kind == "no_reply":
            facts.entries.pop()  # e.g. a context overflow, answered by the retry
        facts.entries.append(Entry("reply", reply.text))
    elif name == "summarize_conversation":
        summary = await _decode(client, result, Summary)
        if summary is not None:
            if final:
                facts.summary = summary.text
            else:
                facts.rolling_summary = summary.text
    elif name == "describe_users":
        names = await _decode(client, result, dict[str, str])
        facts.names.update(names or {})
    elif name == "open_conversation":
        setup = await _decode(client, result, ConversationSetup)
        if setup is not None and not facts.previous_summary:
            facts.previous_summary = setup.previous_summary


async def load_conversation(client: Client, ref: str) -> ConversationView:
    """The latest run of the conversation `ref` names: live from its status query and
    history while running, from its result once it has ended."""
    workflow_id = await resolve(client, ref)
    try:
        description = await client.get_workflow_handle(workflow_id).describe()
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            raise ConversationNotFound(f"no conversation with workflow id {workflow_id}") from None
        raise
    team, channel, thread_ts = split_workflow_id(workflow_id)
    attributes = description.typed_search_attributes
    status = description.status
    view = ConversationView(
        workflow_id=workflow_id,
        run_id=description.run_id,
        status=status.name.lower() if status else "unknown",
        team=team,
        channel=attributes.get(SLACK_CHANNEL) or channel,
        thread_ts=thread_ts,
        participants=list(attributes.get(SLACK_PARTICIPANTS) or []),
        started=attributes.get(CONVERSATION_STARTED) or description.start_time,
        closed=description.close_time,
    )
    history = await _read_history(client, workflow_id, description.run_id)
    view.names = history.names
    view.previous_summary = history.previous_summary
    view.rolling_summary = history.rolling_summary
    view.summary = history.summary
    view.last_activity = history.last_event
    view.feedback = history.feedback

    if status == WorkflowExecutionStatus.COMPLETED:
        handle = client.get_workflow_handle(
            workflow_id, run_id=description.run_id, result_type=ConversationResult
        )
        try:
            result = await handle.result(follow_runs=False)
        except EncryptedPayloadError as err:
            raise HistoryEncrypted(err.key_id) from None
        view.participants = list(result.participants)
        view.turns = result.turn_count
        view.input_tokens, view.output_tokens = result.input_tokens, result.output_tokens
        view.cache_read_tokens = result.cache_read_tokens
        view.cache_write_tokens = result.cache_write_tokens
        view.ended_by = result.ended_by
        view.rolling_summary = result.rolling_summary
        view.summary = result.summary
        view.entries = [entry for turn in result.transcript for entry in _turn_entries(turn)]
        view.feedback = list(result.feedback)
        return view

    view.entries = history.entries
    if status == WorkflowExecutionStatus.RUNNING:
        live = await _query_status(client, workflow_id, description.run_id)
        if live is None:
            view.notes.append("no worker answered the status query; turns and tokens unknown")
        else:
            view.participants = list(live.participants) or view.participants
            view.turns = live.turn_count
            view.input_tokens, view.output_tokens = live.input_tokens, live.output_tokens
            view.cache_read_tokens = getattr(live, "cache_read_tokens", 0)
            view.cache_write_tokens = getattr(live, "cache_write_tokens", 0)
            view.ending = live.ending
            view.last_activity = _last_activity(live) or view.last_activity
    else:
        view.notes.append(f"the conversation's last run {view.status}: transcript from history")
    return view


def _indent(text: str, prefix: str = "  ") -> str:
    return "\n".join(prefix + line if line else line for line in text.splitlines() or [""])


def _when(moment: datetime | None, now: datetime) -> str:
    if moment is None:
        return "?"
    return f"{moment.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC ({ago(moment, now)})"


def format_conversation(view: ConversationView, now: datetime | None = None) -> str:
    """A readable plain-text transcript with a header."""
    now = now or datetime.now(UTC)

    def who(user: str) -> str:
        name = view.names.get(user)
        return name if name and name != user else user

    state = view.status + (" (ending)" if view.ending else "")
    tokens = (
        "?"
        if view.input_tokens is None
        else f"{view.input_tokens} in / {view.output_tokens} out"
        + (
            f" (prompt cache: {view.cache_read_tokens} read, {view.cache_write_tokens} written)"
            if view.cache_read_tokens or view.cache_write_tokens
            else ""
        )
    )
    header = [
        ("conversation", view.workflow_id),
        ("status", state),
        ("thread", f"{view.thread_ts or '?'} in channel {view.channel or '?'}"),
        (
            "participants",
            ", ".join(
                f"{view.names[u]} ({u})" if view.names.get(u, u) != u else u
                for u in view.participants
            )
            or "-",
        ),
        ("turns", "?" if view.turns is None else str(view.turns)),
        ("tokens", tokens),
        (
            "feedback",
            f"{sum(f.rating == 'up' for f in view.feedback)} up / "
            f"{sum(f.rating == 'down' for f in view.feedback)} down",
        ),
        ("started", _when(view.started, now)),
    ]
    if view.closed:
        header.append(("ended", _when(view.closed, now)))
    else:
        header.append(("last activity", _when(view.last_activity, now)))
    if view.ended_by:
        header.append(("ended by", view.ended_by))
    width = max(len(label) for label, _ in header) + 1
    lines = [f"{(label + ':').ljust(width)} {value}" for label, value in header]
    lines += [f"note: {note}" for note in view.notes]

    if view.previous_summary:
        lines += ["", "Earlier conversation in this thread:", _indent(view.previous_summary)]
    if view.rolling_summary:
        lines += ["", "Summary of earlier turns:", _indent(view.rolling_summary)]
    lines += ["", "Transcript:"]
    if not view.entries:
        lines.append("  (no messages)")
    for entry in view.entries:
        if entry.kind in ("message", "next"):
            note = " (for the next conversation)" if entry.kind == "next" else ""
            first, *rest = (entry.text or "").splitlines() or [""]
            lines.append(f"[{who(entry.user)}]{note} {first}")
            lines += [_indent(line, "    ") for line in rest]
        elif entry.kind == "reply":
            first, *rest = entry.text.splitlines() or [""]
            lines.append(f"  {BOT_LABEL}: {first}")
            lines += [_indent(line, "    ") for line in rest]
        elif entry.kind == "regenerated":
            first, *rest = entry.text.splitlines() or [""]
            lines.append(f"  {BOT_LABEL} (regenerated): {first}")
            lines += [_indent(line, "    ") for line in rest]
        elif entry.kind == "no_reply":
            lines.append(f"  {BOT_LABEL}: ({entry.text})")
        else:
            by = f" by {who(entry.user)}" if entry.user else ""
            lines.append(f"-- end requested{by} ({entry.text}) --")
    if view.feedback:
        lines += ["", "Feedback:"]
        for rating in sorted(view.feedback, key=lambda f: (f.reply.turn, f.user)):
            thumb = "👍" if rating.rating == "up" else "👎"
            lines.append(f"  turn {rating.reply.turn}: {thumb} {who(rating.user)}")
    if view.summary:
        lines += ["", "Summary:", _indent(view.summary)]
    return "\n".join(lines)


def _rate(ratings: list[Feedback], rating: Feedback) -> list[Feedback]:
    """Ratings once `rating` is counted: one per person and turn, as the workflow keeps."""
    kept = [r for r in ratings if not (r.user == rating.user and r.reply.turn == rating.reply.turn)]
    return [*kept, rating]


async def show_conversation(client: Client, ref: str) -> str:
    """The transcript of the conversation a thread link or workflow id names."""
    return format_conversation(await load_conversation(client, ref))


def conversation_json(view: ConversationView) -> str:
    return json.dumps(view.to_json(), indent=2)


# -- Every model call ----------------------------------------------------------------------

_MODEL_ACTIVITIES = {
    "generate_reply": GeneratedReply,
    "stream_reply": DeliveredReply,
    "summarize_conversation": Summary,
}


@dataclass
class Invocation:
    """One model call of a conversation, as its history records it."""

    at: datetime | None  # when it finished (or failed)
    run_id: str
    kind: str
    model_id: str = "?"
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    system_prompt_hash: str = ""
    guardrail: str = ""
    outcome: str = "ok"  # or "failed: <error type>"
    stop_reason: str = ""
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_read_tokens: int | None = None
    cache_write_tokens: int | None = None
    latency_ms: int | None = None
    attempt: int | None = None
    request_id: str = ""

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["at"] = self.at.isoformat() if self.at else None
        return data


def _request_kind(request: Any) -> str:
    if isinstance(request, SummaryRequest):
        return "final_summary" if request.final else "rolling_summary"
    return getattr(request, "kind", "") or "reply"


def _invocation(run_id: str, at: datetime, request: Any, result: Any) -> Invocation:
    """A row from what the request asked and what the result recorded; calls from before
    results carried a record show what their request and tokens tell."""
    row = Invocation(at=at, run_id=run_id, kind=_request_kind(request))
    inference = getattr(request, "inference", None)
    if inference is not None:
        row.model_id, row.temperature = inference.model_id, inference.temperature
        row.top_p, row.max_tokens = inference.top_p, inference.max_tokens
        row.guardrail = inference.guardrail
    call = getattr(result, "call", None)
    if call is not None:
        for name in (
            "kind",
            "model_id",
            "temperature",
            "top_p",
            "max_tokens",
            "system_prompt_hash",
            "guardrail",
            "stop_reason",
            "input_tokens",
            "output_tokens",
            "cache_read_tokens",
            "cache_write_tokens",
            "latency_ms",
            "attempt",
            "request_id",
        ):
            setattr(row, name, getattr(call, name))
    elif result is not None:
        row.input_tokens = getattr(result, "input_tokens", None)
        row.output_tokens = getattr(result, "output_tokens", None)
        row.stop_reason = getattr(result, "stop_reason", "") or ""
    return row


@dataclass
class ToolInvocation:
    """One tool call of a conversation, between the model calls, as its history records it:
    the `call_tool` activity and, for a tool that needs approval, the ask and the `decide`
    update that answered it (matched by the call's idempotency key)."""

    at: datetime | None  # when it was asked for (the approval asked, or the call scheduled)
    run_id: str
    server: str
    tool: str
    round: int | None = None
    # success, error (the tool's, or it kept failing), denied, timed out (nobody approved in
    # time, or the call's own timeout), cancelled (a Stop), waiting (for approval), running
    outcome: str = "running"
    # "" (none needed), "waiting", "approved", "denied", "timed out" or "stopped"
    approval: str = ""
    approved_by: str = ""
    approved_at: datetime | None = None
    duration_ms: int | None = None  # the tool's answer, as its last attempt timed it
    waited_ms: int | None = None  # scheduled to closed: queueing and retries included
    attempts: int | None = None
    arguments: dict | None = None
    result_chars: int | None = None
    truncated: bool | None = None
    idempotency_key: str = ""
    kind: str = "tool"

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["at"] = self.at.isoformat() if self.at else None
        data["approved_at"] = self.approved_at.isoformat() if self.approved_at else None
        return data


# How a settled approval message ended, when nobody decided.
_UNDECIDED = {texts.APPROVAL_TIMED_OUT: "timed out", texts.APPROVAL_STOPPED: "stopped"}


async def _run_invocations(client: Client, workflow_id: str, run_id: str, history) -> list:
    rows: list[Invocation | ToolInvocation] = []
    scheduled: dict[int, tuple[str, Any]] = {}
    tools: dict[str, ToolInvocation] = {}  # by idempotency key
    calls: dict[int, tuple[ToolInvocation, datetime]] = {}  # call_tool's scheduled event id
    tool_round = 1  # the round of the calls the last model call asked for
    for event in history.events:
        kind = event.WhichOneof("attributes")
        at = event.event_time.ToDatetime().replace(tzinfo=UTC)
        if kind == "activity_task_scheduled_event_attributes":
            attrs = event.activity_task_scheduled_event_attributes
            name = attrs.activity_type.name
            if name in _MODEL_ACTIVITIES:
                hint = SummaryRequest if name == "summarize_conversation" else ReplyRequest
                request = await _decode(client, attrs.input, hint)
                scheduled[event.event_id] = (name, request)
                if isinstance(request, ReplyRequest):
                    tool_round = len(request.rounds) + 1
            elif name == "ask_approval":
                ask = await _decode(client, attrs.input, ApprovalRequest)
                if ask is not None:
                    server, _, tool = ask.tool.partition(" / ")
                    row = ToolInvocation(at, run_id, server, tool, round=tool_round)
                    row.outcome = row.approval = "waiting"
                    row.arguments, row.idempotency_key = ask.arguments, ask.key
                    tools[ask.key] = row
                    rows.append(row)
            elif name == "settle_approval":
                ask = await _decode(client, attrs.input, ApprovalRequest)
                row = tools.get(ask.key) if ask is not None else None
                if row is not None and row.approval == "waiting":
                    row.approval = _UNDECIDED.get(ask.outcome, "timed out")
                    row.outcome = "cancelled" if row.approval == "stopped" else "timed out"
            elif name == "call_tool":
                call = await _decode(client, attrs.input, ToolCall)
                if call is None:
                    continue
                row = tools.get(call.idempotency_key)
                if row is None:
                    row = ToolInvocation(at, run_id, call.server, call.name)
                    tools[call.idempotency_key] = row
                    rows.append(row)
                row.round, row.arguments = call.round, call.arguments
                row.idempotency_key, row.outcome = call.idempotency_key, "running"
                calls[event.event_id] = (row, at)
        elif kind == "workflow_execution_update_accepted_event_attributes":
            request = event.workflow_execution_update_accepted_event_attributes.accepted_request
            if request.input.name == "decide":
                decision = await _decode(client, request.input.args, ApprovalDecision)
                row = tools.get(decision.key) if decision is not None else None
                if row is not None:
                    row.approval = "approved" if decision.approve else "denied"
                    row.approved_by, row.approved_at = decision.user, at
                    row.outcome = "running" if decision.approve else "denied"
        elif kind == "activity_task_started_event_attributes":
            attrs = event.activity_task_started_event_attributes
            if attrs.scheduled_event_id in calls:
                calls[attrs.scheduled_event_id][0].attempts = attrs.attempt
        elif kind == "activity_task_completed_event_attributes":
            attrs = event.activity_task_completed_event_attributes
            if attrs.scheduled_event_id in calls:
                row, began = calls[attrs.scheduled_event_id]
                outcome = await _decode(client, attrs.result, ToolOutcome)
                row.duration_ms = row.waited_ms = _ms(at - began)
                if outcome is not None:
                    # A Stop cancelled it, but it finished first: the model was told "stopped".
                    if row.outcome != "cancelled":
                        row.outcome = outcome.status
                    row.duration_ms = outcome.duration_ms or row.duration_ms
                    row.result_chars, row.truncated = len(outcome.text), outcome.truncated
            elif attrs.scheduled_event_id in scheduled:
                name, request = scheduled[attrs.scheduled_event_id]
                result = await _decode(client, attrs.result, _MODEL_ACTIVITIES[name])
                rows.append(_invocation(run_id, at, request, result))
        elif kind in (
            "activity_task_failed_event_attributes",
            "activity_task_timed_out_event_attributes",
            "activity_task_canceled_event_attributes",
            "activity_task_cancel_requested_event_attributes",
        ):
            attrs = getattr(event, kind)
            if attrs.scheduled_event_id in calls:
                row, began = calls[attrs.scheduled_event_id]
                if row.outcome == "cancelled":
                    continue  # cancel requested, then the activity's own end: one outcome
                row.duration_ms = row.waited_ms = _ms(at - began)
                row.outcome = {
                    "activity_task_failed_event_attributes": "error",
                    "activity_task_timed_out_event_attributes": "timed out",
                }.get(kind, "cancelled")
            elif attrs.scheduled_event_id in scheduled and not kind.startswith(
                "activity_task_cancel"
            ):
                _, request = scheduled[attrs.scheduled_event_id]
                row = _invocation(run_id, at, request, None)
                failure = attrs.failure
                cause = failure.cause if failure.HasField("cause") else failure
                error = cause.application_failure_info.type or cause.message or "timeout"
                row.outcome = f"failed: {error}"
                rows.append(row)
    return rows


def _ms(elapsed: timedelta) -> int:
    return round(elapsed.total_seconds() * 1000)


async def load_invocations(client: Client, ref: str) -> list[Invocation]:
    """Every model call of the conversation `ref` names, oldest first: the latest run and
    the runs it continued from (continue-as-new)."""
    workflow_id = await resolve(client, ref)
    histories = []
    async for execution in client.list_workflows(f"WorkflowId = '{workflow_id}'"):
        history = await client.get_workflow_handle(
            workflow_id, run_id=execution.run_id
        ).fetch_history()
        started = history.events[0].workflow_execution_started_event_attributes
        histories.append((execution.start_time, execution.run_id, started, history))
    if not histories:
        raise ConversationNotFound(f"no conversation with workflow id {workflow_id}")
    histories.sort(key=lambda entry: entry[0])
    # One chain of runs shares its first run's id; earlier chains were earlier conversations.
    chain = histories[-1][2].first_execution_run_id or histories[-1][1]
    rows: list[Invocation] = []
    for _, run_id, started, history in histories:
        if (started.first_execution_run_id or run_id) == chain:
            rows += await _run_invocations(client, workflow_id, run_id, history)
    return rows


def _cell(value: Any, suffix: str = "") -> str:
    return "-" if value is None or value == "" else f"{value}{suffix}"


def format_invocations(rows: list) -> str:
    """The calls as a plain-text table: the model calls, and between them the tool calls,
    rows of their own columns (time, server/tool, round, outcome, duration, approval)."""
    if not rows:
        return "No model calls yet."
    header = (
        "TIME (UTC)",
        "KIND",
        "MODEL",
        "TEMP",
        "TOP_P",
        "MAX",
        "PROMPT",
        "TOKENS IN/OUT",
        "CACHE R/W",
        "STOP",
        "LATENCY",
        "TRY",
    )
    models, tools = [], []
    for row in rows:
        when = f"{row.at:%Y-%m-%d %H:%M:%S}" if row.at else "?"
        if isinstance(row, ToolInvocation):
            tools.append(
                (
                    when,
                    "tool",
                    f"{row.server}/{row.tool}",
                    f"round {_cell(row.round)}",
                    row.outcome,
                    _cell(row.duration_ms, " ms"),
                    _approval_cell(row),
                )
            )
            continue
        stop = row.stop_reason if row.outcome == "ok" else row.outcome
        models.append(
            (
                when,
                row.kind,
                row.model_id + (f" +guardrail {row.guardrail}" if row.guardrail else ""),
                _cell(row.temperature),
                _cell(row.top_p),
                _cell(row.max_tokens),
                _cell(row.system_prompt_hash),
                f"{_cell(row.input_tokens)}/{_cell(row.output_tokens)}",
                f"{_cell(row.cache_read_tokens)}/{_cell(row.cache_write_tokens)}",
                _cell(stop),
                _cell(row.latency_ms, " ms"),
                _cell(row.attempt),
            )
        )
    widths = [max(len(cells[i]) for cells in [header, *models]) for i in range(len(header))]
    tool_widths = [max((len(cells[i]) for cells in tools), default=0) for i in range(7)]
    tool_widths[:2] = widths[:2]  # time and kind line up with the model calls'
    models_left, tools_left = iter(models), iter(tools)
    lines = []
    for cells in [header, *rows]:
        if isinstance(cells, ToolInvocation):
            cells, sizes = next(tools_left), tool_widths
        else:
            cells = cells if isinstance(cells, tuple) else next(models_left)
            sizes = widths
        lines.append(
            "  ".join(cell.ljust(width) for cell, width in zip(cells, sizes, strict=True)).rstrip()
        )
    return "\n".join(lines)


def _approval_cell(row: ToolInvocation) -> str:
    if row.approval in ("approved", "denied"):
        when = f" at {row.approved_at:%H:%M:%S}" if row.approved_at else ""
        return f"{row.approval} by {row.approved_by}{when}"
    return row.approval or "no approval needed"


def invocations_json(rows: list[Invocation]) -> str:
    return json.dumps([row.to_json() for row in rows], indent=2)


async def forget_conversation(client: Client, ref: str, rounds: int = 20) -> int:
    """Delete every run of a conversation from Temporal (a person's data request); a
    running one is terminated first. Returns how many runs went."""
    workflow_id = await resolve(client, ref)
    deleted = await _delete_runs(client, workflow_id, rounds)
    if not deleted:
        raise ConversationNotFound(f"no conversation {workflow_id}")
    return deleted


@dataclass
class ForgottenMemory:
    """A person's memory workflow, deleted: its id, how many memories it held, its runs."""

    workflow_id: str
    memories: int | None  # None: could not be read before deletion (no worker answered)
    runs: int


async def forget_memory(
    client: Client, user: str, team: str | None = None, rounds: int = 20
) -> list[ForgottenMemory]:
    """Delete what `user` asked the bot to remember, every run of their memory workflow (in
    `team`, or in every team that has one): a person's data request."""
    if not re.fullmatch(r"U[A-Z0-9]+|W[A-Z0-9]+", user) or (
        team is not None and not re.fullmatch(r"[TE][A-Z0-9]+", team)
    ):
        raise OperatorError(f"not a Slack user id (and team id): {user!r} {team or ''}".rstrip())
    if team:
        ids = {memory_id(team, user)}
    else:
        query = f"WorkflowType = '{MEMORY_WORKFLOW}'"
        ids = {
            run.id
            async for run in client.list_workflows(query)
            if run.id.startswith(f"{WORKFLOW_ID_PREFIX}-memory-") and run.id.endswith(f"-{user}")
        }
    forgotten = []
    for workflow_id in sorted(ids):
        try:
            held = await client.get_workflow_handle(workflow_id).query(
                MEMORIES_QUERY, result_type=list[Memory], rpc_timeout=timedelta(seconds=5)
            )
            count: int | None = len(held)
        except Exception:
            count = None
        runs = await _delete_runs(client, workflow_id, rounds)
        if runs:
            forgotten.append(ForgottenMemory(workflow_id, count, runs))
    return forgotten


async def _delete_runs(client: Client, workflow_id: str, rounds: int) -> int:
    """Delete every run of `workflow_id`, terminating a running one; how many went.

    Visibility can list a run that was just deleted, or miss one that a continue-as-new had
    just opened: it is read again until it lists none.
    """
    from temporalio.api.common.v1 import WorkflowExecution
    from temporalio.api.workflowservice.v1 import DeleteWorkflowExecutionRequest

    deleted: set[str] = set()
    for _ in range(rounds):
        runs = [run async for run in client.list_workflows(f"WorkflowId = '{workflow_id}'")]
        if not runs:
            break
        for run in runs:
            try:
                await client.workflow_service.delete_workflow_execution(
                    DeleteWorkflowExecutionRequest(
                        namespace=client.namespace,
                        workflow_execution=WorkflowExecution(workflow_id=run.id, run_id=run.run_id),
                    )
                )
            except RPCError as err:
                if err.status != RPCStatusCode.NOT_FOUND:
                    raise
            deleted.add(run.run_id)
        await asyncio.sleep(0.5)
    return len(deleted)
