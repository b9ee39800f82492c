"""Metrics and logs, as operators get them: a Prometheus scrape and JSON log lines."""

import io
import json
import logging

import aiohttp
from temporalio.client import Client

from devtools.stack import eventually, start_stack
from devtools.temporal_server import free_port
from threadchat import actions, telemetry


async def test_metrics_endpoint_serves_sdk_and_threadchat_series(temporal_server):
    server, _ = temporal_server
    port = free_port()
    runtime = telemetry.make_runtime(f"127.0.0.1:{port}")
    client = await Client.connect(server.address, runtime=runtime)
    stack = await start_stack(client)
    try:
        ts = await stack.mention(stack.channel, "count me")
        [reply] = await stack.replies(stack.channel, ts, 1)
        assert await stack.click(stack.channel, reply["ts"], actions.FEEDBACK_UP) == 200
        url = f"http://127.0.0.1:{port}/metrics"

        async def scrape_once() -> str | None:
            async with aiohttp.ClientSession() as session, session.get(url) as response:
                assert response.status == 200
                text = await response.text()
            # The turn is counted when the workflow records the reply, just after Slack shows
            # it; the 👍 when the workflow takes the signal.
            counted = "threadchat_turns" in text and "threadchat_feedback" in text
            return text if counted else None

        scrape = await eventually(scrape_once, what="the turn counted")
    finally:
        await stack.close()
    for series in (
        "threadchat_turns",
        "threadchat_tokens",
        "threadchat_bedrock_latency",
        "threadchat_ack_latency",
        "threadchat_slack_requests",
        "temporal_workflow_task_execution_latency",  # the SDK's own
    ):
        assert series in scrape, series
    tokens_in = [
        line
        for line in scrape.splitlines()
        if line.startswith("threadchat_tokens") and 'direction="in"' in line
    ]
    assert tokens_in and float(tokens_in[0].rsplit(" ", 1)[1]) > 0
    assert _value(scrape, "threadchat_feedback", 'rating="up"') == 1
    assert _value(scrape, "threadchat_model_stops", 'reason="end_turn"') == 1


def _value(scrape: str, series: str, *labels: str) -> float:
    [line] = [
        line
        for line in scrape.splitlines()
        if line.startswith(series + "{") and all(label in line for label in labels)
    ]
    return float(line.rsplit(" ", 1)[1])


def test_json_logs_name_the_conversation_and_keep_secrets_out():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(telemetry.ConversationFilter())
    handler.setFormatter(telemetry.JsonFormatter())
    log = logging.getLogger("threadchat.test")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    token = telemetry.current_conversation.set("threadchat-T1-C1-1.1")
    try:
        log.info("handed over")
    finally:
        telemetry.current_conversation.reset(token)
        log.removeHandler(handler)
    entry = json.loads(stream.getvalue())
    assert entry["conversation"] == "threadchat-T1-C1-1.1"
    assert entry["level"] == "INFO" and entry["message"] == "handed over"


async def test_a_trace_follows_a_message_from_slack_to_the_post(temporal_server):
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from temporalio.contrib.opentelemetry import TracingInterceptor

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    server, _ = temporal_server
    client = await Client.connect(server.address, interceptors=[TracingInterceptor()])
    stack = await start_stack(client)
    try:
        ts = await stack.mention(stack.channel, "trace me")
        await stack.replies(stack.channel, ts, 1)
    finally:
        await stack.close()
    spans = exporter.get_finished_spans()
    [request] = [s for s in spans if s.name == "slack.request"]
    in_trace = {s.name for s in spans if s.context.trace_id == request.context.trace_id}
    assert "SignalWithStartWorkflow:ConversationWorkflow" in in_trace, in_trace
    assert "RunActivity:stream_reply" in in_trace, in_trace


async def test_tool_calls_are_counted_by_server_tool_and_outcome(temporal_server, tmp_path):
    from devtools.sample_mcp import SampleMcpProcess
    from tests.test_tools import tools_file

    server, _ = temporal_server
    port = free_port()
    client = await Client.connect(
        server.address, runtime=telemetry.make_runtime(f"127.0.0.1:{port}")
    )
    directory = SampleMcpProcess(tmp_path / "calls.jsonl")
    await directory.start()
    stack = await start_stack(client, tools_file=tools_file(tmp_path, directory.url))
    try:
        ts = await stack.mention(stack.channel, "use tools find_person, broken_lookup name=ada")
        await stack.replies(stack.channel, ts, 1)
        url = f"http://127.0.0.1:{port}/metrics"

        async def scrape_once() -> str | None:
            async with aiohttp.ClientSession() as session, session.get(url) as response:
                text = await response.text()
            # Counted by the workflow as it takes each outcome, around when the answer shows.
            return text if text.count("threadchat_tool_calls{") >= 2 else None

        scrape = await eventually(scrape_once, what="the tool calls counted")
    finally:
        await stack.close()
        directory.stop()
    directory_ = 'server="directory"'
    found, broken = 'tool="find_person"', 'tool="broken_lookup"'
    success, error = 'outcome="success"', 'outcome="error"'
    assert _value(scrape, "threadchat_tool_calls", directory_, found, success) == 1
    assert _value(scrape, "threadchat_tool_calls", directory_, broken, error) == 1
    latency = [
        line
        for line in scrape.splitlines()
        if line.startswith("threadchat_tool_call_latency_count{") and found in line
    ]
    assert latency and float(latency[0].rsplit(" ", 1)[1]) == 1, latency
