"""Converse prompt caching: where the cache points go, and which models take them.

Each prompt gets a cache point after the system prompt (the operator's, the same for every
conversation with it) and one after the last answered turn, so the next turn, whose prompt
starts with this one's, reads all of it from the cache and pays full price only for what is
new. The prefix (the summaries and file notes open the first user message) changes only when
old turns fold into the rolling summary.
"""

import copy
import re

CACHE_POINT = {"cachePoint": {"type": "default"}}

# Families that refuse cache points. Others are tried; a model that refuses them anyway is
# remembered by the worker (see BedrockActivities), so the refusal costs one call, not one
# per turn.
_NO_CACHING = re.compile(
    r"meta\.|mistral\.|cohere\.|ai21\.|amazon\.titan|deepseek\.|writer\.|"
    r"anthropic\.claude-(v2|instant|3-haiku|3-sonnet|3-opus|3-5-sonnet)"
)


def supported(model_id: str) -> bool:
    """Whether to send cache points to `model_id` (a model id, profile id or ARN)."""
    return not _NO_CACHING.search(model_id)


def refused(message: str) -> bool:
    """Whether a ValidationException says the model does not take cache points."""
    text = message.lower()
    return "cach" in text and ("support" in text or "not" in text)


def with_cache_points(arguments: dict, answer: int = -2) -> dict:
    """Converse arguments with a cache point after the system text (if any) and after the
    answer at index `answer` of the messages: by default the last answered turn, just before
    the new question."""
    cached = copy.deepcopy(arguments)
    if cached["system"]:
        cached["system"] = [*cached["system"], CACHE_POINT]
    messages = cached["messages"]
    if len(messages) >= 1 - answer and messages[answer]["role"] == "assistant":
        messages[answer]["content"] = [*messages[answer]["content"], CACHE_POINT]
    return cached


def without_cache_points(arguments: dict) -> dict:
    plain = copy.deepcopy(arguments)
    plain["system"] = [b for b in plain["system"] if "cachePoint" not in b]
    for message in plain["messages"]:
        message["content"] = [b for b in message["content"] if "cachePoint" not in b]
    return plain
