"""The scripted long conversation of the token benchmark: user messages of 100-200 words, and a
model (a LocalBedrock responder) answering in kind, all deterministic.

The responder keeps what it answered, so the naive full-history resend can be computed from
exactly the same transcript.
"""

from __future__ import annotations

import math
import random
import re
import zlib
from typing import Any

_VOCABULARY = (
    "the a our this that deploy service latency queue worker thread message budget token "
    "cost summary model context window history event signal activity retry timeout channel "
    "user team release build test cluster region database index cache memory request reply "
    "stream chunk limit rate error alert metric dashboard incident review plan migrate "
    "schedule rollout canary feature flag config secret key rotate audit owner ticket sprint "
    "estimate scope risk decision option tradeoff because however then also maybe should "
    "could would will must can need want think know see check run measure compare improve "
    "reduce increase keep drop move split merge fix break ship wait start stop open close "
    "fast slow large small new old first last next previous daily weekly after before during "
    "with without into from over under between about around every each some most few many"
)
WORDS = _VOCABULARY.split(" ")


def sentence_words(rng: random.Random, count: int) -> str:
    """`count` words as plain sentences (no Markdown, so Slack shows them as sent)."""
    words, out = [rng.choice(WORDS) for _ in range(count)], []
    while words:
        length = min(len(words), rng.randint(8, 16))
        part, words = words[:length], words[length:]
        out.append(" ".join(part).capitalize() + ".")
    return " ".join(out)


def user_messages(turns: int, seed: int = 6) -> list[str]:
    """The user's side of the script: one message of 100-200 words per turn."""
    rng = random.Random(seed)
    return [f"Turn {i + 1}. " + sentence_words(rng, rng.randint(100, 200)) for i in range(turns)]


def system_text(body: dict[str, Any]) -> str:
    return "\n".join(b.get("text", "") for b in body.get("system") or [] if isinstance(b, dict))


def message_text(message: dict[str, Any]) -> str:
    return "\n".join(
        b["text"] for b in message.get("content") or [] if isinstance(b.get("text"), str)
    )


def body_tokens(body: dict[str, Any]) -> int:
    """Input tokens of a Converse request as the local Bedrock counts them (and reports in
    usage.inputTokens): the system prompt and every message, about four characters a token."""
    parts = [system_text(body)] + [message_text(m) for m in body.get("messages") or []]
    return math.ceil(len("\n".join(p for p in parts if p)) / 4)


def is_summary_request(body: dict[str, Any]) -> bool:
    """The summariser's system prompt asks for a summary in its first sentence, or (a rolling
    summary asked of the conversation itself) its last message does."""
    messages = body.get("messages") or []
    last = message_text(messages[-1]) if messages else ""
    return any(
        "summar" in re.split(r"[.!?\n]", text.strip(), maxsplit=1)[0].lower()
        for text in (system_text(body), last)
    )


class ScriptedModel:
    """A LocalBedrock responder: replies of 100-200 words, summaries of about 150 words."""

    def __init__(self) -> None:
        self.replies: dict[str, str] = {}  # the last user message -> the reply given

    def __call__(self, body: dict[str, Any]) -> str:
        messages = body.get("messages") or []
        last = message_text(messages[-1]) if messages else ""
        rng = random.Random(zlib.crc32(last.encode()))
        if is_summary_request(body):
            return "\n".join(
                f"- {sentence_words(rng, rng.randint(15, 22))}" for _ in range(rng.randint(6, 8))
            )
        reply = sentence_words(rng, rng.randint(100, 200))
        self.replies[last] = reply
        return reply
