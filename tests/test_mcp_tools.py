"""The tool activities against our sample MCP server as a real process, over Streamable HTTP
and over stdio: listing (allow list, approval, cache, a server down or slow), calling (results,
tool errors, the size cap, heartbeats, cancellation) and the idempotency key in `_meta`."""

import asyncio
import json
import socket
import sys
import time
from datetime import timedelta
from pathlib import Path

import boto3
import pytest
from aiohttp import web
from temporalio import workflow
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment
from temporalio.worker import Worker

from activities.tools import RETRYABLE_TOOL_ERROR, ToolActivities, ToolsDirectory
from devtools.bedrock import LocalBedrock
from devtools.stack import eventually
from threadchat.model import (
    ThreadRef,
    ToolCall,
    ToolCatalog,
    ToolCatalogRequest,
    ToolOutcome,
    ToolSource,
    ToolSpec,
)
from threadchat.tools import bedrock_tool_config, find_tool, tool_result_block
from threadchat.tools_file import ServerConfig, ToolsFile

THREAD = ThreadRef("T0TEAM", "C0TOOLS", "1700000000.000100")
ALL_TOOLS = {"find_person", "file_ticket", "slow_lookup", "broken_lookup", "big_report"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def sample(directory):
    return directory


def stdio_config(name: str, log: Path, **options) -> ServerConfig:
    command = (sys.executable, "-m", "devtools.sample_mcp", "--stdio", "--log", str(log))
    return ServerConfig(name, command=command, **options)


def activities(*servers: ServerConfig, channel: str = "default", **options) -> ToolActivities:
    tools = ToolsFile(
        servers={server.name: server for server in servers},
        channels={channel: tuple(server.name for server in servers)},
    )
    return ToolActivities(ToolsDirectory(None, tools), **options)


def call(server: str, tool: str, /, key: str = "key-1", **arguments) -> ToolCall:
    return ToolCall(
        tool_use_id=f"tooluse_{tool}",
        server=server,
        name=tool,
        arguments=arguments,
        idempotency_key=key,
        thread=THREAD,
        user="U0ALICE",
    )


async def catalog_of(tools: ToolActivities):
    return await ActivityEnvironment().run(tools.list_tools, ToolCatalogRequest(THREAD, "U0ALICE"))


async def run(tools: ToolActivities, tool_call: ToolCall) -> ToolOutcome:
    return await ActivityEnvironment().run(tools.call_tool, tool_call)


async def test_the_tools_of_an_http_server_are_listed_with_approvals_marked(sample):
    tools = activities(ServerConfig("team", url=sample.url, approval=("file_ticket",)))
    catalog = await catalog_of(tools)
    assert catalog.unavailable == []
    assert {spec.name for spec in catalog.tools} == ALL_TOOLS
    by_name = {spec.name: spec for spec in catalog.tools}
    assert by_name["file_ticket"].approval and not by_name["find_person"].approval
    person = by_name["find_person"]
    assert person.server == "team" and person.source == sample.url
    assert person.input_schema["required"] == ["name"]
    assert person.input_schema["properties"]["name"]["type"] == "string"
    assert "directory" in person.description and person.timeout_seconds == 60


async def test_the_allow_list_and_approval_star_hold_over_stdio(tmp_path):
    server = stdio_config(
        "directory",
        tmp_path / "calls.jsonl",
        tools=("find_person", "file_ticket"),
        approval_all=True,
    )
    tools = activities(server)
    catalog = await catalog_of(tools)
    assert catalog.unavailable == []
    assert sorted(spec.name for spec in catalog.tools) == ["file_ticket", "find_person"]
    assert all(spec.approval and spec.source == "" for spec in catalog.tools)
    # A tool the allow list leaves out is not called even if the model names it.
    refused = await run(tools, call("directory", "big_report", chars=10))
    assert refused.status == "error" and "not available" in refused.text


async def test_a_channel_gets_its_own_servers_and_none_elsewhere(sample):
    tools = ToolActivities(
        ToolsDirectory(
            None,
            ToolsFile(
                servers={"team": ServerConfig("team", url=sample.url)},
                channels={"C0TOOLS": ("team",), "dm": ()},
            ),
        )
    )
    env = ActivityEnvironment()
    here = await env.run(tools.list_tools, ToolCatalogRequest(THREAD))
    assert {spec.name for spec in here.tools} == ALL_TOOLS
    elsewhere = ThreadRef("T0TEAM", "C0ELSE", "1.2")
    dm = ThreadRef("T0TEAM", "D0ALICE", "1.2")
    for thread in (elsewhere, dm):
        empty = await env.run(tools.list_tools, ToolCatalogRequest(thread))
        assert empty.tools == [] and empty.unavailable == []


async def test_a_server_that_is_down_or_slow_is_unavailable_and_the_rest_still_listed(
    sample, tmp_path
):
    silent = socket.socket()  # accepts connections and never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    down_port = free_port()
    try:
        tools = activities(
            ServerConfig("team", url=sample.url),
            ServerConfig("down", url=f"http://127.0.0.1:{down_port}/mcp"),
            ServerConfig("slow", url=f"http://127.0.0.1:{silent.getsockname()[1]}/mcp"),
            ServerConfig("missing", command=(str(tmp_path / "no-such-server"),)),
            list_timeout=1.0,
        )
        started = time.monotonic()
        catalog = await catalog_of(tools)
        took = time.monotonic() - started
    finally:
        silent.close()
    assert sorted(catalog.unavailable) == ["down", "missing", "slow"]
    assert {spec.name for spec in catalog.tools} == ALL_TOOLS
    assert took < 5, took  # the slow one is cut at list_timeout, the others in parallel


async def test_a_listing_is_cached_for_a_while(sample):
    cached = activities(ServerConfig("team", url=sample.url))
    fresh = activities(ServerConfig("team", url=sample.url), catalog_seconds=0)
    assert (await catalog_of(cached)).unavailable == []
    assert (await catalog_of(fresh)).unavailable == []
    sample.stop()
    assert (await catalog_of(fresh)).unavailable == ["team"]
    again = await catalog_of(cached)
    assert again.unavailable == [] and {spec.name for spec in again.tools} == ALL_TOOLS


async def test_a_server_that_was_unavailable_is_not_waited_for_again_at_once(tmp_path):
    silent = socket.socket()  # accepts connections and never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    slow = ServerConfig("slow", url=f"http://127.0.0.1:{silent.getsockname()[1]}/mcp")
    remembering = activities(slow, list_timeout=0.5)
    forgetting = activities(slow, list_timeout=0.5, unavailable_seconds=0)
    try:
        for tools, second_wait in ((remembering, False), (forgetting, True)):
            assert (await catalog_of(tools)).unavailable == ["slow"]
            started = time.monotonic()
            assert (await catalog_of(tools)).unavailable == ["slow"]
            assert (time.monotonic() - started >= 0.5) == second_wait
    finally:
        silent.close()


@pytest.mark.parametrize("transport", ["http", "stdio"])
async def test_a_call_returns_the_text_and_the_http_server_as_its_source(
    sample, tmp_path, transport
):
    server = (
        ServerConfig("team", url=sample.url)
        if transport == "http"
        else stdio_config("team", sample.log)
    )
    outcome = await run(activities(server), call("team", "find_person", name="grace"))
    assert outcome.status == "success" and outcome.tool_use_id == "tooluse_find_person"
    assert outcome.text == "Grace Hopper: Compilers team, grace@example.com, Slack U0GRACE001"
    assert not outcome.truncated and outcome.duration_ms > 0
    expected = [ToolSource(title="team", url=sample.url)] if transport == "http" else []
    assert outcome.sources == expected
    assert [c["arguments"] for c in sample.calls("find_person")] == [{"name": "grace"}]


@pytest.mark.parametrize("transport", ["http", "stdio"])
async def test_the_same_idempotency_key_twice_is_performed_once(sample, transport):
    server = (
        ServerConfig("team", url=sample.url)
        if transport == "http"
        else stdio_config("team", sample.log)
    )
    tools = activities(server)
    ticket = {"title": "Laptop", "body": "It will not boot."}
    first = await run(tools, call("team", "file_ticket", key="turn-7/tooluse_1", **ticket))
    again = await run(tools, call("team", "file_ticket", key="turn-7/tooluse_1", **ticket))
    other = await run(tools, call("team", "file_ticket", key="turn-8/tooluse_1", **ticket))
    assert first.status == again.status == other.status == "success"
    assert first.text == again.text == "Ticket TICKET-0001 is filed: Laptop"
    assert other.text == "Ticket TICKET-0002 is filed: Laptop"
    seen = [(c["idempotency_key"], c["outcome"]) for c in sample.calls("file_ticket")]
    assert seen == [
        ("turn-7/tooluse_1", "performed"),
        ("turn-7/tooluse_1", "deduplicated"),
        ("turn-8/tooluse_1", "performed"),
    ]


async def test_concurrent_retries_with_one_key_file_one_ticket(sample):
    tools = activities(ServerConfig("team", url=sample.url))
    outcomes = await asyncio.gather(
        *(run(tools, call("team", "file_ticket", key="k", title="t", body="b")) for _ in range(4))
    )
    assert {o.text for o in outcomes} == {"Ticket TICKET-0001 is filed: t"}
    assert [c["outcome"] for c in sample.calls("file_ticket")].count("performed") == 1


async def test_a_tool_error_is_an_outcome_for_the_model_not_a_failure(sample, tmp_path):
    for server in (ServerConfig("team", url=sample.url), stdio_config("team", sample.log)):
        outcome = await run(activities(server), call("team", "broken_lookup", name="ada"))
        assert outcome.status == "error" and outcome.text, outcome
        assert "broken_lookup" in outcome.text
    unknown = await run(activities(ServerConfig("team", url=sample.url)), call("team", "nope"))
    assert unknown.status == "error"
    bad_arguments = await run(
        activities(ServerConfig("team", url=sample.url)), call("team", "find_person")
    )
    assert bad_arguments.status == "error" and "name" in bad_arguments.text.lower()
    gone = await run(activities(ServerConfig("team", url=sample.url)), call("gone", "find_person"))
    assert gone.status == "error" and "not available" in gone.text


async def test_a_server_refusing_connections_or_answering_5xx_raises_for_a_retry():
    app = web.Application()

    async def unavailable(request: web.Request) -> web.Response:
        return web.Response(status=503, text="maintenance")

    app.router.add_route("*", "/mcp", unavailable)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        for server in (
            ServerConfig("team", url=f"http://127.0.0.1:{free_port()}/mcp"),
            ServerConfig("team", url=f"http://127.0.0.1:{port}/mcp"),
        ):
            with pytest.raises(ApplicationError) as raised:
                await run(activities(server), call("team", "file_ticket", title="t", body="b"))
            assert raised.value.type == RETRYABLE_TOOL_ERROR and not raised.value.non_retryable
    finally:
        await runner.cleanup()


async def test_a_big_result_is_cut_with_a_note(sample):
    tools = activities(ServerConfig("team", url=sample.url), max_result_chars=1000)
    outcome = await run(tools, call("team", "big_report", chars=5000))
    assert outcome.status == "success" and outcome.truncated
    body, note = outcome.text[:1000], outcome.text[1000:]
    assert body.startswith("All quiet") and "1,000 of its 5,000 characters" in note
    small = await run(tools, call("team", "big_report", chars=999))
    assert not small.truncated and len(small.text) == 999


async def test_a_slow_call_heartbeats_on_the_servers_progress(sample):
    # The activity's own beat is set far apart: the beats counted come from MCP progress.
    tools = activities(ServerConfig("team", url=sample.url), heartbeat_seconds=600)
    env = ActivityEnvironment()
    beats: list[float] = []
    env.on_heartbeat = lambda *details: beats.append(time.monotonic())
    outcome = await env.run(tools.call_tool, call("team", "slow_lookup", seconds=2))
    assert outcome.status == "success" and outcome.text == "Looked it up in 2 seconds."
    assert len(beats) >= 4, beats  # one at the start, then progress every half second
    assert max(b - a for a, b in zip(beats, beats[1:], strict=False)) < 1.5


async def test_a_call_heartbeats_by_itself_when_the_server_is_quiet(tmp_path):
    app = web.Application()

    # A stand-in for a server that takes long and sends no progress: it holds the request.
    async def hold(request: web.Request) -> web.Response:
        await asyncio.sleep(30)
        return web.Response(status=504)

    app.router.add_route("*", "/mcp", hold)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        server = ServerConfig("quiet", url=f"http://127.0.0.1:{port}/mcp", timeout_seconds=1.5)
        env = ActivityEnvironment()
        beats: list[float] = []
        env.on_heartbeat = lambda *details: beats.append(time.monotonic())
        outcome = await env.run(
            activities(server, heartbeat_seconds=0.2).call_tool, call("quiet", "find_person")
        )
    finally:
        await runner.cleanup()
    assert outcome.status == "error" and "did not answer within 1.5 s" in outcome.text
    assert outcome.duration_ms < 5000, outcome.duration_ms
    assert len(beats) >= 5, beats


async def test_a_cancelled_call_stops_waiting_for_the_server(sample):
    tools = activities(ServerConfig("team", url=sample.url))
    env = ActivityEnvironment()
    started = time.monotonic()
    running = asyncio.create_task(env.run(tools.call_tool, call("team", "slow_lookup", seconds=20)))
    await eventually(lambda: sample.calls("slow_lookup"), what="the slow call to start")
    env.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    assert time.monotonic() - started < 10


class Echo:
    """A built-in tool as the `knowledge`/`memory` ones register (activities/tools.py)."""

    name = "memory"

    def __init__(self):
        self.asked: list[tuple[str, str, tuple[str, ...]]] = []

    def specs(self, thread, user, settings):
        self.asked.append((thread.channel, user, settings.servers_for(thread.channel)))
        schema = {"type": "object", "properties": {"text": {"type": "string"}}}
        return [ToolSpec("memory", "recall", "What the person asked to remember.", schema)]

    async def call(self, call):
        if call.arguments.get("fail"):
            raise RuntimeError("the memory is unreachable")
        return ToolOutcome(call.tool_use_id, "success", f"{call.user} said {call.arguments}")


async def test_a_builtin_tool_is_listed_and_called_through_the_registry(sample):
    echo = Echo()
    tools = ToolActivities(
        ToolsDirectory(
            None,
            ToolsFile(
                servers={"team": ServerConfig("team", url=sample.url)},
                channels={"default": ("memory", "team", "knowledge")},
            ),
        ),
        builtins=[echo],
    )
    catalog = await catalog_of(tools)
    assert catalog.unavailable == ["knowledge"]  # named in the file, not served by this worker
    assert [s.name for s in catalog.tools if s.server == "memory"] == ["recall"]
    assert echo.asked == [("C0TOOLS", "U0ALICE", ("memory", "team", "knowledge"))]
    said = await run(tools, call("memory", "recall", text="hi"))
    assert said.status == "success" and said.text == "U0ALICE said {'text': 'hi'}"
    failed = await run(tools, call("memory", "recall", fail=True))
    assert failed.status == "error" and "the memory is unreachable" in failed.text
    missing = await run(tools, call("knowledge", "retrieve"))
    assert missing.status == "error"
    with pytest.raises(ValueError):
        ToolActivities(ToolsDirectory(None, ToolsFile()), builtins=[type("X", (), {"name": "x"})()])


@workflow.defn(sandboxed=False)
class ToolRound:
    """A stand-in for the lead's tool loop: one catalog and two calls, by activity name, on
    the tools queue (this test is about the activities' wiring, not the workflow)."""

    @workflow.run
    async def run(self, queue: str) -> list:
        options = {
            "task_queue": queue,
            "start_to_close_timeout": timedelta(seconds=30),
            "heartbeat_timeout": timedelta(seconds=10),
        }
        catalog = await workflow.execute_activity(
            "list_tools", ToolCatalogRequest(THREAD, "U0ALICE"), result_type=ToolCatalog, **options
        )
        [ticket] = [spec for spec in catalog.tools if spec.name == "file_ticket"]
        request = ToolCall(
            tool_use_id="tooluse_1",
            server=ticket.server,
            name=ticket.name,
            arguments={"title": "Printer", "body": "Out of toner."},
            idempotency_key=f"{workflow.info().workflow_id}/1/tooluse_1",
            thread=THREAD,
        )
        outcomes = []
        for _ in range(2):
            outcomes.append(
                await workflow.execute_activity(
                    "call_tool", request, result_type=ToolOutcome, **options
                )
            )
        return [catalog, *outcomes]


async def test_the_worker_serves_the_tools_queue_from_its_tools_file(
    make_stack, client, sample, tmp_path
):
    tools_file = tmp_path / "tools.yaml"
    tools_file.write_text(
        f"servers:\n  directory:\n    url: {sample.url}\n    approval: [file_ticket]\n"
        "channels:\n  default: [directory]\n"
    )
    stack = await make_stack(bot=False, tools_file=str(tools_file))
    tools_queue = stack.settings.temporal.tools_task_queue
    assert tools_queue == f"{stack.settings.temporal.task_queue}-tools"
    queue = f"{tools_queue}-test"
    async with Worker(client, task_queue=queue, workflows=[ToolRound]):
        catalog, first, again = await client.execute_workflow(
            ToolRound.run,
            tools_queue,
            id=f"tool-round-{queue}",
            task_queue=queue,
            result_type=list,
        )
    catalog = ToolCatalog(**catalog) if isinstance(catalog, dict) else catalog
    names = {spec["name"] if isinstance(spec, dict) else spec.name for spec in catalog.tools}
    assert names == ALL_TOOLS
    texts = [o["text"] if isinstance(o, dict) else o.text for o in (first, again)]
    assert texts == ["Ticket TICKET-0001 is filed: Printer"] * 2
    performed = [c for c in sample.calls("file_ticket") if c["outcome"] == "performed"]
    assert len(performed) == 1 and performed[0]["idempotency_key"].endswith("/1/tooluse_1")


async def test_a_stdio_server_gets_the_environment_its_entry_names(tmp_path, monkeypatch):
    log = tmp_path / "from-env.jsonl"
    monkeypatch.setenv("SAMPLE_MCP_LOG", str(tmp_path / "inherited.jsonl"))
    command = (sys.executable, "-m", "devtools.sample_mcp", "--stdio")
    bare = ServerConfig("bare", command=command)
    named = ServerConfig("named", command=command, env={"SAMPLE_MCP_LOG": str(log)})
    for server in (bare, named):
        outcome = await run(activities(server), call(server.name, "find_person", name="alan"))
        assert outcome.status == "success"
    # The worker's own variables stay with the worker; the entry's reach the server.
    assert not (tmp_path / "inherited.jsonl").exists()
    assert [json.loads(line)["arguments"] for line in log.read_text().splitlines()] == [
        {"name": "alan"}
    ]


async def test_one_round_from_the_catalog_through_the_offline_model_and_back(sample, monkeypatch):
    """Every part of a tool round but the workflow: the sample server's catalog as Bedrock's
    toolConfig, the offline model's toolUse, the call, its toolResult, the final answer."""
    monkeypatch.delenv("AWS_BEARER_TOKEN_BEDROCK", raising=False)
    tools = activities(ServerConfig("directory", url=sample.url, approval=("file_ticket",)))
    catalog = await catalog_of(tools)
    config = bedrock_tool_config(catalog.tools)
    async with LocalBedrock(stream_delay_s=0) as bedrock:
        model = boto3.client(
            "bedrock-runtime",
            region_name="us-east-1",
            endpoint_url=bedrock.url,
            aws_access_key_id="test",
            aws_secret_access_key="test",
        )
        messages = [
            {
                "role": "user",
                "content": [
                    {
                        "text": '<message from="Ada" user="U0ADA" ts="1.1">\n'
                        "use tools find_person and file_ticket name=katherine "
                        'title="Badge" body="Lost it"\n</message>'
                    }
                ],
            }
        ]

        def converse() -> dict:
            return model.converse(
                modelId="us.anthropic.claude-haiku-4-5-20251001-v1:0",
                messages=messages,
                toolConfig=config,
            )

        asked = await asyncio.to_thread(converse)
        assert asked["stopReason"] == "tool_use"
        uses = [b["toolUse"] for b in asked["output"]["message"]["content"] if "toolUse" in b]
        results = []
        for use in uses:
            spec = find_tool(catalog.tools, use["name"])
            assert spec is not None and spec.server == "directory"
            tool_call = ToolCall(
                use["toolUseId"], spec.server, spec.name, use["input"], use["toolUseId"], THREAD
            )
            results.append(tool_result_block(await run(tools, tool_call)))
        messages += [asked["output"]["message"], {"role": "user", "content": results}]
        answer = await asyncio.to_thread(converse)
    assert [use["input"] for use in uses] == [
        {"name": "katherine"},
        {"title": "Badge", "body": "Lost it"},
    ]
    text = answer["output"]["message"]["content"][0]["text"]
    assert answer["stopReason"] == "end_turn"
    assert 'directory__find_person: "Katherine Johnson: Flight team' in text
    assert 'directory__file_ticket: "Ticket TICKET-0001 is filed: Badge"' in text


@workflow.defn(sandboxed=False)
class BuiltinRound:
    """The catalog of a channel naming every built-in, and one knowledge search."""

    @workflow.run
    async def run(self, queue: str) -> list:
        options = {"task_queue": queue, "start_to_close_timeout": timedelta(seconds=30)}
        catalog = await workflow.execute_activity(
            "list_tools", ToolCatalogRequest(THREAD, "U0ALICE"), result_type=ToolCatalog, **options
        )
        search = ToolCall(
            "tooluse_kb", "knowledge", "retrieve", {"query": "vacation days"}, "kb-1", THREAD
        )
        found = await workflow.execute_activity(
            "call_tool", search, result_type=ToolOutcome, **options
        )
        return [catalog, found]


async def test_the_worker_serves_the_builtin_tools_through_the_hook(
    make_stack, client, sample, tmp_path
):
    tools_file = tmp_path / "tools.yaml"
    tools_file.write_text(
        f"servers:\n  directory:\n    url: {sample.url}\n"
        "channels:\n  default: [directory, knowledge, slack_search, memory]\n"
        "knowledge:\n  default: {ids: [KBSAMPLE01], results: 2}\n"
    )
    stack = await make_stack(bot=False, tools_file=str(tools_file))
    queue = f"{stack.settings.temporal.task_queue}-builtins"
    async with Worker(client, task_queue=queue, workflows=[BuiltinRound]):
        catalog, found = await client.execute_workflow(
            BuiltinRound.run,
            stack.settings.temporal.tools_task_queue,
            id=f"builtin-round-{queue}",
            task_queue=queue,
            result_type=list,
        )
    by_server: dict[str, set[str]] = {}
    for spec in catalog["tools"]:
        by_server.setdefault(spec["server"], set()).add(spec["name"])
    assert catalog["unavailable"] == []
    assert by_server["directory"] == ALL_TOOLS
    assert by_server["knowledge"] == {"retrieve"}
    assert by_server["slack_search"] == {"search_slack"}
    assert {"remember", "recall", "forget"} <= by_server["memory"]
    assert found["status"] == "success", found
    assert found["sources"] and "Vacation" in found["text"]
