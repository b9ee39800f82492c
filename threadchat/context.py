"""The context window: which turns go into a prompt, and when old turns fold into a summary.

Token counts are estimates (about four characters a token), which is enough to keep the
prompt under a budget; Bedrock's `usage.inputTokens` reports the exact figure afterwards.
"""

import math

from threadchat import attachments
from threadchat.inference import BLOCKED
from threadchat.model import ChatMessage, ContextNote, FileRef, Quote, Turn, UserMessage

CHARS_PER_TOKEN = 4


def estimate_tokens(text: str) -> int:
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def speaker(user: str, names: dict[str, str]) -> str:
    return names.get(user) or user


def author(message: UserMessage, names: dict[str, str]) -> str:
    """Who wrote a message, as the prompt labels it: another app is named as one."""
    return f"{message.app} (app)" if message.app else speaker(message.user, names)


def user_turn_text(messages: list[UserMessage], names: dict[str, str]) -> str:
    """One user turn as "[name] text" lines: what the context budget counts (the prompt
    frames each message instead, see `quote`), and the title's question.

    The counts stay as they were: the workflow decides when to fold from them.
    """
    return "\n".join(f"[{author(m, names)}] {_message_text(m)}" for m in messages)


def quote(message: UserMessage, names: dict[str, str]) -> Quote:
    """A message as the prompt shows it, its author taken from Slack's ids, not its text."""
    return Quote(
        user=message.user,
        name=author(message, names),
        ts=message.ts,
        text=_message_text(message),
    )


def user_turn(
    messages: list[UserMessage], names: dict[str, str], files: list[FileRef]
) -> ChatMessage:
    """One user turn of the prompt from several messages, one quote each: merging keeps
    Bedrock's roles alternating when people write while the bot is still answering."""
    return ChatMessage("user", "", files, [quote(m, names) for m in messages])


def _message_text(message: UserMessage) -> str:
    text = message.text.strip()
    if message.files:
        shared = f"(shared {', '.join(f.name for f in message.files)})"
        return f"{text} {shared}" if text else shared
    return text or "(no text)"


def turn_files(turn: Turn) -> list[FileRef]:
    return [f for m in turn.messages for f in m.files]


def files_tokens(files: list[FileRef]) -> int:
    return sum(attachments.estimate_tokens(f) for f in files)


def turn_tokens(turn: Turn, names: dict[str, str]) -> int:
    return estimate_tokens(user_turn_text(turn.messages, names)) + estimate_tokens(turn.reply or "")


def prompt_messages(
    turns: list[Turn], new_messages: list[UserMessage], names: dict[str, str], budget_tokens: int
) -> list[ChatMessage]:
    """The prompt for answering `new_messages`: the newest answered turns that fit the budget.

    The new messages always go in, with their files, even alone over budget, so the model
    (not us) decides whether they are too long. Failed turns are left out: they have no
    answer to pair with. Earlier turns keep their files while the budget has room for them;
    from the first that has no room, older turns go in without theirs. The kept turns are
    taken whole from the oldest that fits, so that between folds each prompt starts with the
    one before it (what prompt caching reads back).
    """
    question = user_turn_text(new_messages, names)
    new_files = [f for m in new_messages for f in m.files]
    remaining = budget_tokens - estimate_tokens(question) - files_tokens(new_files)
    kept: list[tuple[Turn, bool]] = []
    with_files = True
    for turn in reversed(answered(turns)):
        cost = turn_tokens(turn, names)
        if cost > remaining:
            break
        extra = files_tokens(turn_files(turn))
        with_files = with_files and cost + extra <= remaining
        remaining -= cost + (extra if with_files else 0)
        kept.append((turn, with_files))
    prompt: list[ChatMessage] = []
    for turn, files in reversed(kept):
        prompt.append(user_turn(turn.messages, names, turn_files(turn) if files else []))
        prompt.append(ChatMessage("assistant", turn.reply or ""))
    prompt.append(user_turn(new_messages, names, new_files))
    return prompt


def files_left_out(shared: list[FileRef], prompt: list[ChatMessage]) -> list[FileRef]:
    """Files shared in the conversation that `prompt` does not show the model."""
    shown = {f.id for m in prompt for f in m.files}
    return [f for f in shared if f.id not in shown]


def history_messages(turns: list[Turn], names: dict[str, str]) -> list[ChatMessage]:
    """The answered turns as alternating user and assistant messages, as prompts carry them."""
    messages: list[ChatMessage] = []
    for turn in answered(turns):
        messages.append(user_turn(turn.messages, names, []))
        messages.append(ChatMessage("assistant", turn.reply or ""))
    return messages


def answered(turns: list[Turn]) -> list[Turn]:
    """The turns a prompt carries: failed or blocked turns, and any blank answer Bedrock
    would reject, stay out."""
    return [t for t in turns if (t.reply or "").strip() and t.stop_reason not in BLOCKED]


def turns_to_fold(
    turns: list[Turn], names: dict[str, str], budget_tokens: int, keep_tokens: int | None = None
) -> int:
    """How many of the oldest turns to fold into the rolling summary now (0 = none).

    Folding starts once the kept turns exceed the budget, and then goes down to
    `keep_tokens` (half of it unless given), so that summaries are written every few turns
    rather than on every turn.
    """
    keep = budget_tokens // 2 if keep_tokens is None else keep_tokens
    total = sum(turn_tokens(t, names) for t in turns)
    if total <= budget_tokens:
        return 0
    count = 0
    for turn in turns[:-1]:  # the newest turn always stays verbatim
        if total <= keep:
            break
        total -= turn_tokens(turn, names)
        count += 1
    return count


def context_notes(
    previous_summary: str, rolling_summary: str, earlier_files: list[FileRef] | None = None
) -> list[ContextNote]:
    """What the model should know beyond the verbatim turns, oldest first: each a note the
    prompt quotes in its first user message (never in the system prompt: summaries are
    written from people's messages, and file names are theirs)."""
    notes = []
    if previous_summary:
        notes.append(ContextNote("previous_summary", previous_summary))
    if rolling_summary:
        notes.append(ContextNote("rolling_summary", rolling_summary))
    if earlier_files:
        notes.append(ContextNote("files_left_out", "\n".join(f.name for f in earlier_files)))
    return notes
