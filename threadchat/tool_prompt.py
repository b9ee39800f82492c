"""A turn's tools in a Converse request, and the model's tool calls out of its answer.

Pure: the Bedrock activities build requests with it, and the streaming answer reads the
model's `toolUse` blocks back. Tool results are untrusted text: they go back in the user's
turn as `toolResult` blocks (never into the system prompt), labelled with the tool they came
from.
"""

import json

from threadchat.model import ToolOutcome, ToolRound, ToolSpec, ToolUse
from threadchat.tools import tool_result_block

LAST_ROUND = (
    "(No more tool calls in this answer: answer now with what the tools gave, and say what "
    "you could not look up.)"
)
# What Slack shows of a task card's details and output at most.
CARD_TEXT = 256


def round_messages(rounds: list[ToolRound], last_round: bool) -> list[dict]:
    """The tool rounds so far, as the assistant's calls and the user's results, after the
    question."""
    messages: list[dict] = []
    for index, done in enumerate(rounds):
        asked = [{"text": done.text}] if done.text.strip() else []
        asked += [
            {"toolUse": {"toolUseId": u.tool_use_id, "name": u.name, "input": u.input}}
            for u in done.uses
        ]
        results: list[dict] = [tool_result_block(r) for r in done.results]
        if last_round and index == len(rounds) - 1:
            results.append({"text": LAST_ROUND})
        messages += [{"role": "assistant", "content": asked}, {"role": "user", "content": results}]
    return messages


def tool_uses(content: list[dict]) -> list[ToolUse]:
    """The calls in an assistant message's content (a Converse response)."""
    return [
        ToolUse(b["toolUse"]["toolUseId"], b["toolUse"]["name"], b["toolUse"].get("input") or {})
        for b in content
        if "toolUse" in b
    ]


class StreamedToolUses:
    """Tool calls read from ConverseStream events: a block's start names the tool, its
    deltas carry the input as pieces of JSON."""

    def __init__(self) -> None:
        self._blocks: dict[int, tuple[str, str, list[str]]] = {}

    def start(self, event: dict) -> None:
        use = (event.get("start") or {}).get("toolUse")
        if use:
            self._blocks[event.get("contentBlockIndex", 0)] = (use["toolUseId"], use["name"], [])

    def delta(self, event: dict) -> None:
        use = (event.get("delta") or {}).get("toolUse")
        block = self._blocks.get(event.get("contentBlockIndex", 0))
        if use and block:
            block[2].append(use.get("input", ""))

    def uses(self) -> list[ToolUse]:
        found = []
        for _, (use_id, name, pieces) in sorted(self._blocks.items()):
            try:
                arguments = json.loads("".join(pieces) or "{}")
            except ValueError:
                arguments = {}  # the tool is told it got nothing, and says what it needs
            found.append(ToolUse(use_id, name, arguments if isinstance(arguments, dict) else {}))
        return found


def task_card(
    use: ToolUse, spec: ToolSpec | None, status: str, outcome: ToolOutcome | None = None
) -> dict:
    """A Slack `task_update` stream chunk for one call: pending, in_progress, complete or
    error, with its sources (the server's URL, the documents a search found)."""
    card: dict = {
        "type": "task_update",
        "id": use.tool_use_id,
        "title": f"{spec.server} / {spec.name}" if spec else use.name,
        "status": status,
    }
    if outcome is not None:
        first = (outcome.text.strip().splitlines() or [""])[0]
        if first:
            card["output"] = first[:CARD_TEXT]
        sources = [
            {"type": "url", "url": s.url, "text": s.title[:CARD_TEXT]}
            for s in outcome.sources
            if s.url
        ]
        if sources:
            card["sources"] = sources
    elif spec is not None and spec.source:
        card["sources"] = [{"type": "url", "url": spec.source, "text": spec.server}]
    return card
