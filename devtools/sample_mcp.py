"""Our sample MCP server, a team directory, for `threadchat dev` and the tests.

Tools:
- `find_person(name)`: reads the directory (no side effect).
- `file_ticket(title, body, delay=0)`: files a ticket (a side effect), answering `delay`
  seconds later. The request's `_meta.idempotency_key` deduplicates it: the same key twice
  files once, the second call answers with the ticket the first filed.
- `slow_lookup(seconds)`: takes that long, reporting MCP progress every half second.
- `broken_lookup(name)`: always fails (the result has isError).
- `big_report(chars)`: a result of that many characters.

It runs as Streamable HTTP (`python -m devtools.sample_mcp --port 8765`, path /mcp) or over
stdio (`--stdio`). With `--log FILE` (or SAMPLE_MCP_LOG) it appends one JSON line per call
(`tool`, `arguments`, `idempotency_key`, `outcome`: performed, deduplicated, failed, answered),
and the tickets it filed are read back from that file, so stdio processes started one per
call deduplicate across each other too.
"""

import argparse
import asyncio
import contextlib
import fcntl
import itertools
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from mcp.server.mcpserver import Context, MCPServer

DIRECTORY = {
    "Ada Lovelace": {"team": "Analytics", "email": "ada@example.com", "slack": "U0ADA00001"},
    "Grace Hopper": {"team": "Compilers", "email": "grace@example.com", "slack": "U0GRACE001"},
    "Alan Turing": {"team": "Research", "email": "alan@example.com", "slack": "U0ALAN0001"},
    "Katherine Johnson": {"team": "Flight", "email": "kj@example.com", "slack": "U0KJ000001"},
}

server = MCPServer(
    "team-directory",
    instructions="A team directory: find people, file tickets for them.",
    log_level="WARNING",
)
_log_path: Path | None = None
_tickets_lock = asyncio.Lock()
_tickets: dict[str, str] = {}  # idempotency key -> ticket id (without a log file)
_numbers = itertools.count(1)


def _key(ctx: Context) -> str:
    meta: Any = ctx.request_context.meta
    if meta is None:
        return ""
    if isinstance(meta, dict):
        return str(meta.get("idempotency_key") or "")
    return str(getattr(meta, "idempotency_key", "") or "")


def _record(entry: dict[str, Any]) -> None:
    if _log_path is None:
        return
    with _log_path.open("a", encoding="utf-8") as log:
        log.write(json.dumps({"at": time.time(), **entry}) + "\n")


def _read_log() -> list[dict[str, Any]]:
    if _log_path is None or not _log_path.exists():
        return []
    lines = _log_path.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


@server.tool()
def find_person(name: str) -> str:
    """Find people in the team directory by (part of) their name: team, email, Slack id."""
    found = [
        f"{person}: {info['team']} team, {info['email']}, Slack {info['slack']}"
        for person, info in DIRECTORY.items()
        if name.strip().lower() in person.lower()
    ]
    _record({"tool": "find_person", "arguments": {"name": name}, "outcome": "answered"})
    return "\n".join(found) if found else f"Nobody called {name!r} in the directory."


@server.tool()
async def file_ticket(title: str, body: str, ctx: Context, delay: float = 0) -> str:
    """File a ticket with the helpdesk: a title and what it is about."""
    # `delay`: seconds between filing and answering, for losing a worker mid-call.
    key = _key(ctx)
    arguments = {"title": title, "body": body}
    async with _tickets_lock:
        with _file_lock():
            earlier = _tickets.get(key) if key else None
            if key and earlier is None:
                earlier = next(
                    (
                        e["ticket"]
                        for e in _read_log()
                        if e.get("idempotency_key") == key and e.get("outcome") == "performed"
                    ),
                    None,
                )
            if earlier:
                _record(
                    {
                        "tool": "file_ticket",
                        "arguments": arguments,
                        "idempotency_key": key,
                        "outcome": "deduplicated",
                        "ticket": earlier,
                    }
                )
                return await _after(delay, f"Ticket {earlier} is filed: {title}")
            if _log_path is None:
                number = next(_numbers)
            else:
                number = 1 + sum(1 for e in _read_log() if e.get("outcome") == "performed")
            ticket = f"TICKET-{number:04d}"
            if key:
                _tickets[key] = ticket
            _record(
                {
                    "tool": "file_ticket",
                    "arguments": arguments,
                    "idempotency_key": key,
                    "outcome": "performed",
                    "ticket": ticket,
                }
            )
    return await _after(delay, f"Ticket {ticket} is filed: {title}")


async def _after(delay: float, answer: str) -> str:
    await asyncio.sleep(max(0.0, delay))
    return answer


@contextlib.contextmanager
def _file_lock():
    """Across processes (stdio servers are one per call): one ticket at a time."""
    if _log_path is None:
        yield
        return
    with open(f"{_log_path}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@server.tool()
async def slow_lookup(seconds: float, ctx: Context) -> str:
    """Look something up slowly (for trying long calls): takes `seconds`, with progress."""
    _record(
        {
            "tool": "slow_lookup",
            "arguments": {"seconds": seconds},
            "idempotency_key": _key(ctx),
            "outcome": "started",
        }
    )
    started = time.monotonic()
    while (elapsed := time.monotonic() - started) < seconds:
        await ctx.report_progress(elapsed, seconds, "looking")
        await asyncio.sleep(min(0.5, seconds - elapsed))
    _record({"tool": "slow_lookup", "arguments": {"seconds": seconds}, "outcome": "answered"})
    return f"Looked it up in {seconds:g} seconds."


@server.tool()
def broken_lookup(name: str) -> str:
    """A lookup whose backend is down: it always fails."""
    _record({"tool": "broken_lookup", "arguments": {"name": name}, "outcome": "failed"})
    raise RuntimeError("the directory backend is down")


@server.tool()
def big_report(chars: int) -> str:
    """A report of `chars` characters (for trying size limits)."""
    _record({"tool": "big_report", "arguments": {"chars": chars}, "outcome": "answered"})
    line = "All quiet on the directory front. "
    return (line * (chars // len(line) + 1))[:chars]


class SampleMcpProcess:
    """This server as a child process on 127.0.0.1 (Streamable HTTP), for `threadchat dev`
    and tests: its URL, the calls it logged, stopped by PID."""

    def __init__(self, log: Path, port: int = 0):
        self.log = Path(log)
        self.port = port or _free_port()
        self.url = f"http://127.0.0.1:{self.port}/mcp"
        self.process: subprocess.Popen | None = None

    async def start(self, timeout: float = 30) -> str:
        """Start it and wait (polling) until it listens; returns its URL."""
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "devtools.sample_mcp", "--port", str(self.port)]
            + ["--log", str(self.log)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while not _listening(self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the sample MCP server did not start on port {self.port}")
            await asyncio.sleep(0.05)
        return self.url

    def calls(self, tool: str | None = None) -> list[dict[str, Any]]:
        """What it logged, in order (of `tool` only, if given)."""
        if not self.log.exists():
            return []
        entries = [json.loads(line) for line in self.log.read_text().splitlines() if line]
        return [e for e in entries if tool is None or e["tool"] == tool]

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
        if self.process:
            self.process.wait(timeout=10)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def main(argv: list[str] | None = None) -> None:
    global _log_path
    parser = argparse.ArgumentParser(prog="python -m devtools.sample_mcp", description=__doc__)
    parser.add_argument("--stdio", action="store_true", help="serve over stdin/stdout")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--log", default=os.environ.get("SAMPLE_MCP_LOG"), help="JSON lines")
    args = parser.parse_args(argv)
    _log_path = Path(args.log) if args.log else None
    if args.stdio:
        server.run("stdio")
    else:
        print(f"sample MCP server on http://{args.host}:{args.port}/mcp", file=sys.stderr)
        server.run("streamable-http", host=args.host, port=args.port)


if __name__ == "__main__":
    main()
