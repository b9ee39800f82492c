"""Tool activities: what tools a turn may use, and calling one, over MCP or built in.

Both run on the tools task queue (TEMPORAL_TOOLS_TASK_QUEUE), so a slow tool never delays
Slack work. Server settings, headers (secrets) included, are read here from the tools file by
the server's name: they never enter a Temporal payload.

Registering a built-in tool (`knowledge`, `slack_search`, `memory`)
--------------------------------------------------------------------
Write a class with a `name` (the server name the tools file's `channels:` lists use, one of
`threadchat.tools_file.BUILTINS`), a `specs` method and an async `call` method (the
`BuiltinTool` protocol below), and construct it in `builtin_tools()` in
`threadchat/commands/worker.py`, which passes the list to `ToolActivities(builtins=...)`:

    class KnowledgeTool:
        name = "knowledge"

        def __init__(self, tools: ToolsDirectory, client): ...

        def specs(self, thread: ThreadRef, user: str, settings: ToolsFile) -> list[ToolSpec]:
            bases = settings.knowledge_for(thread.channel)
            if not bases:
                return []
            return [ToolSpec("knowledge", "retrieve", description=..., input_schema=...)]

        async def call(self, call: ToolCall) -> ToolOutcome:
            bases = self.tools.current().knowledge_for(call.thread.channel)
            ...
            return ToolOutcome(call.tool_use_id, status="success", text=..., sources=[...])

`specs` is asked only when the conversation's channel lists the tool in the tools file; it gets
the tools file as it is now (`settings`) and may return [] (nothing for this channel or
person). `call` gets the model's call; `call.server` is the tool's name, `call.name` the
spec's name. The activity times it, heartbeats while it runs, caps the text and turns an
exception into `status="error"` (raise `temporalio.exceptions.ApplicationError` with
`non_retryable=False` for a failure worth a Temporal retry). Each ToolSpec's `server` must be
the built-in's `name`.
"""

import asyncio
import contextlib
import json
import logging
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

import httpx2
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.types import PaginatedRequestParams
from temporalio import activity
from temporalio.exceptions import ApplicationError

from threadchat.model import (
    ThreadRef,
    ToolCall,
    ToolCatalog,
    ToolCatalogRequest,
    ToolOutcome,
    ToolSource,
    ToolSpec,
)
from threadchat.reloading import ReloadingFile
from threadchat.tools_file import BUILTINS, ServerConfig, ToolsFile, ToolsFileError

log = logging.getLogger(__name__)

# A server's tool list is kept this long per worker: a turn never waits on a listing it
# made a minute ago, and an operator's change to a server shows within a minute.
CATALOG_SECONDS = 60.0
# A server that has not listed its tools in this long is left out of the turn.
LIST_TIMEOUT_SECONDS = 5.0
# ...and out of the turns of the next few seconds, so a slow server does not cost every turn
# of a busy channel the wait; a server back up is listed again soon after.
UNAVAILABLE_SECONDS = 15.0
# What the model gets of one result at most: a tool must not fill the context window.
MAX_RESULT_CHARS = 20_000
MAX_ERROR_CHARS = 2_000
HEARTBEAT_SECONDS = 2.0
# Raised so that Temporal retries the call (with the same idempotency key).
RETRYABLE_TOOL_ERROR = "ToolServerUnavailable"


class BuiltinTool(Protocol):
    """A tool served by the worker itself, named in the tools file like a server."""

    name: str

    def specs(self, thread: ThreadRef, user: str, settings: ToolsFile) -> list[ToolSpec]: ...

    async def call(self, call: ToolCall) -> ToolOutcome: ...


class ToolsDirectory(ReloadingFile[ToolsFile]):
    """THREADCHAT_TOOLS_FILE as it is now (read again when it changes)."""

    def __init__(
        self, path: str | None, tools: ToolsFile, load: Callable[[str], ToolsFile] | None = None
    ):
        super().__init__("THREADCHAT_TOOLS_FILE", path, tools, load, ToolsFileError)


@dataclass
class _Listing:
    server: ServerConfig
    tools: list[ToolSpec] | None  # None: the server did not answer
    until: float


class ToolActivities:
    """`list_tools` and `call_tool`, for the tools worker."""

    def __init__(
        self,
        tools: ToolsDirectory,
        builtins: Sequence[BuiltinTool] = (),
        *,
        catalog_seconds: float = CATALOG_SECONDS,
        unavailable_seconds: float = UNAVAILABLE_SECONDS,
        list_timeout: float = LIST_TIMEOUT_SECONDS,
        max_result_chars: int = MAX_RESULT_CHARS,
        heartbeat_seconds: float = HEARTBEAT_SECONDS,
    ):
        self.tools = tools
        self.builtins = {tool.name: tool for tool in builtins}
        unknown = set(self.builtins) - set(BUILTINS)
        if unknown:
            raise ValueError(f"not built-in tool names: {sorted(unknown)}")
        self.catalog_seconds = catalog_seconds
        self.unavailable_seconds = unavailable_seconds
        self.list_timeout = list_timeout
        self.max_result_chars = max_result_chars
        self.heartbeat_seconds = heartbeat_seconds
        self._listings: dict[str, _Listing] = {}

    @activity.defn
    async def list_tools(self, request: ToolCatalogRequest) -> ToolCatalog:
        """The tools a turn in `request.thread`'s channel may use. A server that is down or
        slow is named in `unavailable`; this activity does not fail for it."""
        settings = self.tools.current()
        names = settings.servers_for(request.thread.channel)
        found = await asyncio.gather(*(self._tools_of(name, settings, request) for name in names))
        catalog = ToolCatalog()
        for name, specs in zip(names, found, strict=True):
            if specs is None:
                catalog.unavailable.append(name)
            else:
                catalog.tools.extend(specs)
        return catalog

    async def _tools_of(
        self, name: str, settings: ToolsFile, request: ToolCatalogRequest
    ) -> list[ToolSpec] | None:
        if name in BUILTINS:
            builtin = self.builtins.get(name)
            if builtin is None:
                log.warning("tools file names the built-in tool %s, which this worker lacks", name)
                return None
            try:
                return list(builtin.specs(request.thread, request.user, settings))
            except Exception as err:
                log.warning("built-in tool %s could not list its tools: %s", name, _describe(err))
                return None
        server = settings.servers[name]
        cached = self._listings.get(name)
        if cached and cached.server == server and cached.until > time.monotonic():
            return cached.tools
        try:
            async with asyncio.timeout(self.list_timeout):
                specs = await _list_server_tools(server)
        except Exception as err:
            log.warning("MCP server %s is unavailable: %s", name, _describe(err))
            until = time.monotonic() + self.unavailable_seconds
            self._listings[name] = _Listing(server, None, until)
            return None
        self._listings[name] = _Listing(server, specs, time.monotonic() + self.catalog_seconds)
        return specs

    @activity.defn
    async def call_tool(self, call: ToolCall) -> ToolOutcome:
        """Run one tool call. A tool's own error, and a server that fails in a way a retry
        would not mend, come back as `status="error"` for the model; a server refusing
        connections or answering 5xx raises, so Temporal retries with the same key."""
        started = time.monotonic()
        beating = asyncio.create_task(self._heartbeat())
        try:
            outcome = await self._call(call)
        finally:
            beating.cancel()
        outcome = self._capped(outcome)
        outcome.duration_ms = int((time.monotonic() - started) * 1000)
        log.info(
            "tool call %s/%s round %d: %s, %d chars, %d ms",
            call.server,
            call.name,
            call.round,
            outcome.status,
            len(outcome.text),
            outcome.duration_ms,
        )
        return outcome

    async def _heartbeat(self) -> None:
        while True:
            activity.heartbeat()
            await asyncio.sleep(self.heartbeat_seconds)

    async def _call(self, call: ToolCall) -> ToolOutcome:
        settings = self.tools.current()
        if call.server in BUILTINS:
            builtin = self.builtins.get(call.server)
            if builtin is None:
                return _error(call, f"the tool {call.server} is not available on this worker")
            try:
                return await builtin.call(call)
            except ApplicationError:
                raise
            except Exception as err:
                return _error(call, f"the tool failed: {_describe(err)}")
        server = settings.servers.get(call.server)
        if server is None or not server.allows(call.name):
            return _error(call, f"the tool {call.server}/{call.name} is not available")
        server_errors: list[int] = []
        try:
            async with asyncio.timeout(server.timeout_seconds):
                result = await _call_server_tool(server, call, server_errors)
        except TimeoutError:
            return _error(call, f"the tool did not answer within {server.timeout_seconds:g} s")
        except Exception as err:
            if server_errors or _worth_retrying(err):
                raise ApplicationError(
                    f"{call.server} could not be reached: {_describe(err)}",
                    type=RETRYABLE_TOOL_ERROR,
                ) from None
            return _error(call, f"the tool failed: {_describe(err)}")
        text = _result_text(result)
        sources = [ToolSource(title=server.name, url=server.url)] if server.url else []
        return ToolOutcome(
            tool_use_id=call.tool_use_id,
            status="error" if result.is_error else "success",
            text=text,
            sources=sources,
        )

    def _capped(self, outcome: ToolOutcome) -> ToolOutcome:
        cap = self.max_result_chars if outcome.status == "success" else MAX_ERROR_CHARS
        if len(outcome.text) <= cap:
            return outcome
        note = f"\n[The result was cut here: {cap:,} of its {len(outcome.text):,} characters.]"
        return replace(outcome, text=outcome.text[:cap] + note, truncated=True)


def _error(call: ToolCall, text: str) -> ToolOutcome:
    return ToolOutcome(tool_use_id=call.tool_use_id, status="error", text=text)


@contextlib.asynccontextmanager
async def open_session(
    server: ServerConfig, server_errors: list[int] | None = None
) -> AsyncIterator[ClientSession]:
    """An initialized MCP client session with `server`: Streamable HTTP with its headers, or
    a stdio process of its command, started for this session and stopped after it. HTTP
    5xx statuses are appended to `server_errors`: the SDK reports them as a plain JSON-RPC
    internal error, which would not tell a failing server from a failing tool."""
    async with contextlib.AsyncExitStack() as stack:
        if server.url:
            http = create_mcp_http_client(
                headers=server.headers,
                timeout=httpx2.Timeout(server.timeout_seconds + 5, connect=LIST_TIMEOUT_SECONDS),
            )
            if server_errors is not None:

                async def seen(response: httpx2.Response) -> None:
                    if response.status_code >= 500:
                        server_errors.append(response.status_code)

                http.event_hooks = {"request": [], "response": [seen]}
            await stack.enter_async_context(http)
            read, write = await stack.enter_async_context(
                streamable_http_client(server.url, http_client=http)
            )
        else:
            program, *args = server.command
            read, write = await stack.enter_async_context(
                stdio_client(
                    StdioServerParameters(command=program, args=args, env=server.env or None),
                    errlog=sys.stderr,
                )
            )
        session = await stack.enter_async_context(ClientSession(read, write))
        await session.initialize()
        yield session


async def _list_server_tools(server: ServerConfig) -> list[ToolSpec]:
    specs: list[ToolSpec] = []
    async with open_session(server) as session:
        cursor = None
        for _ in range(20):  # pages; a server that pages forever is cut short
            params = PaginatedRequestParams(cursor=cursor) if cursor else None
            listing = await session.list_tools(params=params)
            for tool in listing.tools:
                if server.allows(tool.name):
                    specs.append(
                        ToolSpec(
                            server=server.name,
                            name=tool.name,
                            description=(tool.description or tool.title or tool.name)[:4000],
                            input_schema=dict(tool.input_schema or {"type": "object"}),
                            approval=server.needs_approval(tool.name),
                            source=server.url,
                            timeout_seconds=server.timeout_seconds,
                        )
                    )
            cursor = listing.next_cursor
            if not cursor:
                break
    return specs


async def _call_server_tool(server: ServerConfig, call: ToolCall, server_errors: list[int]) -> Any:
    async def progressed(progress: float, total: float | None, message: str | None) -> None:
        activity.heartbeat()

    async with open_session(server, server_errors) as session:
        return await session.call_tool(
            call.name,
            call.arguments,
            read_timeout_seconds=server.timeout_seconds,
            progress_callback=progressed,
            meta={"idempotency_key": call.idempotency_key},
        )


def _result_text(result: Any) -> str:
    parts = []
    for block in result.content or []:
        kind = getattr(block, "type", "")
        if kind == "text":
            parts.append(block.text)
        elif kind == "resource" and hasattr(block.resource, "text"):
            parts.append(block.resource.text)
        else:
            parts.append(f"[{kind or 'content'} not shown]")
    if not parts and result.structured_content is not None:
        parts.append(json.dumps(result.structured_content, ensure_ascii=False))
    return "\n".join(parts)


def _causes(err: BaseException) -> list[BaseException]:
    """The exceptions inside task-group wrappers, and what they were raised from."""
    found: list[BaseException] = []
    pending = [err]
    while pending:
        current = pending.pop()
        if isinstance(current, BaseExceptionGroup):
            pending.extend(current.exceptions)
            continue
        found.append(current)
        if current.__cause__ is not None:
            pending.append(current.__cause__)
    return found


def _worth_retrying(err: BaseException) -> bool:
    """A server that refused the connection or answered 5xx may well answer a retry."""
    for cause in _causes(err):
        if isinstance(cause, httpx2.ConnectError | ConnectionRefusedError):
            return True
        if isinstance(cause, httpx2.HTTPStatusError) and cause.response.status_code >= 500:
            return True
    return False


def _describe(err: BaseException) -> str:
    causes = _causes(err)
    first = causes[0] if causes else err
    text = str(first).strip().splitlines()[0] if str(first).strip() else ""
    return f"{first.__class__.__name__}: {text}"[:300] if text else first.__class__.__name__
