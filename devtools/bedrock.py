"""A local Amazon Bedrock Runtime server that real boto3 talks to.

Nothing offline implements Converse: moto only has ``invoke_model`` for bedrock-runtime, and
``botocore.stub.Stubber`` never touches the wire, so it cannot exercise retries, timeouts, error
headers or the binary event stream. ``LocalBedrock`` fills that gap. It speaks the Bedrock Runtime
REST protocol (``Converse``, ``ConverseStream`` and ``CountTokens``) on 127.0.0.1 so that an
unmodified boto3 client pointed at it with ``endpoint_url`` (or
``AWS_ENDPOINT_URL_BEDROCK_RUNTIME``) behaves as it would against AWS. It is used by:

* tests, which inject faults (throttling, access denied, broken streams, latency) and inspect
  the recorded requests;
* benchmarks, which want a model with a controllable, deterministic latency;
* the offline dev mode, where :func:`offline_reply` stands in for the model.

Tools (``toolConfig``) are validated as Bedrock does (see :func:`_validate_tools`), and the
offline model calls them deterministically (:func:`offline_tool_uses`): when the person's
latest message asks ``use <tool>`` (or ``use tools a, b`` for calls in parallel), naming a tool
of the request's toolConfig by its name or by the part after ``__`` (``find_person`` for
``directory__find_person``), it answers with ``toolUse`` blocks (stopReason ``tool_use``).
Their input: the message's ``key=value`` words for the schema's properties (typed by the
schema), and each required string property not given filled with the message's text (without
the ``use …`` words and the key=value words). ``tool_rounds=N`` asks for the same calls in N
rounds (default 1). Once they are answered, it replies in text naming each tool it used and
quoting the first line of each result (so tests can see what reached the model). A message
that asks for no tool gets the reply it always got.

Run it standalone with ``python -m devtools.bedrock --port 8765``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import contextlib
import hashlib
import html
import ipaddress
import json
import math
import re
import signal
import socket
import struct
import time
import uuid
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any
from urllib.parse import unquote

from aiohttp import web

from devtools.knowledge import LocalKnowledgeBases

__all__ = [
    "ERROR_STATUS",
    "Fault",
    "LocalBedrock",
    "RecordedRequest",
    "block_text",
    "encode_event_message",
    "estimate_tokens",
    "message_text",
    "offline_reply",
    "offline_tool_uses",
    "said_text",
]

# HTTP status of each Bedrock Runtime error code, as declared in botocore's service model
# (botocore/data/bedrock-runtime/2023-09-30/service-2.json).
ERROR_STATUS: dict[str, int] = {
    "ThrottlingException": 429,
    "ModelNotReadyException": 429,
    "ServiceUnavailableException": 503,
    "InternalServerException": 500,
    "ModelTimeoutException": 408,
    "ModelErrorException": 424,
    "ModelStreamErrorException": 424,
    "ValidationException": 400,
    "AccessDeniedException": 403,
    "ResourceNotFoundException": 404,
    "ServiceQuotaExceededException": 400,
}

OPERATIONS = ("converse", "converse-stream", "count-tokens")

# Exceptions that ConverseStream can deliver inside the event stream: the exception members of
# the ConverseStreamOutput union. Any other code is sent as a generic ``error`` message instead,
# which botocore still turns into an EventStreamError.
_STREAM_EXCEPTIONS = frozenset(
    {
        "internalServerException",
        "modelStreamErrorException",
        "validationException",
        "throttlingException",
        "serviceUnavailableException",
    }
)

# aiohttp refuses bodies over 1 MiB by default. A conversation near a 200k-token context is
# close to 1 MB of text, and it must reach the context-limit check, not an HTTP 413.
_MAX_REQUEST_BYTES = 64 * 1024 * 1024

# The event stream's content type, which botocore requires before it parses the body as events.
_EVENTSTREAM_CONTENT_TYPE = "application/vnd.amazon.eventstream"

_TOO_LONG_MESSAGE = "Input is too long for requested model."
# threadchat's default; the offline model says when a request asks for another.
DEFAULT_TEMPERATURE = 0.5
# What a guardrail answers instead of the model (each guardrail configures its own).
GUARDRAIL_MESSAGE = "Sorry, the model cannot answer this question."


@dataclass
class Fault:
    """One injected failure, consumed in order by matching requests.

    ``error_code`` answers the request with that Bedrock error (HTTP status from
    :data:`ERROR_STATUS`, 500 for unknown codes). ``latency_s`` delays the answer first and can be
    used alone (``error_code=None``) to simulate a slow model. ``cut_stream_after_events`` makes a
    ConverseStream response break after that many events: with no ``error_code`` the connection
    is closed mid-response; with an ``error_code`` the stream instead carries that error as an
    in-stream exception event, the way Bedrock reports mid-stream failures.
    """

    error_code: str | None = None
    message: str = "injected fault"
    times: int = 1
    operation: str | None = None
    latency_s: float = 0.0
    cut_stream_after_events: int | None = None

    def __post_init__(self) -> None:
        if self.operation is not None and self.operation not in OPERATIONS:
            raise ValueError(f"operation must be one of {OPERATIONS} or None: {self.operation!r}")
        if self.times < 1:
            raise ValueError(f"times must be at least 1: {self.times}")
        if self.latency_s < 0:
            raise ValueError(f"latency_s must not be negative: {self.latency_s}")
        if self.cut_stream_after_events is not None and self.cut_stream_after_events < 0:
            raise ValueError(
                f"cut_stream_after_events must not be negative: {self.cut_stream_after_events}"
            )

    def matches(self, operation: str) -> bool:
        """Whether this fault applies to a request for ``operation``."""
        return self.operation is None or self.operation == operation


@dataclass
class RecordedRequest:
    """One request the server received, recorded once its body was parsed.

    ``status`` is the HTTP status answered; it is 0 while the request is still waiting (for
    injected or model latency) and stays 0 if the client went away before an answer.
    """

    operation: str
    model_id: str
    body: dict[str, Any]
    at: float
    status: int
    request_id: str = ""  # the x-amzn-RequestId answered


@dataclass
class _PendingFault:
    """A queued fault with its remaining uses; the caller's Fault object is never mutated."""

    fault: Fault
    remaining: int


class _BedrockError(Exception):
    """An error answer: raised inside a handler, turned into Bedrock's error response."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def status(self) -> int:
        return ERROR_STATUS.get(self.code, 500)


def estimate_tokens(text: str) -> int:
    """Roughly estimate the token count of ``text``: one token per 4 characters, rounded up.

    Real tokenizers differ per model; this only has to be deterministic and in the right
    order of magnitude for context-limit and usage bookkeeping.
    """
    return math.ceil(len(text) / 4)


def block_text(block: Any) -> str | None:
    """The text of one content block, plain or marked for the guardrail (``guardContent``);
    None for other kinds of block."""
    if not isinstance(block, dict):
        return None
    if isinstance(block.get("text"), str):
        return block["text"]
    guarded = block.get("guardContent")
    text = guarded.get("text") if isinstance(guarded, dict) else None
    if isinstance(text, dict) and isinstance(text.get("text"), str):
        return text["text"]
    return None


def _block_texts(blocks: Any) -> list[str]:
    """The texts of a list of content blocks; other block kinds are ignored."""
    if not isinstance(blocks, list):
        return []
    return [t for t in map(block_text, blocks) if t is not None]


def message_text(message: Any) -> str:
    """All text of one message (``guardContent`` included), its text blocks joined by
    newlines."""
    return _message_text(message)


def _message_text(message: Any) -> str:
    """All text of one message, its text blocks joined by newlines."""
    if not isinstance(message, dict):
        return ""
    return "\n".join(_block_texts(message.get("content")))


def _system_text(system: Any) -> str:
    return "\n".join(_block_texts(system))


def _input_tokens(messages: Any, system: Any) -> int:
    """Estimated prompt size: the system prompt plus every message's text, and its files
    (an image about 1,600 tokens, a document a token per 50 bytes)."""
    parts = [_system_text(system)]
    files = 0
    if isinstance(messages, list):
        parts.extend(_message_text(m) for m in messages)
        for message in messages:
            for block in (message.get("content") or []) if isinstance(message, dict) else []:
                if isinstance(block, dict) and ("toolUse" in block or "toolResult" in block):
                    parts.append(json.dumps(block, ensure_ascii=False))
                if isinstance(block, dict) and isinstance(block.get("image"), dict):
                    files += 1600
                elif isinstance(block, dict) and isinstance(block.get("document"), dict):
                    data = _file_bytes(block["document"].get("source")) or b""
                    files += len(data) // 50
    return estimate_tokens("\n".join(p for p in parts if p)) + files


def _asks_for_summary(text: str) -> bool:
    """Whether the instruction itself (its first sentence) is about summarising: a prompt
    that merely carries an earlier summary as context is still asking for an answer."""
    first_sentence = re.split(r"[.!?\n]", text.strip(), maxsplit=1)[0]
    return "summar" in first_sentence.lower()


_LABELLED = re.compile(r"^\[([^\]\n]+)\] ?(.*)$")
_EARLIER = re.compile(r"^Summary so far:\n(.*?)(?:\n\nConversation:\n|\Z)", re.DOTALL)
# A summary is at most 8 bullets (as the summariser is asked): the first questions and the
# latest ones are kept.
_FIRST_KEPT, _LAST_KEPT = 3, 4
_CLOSING_LINES = ("- Still open", "- The assistant answered")


def _shortened(text: str, limit: int = 90) -> str:
    """`text` on one line, cut at a word boundary with an ellipsis when longer than `limit`."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = text[: limit + 1]
    cut = cut[: cut.rindex(" ")] if " " in cut else text[:limit]
    return cut.rstrip(",.;: ") + "…"


def offline_summary(messages: list[Any]) -> str:
    """A summary-shaped answer built from what it was given: who asked what, in order, what
    is still open, and the earlier summary's points carried forward. It gives no counts: it
    may see only part of a long conversation (the rest folded into the earlier summary)."""
    transcript: list[str] = []
    earlier: list[str] = []
    for message in messages:
        if not isinstance(message, dict):
            continue
        text = _message_text(message)
        if message.get("role") == "assistant":
            transcript.append(f"[assistant] {text}")
            continue
        # The earlier summary comes framed as context (threadchat/prompt.py), or plain.
        for framed in _FRAMED_SUMMARY.finditer(text):
            earlier += [
                line
                for line in html.unescape(framed.group(1)).splitlines()
                if line.startswith("- ") and not line.startswith(_CLOSING_LINES)
            ]
        text = said_text(message)
        found = _EARLIER.match(text)
        if found:
            earlier += [
                line
                for line in found.group(1).splitlines()
                if line.startswith("- ") and not line.startswith(_CLOSING_LINES)
            ]
            text = text[found.end() :] if found.group(0).endswith("\n") else ""
        transcript.append(text.removeprefix("Conversation:\n"))
    # Each "[name] text" line starts an entry; unlabelled lines continue the one before.
    entries: list[list[str]] = []
    for chunk in transcript:
        started = len(entries)
        for line in chunk.splitlines():
            labelled = _LABELLED.match(line)
            if labelled:
                entries.append([labelled.group(1), labelled.group(2)])
            elif line.startswith(("(not answered)", "(the answer was blocked")):
                entries.append(["", line])
            elif len(entries) > started:
                entries[-1][1] += "\n" + line
            elif line.strip():
                entries.append(["Someone", line])
    points = list(dict.fromkeys(earlier))
    open_question = ""
    for speaker, text in entries:
        if speaker == "assistant":
            open_question = ""
        elif speaker:
            points.append(f'- {speaker} asked: "{_shortened(text)}"')
            open_question = _shortened(text, 60)
    if len(points) > _FIRST_KEPT + _LAST_KEPT:
        points = [*points[:_FIRST_KEPT], "- …", *points[-_LAST_KEPT:]]
    if not points:
        return "Summary (offline model): nothing was said yet."
    closing = (
        f'- Still open: "{open_question}"'
        if open_question
        else "- The assistant answered each question."
    )
    return "\n".join(["Summary (offline model):", *points, closing])


# threadchat's framing of what people wrote (threadchat/prompt.py): each message in a
# <message from=… user=… ts=…> block, and summaries and the channel in view in <context> blocks.
_FRAMED_MESSAGE = re.compile(r'<message from="([^"]*)"[^>]*>\n(.*?)\n</message>', re.S)
_FRAMED_CONTEXT = re.compile(r"<context [^>]*>\n.*?\n</context>\n?", re.S)
_FRAMED_ANSWER = re.compile(r'<answer from="([^"]*)">\n(.*?)\n</answer>', re.S)
_FRAMED_SUMMARY = re.compile(r'<context kind="[a-z_]*summary"[^>]*>\n(.*?)\n</context>', re.S)


def said_text(message: Any) -> str:
    """What people said in a user message, as "[name] text" lines: the framed messages (and
    answers, in a transcript), and any text outside a frame; context blocks are background,
    not said."""
    text = _FRAMED_CONTEXT.sub("", _message_text(message))
    for frame in (_FRAMED_MESSAGE, _FRAMED_ANSWER):
        text = frame.sub(lambda m: f"[{html.unescape(m.group(1))}] {m.group(2)}", text)
    return text.strip()


def offline_reply(body: dict[str, Any]) -> str:
    """The default responder: a deterministic stand-in for the model, labelled as offline.

    It answers from the user messages only, so that a conversation's replies show which turns
    the model was actually given (handy for checking history handling by eye and in tests). A
    request whose system prompt or latest user message starts by asking for a summary gets a
    summary-shaped answer. Pure: the same body always gives the same reply.
    """
    messages = body.get("messages")
    # A user message of tool results only is the model's own exchange, not a person's turn.
    user_turns = [
        m
        for m in (messages if isinstance(messages, list) else [])
        if isinstance(m, dict) and m.get("role") == "user" and not _only_tool_results(m)
    ]
    user_texts = [said_text(m) for m in user_turns]
    n = len(user_texts)
    last = user_texts[-1] if user_texts else ""
    prev = user_texts[-2] if n >= 2 else ""
    system = _system_text(body.get("system"))
    if "title" in re.split(r"[.!?\n]", system.strip(), maxsplit=1)[0].lower():
        # A title of the conversation: its question's first words.
        words = re.sub(r"^Question:\s*(\[[^\]]*\]\s*)?", "", last).split()[:5]
        return " ".join(words).strip(".,;:!?") or "A conversation"
    if _asks_for_summary(system) or _asks_for_summary(last):
        listed = messages if isinstance(messages, list) else []
        # Asked in the last message, the conversation is the messages before it.
        return offline_summary(listed[:-1] if not _asks_for_summary(system) else listed)
    reply = f'(offline model) Turn {n}. You said: "{last[:200]}".'
    used = _tool_results_since_prompt(messages if isinstance(messages, list) else [])
    if used:
        names = list(dict.fromkeys(name for name, _, _ in used))
        quoted = "; ".join(
            f'{name}{" (error)" if status == "error" else ""}: "{first_line[:200]}"'
            for name, status, first_line in used
        )
        return f"{reply} I used {', '.join(names)}. Results: {quoted}."
    if prev:
        reply += f' Before that: "{prev[:200]}".'
    received = _files_received(user_turns[-1] if user_turns else {})
    if received:
        reply += f" Files received: {received}."
    inference = body.get("inferenceConfig")
    temperature = inference.get("temperature") if isinstance(inference, dict) else None
    if isinstance(temperature, int | float) and temperature != DEFAULT_TEMPERATURE:
        # A real model answers differently when sampled differently (a regenerate).
        reply += f" (Sampled at temperature {temperature}.)"
    return reply


# -- tools ---------------------------------------------------------------------------------

_TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_TOOL_USE_ID = re.compile(r"^[a-zA-Z0-9_.:-]{1,64}$")
_USE_TOOLS = re.compile(
    r"\buse\s+(?:tools?\s+)?([A-Za-z0-9_-]+(?:\s*(?:,|\band\b)\s*[A-Za-z0-9_-]+)*)", re.I
)
_KEY_VALUE = re.compile(r'\b([A-Za-z_][A-Za-z0-9_]*)=("[^"]*"|\S+)')
_MENTION = re.compile(r"<[@#!][^>]*>")


def _only_tool_results(message: dict[str, Any]) -> bool:
    content = message.get("content")
    return (
        isinstance(content, list)
        and bool(content)
        and all(isinstance(b, dict) and "toolResult" in b for b in content)
    )


def _has_text(message: dict[str, Any]) -> bool:
    return any(block_text(b) for b in message.get("content") or [])


def _tool_result_text(result: dict[str, Any]) -> str:
    parts = []
    for block in result.get("content") or []:
        if isinstance(block, dict) and isinstance(block.get("text"), str):
            parts.append(block["text"])
        elif isinstance(block, dict) and "json" in block:
            parts.append(json.dumps(block["json"], ensure_ascii=False))
    return "\n".join(parts)


def _prompt_index(messages: list[Any]) -> int:
    """Where the person's latest message is: the last user message with text and no tool
    results (a note sent beside tool results is not a new question)."""
    for i in range(len(messages) - 1, -1, -1):
        m = messages[i]
        if (
            isinstance(m, dict)
            and m.get("role") == "user"
            and _has_text(m)
            and not any(isinstance(b, dict) and "toolResult" in b for b in m.get("content") or [])
        ):
            return i
    return -1


def _tool_results_since_prompt(messages: list[Any]) -> list[tuple[str, str, str]]:
    """(tool name, status, the result's first line) of each tool result after the person's
    latest message, in order."""
    start = _prompt_index(messages)
    names: dict[str, str] = {}
    found = []
    for m in messages[start + 1 :]:
        for block in m.get("content") or [] if isinstance(m, dict) else []:
            if not isinstance(block, dict):
                continue
            if isinstance(block.get("toolUse"), dict):
                names[block["toolUse"].get("toolUseId", "")] = block["toolUse"].get("name", "")
            result = block.get("toolResult")
            if isinstance(result, dict):
                text = _tool_result_text(result).strip()
                first = text.splitlines()[0] if text else ""
                name = names.get(result.get("toolUseId", ""), "?")
                found.append((name, result.get("status", "success"), first))
    return found


def _argument(value: str, schema: Any) -> Any:
    kind = schema.get("type") if isinstance(schema, dict) else None
    value = value[1:-1] if len(value) >= 2 and value[0] == value[-1] == '"' else value
    with contextlib.suppress(ValueError):
        if kind == "integer":
            return int(value)
        if kind == "number":
            return float(value)
    if kind == "boolean":
        return value.lower() in ("true", "yes", "1")
    return value


def offline_tool_uses(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The toolUse blocks the offline model answers with, or [] to answer in text (the rule
    is in this module's docstring). Pure: the same body always gives the same calls."""
    config = body.get("toolConfig")
    messages = body.get("messages")
    if not isinstance(config, dict) or not isinstance(messages, list):
        return []
    specs = {
        t["toolSpec"]["name"]: t["toolSpec"]
        for t in config.get("tools") or []
        if isinstance(t, dict) and isinstance(t.get("toolSpec"), dict)
    }
    start = _prompt_index(messages)
    if start < 0:
        return []
    prompt = _MENTION.sub("", said_text(messages[start]))
    prompt = re.sub(r"^\[[^\]\n]*\] ?", "", prompt, flags=re.M)
    rounds_done = sum(
        1
        for m in messages[start + 1 :]
        if isinstance(m, dict)
        and m.get("role") == "assistant"
        and any(isinstance(b, dict) and "toolUse" in b for b in m.get("content") or [])
    )
    wanted = re.search(r"\btool_rounds=(\d+)", prompt)
    if rounds_done >= (int(wanted.group(1)) if wanted else 1):
        return []
    chosen: list[str] = []
    for asked in _USE_TOOLS.finditer(prompt):
        for word in re.split(r"\s*(?:,|\band\b)\s*", asked.group(1)):
            for name in specs:
                if word and (name == word or name.endswith(f"__{word}")) and name not in chosen:
                    chosen.append(name)
    if not chosen:
        return []
    given = {k: v for k, v in _KEY_VALUE.findall(prompt) if k != "tool_rounds"}
    rest = _KEY_VALUE.sub("", _USE_TOOLS.sub("", prompt))
    rest = " ".join(rest.split()).strip(" .,;:!?") or " ".join(prompt.split())
    uses = []
    for index, name in enumerate(chosen):
        schema = (specs[name].get("inputSchema") or {}).get("json") or {}
        properties = schema.get("properties") if isinstance(schema, dict) else None
        properties = properties if isinstance(properties, dict) else {}
        arguments = {k: _argument(v, properties[k]) for k, v in given.items() if k in properties}
        for required in schema.get("required") or [] if isinstance(schema, dict) else []:
            if required not in arguments:
                kind = (properties.get(required) or {}).get("type", "string")
                arguments[required] = {"integer": 1, "number": 1, "boolean": False}.get(kind, rest)
        seed = f"{len(messages)}/{rounds_done}/{index}/{name}/{prompt}".encode()
        tool_use_id = "tooluse_" + hashlib.sha256(seed).hexdigest()[:22]
        uses.append({"toolUseId": tool_use_id, "name": name, "input": arguments})
    return uses


def _validate_tools(body: dict[str, Any]) -> None:
    """Refuse tools as Bedrock does: a toolConfig of named specs with object input schemas;
    toolUse and toolResult blocks only with a toolConfig, in the right roles, each toolResult
    answering a toolUse of the assistant message just before it, and each toolUse answered."""
    config = body.get("toolConfig")
    messages = body.get("messages") or []
    if config is not None:
        tools = config.get("tools") if isinstance(config, dict) else None
        if not isinstance(tools, list) or not tools:
            raise _BedrockError(
                "ValidationException", "The toolConfig.tools field must list at least one tool."
            )
        names: set[str] = set()
        for i, tool in enumerate(tools):
            where = f"toolConfig.tools.{i}"
            if isinstance(tool, dict) and set(tool) == {"cachePoint"}:
                continue
            spec = tool.get("toolSpec") if isinstance(tool, dict) and len(tool) == 1 else None
            if not isinstance(spec, dict):
                raise _BedrockError(
                    "ValidationException", f"The tool at {where} must have exactly one toolSpec."
                )
            name = spec.get("name")
            if not isinstance(name, str) or not _TOOL_NAME.fullmatch(name):
                raise _BedrockError(
                    "ValidationException",
                    f"1 validation error detected: Value '{name}' at '{where}.member.toolSpec."
                    "name' failed to satisfy constraint: Member must satisfy regular expression "
                    "pattern: [a-zA-Z0-9_-]+",
                )
            if name in names:
                raise _BedrockError(
                    "ValidationException", f"The toolConfig has more than one tool named {name}."
                )
            names.add(name)
            description = spec.get("description")
            if description is not None and not (isinstance(description, str) and description):
                raise _BedrockError(
                    "ValidationException", f"The description of the tool at {where} is empty."
                )
            schema = spec.get("inputSchema")
            json_schema = schema.get("json") if isinstance(schema, dict) else None
            if not isinstance(json_schema, dict) or json_schema.get("type", "object") != "object":
                raise _BedrockError(
                    "ValidationException",
                    f"The inputSchema.json of the tool at {where} must be a JSON schema of "
                    "type object.",
                )
        choice = config.get("toolChoice")
        if choice is not None and not (
            isinstance(choice, dict)
            and len(choice) == 1
            and (
                "auto" in choice
                or "any" in choice
                or (isinstance(choice.get("tool"), dict) and choice["tool"].get("name") in names)
            )
        ):
            raise _BedrockError("ValidationException", "The toolConfig.toolChoice is not valid.")
    pending: list[str] = []  # toolUse ids of the assistant message just before
    for i, message in enumerate(messages):
        role = message.get("role")
        uses, results = [], []
        for j, block in enumerate(message.get("content") or []):
            if not isinstance(block, dict) or not ({"toolUse", "toolResult"} & block.keys()):
                continue
            if config is None:
                raise _BedrockError(
                    "ValidationException",
                    "The toolConfig field must be defined when using toolUse and toolResult "
                    "content blocks.",
                )
            where = f"messages.{i}.content.{j}"
            if "toolUse" in block:
                use = block["toolUse"]
                if role != "assistant":
                    raise _BedrockError(
                        "ValidationException",
                        f"The toolUse at {where} must be in an assistant message.",
                    )
                if not (
                    isinstance(use, dict)
                    and isinstance(use.get("toolUseId"), str)
                    and _TOOL_USE_ID.fullmatch(use["toolUseId"])
                    and isinstance(use.get("name"), str)
                    and _TOOL_NAME.fullmatch(use["name"])
                    and "input" in use
                ):
                    raise _BedrockError(
                        "ValidationException",
                        f"The toolUse at {where} needs a toolUseId, a name and an input.",
                    )
                uses.append(use["toolUseId"])
            else:
                result = block["toolResult"]
                if role != "user":
                    raise _BedrockError(
                        "ValidationException",
                        f"The toolResult at {where} must be in a user message.",
                    )
                if not (
                    isinstance(result, dict)
                    and isinstance(result.get("toolUseId"), str)
                    and _TOOL_USE_ID.fullmatch(result["toolUseId"])
                    and isinstance(result.get("content"), list)
                ):
                    raise _BedrockError(
                        "ValidationException",
                        f"The toolResult at {where} needs a toolUseId and a content list.",
                    )
                if result.get("status", "success") not in ("success", "error"):
                    raise _BedrockError(
                        "ValidationException", f"The toolResult status at {where} is not valid."
                    )
                if not result["content"] and result.get("status") == "error":
                    raise _BedrockError(
                        "ValidationException",
                        f"The content field at {where}.toolResult cannot be empty when status "
                        "value is error.",
                    )
                if result["toolUseId"] not in pending:
                    raise _BedrockError(
                        "ValidationException",
                        f"{where}: unexpected toolUseId found in toolResult blocks: "
                        f"{result['toolUseId']}. Each toolResult block must have a "
                        "corresponding toolUse block in the previous message.",
                    )
                results.append(result["toolUseId"])
        if role == "user" and pending:
            missing = [u for u in pending if u not in results]
            if missing:
                raise _BedrockError(
                    "ValidationException",
                    f"Expected toolResult blocks at messages.{i}.content for the following "
                    f"Ids: {', '.join(missing)}",
                )
        if role == "assistant":
            if len(set(uses)) != len(uses):
                raise _BedrockError("ValidationException", f"messages.{i} repeats a toolUseId.")
            pending = uses
        elif role == "user":
            pending = []
    if pending:
        raise _BedrockError(
            "ValidationException",
            "The conversation ends with toolUse blocks that no toolResult answers: "
            + ", ".join(pending),
        )


# Converse's limits on files, per request (Bedrock's documentation).
_IMAGE_FORMATS = {"png", "jpeg", "gif", "webp"}
_DOCUMENT_FORMATS = {"pdf", "csv", "doc", "docx", "xls", "xlsx", "html", "txt", "md"}
_MAX_IMAGE_BYTES, _MAX_IMAGES = 3_750_000, 20
_MAX_DOCUMENT_BYTES, _MAX_DOCUMENTS = 4_500_000, 5
_DOCUMENT_NAME = re.compile(r"^[A-Za-z0-9\-()\[\]]+( [A-Za-z0-9\-()\[\]]+)*$")
_READS_FILES = re.compile(
    r"anthropic\.claude-(3|sonnet-4|opus-4|haiku-4)|amazon\.nova-(lite|pro|premier)"
)


def _file_bytes(source: Any) -> bytes | None:
    """The bytes of an image or document source, as boto3 sends them (base64 in JSON)."""
    raw = source.get("bytes") if isinstance(source, dict) else None
    if not isinstance(raw, str):
        return None
    try:
        return base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        return None


def _validate_files(model_id: str, messages: list[Any]) -> None:
    """Refuse image and document blocks as Bedrock does: formats, sizes, counts, names, and
    models that cannot read them."""
    images = documents = 0
    names: set[str] = set()
    for i, message in enumerate(messages):
        for j, block in enumerate(message.get("content") or []):
            if not isinstance(block, dict) or not ({"image", "document"} & block.keys()):
                continue
            where = f"messages.{i}.content.{j}"
            if not _READS_FILES.search(model_id):
                raise _BedrockError(
                    "ValidationException", "This model doesn't support image or document input."
                )
            if "image" in block:
                image = block["image"] if isinstance(block["image"], dict) else {}
                data = _file_bytes(image.get("source"))
                if image.get("format") not in _IMAGE_FORMATS or data is None:
                    raise _BedrockError(
                        "ValidationException", f"The image at {where} is not valid."
                    )
                if len(data) > _MAX_IMAGE_BYTES:
                    raise _BedrockError(
                        "ValidationException", f"The image at {where} is too large."
                    )
                images += 1
            else:
                document = block["document"] if isinstance(block["document"], dict) else {}
                data, name = _file_bytes(document.get("source")), document.get("name")
                if document.get("format") not in _DOCUMENT_FORMATS or data is None:
                    raise _BedrockError(
                        "ValidationException", f"The document at {where} is not valid."
                    )
                if not (isinstance(name, str) and _DOCUMENT_NAME.fullmatch(name)):
                    raise _BedrockError(
                        "ValidationException", f"The document name at {where} is not valid."
                    )
                if name in names:
                    raise _BedrockError("ValidationException", f"Duplicate document name: {name}.")
                if len(data) > _MAX_DOCUMENT_BYTES:
                    raise _BedrockError(
                        "ValidationException", f"The document at {where} is too large."
                    )
                names.add(name)
                documents += 1
    if images > _MAX_IMAGES or documents > _MAX_DOCUMENTS:
        raise _BedrockError(
            "ValidationException",
            f"Too many files: at most {_MAX_IMAGES} images and {_MAX_DOCUMENTS} documents.",
        )


def _files_received(message: Any) -> str:
    """What the model was shown in `message`, for the offline model to say."""
    seen = []
    for block in message.get("content") or [] if isinstance(message, dict) else []:
        if not isinstance(block, dict):
            continue
        for kind in ("image", "document"):
            part = block.get(kind)
            if isinstance(part, dict):
                data = _file_bytes(part.get("source")) or b""
                name = f' "{part["name"]}"' if kind == "document" else ""
                seen.append(f"{kind}{name} ({part.get('format')}, {len(data):,} bytes)")
    return "; ".join(seen)


def _validate_conversation(messages: Any, system: Any) -> None:
    """Reject a conversation the way Bedrock does, with its wording where it is known."""
    if not isinstance(messages, list) or not messages:
        raise _BedrockError(
            "ValidationException",
            "A conversation must contain at least one message. "
            "Add a user message to the messages field, and try again.",
        )
    previous_role: str | None = None
    for i, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        if role not in ("user", "assistant"):
            raise _BedrockError(
                "ValidationException",
                f"The role in the Message object at messages.{i} must be user or assistant.",
            )
        if i == 0 and role != "user":
            raise _BedrockError(
                "ValidationException",
                "A conversation must start with a user message. "
                "Try again with a conversation that starts with a user message.",
            )
        if role == previous_role:
            raise _BedrockError(
                "ValidationException",
                "A conversation must alternate between user and assistant roles. Make sure the "
                "conversation alternates between user and assistant roles and try again.",
            )
        previous_role = role
        content = message.get("content")
        if not isinstance(content, list) or not content:
            raise _BedrockError(
                "ValidationException",
                f"The content field in the Message object at messages.{i} is empty. "
                "Add a ContentBlock object to the content field and try again.",
            )
        for j, block in enumerate(content):
            if isinstance(block, dict) and "text" in block and not str(block["text"]).strip():
                raise _BedrockError(
                    "ValidationException",
                    f"The text field in the ContentBlock object at messages.{i}.content.{j} "
                    "is blank. Add text to the text field, and try again.",
                )
            if isinstance(block, dict) and "guardContent" in block:
                _validate_guard_content(block["guardContent"], f"messages.{i}.content.{j}")
    if system is not None and not isinstance(system, list):
        raise _BedrockError("ValidationException", "The system field must be a list.")
    for j, block in enumerate(system or []):
        if isinstance(block, dict) and "guardContent" in block:
            _validate_guard_content(block["guardContent"], f"system.{j}")


_GUARD_QUALIFIERS = {"grounding_source", "query", "guard_content"}
_GUARD_IMAGE_FORMATS = {"png", "jpeg"}


def _validate_guard_content(guarded: Any, where: str) -> None:
    """Refuse a ``guardContent`` block as Bedrock does: a union of exactly one ``text`` (with
    non-blank text and known qualifiers) or ``image`` (png or jpeg bytes)."""
    members = set(guarded) & {"text", "image"} if isinstance(guarded, dict) else set()
    if len(members) != 1 or len(guarded) != 1:
        raise _BedrockError(
            "ValidationException",
            f"The guardContent field at {where} must contain exactly one of text or image.",
        )
    if "text" in guarded:
        text = guarded["text"]
        if not (isinstance(text, dict) and isinstance(text.get("text"), str)):
            raise _BedrockError(
                "ValidationException", f"The guardContent text at {where} needs a text field."
            )
        if not text["text"].strip():
            raise _BedrockError(
                "ValidationException",
                f"The text field in the guardContent at {where} is blank. Add text to the text "
                "field, and try again.",
            )
        qualifiers = text.get("qualifiers", [])
        if not isinstance(qualifiers, list) or not set(qualifiers) <= _GUARD_QUALIFIERS:
            raise _BedrockError(
                "ValidationException", f"The guardContent qualifiers at {where} are not valid."
            )
        return
    image = guarded["image"]
    if not (
        isinstance(image, dict)
        and image.get("format") in _GUARD_IMAGE_FORMATS
        and _file_bytes(image.get("source")) is not None
    ):
        raise _BedrockError(
            "ValidationException", f"The guardContent image at {where} is not valid."
        )


def _encode_headers(headers: dict[str, str]) -> bytes:
    """Encode event-stream headers, all string-typed (type 7, 2-byte value length)."""
    out = bytearray()
    for name, value in headers.items():
        raw_name = name.encode("utf-8")
        raw_value = value.encode("utf-8")
        out += struct.pack("!B", len(raw_name)) + raw_name
        out += struct.pack("!BH", 7, len(raw_value)) + raw_value
    return bytes(out)


def encode_event_message(headers: dict[str, str], payload: bytes) -> bytes:
    """Encode one message of the binary AWS event stream (``application/vnd.amazon.eventstream``).

    Layout, big-endian: total length (4 bytes), headers length (4), CRC32 of those 8 bytes,
    headers, payload, CRC32 of everything before it. botocore can decode this format but has no
    encoder, hence this one. See ``botocore/eventstream.py`` for the reading side.
    """
    raw_headers = _encode_headers(headers)
    total_length = 12 + len(raw_headers) + len(payload) + 4
    prelude = struct.pack("!II", total_length, len(raw_headers))
    prelude += struct.pack("!I", zlib.crc32(prelude) & 0xFFFFFFFF)
    message = prelude + raw_headers + payload
    return message + struct.pack("!I", zlib.crc32(message) & 0xFFFFFFFF)


def _event(event_type: str, payload: dict[str, Any]) -> bytes:
    """An ordinary ConverseStream event."""
    return encode_event_message(
        {
            ":event-type": event_type,
            ":message-type": "event",
            ":content-type": "application/json",
        },
        json.dumps(payload).encode("utf-8"),
    )


def _stream_error(code: str, message: str) -> bytes:
    """A mid-stream failure: botocore raises EventStreamError when it reaches this message."""
    # In-stream exception names are the error codes with a lowercase first letter
    # ("throttlingException"); botocore reports that name as the error code.
    exception_type = code[:1].lower() + code[1:]
    if exception_type in _STREAM_EXCEPTIONS:
        headers = {
            ":message-type": "exception",
            ":exception-type": exception_type,
            ":content-type": "application/json",
        }
        return encode_event_message(headers, json.dumps({"message": message}).encode("utf-8"))
    headers = {":message-type": "error", ":error-code": code, ":error-message": message}
    return encode_event_message(headers, b"")


def _require_loopback(host: str) -> None:
    """Refuse to listen beyond this machine: the server has no authentication at all."""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ValueError(f"LocalBedrock only binds to a loopback address, not {host!r}")


def echo_responder(body: dict[str, Any]) -> str:
    """The model's answer: the whole latest user message, quoted (the offline model quotes only
    its first 200 characters, too little to prove a reply complete)."""
    user_turns = [m for m in body.get("messages", []) if m.get("role") == "user"]
    text = "\n".join(b["text"] for b in user_turns[-1]["content"] if "text" in b)
    return f"Echo of your message, in full: {text} (end of echo)"


# Prompt caching, as Bedrock documents it: models that take cache points, the fewest prompt
# tokens each cache checkpoint needs (counted from the one before; an earlier checkpoint is
# accepted and ignored), and at most 4 checkpoints a request.
_CACHEABLE = re.compile(
    r"anthropic\.claude-(3-5-haiku|3-7-sonnet|sonnet-4|opus-4|haiku-4)|amazon\.nova"
)
_CACHE_MINIMUM = (("claude-haiku-4", 4096), ("claude-3-5-haiku", 2048))
_CACHE_MINIMUM_DEFAULT = 1024
MAX_CACHE_POINTS = 4
_KEPT_CACHE_ENTRIES = 100_000


class PromptCache:
    """What a Bedrock account has cached: prompt prefixes by model, each kept for the TTL
    after it was last written or read."""

    def __init__(self, ttl_s: float, clock: Callable[[], float]) -> None:
        self.ttl_s = ttl_s
        self.clock = clock
        self._expiry: dict[str, float] = {}

    @staticmethod
    def minimum_tokens(model_id: str) -> int:
        return next((n for name, n in _CACHE_MINIMUM if name in model_id), _CACHE_MINIMUM_DEFAULT)

    def account(
        self, model_id: str, system: Any, messages: list[Any], input_tokens: int
    ) -> dict[str, int]:
        """The prompt's usage: tokens read from the cache, written to it, and the rest."""
        blocks = [("system", b) for b in system or []] + [
            (m["role"], b) for m in messages for b in m.get("content") or []
        ]
        points = [b for _, b in blocks if isinstance(b, dict) and "cachePoint" in b]
        if not points:
            return {"inputTokens": input_tokens}
        if not _CACHEABLE.search(model_id):
            raise _BedrockError(
                "ValidationException", "Prompt caching is not supported for this model."
            )
        if len(points) > MAX_CACHE_POINTS:
            raise _BedrockError(
                "ValidationException",
                f"The number of cache points exceeds the maximum of {MAX_CACHE_POINTS}.",
            )
        if any(p["cachePoint"] != {"type": "default"} for p in points):
            raise _BedrockError("ValidationException", "cachePoint.type must be default.")
        # Each block boundary: the prefix's tokens, its digest, whether a checkpoint is there.
        digest = hashlib.sha256(model_id.encode())
        tokens, boundaries = 0, []
        for where, block in blocks:
            if "cachePoint" in block:
                boundaries.append((tokens, digest.hexdigest(), True))
                continue
            digest.update(json.dumps([where, block], sort_keys=True).encode())
            tokens += estimate_tokens(block_text(block) or "")
            boundaries.append((tokens, digest.hexdigest(), False))
        minimum, last, checkpoints = self.minimum_tokens(model_id), 0, []
        for at, key, is_point in boundaries:
            if is_point and at - last >= minimum:
                checkpoints.append((at, key))
                last = at
        if not checkpoints:
            return {
                "inputTokens": input_tokens,
                "cacheReadInputTokens": 0,
                "cacheWriteInputTokens": 0,
            }
        now = self.clock()
        end = checkpoints[-1][0]
        hits = [
            (at, key) for at, key, _ in boundaries if at <= end and self._expiry.get(key, -1) > now
        ]
        read, read_key = max(hits, default=(0, None))
        if read_key is not None:
            self._expiry[read_key] = now + self.ttl_s  # a hit renews the entry
        for at, key in checkpoints:
            if at > read:
                self._expiry[key] = now + self.ttl_s
        if len(self._expiry) > _KEPT_CACHE_ENTRIES:
            self._expiry = {k: t for k, t in self._expiry.items() if t > now}
        written = end - read
        return {
            "inputTokens": max(0, input_tokens - read - written),
            "cacheReadInputTokens": read,
            "cacheWriteInputTokens": written,
        }


class LocalBedrock:
    """A local server speaking the Bedrock Runtime wire protocol.

    ``context_limit_tokens`` is the model's context size: longer input (estimated with
    :func:`estimate_tokens`) gets Bedrock's "Input is too long" ValidationException.
    ``model_latency_s`` is the time the "model" takes before answering (before the first byte
    of a stream). Streams are sent in deltas of ``stream_chunk_chars`` characters,
    ``stream_delay_s`` apart. ``responder`` computes the reply text from the parsed request body;
    it defaults to :func:`offline_reply`. With a ``toolConfig``, ``tool_responder`` (default
    :func:`offline_tool_uses`) decides first whether the model calls tools instead;
    ``tool_preamble`` puts a short text block before the calls.

    Use ``await start()`` / ``await stop()`` or ``async with``. All methods must be called from
    the event loop the server runs in.
    """

    def __init__(
        self,
        *,
        context_limit_tokens: int = 200_000,
        model_latency_s: float = 0.0,
        stream_chunk_chars: int = 12,
        stream_delay_s: float = 0.03,
        responder: Callable[[dict[str, Any]], str] | None = None,
        tool_responder: Callable[[dict[str, Any]], list[dict[str, Any]]] | None = None,
        tool_preamble: bool = False,
        guardrail_words: tuple[str, ...] = (),
        cache_ttl_s: float = 300,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if context_limit_tokens < 1:
            raise ValueError(f"context_limit_tokens must be positive: {context_limit_tokens}")
        if stream_chunk_chars < 1:
            raise ValueError(f"stream_chunk_chars must be positive: {stream_chunk_chars}")
        if stream_delay_s < 0:
            raise ValueError(f"stream_delay_s must not be negative: {stream_delay_s}")
        self._latency_changed = asyncio.Event()
        self.set_model_latency(model_latency_s)
        self._context_limit_tokens = context_limit_tokens
        self._stream_chunk_chars = stream_chunk_chars
        self._stream_delay_s = stream_delay_s
        self._responder = responder or offline_reply
        # Which tools the model calls (toolUse blocks, or [] to answer in text), asked only
        # when the request has a toolConfig; and whether a short text comes before the calls
        # in the same message, as models often write one.
        self._tool_responder = tool_responder or offline_tool_uses
        self._tool_preamble = tool_preamble
        # A request with a guardrailConfig whose user text has one of these words is blocked,
        # as a Bedrock guardrail with a word filter blocks it.
        self._guardrail_words = tuple(w.lower() for w in guardrail_words)
        self.cache = PromptCache(ttl_s=cache_ttl_s, clock=clock)
        self._faults: list[_PendingFault] = []
        # bedrock-agent-runtime's Retrieve, over the sample documents (devtools/knowledge.py).
        self.knowledge = LocalKnowledgeBases()
        self._runner: web.AppRunner | None = None
        self._url: str | None = None
        self.requests: list[RecordedRequest] = []

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Start listening (port 0 picks a free port) and return the endpoint URL."""
        if self._runner is not None:
            raise RuntimeError("LocalBedrock is already started")
        _require_loopback(host)
        app = web.Application(client_max_size=_MAX_REQUEST_BYTES)
        for operation in OPERATIONS:
            app.router.add_post(f"/model/{{modelId:.+}}/{operation}", self._handler(operation))
        app.router.add_post("/knowledgebases/{knowledgeBaseId}/retrieve", self.knowledge.handle)
        # Open the socket ourselves: it is the portable way to learn the port chosen for port 0.
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.create_server((host, port), family=family)
        # A short shutdown timeout: stop() must not wait a minute for a stalled stream.
        runner = web.AppRunner(app, shutdown_timeout=1.0)
        try:
            await runner.setup()
            await web.SockSite(runner, sock).start()
        except BaseException:
            sock.close()
            await runner.cleanup()
            raise
        self._runner = runner
        bound_host, bound_port = sock.getsockname()[:2]
        shown_host = f"[{bound_host}]" if ":" in bound_host else bound_host
        self._url = f"http://{shown_host}:{bound_port}"
        return self._url

    async def stop(self) -> None:
        """Stop the server, closing open connections. Safe to call more than once."""
        runner, self._runner = self._runner, None
        self._url = None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> LocalBedrock:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    @property
    def url(self) -> str:
        """The endpoint URL, e.g. ``http://127.0.0.1:8765``; only valid while started."""
        if self._url is None:
            raise RuntimeError("LocalBedrock is not started")
        return self._url

    # -- test controls -----------------------------------------------------------------------

    def inject(self, fault: Fault) -> None:
        """Queue a fault; queued faults apply in order to the requests they match."""
        self._faults.append(_PendingFault(fault, fault.times))

    def clear_faults(self) -> None:
        """Drop every queued fault."""
        self._faults.clear()

    def set_model_latency(self, seconds: float) -> None:
        """Change how long the model takes before answering. Calls already waiting take the
        new latency too (from when they started), so that a test can hold an answer for as
        long as its next steps take on a loaded machine, then let it go."""
        if seconds < 0:
            raise ValueError(f"model latency must not be negative: {seconds}")
        self._model_latency_s = seconds
        self._latency_changed.set()  # wakes the calls waiting, to count again
        self._latency_changed = asyncio.Event()

    async def _think(self, writing_s: float = 0.0) -> None:
        """The model's latency, plus `writing_s`; ends early if the latency is lowered."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        while (left := started + self._model_latency_s + writing_s - loop.time()) > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._latency_changed.wait(), left)

    def _take_fault(self, operation: str) -> Fault | None:
        """Consume one use of the first queued fault matching ``operation``."""
        for pending in self._faults:
            if pending.fault.matches(operation):
                pending.remaining -= 1
                if pending.remaining == 0:
                    self._faults.remove(pending)
                return pending.fault
        return None

    # -- request handling --------------------------------------------------------------------

    def _handler(self, operation: str) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        """The aiohttp handler for one operation's route."""

        async def handle(request: web.Request) -> web.StreamResponse:
            return await self._handle(request, operation)

        return handle

    async def _handle(self, request: web.Request, operation: str) -> web.StreamResponse:
        arrived = time.monotonic()
        # Take the id from the raw path and decode it exactly once: boto3 percent-encodes ':'
        # and '/' in model ids and ARNs, and aiohttp versions differ in what they pre-decode.
        raw_id = request.rel_url.raw_path[len("/model/") : -len(f"/{operation}")]
        model_id = unquote(raw_id)
        try:
            body = json.loads(await request.read() or b"{}")
        except (UnicodeDecodeError, json.JSONDecodeError):
            body = None
        record = RecordedRequest(
            operation=operation,
            model_id=model_id,
            body=body if isinstance(body, dict) else {},
            at=arrived,
            status=0,
            request_id=str(uuid.uuid4()),
        )
        self.requests.append(record)
        try:
            if not isinstance(body, dict):
                raise _BedrockError("ValidationException", "Malformed input request.")
            fault = self._take_fault(operation)
            if fault is not None and fault.latency_s > 0:
                await asyncio.sleep(fault.latency_s)
            # A stream fault with a cut point fails mid-stream instead of up front.
            stream_fault = operation == "converse-stream" and (
                fault is not None and fault.cut_stream_after_events is not None
            )
            if fault is not None and fault.error_code is not None and not stream_fault:
                raise _BedrockError(fault.error_code, fault.message)
            if operation == "count-tokens":
                response: web.StreamResponse = self._count_tokens(body, record)
            elif operation == "converse":
                response = await self._converse(body, arrived, record)
            else:
                return await self._converse_stream(
                    request, record, body, arrived, fault if stream_fault else None
                )
        except _BedrockError as error:
            response = web.json_response(
                {"message": error.message},
                status=error.status,
                headers={"x-amzn-ErrorType": error.code, **_request_id_header(record)},
            )
        record.status = response.status
        return response

    def _prepare_turn(
        self, model_id: str, body: dict[str, Any], streaming: bool
    ) -> tuple[str, str, dict[str, int], list[dict[str, Any]]]:
        """Validate a Converse request and compute (reply, stopReason, the prompt's usage,
        the toolUse blocks asked for)."""
        messages, system = body.get("messages"), body.get("system")
        _validate_conversation(messages, system)
        _validate_tools(body)
        _validate_files(model_id, messages)
        guardrail = _validate_guardrail(body.get("guardrailConfig"), streaming)
        input_tokens = _input_tokens(messages, system)
        if input_tokens > self._context_limit_tokens:
            raise _BedrockError("ValidationException", _TOO_LONG_MESSAGE)
        prompt = self.cache.account(model_id, system, messages, input_tokens)
        if guardrail and self._blocked(messages, system):
            return GUARDRAIL_MESSAGE, "guardrail_intervened", prompt, []
        try:
            uses = self._tool_responder(body) if body.get("toolConfig") else []
        except Exception as error:
            raise _BedrockError("ModelErrorException", f"Responder failed: {error!r}") from error
        if uses:
            names = ", ".join(use["name"] for use in uses)
            preamble = f"(offline model) Calling {names}." if self._tool_preamble else ""
            return preamble, "tool_use", prompt, uses
        try:
            reply = self._responder(body)
        except Exception as error:  # a broken responder is a model failure, not a server crash
            raise _BedrockError("ModelErrorException", f"Responder failed: {error!r}") from error
        stop_reason = "end_turn"
        inference = body.get("inferenceConfig")
        max_tokens = inference.get("maxTokens") if isinstance(inference, dict) else None
        if isinstance(max_tokens, int) and estimate_tokens(reply) > max_tokens:
            reply = reply[: max_tokens * 4]
            stop_reason = "max_tokens"
        return reply, stop_reason, prompt, []

    def _blocked(self, messages: list[Any], system: Any) -> bool:
        """Whether the guardrail stops the request: as Bedrock's does, it checks only the
        blocks marked ``guardContent`` when there are any, and the user messages otherwise."""
        blocks = [b for m in messages for b in m.get("content") or []] + list(system or [])
        guarded = [
            block_text(b) or "" for b in blocks if isinstance(b, dict) and "guardContent" in b
        ]
        if not guarded:
            guarded = [_message_text(m) for m in messages if m.get("role") == "user"]
        text = "\n".join(guarded).lower()
        return any(word in text for word in self._guardrail_words)

    async def _converse(
        self, body: dict[str, Any], arrived: float, record: RecordedRequest
    ) -> web.Response:
        reply, stop_reason, prompt, uses = self._prepare_turn(
            record.model_id, body, streaming=False
        )
        # A model writes at the same pace whether or not it streams: the whole answer is
        # ready only after as long as streaming it would take.
        chunks = math.ceil(len(reply) / self._stream_chunk_chars)
        await self._think(max(0, chunks - 1) * self._stream_delay_s)
        content = ([{"text": reply}] if reply or not uses else []) + [
            {"toolUse": use} for use in uses
        ]
        output_tokens = estimate_tokens(reply + "".join(json.dumps(u) for u in uses))
        return web.json_response(
            {
                "output": {"message": {"role": "assistant", "content": content}},
                "stopReason": stop_reason,
                "usage": _usage(prompt, output_tokens),
                "metrics": {"latencyMs": _elapsed_ms(arrived)},
            },
            headers=_request_id_header(record),
        )

    async def _converse_stream(
        self,
        request: web.Request,
        record: RecordedRequest,
        body: dict[str, Any],
        arrived: float,
        fault: Fault | None,
    ) -> web.StreamResponse:
        reply, stop_reason, prompt, uses = self._prepare_turn(record.model_id, body, streaming=True)
        await self._think()
        size = self._stream_chunk_chars
        deltas = [
            ("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": reply[i : i + size]}})
            for i in range(0, len(reply), size)
        ]
        blocks: list[tuple[str, dict[str, Any]]] = []
        if reply or not uses:
            blocks = [*deltas, ("contentBlockStop", {"contentBlockIndex": 0})]
        first = 1 if blocks else 0  # after the text block, if there is one
        for index, use in enumerate(uses, start=first):
            # A tool call streams as Bedrock's do: its id and name first, then its input as
            # pieces of a JSON string, then the block's end.
            start = {"toolUse": {"toolUseId": use["toolUseId"], "name": use["name"]}}
            blocks.append(("contentBlockStart", {"contentBlockIndex": index, "start": start}))
            raw = json.dumps(use["input"])
            for i in range(0, len(raw), size):
                delta = {"toolUse": {"input": raw[i : i + size]}}
                blocks.append(("contentBlockDelta", {"contentBlockIndex": index, "delta": delta}))
            blocks.append(("contentBlockStop", {"contentBlockIndex": index}))
        output_tokens = estimate_tokens(reply + "".join(json.dumps(u) for u in uses))
        events: list[tuple[str, dict[str, Any]]] = [
            ("messageStart", {"role": "assistant"}),
            *blocks,
            ("messageStop", {"stopReason": stop_reason}),
            ("metadata", {"usage": _usage(prompt, output_tokens)}),
        ]
        if fault is not None:
            events = events[: fault.cut_stream_after_events]
        response = web.StreamResponse(
            headers={"Content-Type": _EVENTSTREAM_CONTENT_TYPE, **_request_id_header(record)}
        )
        # Chunked framing matters: it is what lets the client tell a cut connection from a
        # finished response. Without it a close between two events would look like a clean end.
        response.enable_chunked_encoding()
        try:
            await response.prepare(request)
            record.status = response.status
            for index, (event_type, payload) in enumerate(events):
                if event_type == "contentBlockDelta" and index > 1:
                    # Deltas arrive stream_delay_s apart, as from a model generating text.
                    await asyncio.sleep(self._stream_delay_s)
                if event_type == "metadata":
                    # Computed last, so that latencyMs covers the whole stream.
                    payload = {**payload, "metrics": {"latencyMs": _elapsed_ms(arrived)}}
                # write() drains the transport whenever its buffer is full, so a slow reader
                # applies back-pressure here.
                await response.write(_event(event_type, payload))
        except ConnectionResetError:
            # The client went away before or during the stream (a killed worker, an abandoned
            # stream): a real server sees that too; it is not an error of this one.
            return response
        if fault is not None and fault.error_code is None:
            # Drop the connection before the final chunk, so botocore sees a broken stream.
            # aiohttp then ignores its own failed write_eof.
            if request.transport is not None:
                request.transport.close()
            return response
        if fault is not None and fault.error_code is not None:
            await response.write(_stream_error(fault.error_code, fault.message))
        await response.write_eof()
        return response

    def _count_tokens(self, body: dict[str, Any], record: RecordedRequest) -> web.Response:
        request_input = body.get("input")
        converse = request_input.get("converse") if isinstance(request_input, dict) else None
        if not isinstance(converse, dict):
            raise _BedrockError(
                "ValidationException",
                "The local server only counts tokens for input.converse requests.",
            )
        messages, system = converse.get("messages"), converse.get("system")
        _validate_conversation(messages, system)
        return web.json_response(
            {"inputTokens": _input_tokens(messages, system)},
            headers=_request_id_header(record),
        )


def _usage(prompt: dict[str, int], output_tokens: int) -> dict[str, int]:
    return {
        **prompt,
        "outputTokens": output_tokens,
        "totalTokens": sum(prompt.values()) + output_tokens,
    }


def _elapsed_ms(since: float) -> int:
    return int((time.monotonic() - since) * 1000)


def _request_id_header(record: RecordedRequest) -> dict[str, str]:
    # botocore copies this into ResponseMetadata.RequestId, as with the real service.
    return {"x-amzn-RequestId": record.request_id}


def _validate_guardrail(config: Any, streaming: bool) -> bool:
    """Whether a guardrail applies; a malformed guardrailConfig is refused as Bedrock does."""
    if config is None:
        return False
    if not isinstance(config, dict) or not all(
        isinstance(config.get(key), str) and config[key]
        for key in ("guardrailIdentifier", "guardrailVersion")
    ):
        raise _BedrockError(
            "ValidationException", "guardrailConfig needs guardrailIdentifier and guardrailVersion."
        )
    if config.get("trace", "disabled") not in ("enabled", "disabled", "enabled_full"):
        raise _BedrockError("ValidationException", "guardrailConfig.trace is not valid.")
    mode = config.get("streamProcessingMode")
    if mode is not None and (not streaming or mode not in ("sync", "async")):
        raise _BedrockError(
            "ValidationException", "streamProcessingMode is valid only for ConverseStream."
        )
    return True


async def _serve(args: argparse.Namespace) -> None:
    server = LocalBedrock(
        context_limit_tokens=args.context_limit_tokens,
        model_latency_s=args.model_latency,
        stream_chunk_chars=args.stream_chunk_chars,
        stream_delay_s=args.stream_delay,
    )
    url = await server.start(port=args.port)
    print(f"Local Bedrock Runtime (offline model) listening on {url}", flush=True)
    print(f"AWS_ENDPOINT_URL_BEDROCK_RUNTIME={url}", flush=True)
    print("Press Ctrl-C to stop.", flush=True)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        # Not available on every platform; Ctrl-C then arrives as KeyboardInterrupt instead.
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signum, stopping.set)
    try:
        await stopping.wait()
    finally:
        await server.stop()


def main(argv: list[str] | None = None) -> None:
    """Serve until Ctrl-C: ``python -m devtools.bedrock --port 8765``."""
    parser = argparse.ArgumentParser(
        prog="python -m devtools.bedrock",
        description="Serve a local Amazon Bedrock Runtime (offline model) on 127.0.0.1.",
    )
    parser.add_argument("--port", type=int, default=8765, help="port (0 picks a free one)")
    parser.add_argument("--context-limit-tokens", type=int, default=200_000)
    parser.add_argument("--model-latency", type=float, default=0.0, help="seconds per answer")
    parser.add_argument("--stream-chunk-chars", type=int, default=12)
    parser.add_argument("--stream-delay", type=float, default=0.03, help="seconds between deltas")
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args))


if __name__ == "__main__":
    main()
