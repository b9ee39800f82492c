"""Payloads that cross Temporal boundaries: signals, activity inputs and results, and the
conversation state carried across continue-as-new.

Everything here is a plain dataclass so Temporal's default JSON converter handles it, and so
the workflow sandbox can import it without side effects.
"""

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ThreadRef:
    """One Slack thread: the unit of conversation."""

    team: str
    channel: str
    thread_ts: str


@dataclass(frozen=True)
class FileRef:
    """A file shared in the thread: what Slack says of it, never its bytes (the reply
    fetches those from Slack when it calls the model)."""

    id: str
    name: str
    mimetype: str
    size: int


@dataclass
class UserMessage:
    """A message someone wrote in the thread (the `user_message` signal)."""

    ts: str
    user: str
    text: str
    # A mention (or a top-level DM): it may start a conversation, even right after one ended.
    may_start: bool = False
    files: list[FileRef] = field(default_factory=list)
    # The author's Slack team: another than the thread's for a Slack Connect guest.
    team: str = ""
    # Another app's post (an alert, a ticket): its name. Context for the next answer, never
    # answered, never a participant; `user` is then its bot id.
    app: str = ""
    # Slack's action token for the message (Real-time Search runs as its author with it);
    # short-lived, so it is only used by the turn this message starts.
    action_token: str = ""


@dataclass
class MessageRevision:
    """A message of the thread was edited (`text`) or deleted (`text` None) in Slack (the
    `revise` signal)."""

    ts: str
    user: str = ""  # the author, for an edit; Slack does not say who deleted
    text: str | None = None


@dataclass
class AssistantThread:
    """The assistant panel was opened, or what its user views changed (the
    `assistant_opened`, `context_changed` and `viewing_changed` signals): who, and which
    channel they are viewing ("" for none), or which message in it (its ts; "" for none)."""

    user: str
    context_channel: str = ""
    context_message_ts: str = ""


@dataclass
class AssistantGreeting:
    """Greet whoever opened the panel, with prompts for the channel they are viewing."""

    thread: ThreadRef
    user: str
    context_channel: str
    idempotency_key: str


@dataclass
class TitleRequest:
    """A short title for a conversation, from its first exchange."""

    thread: ThreadRef
    question: str
    answer: str
    inference: "InferenceSettings | None" = None


@dataclass
class ThreadTitle:
    thread: ThreadRef
    title: str
    # Whose `<@…>` mentions may stay in model text written to Slack (threadchat.mentions);
    # broadcasts never do. Empty: not told (requests from before the field), mentions stay.
    participants: list[str] = field(default_factory=list)


@dataclass
class EndRequest:
    """Someone asked to end the conversation (the `end` signal)."""

    requested_by: str
    # "command", "shortcut", "home" or "prompt" (a participant's); "inactivity"; "operator"
    # (sent with `temporal workflow signal`, needs no participant).
    via: str


@dataclass
class Turn:
    """Messages answered together, and the answer. `reply` is None when the turn failed."""

    messages: list[UserMessage]
    reply: str | None
    input_tokens: int = 0
    output_tokens: int = 0
    # Why the model stopped; a guardrail's intervention keeps the turn out of the context.
    stop_reason: str = ""
    # The Slack messages the reply fills (a long answer takes several), for Regenerate.
    reply_ts: list[str] = field(default_factory=list)
    version: int = 0  # how often the reply was regenerated
    # Stopped mid-answer (stop_reason "stopped"): who clicked Stop; `reply` is what showed.
    stopped_by: str = ""


@dataclass(frozen=True)
class ReplyRef:
    """One version of one turn's reply: what the buttons under it refer to."""

    conversation_key: str
    turn: int
    version: int = 0


@dataclass
class RegenerateRequest:
    """Someone clicked Regenerate under a reply (the `regenerate` update)."""

    user: str
    reply: ReplyRef


@dataclass
class StopRequest:
    """Someone clicked Stop on the thread's agent session (the `stop` signal)."""

    user: str
    event_id: str  # Slack's, so that a retried event stops once
    # The messages Slack stopped streaming when Stop was clicked.
    streaming_ts: list[str] = field(default_factory=list)


@dataclass
class StoppedReply:
    """An answer stopped mid-way: its last message keeps what it showed, with a line saying
    who stopped it (or the line alone, when nothing showed yet)."""

    thread: ThreadRef
    ts: str  # "" when nothing showed
    text: str  # what that message shows
    stopped_by: str  # a display name; "" when Slack stopped it and nobody said who
    idempotency_key: str
    actions: ReplyRef | None = None
    participants: list[str] = field(default_factory=list)


@dataclass
class Feedback:
    """A 👍 or 👎 on a reply (the `feedback` signal)."""

    user: str
    reply: ReplyRef
    rating: str  # "up" or "down"


@dataclass
class InferenceSettings:
    """What a model call is made with. Carried in every model request, so each call's
    history says which model wrote it, with which parameters and prompt."""

    model_id: str
    max_tokens: int
    temperature: float
    top_p: float | None = None
    system_prompt: str = ""
    guardrail_id: str = ""
    guardrail_version: str = ""

    @property
    def guardrail(self) -> str:
        """ "id:version" when a guardrail applies, as a call's record names it."""
        return f"{self.guardrail_id}:{self.guardrail_version}" if self.guardrail_id else ""


@dataclass
class ModelCall:
    """One model invocation as it happened, kept in its activity's result: with the
    request's settings, the history rebuilds every call."""

    kind: str  # "reply", "regenerate", "rolling_summary" or "final_summary"
    model_id: str
    temperature: float
    max_tokens: int
    top_p: float | None = None
    system_prompt_hash: str = ""
    guardrail: str = ""  # "id:version" when a guardrail was applied
    stop_reason: str = ""
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    latency_ms: int = 0
    attempt: int = 1  # the activity attempt that succeeded
    request_id: str = ""  # Bedrock's x-amzn-RequestId, for AWS support
    started_at: float = 0.0  # epoch seconds


@dataclass
class ConversationSettings:
    """Per-conversation knobs, read from the worker's config when a conversation opens."""

    inactivity_timeout_seconds: float
    context_budget_tokens: int
    history_event_cap: int
    model_timeout_seconds: float
    # Stream replies into Slack as the model writes them. Carried in the state, so a
    # conversation keeps the delivery it started with (False in histories from before it).
    streaming: bool = False
    # The model and its parameters, kept for the whole conversation. None in conversations
    # from before they were carried: the worker's own settings apply to those.
    inference: InferenceSettings | None = None
    summary_model_id: str = ""
    # Model calls go to this task queue (rate limited across workers); "" = the workflow's.
    bedrock_task_queue: str = ""
    # Tool calls and tool lists go to this task queue; "" = the workflow's.
    tools_task_queue: str = ""
    # The tool servers (and built-ins) the channel may use, from the tools file as it was
    # when the conversation opened; none: no tools, and no tool list asked for.
    tool_servers: list[str] = field(default_factory=list)
    # Model calls with tools a turn may make before it must answer (THREADCHAT_MAX_TOOL_ROUNDS).
    max_tool_rounds: int = 8
    # How long a call waits for approval before it counts as denied (THREADCHAT_APPROVAL_TIMEOUT).
    approval_timeout_seconds: float = 3600
    # Prompts carry cache points while turns come sooner than this apart: Bedrock keeps a
    # cached prompt 5 minutes, and writing one that expires unread costs more than none.
    prompt_cache_seconds: float = 300
    # The channel's own daily allowances; None: the worker's, read at each turn.
    token_limits: "TokenLimits | None" = None
    # Slack Connect guests (users of another organisation) may take part.
    allow_external_users: bool = False
    # The title goes into the ConversationTitle search attribute, which the codec does not
    # encrypt: only when history is not encrypted. Else it is told by the `status` query.
    title_in_visibility: bool = True
    # Which messages of a channel thread are answered: "auto" (all while one person talks
    # with the bot, then mentions only), "always" or "mentions". "always" in conversations
    # from before the setting: what they did.
    reply_mode: str = "always"


@dataclass
class ConversationState:
    """Everything a conversation needs to go on; carried across continue-as-new.

    It stays small on purpose: old turns are folded into `rolling_summary`, and the dedupe
    window is bounded.
    """

    thread: ThreadRef
    conversation_key: str = ""  # run id of the first run; unique per conversation in a thread
    settings: ConversationSettings | None = None
    started_at: float = 0.0  # epoch seconds, from workflow.now()
    previous_summary: str = ""  # summary of an earlier, ended conversation in the same thread
    rolling_summary: str = ""
    folded_turns: int = 0
    folded_ts: list[str] = field(default_factory=list)  # messages in the rolling summary
    turns: list[Turn] = field(default_factory=list)
    turn_count: int = 0
    participants: list[str] = field(default_factory=list)
    names: dict[str, str] = field(default_factory=dict)
    seen_ts: list[str] = field(default_factory=list)
    pending: list[UserMessage] = field(default_factory=list)
    end_request: EndRequest | None = None
    # Mentions that arrived while the conversation was closing: they open the next one.
    next_conversation: list[UserMessage] = field(default_factory=list)
    input_tokens: int = 0
    output_tokens: int = 0
    last_activity: float = 0.0  # epoch seconds of the latest message or reply
    # Tokens spent on `budget_day` (a UTC date), for the per-conversation daily allowance.
    budget_day: str = ""
    day_tokens: int = 0
    # Prompt tokens Bedrock read from its cache, and wrote to it (input_tokens are the rest).
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    answered_at: float = 0.0  # epoch seconds of the last turn's answer
    # A conversation in Slack's assistant panel: who opened it and the channel in view.
    assistant: AssistantThread | None = None
    greeted: bool = False
    title: str = ""
    shared_files: list[FileRef] = field(default_factory=list)  # in the thread, oldest first
    regenerate: RegenerateRequest | None = None  # accepted, not yet done
    stops_seen: list[str] = field(default_factory=list)  # Slack event ids of Stop clicks
    feedback: list[Feedback] = field(default_factory=list)
    # The thread's messages from before the conversation (a mention inside a thread), read
    # once when it opened; None when there were none to read.
    thread_context: "ThreadContext | None" = None
    # Messages kept, not answered (other apps' posts, people talking among themselves): they
    # go into the next answered turn, ahead of what it answers.
    aside: list[UserMessage] = field(default_factory=list)
    # A second person wrote in this channel thread: under "auto", only mentions are answered.
    mentions_only: bool = False
    notice: str = ""  # one line for under the next answer (the switch, an unread thread)


@dataclass
class ConversationStart:
    """Workflow input: a thread, and the carried state when continuing as new."""

    thread: ThreadRef
    state: ConversationState | None = None


@dataclass
class ThreadContext:
    """A thread's earlier messages, read once when a conversation opens inside it: the newest
    that fit a part of the context budget, oldest first, and how many older ones did not."""

    quotes: list["Quote"] = field(default_factory=list)
    left_out: int = 0
    # Why Slack would not tell ("ratelimited", "not_in_channel"...); "" when it did.
    unread: str = ""


@dataclass
class ThreadRead:
    """Read a thread's messages before `before` (the mention that opened the conversation),
    the newest first within `max_tokens`."""

    thread: ThreadRef
    before: str
    max_tokens: int


@dataclass
class ConversationSetup:
    """What the worker tells a new conversation: its settings and the thread's past."""

    settings: ConversationSettings
    previous_summary: str = ""


@dataclass
class Quote:
    """One Slack message as a prompt shows it: its author as Slack says (the id, and the name
    looked up for it), never as its text claims."""

    user: str
    name: str
    ts: str
    text: str


@dataclass
class ContextNote:
    """Something the model should know beyond the verbatim turns: a summary, or the files it
    no longer sees. Untrusted: the prompt shows it as quoted data in a user message."""

    kind: str  # "previous_summary", "rolling_summary" or "files_left_out"
    text: str


@dataclass
class ChatMessage:
    """One message of the prompt, in Bedrock's alternating user/assistant order."""

    role: str  # "user" or "assistant"
    # An assistant message's text. A user message's text only in requests from before
    # `quotes` (then "[name] text" lines); now "" and the messages are in `quotes`.
    text: str
    files: list[FileRef] = field(default_factory=list)  # to fetch and show the model
    quotes: list[Quote] = field(default_factory=list)  # a user message: the Slack messages


@dataclass
class ReplyRequest:
    """Input of the reply step: the prompt, and where the answer goes."""

    thread: ThreadRef
    messages: list[ChatMessage]
    # The summaries and the files left out, shown in the first user message. A str in
    # requests from before the notes were quoted (it was appended to the system prompt).
    context_notes: str | list[ContextNote]
    idempotency_key: str
    recipient_user: str = ""  # whom a streamed reply answers (Slack requires it in channels)
    inference: InferenceSettings | None = None
    kind: str = "reply"  # or "regenerate"
    # The buttons under the reply; None in requests from before them.
    actions: ReplyRef | None = None
    # In the assistant panel: the channel the user is viewing, whose recent messages the
    # reply reads (if the user may), and that user.
    context_channel: str = ""
    context_user: str = ""
    # The message in view in that channel (app_context_changed): its thread is read instead.
    context_message_ts: str = ""
    # Regenerate: the messages of the answer being replaced, edited in place.
    replace_ts: list[str] = field(default_factory=list)
    # Send cache points: the turns come often enough for the cache (5 minutes) to pay.
    cache: bool = False
    notes: str = ""  # shown under the answer (what the turn left out)
    # Whose `<@…>` mentions may stay in model text written to Slack (threadchat.mentions);
    # broadcasts never do. Empty: not told (requests from before the field), mentions stay.
    participants: list[str] = field(default_factory=list)
    # The thread's messages from before the conversation, shown ahead of everything else.
    thread_context: ThreadContext | None = None
    # The agent session's title, given with its first status (a session is titled once).
    session_title: str = ""
    # Tools the model may call this turn, and the rounds of calls made so far.
    tools: list["ToolSpec"] = field(default_factory=list)
    rounds: list["ToolRound"] = field(default_factory=list)
    # A round after tool calls goes on in the answer's open stream (`stream_ts`), whose
    # message shows `shown` so far.
    stream_ts: str = ""
    shown: str = ""
    stream_mode: str = ""  # how that message is written: "stream", or "update" (edits)
    last_round: bool = False  # the tool rounds are used up: the model must answer now
    # What the turn's searches found (knowledge bases, Slack), listed under the answer, and
    # whether they are numbered as the one search the model saw gave them.
    sources: list["ToolSource"] = field(default_factory=list)
    cited_by_number: bool = False
    # The asker's own memories (the `memory` tools), shown in their turn only.
    memories: list["Memory"] = field(default_factory=list)


@dataclass
class GeneratedReply:
    """The model's answer and what it cost."""

    text: str
    input_tokens: int
    output_tokens: int
    stop_reason: str = "end_turn"
    call: ModelCall | None = None
    notes: str = ""  # shown under the answer: files that did not reach the model
    tool_uses: list["ToolUse"] = field(default_factory=list)  # stop_reason "tool_use"


@dataclass
class DeliveredReply:
    """A reply that reached the thread: its text, cost and Slack ts."""

    text: str
    input_tokens: int
    output_tokens: int
    ts: str
    stop_reason: str = ""
    call: ModelCall | None = None
    parts: list[str] = field(default_factory=list)  # ts of every message, in order
    shown: str = ""  # stopped, or waiting on tools: what its last message (`ts`) shows
    # stop_reason "tool_use": the calls asked for, the answer's stream still open at `ts`,
    # written as `mode` says.
    tool_uses: list["ToolUse"] = field(default_factory=list)
    mode: str = ""


@dataclass
class SummaryRequest:
    """Input of a summary: what is known so far and the turns to fold in."""

    earlier_summary: str
    turns: list[Turn]
    names: dict[str, str]
    final: bool  # the closing summary (summary model) rather than a rolling fold
    inference: InferenceSettings | None = None
    # A rolling summary asked as the conversation's own continuation: the kept turns as the
    # last reply's prompt had them (`turns` are the first of them), which the model reads
    # from the prompt cache. Empty: the summariser's own prompt of `turns`.
    conversation: list[ChatMessage] = field(default_factory=list)
    context_notes: str | list[ContextNote] = ""  # as the reply's, for the same prefix
    cache: bool = False  # send cache points
    thread_context: ThreadContext | None = None  # as the reply's, for the same prefix


@dataclass
class Summary:
    text: str
    input_tokens: int = 0
    output_tokens: int = 0
    call: ModelCall | None = None


@dataclass
class SlackPost:
    """A message for a thread. `idempotency_key` makes a retried post land only once."""

    thread: ThreadRef
    text: str
    idempotency_key: str
    actions: ReplyRef | None = None  # a reply's buttons, under its last message
    # Whose `<@…>` mentions may stay in model text written to Slack (threadchat.mentions);
    # broadcasts never do. Empty: not told (requests from before the field), mentions stay.
    participants: list[str] = field(default_factory=list)
    # The agent session's status once posted ("active" under an answer, "closed" under the
    # summary); "" leaves it as it is.
    session_status: str = ""


@dataclass
class PostedMessage:
    ts: str
    parts: list[str] = field(default_factory=list)  # ts of every message, in order


@dataclass
class PrivateNote:
    """A message in the thread that only `user` sees (an ephemeral message)."""

    thread: ThreadRef
    user: str
    text: str
    # Whose `<@…>` mentions may stay in model text written to Slack (threadchat.mentions);
    # broadcasts never do. Empty: not told (requests from before the field), mentions stay.
    participants: list[str] = field(default_factory=list)


@dataclass
class EndNotice:
    """Tell `user`, privately, that the conversation ended and where its summary is."""

    thread: ThreadRef
    user: str
    summary_ts: str


@dataclass
class ConversationResult:
    """What a finished conversation returns: the transcript it kept and the summary."""

    thread: ThreadRef
    summary: str
    rolling_summary: str
    transcript: list[Turn]
    turn_count: int
    participants: list[str]
    ended_by: str  # "command", "shortcut" or "inactivity"
    input_tokens: int
    output_tokens: int
    feedback: list[Feedback] = field(default_factory=list)
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0


@dataclass
class ConversationStatus:
    """Query result for operators and the CLI."""

    thread: ThreadRef
    turn_count: int
    participants: list[str]
    pending: int
    ending: bool
    input_tokens: int
    output_tokens: int
    last_activity: float = 0.0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    feedback_up: int = 0
    feedback_down: int = 0
    title: str = ""
    kept: int = 0  # messages kept unanswered, for the next answer


@dataclass
class TokenLimits:
    """Daily token allowances, from the worker's config; 0 means no limit."""

    per_user: int = 0
    per_conversation: int = 0
    # Turns (answers and regenerates) a person may start a minute, across conversations.
    turns_per_minute: int = 0


@dataclass
class BudgetCheck:
    """May the turn for `user` call the model? `day` is the UTC date in workflow time."""

    team: str
    user: str
    day: str
    conversation_tokens: int  # what the conversation has spent on `day`
    limits: "TokenLimits | None" = None  # the channel's own; None: the worker's
    # Reserved on the person's budget when the turn may go ahead, before the model is called,
    # so turns running at once see each other; settled by the charge after it. `key` names
    # the turn.
    reserve: int = 0
    key: str = ""


@dataclass
class BudgetVerdict:
    over: str = ""  # "", "user", "conversation" or "rate" (the person's turns a minute)
    limit: int = 0  # that allowance
    # The turn is charged to the person (every answered turn, since usage is always shown;
    # False from a failed check and from workers before that).
    charge_user: bool = False
    reserved: int = 0  # tokens already charged ahead: the charge after the call settles


@dataclass
class TokenCharge:
    """Tokens a turn cost `user` on `day`; `key` makes a repeated charge count once."""

    team: str
    user: str
    day: str
    tokens: int  # negative to give back what a reservation held over the cost
    key: str


@dataclass
class Reservation:
    """Hold `tokens` on a person's day for a turn about to call the model, unless their
    allowance (`limit`) is used up or they start turns faster than `rate` a minute (0: no
    limit). The `reserve` update; `key` makes a retried one hold once."""

    key: str
    tokens: int
    limit: int = 0
    rate: int = 0


# -- Tools (MCP servers and the built-in tools) ---------------------------------------------


@dataclass
class ToolSpec:
    """A tool the model may call this turn: from an MCP server named in the tools file, or a
    built-in one (`knowledge`, `slack_search`, `memory`), whose `server` is that name."""

    server: str
    name: str  # the tool's own name at its server
    description: str
    input_schema: dict  # JSON Schema of its arguments, as the server gave it
    approval: bool = False  # waits for the asker's approval before it runs
    source: str = ""  # a URL shown on the tool's task card (the server's, for HTTP)
    # The server's `timeout:` for one call: the call_tool activity's start-to-close is
    # this plus a margin (the activity gives up on the server itself at this mark).
    timeout_seconds: float = 60.0


@dataclass
class ToolCatalogRequest:
    """Which tools a conversation's turn may use: its channel's servers in the tools file."""

    thread: ThreadRef
    user: str = ""  # whose turn it is (the memory tools are theirs)


@dataclass
class ToolCatalog:
    tools: list[ToolSpec] = field(default_factory=list)
    # Servers the channel may use that did not answer: their tools are out of this turn.
    unavailable: list[str] = field(default_factory=list)


@dataclass
class ToolSource:
    """Where a tool result came from: a citation under the answer and on its task card."""

    title: str
    url: str


@dataclass
class ToolCall:
    """One call the model asked for (a `toolUse` block), run by the `call_tool` activity."""

    tool_use_id: str  # the model's toolUseId
    server: str
    name: str
    arguments: dict
    # Stable across Temporal's retries: sent in the MCP request's `_meta` as
    # `idempotency_key`, so a server with side effects performs it once.
    idempotency_key: str
    thread: ThreadRef
    user: str = ""  # whose turn it answers
    action_token: str = ""  # Slack's, from the message that started the turn (search)
    round: int = 1


@dataclass
class ToolOutcome:
    """What a tool call gave back, told to the model as a `toolResult`. `text` is untrusted."""

    tool_use_id: str
    status: str  # "success" or "error"
    text: str
    sources: list[ToolSource] = field(default_factory=list)
    truncated: bool = False  # cut to the size cap (the text says so)
    duration_ms: int = 0


# -- Memory (the built-in `memory` tools, one MemoryWorkflow per person) --------------------


@dataclass
class Memory:
    """One thing a person asked the bot to remember: short, dated, theirs alone."""

    id: str  # "m1", "m2"...: what forget names
    text: str
    at: float  # epoch seconds, workflow time


@dataclass
class RememberRequest:
    """The `remember` update. `key` makes a retried call store once; `user` must be the
    memory's owner (the workflow refuses anyone else)."""

    user: str
    text: str
    key: str


@dataclass
class ForgetRequest:
    """The `forget` update: one memory by id, or every one (`memory_id` "")."""

    user: str
    memory_id: str = ""


@dataclass
class MemoryState:
    """A person's memories, carried across continue-as-new."""

    memories: list[Memory] = field(default_factory=list)
    keys: dict[str, str] = field(default_factory=dict)  # idempotency key -> memory id
    next_id: int = 1


@dataclass
class MemoryStart:
    """Input of a MemoryWorkflow: whose memory it is, and the state when continuing."""

    team: str
    user: str
    state: MemoryState | None = None
    history_cap: int = 0  # events before continuing as new; 0: the workflow's own


@dataclass
class MemoryLookup:
    """Input of `memories_of`: whose memories a turn of theirs shows the model."""

    team: str
    user: str


@dataclass
class ToolUse:
    """A tool call as the model asked for it (a Converse `toolUse` block)."""

    tool_use_id: str
    name: str  # the name the model knows the tool by (threadchat.tools.model_tool_name)
    input: dict


@dataclass
class ToolRound:
    """One round of a turn's tool loop: what the model said and asked, and what it got."""

    text: str
    uses: list[ToolUse]
    results: list[ToolOutcome]


@dataclass
class ApprovalRequest:
    """A tool call waiting for the asker's approval: the message with the two buttons."""

    thread: ThreadRef
    key: str  # the call's idempotency key: the buttons carry it
    asker: str
    tool: str  # "server / tool"
    arguments: dict
    participants: list[str] = field(default_factory=list)
    ts: str = ""  # the message, once posted (to settle it)
    outcome: str = ""  # how it ended, said in place of the buttons


@dataclass
class ApprovalDecision:
    """Someone clicked Approve or Deny (the `decide` update)."""

    key: str
    user: str
    approve: bool
