"""What operators see: Prometheus metrics and logs that name the conversation.

Metrics go through the Temporal runtime's meter, so one `/metrics` endpoint per process
serves the SDK's own series (workflow task latency, activity failures, poll counts, …) and
threadchat's together. Logs are plain text or JSON, and every line written while handling a
conversation carries its workflow id.
"""

import contextlib
import contextvars
import json
import logging
from datetime import timedelta

from temporalio import activity, workflow
from temporalio.common import MetricMeter
from temporalio.runtime import (
    LogForwardingConfig,
    LoggingConfig,
    PrometheusConfig,
    Runtime,
    TelemetryConfig,
    TelemetryFilter,
)

from threadchat.model import ModelCall


class Metrics:
    """threadchat's own series. Until `install` is called they go nowhere."""

    def __init__(self, meter: MetricMeter):
        self.bedrock_latency = meter.create_histogram_timedelta(
            "threadchat_bedrock_latency", "Time of one Bedrock call, to its last token", "ms"
        )
        self.tokens = meter.create_counter(
            "threadchat_tokens",
            "Bedrock tokens, by direction (in/out, and cache_read/cache_write of the prompt)",
            "tokens",
        )
        self.errors = meter.create_counter(
            "threadchat_errors", "Failed Bedrock and Slack calls, by type"
        )
        self.slack_rate_limited = meter.create_counter(
            "threadchat_slack_rate_limited", "Slack Web API answers of 429"
        )
        self.active_conversations = meter.create_gauge(
            "threadchat_active_conversations", "Running conversation workflows"
        )
        self.slack_requests = meter.create_counter(
            "threadchat_slack_requests", "Requests Slack sent the bot, by HTTP status"
        )
        self.model_stops = meter.create_counter(
            "threadchat_model_stops",
            "Model answers by stop reason (end_turn, max_tokens, guardrail_intervened, ...)",
        )
        self.ack_latency = meter.create_histogram_timedelta(
            "threadchat_ack_latency", "Time the bot took to answer Slack", "ms"
        )


metrics = Metrics(MetricMeter.noop)


def make_runtime(metrics_address: str | None) -> Runtime:
    """A Temporal runtime whose core logs go through Python logging (so LOG_FORMAT applies
    to them too), serving Prometheus metrics on `metrics_address` if given."""
    runtime = Runtime(
        telemetry=TelemetryConfig(
            logging=LoggingConfig(
                filter=TelemetryFilter(core_level="WARN", other_level="ERROR"),
                forwarding=LogForwardingConfig(logger=logging.getLogger("temporalio.core")),
            ),
            metrics=PrometheusConfig(bind_address=metrics_address) if metrics_address else None,
        )
    )
    if metrics_address:
        global metrics
        metrics = Metrics(runtime.metric_meter)
    return runtime


def record_model_call(call: ModelCall) -> None:
    """Latency, tokens and stop reason of one successful Bedrock call."""
    metrics.bedrock_latency.record(timedelta(milliseconds=call.latency_ms))
    metrics.tokens.add(call.input_tokens, {"direction": "in"})
    metrics.tokens.add(call.output_tokens, {"direction": "out"})
    metrics.tokens.add(call.cache_read_tokens, {"direction": "cache_read"})
    metrics.tokens.add(call.cache_write_tokens, {"direction": "cache_write"})
    metrics.model_stops.add(1, {"reason": call.stop_reason or "unknown"})


def record_error(error_type: str) -> None:
    metrics.errors.add(1, {"type": error_type})
    if error_type == "SlackRateLimited":
        metrics.slack_rate_limited.add(1)


def count_feedback(rating: str) -> None:
    """From the workflow, like `count_turn`: each 👍 or 👎 counts once."""
    workflow.metric_meter().create_counter(
        "threadchat_feedback", "Feedback on replies, by rating (up/down)"
    ).add(1, {"rating": rating})


def count_turn(outcome: str) -> None:
    """From the workflow: Temporal's workflow meter skips replays, so each turn counts once."""
    workflow.metric_meter().create_counter(
        "threadchat_turns", "Turns answered, by outcome (replied/blocked/failed/over_budget)"
    ).add(1, {"outcome": outcome})


def count_tool_call(server: str, tool: str, outcome: str, duration_ms: int) -> None:
    """From the workflow, so each call counts once whatever its retries: by server, tool and
    outcome (success, error, denied), with its latency."""
    meter = workflow.metric_meter()
    labels = {"server": server, "tool": tool, "outcome": outcome}
    meter.create_counter("threadchat_tool_calls", "Tool calls, by server, tool and outcome").add(
        1, labels
    )
    if duration_ms:
        meter.create_histogram(
            "threadchat_tool_call_latency", "Tool call latency", unit="ms"
        ).record(duration_ms, labels)


# -- Traces ------------------------------------------------------------------------------------


def tracing_interceptors(service: str, otlp_endpoint: str | None) -> list:
    """With an OTLP endpoint, trace each conversation step from the Slack request through the
    workflow to the activity that posts into Slack (Temporal's OpenTelemetry interceptor
    carries the trace across). Needs the `tracing` extra."""
    if not otlp_endpoint:
        return []
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from temporalio.contrib.opentelemetry import TracingInterceptor

    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))  # reads OTEL_* itself
    trace.set_tracer_provider(provider)
    return [TracingInterceptor()]


def span(name: str):
    """A span around a piece of the bot's work; nothing when tracing is not installed."""
    try:
        from opentelemetry import trace
    except ImportError:
        return contextlib.nullcontext()
    return trace.get_tracer("threadchat").start_as_current_span(name)


# -- Logs --------------------------------------------------------------------------------------

# Set by the bot while it hands a Slack request to a conversation.
current_conversation: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "current_conversation", default=None
)


def _conversation_of(record: logging.LogRecord) -> str | None:
    for source in ("temporal_workflow", "temporal_activity"):
        details = getattr(record, source, None)
        if isinstance(details, dict) and details.get("workflow_id"):
            return details["workflow_id"]
    if activity.in_activity():
        return activity.info().workflow_id
    return current_conversation.get()


class ConversationFilter(logging.Filter):
    """Adds `record.conversation` (the workflow id) to every line about a conversation."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.conversation = _conversation_of(record)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object a line, for log pipelines."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if getattr(record, "conversation", None):
            entry["conversation"] = record.conversation
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        conversation = getattr(record, "conversation", None)
        return f"{line} [{conversation}]" if conversation else line


def configure_logging(level: str, json_format: bool) -> None:
    handler = logging.StreamHandler()
    handler.addFilter(ConversationFilter())
    handler.setFormatter(
        JsonFormatter()
        if json_format
        else TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    logging.basicConfig(level=level, handlers=[handler], force=True)
    if level != "DEBUG":
        # Bolt logs a rejected request's body (message text included) at INFO, and the local
        # servers of `dev` log every request.
        logging.getLogger("slack_bolt").setLevel(logging.WARNING)
        logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
