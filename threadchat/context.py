"""The context window: which turns go into a prompt, and when old turns fold into a summary.

Token counts are estimates (about four characters a token), which is enough to keep the
prompt under a budget; Bedrock's `usage.inputTokens` reports the exact figure afterwards.
"""

import math

from threadchat.inference import BLOCKED
from threadchat.model import ChatMessage, Turn, UserMessage

CHARS_PER_TOKEN = 4


def estimate_tokens(text: str) -> int:
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def speaker(user: str, names: dict[str, str]) -> str:
    return names.get(user) or user


def user_turn_text(messages: list[UserMessage], names: dict[str, str]) -> str:
    """One user turn from several messages, each labelled with who wrote it.

    Labels let the model tell people apart in shared threads, and merging keeps Bedrock's
    roles alternating when people write while the bot is still answering.
    """
    return "\n".join(
        f"[{speaker(m.user, names)}] {m.text.strip() or '(no text)'}" for m in messages
    )


def turn_tokens(turn: Turn, names: dict[str, str]) -> int:
    return estimate_tokens(user_turn_text(turn.messages, names)) + estimate_tokens(turn.reply or "")


def prompt_messages(
    turns: list[Turn], new_messages: list[UserMessage], names: dict[str, str], budget_tokens: int
) -> list[ChatMessage]:
    """The prompt for answering `new_messages`: the newest answered turns that fit the budget.

    The new messages always go in, even alone over budget, so the model (not us) decides
    whether they are too long. Failed turns are left out: they have no answer to pair with.
    The kept turns are taken whole from the oldest that fits, so that between folds each
    prompt starts with the one before it (what prompt caching reads back).
    """
    question = user_turn_text(new_messages, names)
    remaining = budget_tokens - estimate_tokens(question)
    kept: list[Turn] = []
    for turn in reversed(answered(turns)):
        cost = turn_tokens(turn, names)
        if cost > remaining:
            break
        kept.append(turn)
        remaining -= cost
    return [*history_messages(list(reversed(kept)), names), ChatMessage("user", question)]


def history_messages(turns: list[Turn], names: dict[str, str]) -> list[ChatMessage]:
    """The answered turns as alternating user and assistant messages, as prompts carry them."""
    messages: list[ChatMessage] = []
    for turn in answered(turns):
        messages.append(ChatMessage("user", user_turn_text(turn.messages, names)))
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


def transcript_text(turns: list[Turn], names: dict[str, str], bot_name: str = "assistant") -> str:
    """Turns as plain text, for the summariser."""
    lines: list[str] = []
    for turn in turns:
        lines.append(user_turn_text(turn.messages, names))
        if turn.stop_reason in BLOCKED:
            lines.append("(the answer was blocked by the content policy)")
        else:
            lines.append(
                f"[{bot_name}] {turn.reply}" if turn.reply is not None else "(not answered)"
            )
    return "\n".join(lines)


def context_notes(previous_summary: str, rolling_summary: str) -> str:
    """What the model should know beyond the verbatim turns, for the system prompt."""
    notes = []
    if previous_summary:
        notes.append(
            f"An earlier conversation in this thread ended with this summary:\n{previous_summary}"
        )
    if rolling_summary:
        notes.append(f"Summary of this conversation's earlier part:\n{rolling_summary}")
    return "\n\n".join(notes)
