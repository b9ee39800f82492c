"""The names the model sees for tools, and the way back from a name to the tool.

Bedrock (and every model behind Converse) wants tool names matching ^[a-zA-Z0-9_-]{1,64}$,
unique in one request. Ours are `server__tool`; a tool name with other characters, or a pair
too long, is cut and ends in a short hash of the full pair, so the name stays unique and
stable. Pure: the workflow and the activities both use it.
"""

import hashlib
import re
from typing import Any

from threadchat import prompt
from threadchat.model import ToolOutcome, ToolSpec

MODEL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
SEPARATOR = "__"
_UNSAFE = re.compile(r"[^a-zA-Z0-9_-]")
_HASH_CHARS = 8


def model_tool_name(spec: ToolSpec) -> str:
    """The name the model calls `spec` by: `server__tool`, or cut with a hash when needed."""
    return tool_name_for(spec.server, spec.name)


def tool_name_for(server: str, name: str) -> str:
    """`model_tool_name` for a server and tool name."""
    plain = f"{server}{SEPARATOR}{name}"
    if MODEL_NAME.fullmatch(plain):
        return plain
    digest = hashlib.sha256(f"{server}\0{name}".encode()).hexdigest()[:_HASH_CHARS]
    safe = _UNSAFE.sub("_", plain)
    return f"{safe[: 64 - _HASH_CHARS - 1]}_{digest}"


def tools_by_model_name(specs: list[ToolSpec]) -> dict[str, ToolSpec]:
    """Each spec under the name the model sees it by (the first of two that collide wins)."""
    named: dict[str, ToolSpec] = {}
    for spec in specs:
        named.setdefault(model_tool_name(spec), spec)
    return named


def find_tool(specs: list[ToolSpec], model_name: str) -> ToolSpec | None:
    """The tool the model means by `model_name` among this turn's `specs`, or None (a name
    the model made up)."""
    return tools_by_model_name(specs).get(model_name)


def bedrock_tool_config(specs: list[ToolSpec]) -> dict[str, Any]:
    """Converse's `toolConfig` for a turn's tools, each under its model name (send none at
    all for a turn without tools: Bedrock refuses an empty list)."""
    tools = []
    for name, spec in tools_by_model_name(specs).items():
        schema = dict(spec.input_schema) if isinstance(spec.input_schema, dict) else {}
        # Bedrock wants an object schema at the top; MCP says the same but not every server
        # spells out the type.
        schema.setdefault("type", "object")
        if schema["type"] != "object":
            schema = {"type": "object", "properties": {}}
        tools.append(
            {
                "toolSpec": {
                    "name": name,
                    "description": (spec.description or spec.name or name)[:4000],
                    "inputSchema": {"json": schema},
                }
            }
        )
    return {"tools": tools}


def tool_result_block(outcome: ToolOutcome) -> dict[str, Any]:
    """The `toolResult` content block that tells the model what a call gave back (it goes in
    a user-role message: the text is untrusted)."""
    # Bedrock refuses an error result without content, and blank text anywhere. Escaped as
    # people's messages are: a result must not forge the prompt's <message>/<context> marks.
    text = prompt.escape(outcome.text) if outcome.text.strip() else "(the tool returned nothing)"
    return {
        "toolResult": {
            "toolUseId": outcome.tool_use_id,
            "content": [{"text": text}],
            "status": "error" if outcome.status == "error" else "success",
        }
    }
