"""Everything threadchat says to people in Slack, in one place."""

import json
import re
from datetime import datetime
from urllib.parse import quote

from threadchat.ids import thread_permalink
from threadchat.inference import BLOCKED, CUT
from threadchat.model import ThreadRef

_BEDROCK_FAILURES = {
    "ThrottlingException": "the model is busy right now and kept refusing after several tries. "
    "Please send your message again in a minute.",
    "ServiceQuotaExceededException": "this workspace has used up its model quota. "
    "Please ask an admin to raise the Bedrock quota.",
    "AccessDeniedException": "I am not allowed to use the model. "
    "An admin needs to check Bedrock model access and the worker's AWS permissions.",
    "ResourceNotFoundException": "the configured model was not found. "
    "An admin needs to check BEDROCK_MODEL_ID and the AWS region.",
    "ContextOverflow": "that message is too long for the model, even on its own. "
    "Please shorten it or split it up.",
    "NoCredentials": "the worker has no AWS credentials. An admin needs to configure them.",
    "ValidationException": "the model rejected the request. Please rephrase and try again.",
}
NOT_ENABLED = (
    "Sorry, I'm not enabled here. If you need me, ask the people who run threadchat "
    "in your workspace."
)
_DEFAULT_FAILURE = "I couldn't reach the model just now. Please try again in a moment."
_SLACK_FAILURE = (
    ":warning: Sorry, I wrote an answer but Slack would not take it. Please ask again in a moment."
)


def turn_failure(error_type: str | None) -> str:
    """The notice posted in the thread when a turn finally fails."""
    if (error_type or "").startswith("Slack"):
        return _SLACK_FAILURE
    return f":warning: Sorry, {_BEDROCK_FAILURES.get(error_type or '', _DEFAULT_FAILURE)}"


def over_budget(scope: str, user: str, limit: int, seconds_to_renewal: float) -> str:
    """Why a message got no answer: someone's, or the conversation's, daily allowance."""
    whose = f"<@{user}>, you have" if scope == "user" else "this conversation has"
    return (
        f":hourglass: Sorry, {whose} used today's allowance of {limit:,} tokens, so I can't "
        f"answer until it renews at 00:00 UTC (in {format_duration(seconds_to_renewal)})."
    )


def summary_message(
    summary: str,
    *,
    ended_by: str,
    participants: list[str],
    turns: int,
    duration_seconds: float,
) -> str:
    """The closing message: a header, who took part, turns, duration, then the summary."""
    reason = {
        "inactivity": " after a quiet spell",
        "command": " with /endchat",
        "shortcut": " with End chat",
        "prompt": " with End and summarize",
        "home": " from the App Home tab",
    }.get(ended_by, "")
    facts = (
        f"{', '.join(participants) or 'nobody'} · {turns} turn{'s' if turns != 1 else ''} · "
        f"{format_duration(duration_seconds)}"
    )
    body = summary or (":warning: I couldn't write a summary because the model was unavailable.")
    return f"### Conversation summary\n_Ended{reason}. {facts}_\n\n{body}"


def format_duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60} min"


THINKING = "is thinking…"
# After about 10 s of Bedrock refusing (throttling), the status says why the answer is slow.
SUSPENDED = "is waiting for you…"
THINKING_RETRYING = "is waiting for the model, which is busy. Still trying…"


TITLE_LENGTH = 60


def question_title(text: str) -> str:
    """A session's title without a model call: the first line of the question that opened
    it, mentions and links dropped, cut at a word."""
    line = next((x for x in text.splitlines() if x.strip()), "")
    line = " ".join(re.sub(r"<[^>]*>", "", line).split())
    if len(line) <= TITLE_LENGTH:
        return line
    return line[: TITLE_LENGTH - 1].rsplit(" ", 1)[0] + "…"


def stopped_line(name: str) -> str:
    """Under an answer stopped mid-way (a name, never a mention: an edit pings nobody, and
    nobody needs pinging)."""
    return f"_Stopped by {name}._" if name else "_Stopped._"


def stopped_text(shown: str, name: str) -> str:
    return f"{shown.rstrip()}\n\n{stopped_line(name)}" if shown.strip() else stopped_line(name)


def ended_notice(permalink: str) -> str:
    """The private answer to whoever ended the conversation (mrkdwn: an ephemeral message)."""
    return f"Conversation ended. <{permalink}|Its summary> is in the thread."


def ended_link(team_domain: str, thread: ThreadRef) -> str:
    link = thread_permalink(team_domain, thread.channel, thread.thread_ts)
    return f"Ending <{link}|this conversation>. Its summary will be posted in the thread."


BAD_COMMAND = ":warning: Slack sent this command without what I need; please try again."
NOTHING_TO_END = "You have no active conversation here, so there is nothing to end."
NOTHING_TO_END_IN_THREAD = "This thread has no active conversation, so there is nothing to end."
BAD_THREAD_LINK = (
    ":warning: That doesn't look like a thread link. Use `/endchat` alone, or "
    "`/endchat <link to a message in the thread>`."
)
ENDING_FROM_SHORTCUT = "Ending this thread's conversation. The summary will follow in the thread."


EMPTY_ANSWER = "(the model returned an empty answer)"
ANSWER_CUT = "_(The answer stops here: it reached the length limit. Ask me to go on.)_"
ANSWER_BLOCKED = (
    ":no_entry: Sorry, I can't answer that: this workspace's content policy blocked the answer."
)


def reply_text(text: str, stop_reason: str, notes: str = "") -> str:
    """What the thread shows of an answer: a note when it was cut short, the guardrail's own
    message (or ours) when a policy blocked it, and `notes` (files it could not read)."""
    if stop_reason in BLOCKED:
        shown = text.strip().removesuffix(EMPTY_ANSWER) or ANSWER_BLOCKED
    elif stop_reason == CUT:
        shown = f"{text}\n\n{ANSWER_CUT}"
    else:
        shown = text
    return f"{shown}\n\n{notes}" if notes else shown


# Answers to the buttons under a reply, shown only to whoever clicked.
FEEDBACK_THANKS = {
    "up": "Thanks for the feedback: glad that helped. :+1:",
    "down": "Thanks for the feedback. Try *Regenerate* for a different answer.",
}
REGENERATE_REFUSED = {
    "NotParticipant": "Only people taking part in this conversation can regenerate its answers.",
    "NotLatest": "Only the latest answer can be regenerated; this one is older.",
    "AlreadyRegenerating": "That answer is already being regenerated.",
    "Ending": "This conversation is ending, so its answers can't be regenerated.",
}
FEEDBACK_TOO_LATE = "This conversation has ended, so I couldn't record your feedback."
CONVERSATION_OVER = "This conversation has ended, so its answers can't be regenerated."
TRY_AGAIN = ":warning: I couldn't do that just now. Please try again in a moment."


# Why a shared file did not reach the model: one short note under the answer, per file.
FILE_PROBLEMS = {
    "no_vision": "the model in use here can't read files",
    "unsupported": "I can't read that kind of file (images, PDF, Word, Excel, CSV, HTML "
    "and text files work)",
    "too_large": "it is too large ({size}; the limit is {limit})",
    "too_many": "that is more files than I can read at once",
    "not_served": "Slack wouldn't let me download it",
    "not_here": "it isn't shared in this channel",
    "elsewhere": "it is stored outside Slack, so I only know its name",
}


def file_problem(key: str, size: str = "", limit: str = "") -> str:
    return FILE_PROBLEMS[key].format(size=size, limit=limit)


def file_notes(problems: list[tuple[str, str]]) -> str:
    """(file name, why) for each file that did not reach the model → the notes under the
    answer."""
    return "\n".join(f"_:paperclip: I couldn't read {name}: {why}._" for name, why in problems)


# The assistant panel.
GREETING = "Hi <@{user}>! I'm threadchat. Ask me anything; I remember the whole conversation."
GREETING_IN_CHANNEL = (
    "Hi <@{user}>! I'm threadchat. I can see recent messages in <#{channel}> if you are a "
    "member there; ask me about them, or anything else."
)
END_PROMPT = "End and summarize"


def suggested_prompts(context_channel: str) -> list[dict[str, str]]:
    """The default prompts under the greeting (operators set their own per channel)."""
    prompts = []
    if context_channel:
        prompts.append(
            {
                "title": "Summarize this channel",
                "message": f"Summarize the recent discussion in <#{context_channel}>.",
            }
        )
    prompts.append({"title": "What can you do?", "message": "What can you help me with?"})
    prompts.append({"title": END_PROMPT, "message": END_PROMPT})
    return prompts


PROMPTS_TITLE = "Try asking"


def messages_tab_prompts() -> list[dict[str, str]]:
    """Above the Messages tab's composer, where each prompt starts a new conversation (so
    there is nothing to end or summarise yet)."""
    return [
        {"title": "What can you do?", "message": "What can you help me with?"},
        {"title": "Explain a concept", "message": "Explain durable execution in two paragraphs."},
    ]


TITLE_PROMPT = (
    "Write a title of at most six words for this conversation, in the language it is in. "
    "Answer with the title alone: no quotes, no trailing punctuation."
)


def clean_title(text: str) -> str:
    """The model's title, as Slack shows it: one line, no quotes, at most 60 characters."""
    title = " ".join(text.split()).strip("\"'“”‘’ .")
    return (title[:57] + "…") if len(title) > 60 else title or "Conversation"


# The App Home tab.
HOME_TITLE = "Your conversations with threadchat"
HOME_NONE = (
    "You have no open conversations. Mention @threadchat in a channel, or open the assistant."
)
HOME_END = "End and summarize"
HOME_KEEP = "Keep it"
HOME_END_CONFIRM = "The summary will be posted in the conversation's thread."


def home_tokens(used: int | None, allowance: int) -> str:
    if used is None:
        return "Tokens used today: unknown right now."
    if allowance:
        return f"Tokens used today: {used:,} of your {allowance:,} (renews at 00:00 UTC)."
    return f"Tokens used today: {used:,}."


HOME_ENDING = "Ending: the summary will be posted in its thread."


def home_untitled(channel: str, name: str | None = None) -> str:
    """The label of a conversation with no title yet. Plain text: it is a link's label, where
    a channel mention would show as escaped markup."""
    if channel.startswith("D"):
        return "A direct conversation"
    return f"A conversation in #{name}" if name else "A conversation in a channel"


def home_place(channel: str, name: str | None = None) -> str:
    """Where a titled conversation is, under its title."""
    if channel.startswith("D"):
        return "In a direct conversation"
    return f"In #{name}" if name else "In a channel"


def home_started(started: datetime) -> str:
    """When it began, in the reader's own time zone (Slack's date formatting)."""
    fallback = f"{started:%Y-%m-%d %H:%M} UTC"
    return f"Started <!date^{int(started.timestamp())}^{{date_short_pretty}} {{time}}|{fallback}>"


def home_more(count: int) -> str:
    return f"…and {count} more."


HOME_MEMORY_TITLE = "What you asked me to remember"
HOME_MEMORY_NONE = (
    'Nothing yet. Say "remember that I…" in a conversation and it shows here; only your own '
    "conversations see it."
)
HOME_MEMORY_UNKNOWN = "Your memories cannot be shown right now."
HOME_FORGET = "Forget"
HOME_FORGET_ALL = "Forget everything"
HOME_FORGET_ALL_CONFIRM = "Everything you asked me to remember will be forgotten."
HOME_KEEP_MEMORIES = "Keep them"


def turn_size_note(messages_left_out: int, files_left_out: int, cut_short: bool) -> str:
    """Under an answer whose turn was over the size one turn may send."""
    parts = []
    if messages_left_out:
        parts.append(f"{messages_left_out} earlier message{'s' if messages_left_out > 1 else ''}")
    if files_left_out:
        parts.append(f"{files_left_out} file{'s' if files_left_out > 1 else ''}")
    if cut_short:
        parts.append("the end of a very long message")
    if not parts:
        return ""
    return f"_:scissors: Too much at once: I left out {' and '.join(parts)}. Send it in parts._"


THREAD_UNREAD = "_I couldn't read this thread's earlier messages, so I answered from yours alone._"
THREAD_PARTLY_UNREAD = "_Slack let me read only part of this thread's earlier messages._"
MENTIONS_ONLY = (
    "_More people are here now: from now on I answer only messages that mention me, and keep "
    "the rest in mind._"
)


def join_notes(*notes: str) -> str:
    return "\n".join(note for note in notes if note)


def too_fast(turns_per_minute: int) -> str:
    """Only the sender sees it: they start turns faster than the allowance per minute."""
    return (
        f":hourglass: You're asking faster than {turns_per_minute} a minute, so I skipped this "
        "one. Try again in a moment."
    )


# -- Tools ------------------------------------------------------------------------------------

# Told to the model as a tool's result (it says so to the person in its own words).
NO_SUCH_TOOL = "There is no such tool in this conversation."
TOOL_FAILED = "The tool failed (its server did not answer in time, or kept failing)."
TOOL_STOPPED = "Not run: the person stopped the answer."
# A call is cancelled only as far as its server lets it be: what it did may stand.
TOOL_STOPPED_RUNNING = "Stopped by the person while it ran: it may have taken effect."
APPROVAL_STOPPED = "Stopped before anyone decided."
APPROVAL_TIMED_OUT = "Nobody decided in time: not run."
# Why a click on Approve or Deny did nothing (the `decide` update's refusals), said privately.
APPROVAL_REFUSED = {
    "NotAsker": "Only the person who asked can approve or deny this.",
    "Decided": "This was already decided.",
    "NotWaiting": "This is no longer waiting for a decision.",
}
MAX_ARGUMENTS_SHOWN = 1_500
MAX_VALUE_SHOWN = 300
TOOL_ROUNDS_USED = "_The answer used all the tool calls it may make; it may be incomplete._"


def not_approved(name: str) -> str:
    return f"Not approved by {name}: not run."


def approval_timed_out(asker: str) -> str:
    return f"Not approved by {asker} in time: not run."


def approval_decided(approve: bool, name: str) -> str:
    return f"✅ Approved by {name}." if approve else f"🚫 Denied by {name}."


def approval_prompt(asker: str, tool: str, arguments: dict) -> str:
    """The message a tool call waits on: which tool, with what (cut short; the caller
    neutralises mentions)."""
    # Each value cut on its own first: one long argument must not push the others (where
    # the message goes, what it says) out of the asker's sight.
    cut = {key: _shown_value(value) for key, value in arguments.items()}
    shown = json.dumps(cut, indent=1, ensure_ascii=False, sort_keys=True)
    if len(shown) > MAX_ARGUMENTS_SHOWN:
        shown = shown[:MAX_ARGUMENTS_SHOWN] + "\n… (cut short)"
    shown = shown.replace("```", "` ` `")
    return f"<@{asker}>, may I use *{tool}* with these arguments?\n```\n{shown}\n```"


def _shown_value(value: object) -> object:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    if len(text) <= MAX_VALUE_SHOWN:
        return value
    return f"{text[:MAX_VALUE_SHOWN]}… ({len(text) - MAX_VALUE_SHOWN} more characters)"


def tools_unavailable(servers: list[str]) -> str:
    return f"_Could not reach {', '.join(sorted(servers))}: answered without those tools._"


def tools_used(titles: list[str]) -> str:
    return f"_Used {', '.join(titles)}._" if titles else ""


MAX_SOURCES = 10


def sources_line(sources: list, answer: str, cited_by_number: bool) -> str:
    """The documents and messages an answer drew on, as numbered links under it. With one
    search's results, numbered as the model saw them, only those it cites ([n]) are listed
    (all of them if it cites none)."""
    numbered = list(enumerate(sources, 1))
    if cited_by_number:
        cited = [(n, s) for n, s in numbered if f"[{n}]" in answer]
        numbered = cited or numbered
    links = [f"[{n}] {_source_link(s.title or s.url, s.url)}" for n, s in numbered[:MAX_SOURCES]]
    return f"Sources: {' · '.join(links)}" if links else ""


# What would end a link's address early in Slack markdown, and let a forged one start.
_LINK_BREAKERS = re.compile(r"[\s()<>\[\]]")


def _source_link(title: str, url: str) -> str:
    """A source as a link, or its title alone when it has no address. Both come from
    documents and messages: what could end the link early and start a forged one goes."""
    text = re.sub(r"[\[\]()<>]", "", title).strip()[:80] or "source"
    if not url:
        return text
    address = _LINK_BREAKERS.sub(lambda c: quote(c.group()), url)
    return f"[{text}]({address})"
