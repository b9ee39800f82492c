"""Shared fixtures: the real Temporal dev server, and a `Stack` (devtools.stack) per test that
wires a worker and the bot to the local Slack and Bedrock servers over real HTTP."""

import os
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client

from devtools.sample_mcp import SampleMcpProcess
from devtools.stack import Stack, record_histories, start_stack
from devtools.temporal_server import TemporalDevServer

# Real boto3 with dummy credentials, pointed at the local Bedrock server by endpoint URL.
os.environ.update(
    {
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
)
for _name in ("AWS_BEARER_TOKEN_BEDROCK", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
    os.environ.pop(_name, None)


@pytest.fixture(scope="session")
async def temporal_server():
    server = TemporalDevServer()
    client = await server.start()
    yield server, client
    server.stop()


@pytest.fixture(scope="session")
async def client(temporal_server) -> Client:
    return temporal_server[1]


@pytest.fixture
async def make_stack(client, request):
    """Build a Stack: `await make_stack(bot=True, **conversation_overrides)`."""
    stacks: list[Stack] = []

    async def make(**options: Any) -> Stack:
        stack = await start_stack(client, **options)
        stacks.append(stack)
        return stack

    yield make
    record_to = os.environ.get("THREADCHAT_RECORD_HISTORIES")
    for stack in stacks:
        await stack.close()
        if record_to:
            await record_histories(stack, Path(record_to), request.node.name)


@pytest.fixture
async def directory(tmp_path):
    """Our sample MCP server (the team directory) as its own process, as `threadchat dev`
    starts it; its calls are logged in the test's folder."""
    server = SampleMcpProcess(tmp_path / "calls.jsonl")
    await server.start()
    try:
        yield server
    finally:
        server.stop()
