"""Bedrock activities: answering a turn and writing summaries, through the Converse API.

Temporal owns retries: botocore makes exactly one attempt, and each failure is raised as an
ApplicationError whose type is the Bedrock error code, marked non-retryable where retrying
cannot help. The workflow's retry policy then backs off on throttling, 5xx and timeouts.
"""

import logging
import time
from typing import Any

import boto3
import botocore.config
import botocore.exceptions
import urllib3.exceptions
from temporalio import activity
from temporalio.exceptions import ApplicationError

from threadchat import telemetry
from threadchat.config import BedrockSettings
from threadchat.context import transcript_text
from threadchat.model import GeneratedReply, ReplyRequest, Summary, SummaryRequest

log = logging.getLogger(__name__)

CONTEXT_OVERFLOW = "ContextOverflow"
RETRYABLE_CODES = {
    "ThrottlingException",
    "ModelNotReadyException",
    "ServiceUnavailableException",
    "InternalServerException",
    "ModelTimeoutException",
    "ModelErrorException",
    "ModelStreamErrorException",
}
NON_RETRYABLE_CODES = {
    "ValidationException",
    "AccessDeniedException",
    "ResourceNotFoundException",
    "ServiceQuotaExceededException",
    "UnrecognizedClientException",
    "InvalidSignatureException",
    "ExpiredTokenException",
}

SUMMARY_PROMPT = (
    "You write summaries of Slack conversations between people and an assistant. "
    "Write a short summary: the questions asked, the answers and decisions reached, and any "
    "open follow-ups. Use at most 8 bullet points of Markdown. Mention people by the names "
    "shown in brackets."
)


_TIMEOUTS = (botocore.exceptions.ConnectTimeoutError, botocore.exceptions.ReadTimeoutError)
_BROKEN_STREAM = (urllib3.exceptions.ProtocolError, botocore.exceptions.ResponseStreamingError)


def check_stop_reason(stop_reason: str) -> None:
    """A reply cut off because the prompt filled the window is an overflow, not an answer."""
    if stop_reason == "model_context_window_exceeded":
        raise ApplicationError("context window exceeded", type=CONTEXT_OVERFLOW, non_retryable=True)


def response_text(response: dict) -> str:
    blocks = response["output"]["message"].get("content", [])
    return "".join(block.get("text", "") for block in blocks).strip()


def make_client(settings: BedrockSettings) -> Any:
    """A bedrock-runtime client that makes one attempt per call, with bounded timeouts."""
    config = botocore.config.Config(
        retries={"mode": "standard", "total_max_attempts": 1},
        connect_timeout=settings.connect_timeout,
        read_timeout=settings.read_timeout,
        max_pool_connections=64,
    )
    dummy_keys = {"aws_access_key_id": "local", "aws_secret_access_key": "local"}
    return boto3.session.Session().client(
        "bedrock-runtime",
        region_name=settings.region,
        endpoint_url=settings.endpoint_url,
        config=config,
        **(dummy_keys if settings.local else {}),
    )


def classify(err: Exception) -> ApplicationError:
    """Turn a botocore failure into the ApplicationError Temporal should act on (and count
    it for operators)."""
    failure = _classify(err)
    telemetry.record_error(failure.type or "Unknown")
    return failure


def _classify(err: Exception) -> ApplicationError:
    if isinstance(err, botocore.exceptions.ClientError):
        code = err.response.get("Error", {}).get("Code", "Unknown")
        # Errors inside a ConverseStream come with a lowercase first letter.
        code = code[:1].upper() + code[1:]
        message = err.response.get("Error", {}).get("Message", "")
        status = err.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        if code == "ValidationException" and "too long" in message.lower():
            return ApplicationError(message, type=CONTEXT_OVERFLOW, non_retryable=True)
        # An error inside a stream arrives with HTTP 200; unknown ones there are transient.
        in_stream = isinstance(err, botocore.exceptions.EventStreamError)
        retryable = code in RETRYABLE_CODES or (
            code not in NON_RETRYABLE_CODES and (status >= 500 or status == 429 or in_stream)
        )
        return ApplicationError(f"{code}: {message}", type=code, non_retryable=not retryable)
    if isinstance(err, botocore.exceptions.NoCredentialsError):
        return ApplicationError(str(err), type="NoCredentials", non_retryable=True)
    if isinstance(
        err, botocore.exceptions.ReadTimeoutError | botocore.exceptions.ConnectTimeoutError
    ):
        return ApplicationError(str(err), type="BedrockTimeout")
    if isinstance(err, botocore.exceptions.EndpointConnectionError):
        return ApplicationError(str(err), type="BedrockUnreachable")
    if isinstance(err, _BROKEN_STREAM):
        return ApplicationError(f"stream broken: {err}", type="BedrockStreamBroken")
    return ApplicationError(f"{type(err).__name__}: {err}", type=type(err).__name__)


class BedrockActivities:
    """Activities that call Bedrock. Synchronous: boto3 blocks, so the worker runs them in
    a thread pool."""

    def __init__(self, settings: BedrockSettings, client: Any = None):
        self.settings = settings
        self.client = client or make_client(settings)

    def reply_arguments(self, request: ReplyRequest) -> dict:
        """Converse arguments for answering `request`; shared by the plain and streaming calls."""
        system = self.settings.system_prompt
        if request.context_notes:
            system += "\n\n" + request.context_notes
        return self._arguments(
            self.settings.model_id,
            system,
            [{"role": m.role, "content": [{"text": m.text}]} for m in request.messages],
        )

    def _arguments(self, model_id: str, system: str, messages: list[dict]) -> dict:
        return {
            "modelId": model_id,
            "system": [{"text": system}],
            "messages": messages,
            "inferenceConfig": {
                "maxTokens": self.settings.max_tokens,
                "temperature": self.settings.temperature,
            },
        }

    def _converse(self, arguments: dict) -> dict:
        started = time.monotonic()
        try:
            response = self.client.converse(**arguments)
        except Exception as err:
            raise classify(err) from err
        telemetry.record_model_call(started, response.get("usage", {}))
        return response

    @activity.defn
    def generate_reply(self, request: ReplyRequest) -> GeneratedReply:
        """Answer the latest user turn with the prompt the workflow built."""
        response = self._converse(self.reply_arguments(request))
        stop_reason = response.get("stopReason", "end_turn")
        check_stop_reason(stop_reason)
        usage = response.get("usage", {})
        text = response_text(response)
        log.info(
            "bedrock reply: model=%s in=%s out=%s stop=%s",
            self.settings.model_id,
            usage.get("inputTokens"),
            usage.get("outputTokens"),
            stop_reason,
        )
        return GeneratedReply(
            text=text or "(the model returned an empty answer)",
            input_tokens=usage.get("inputTokens", 0),
            output_tokens=usage.get("outputTokens", 0),
            stop_reason=stop_reason,
        )

    @activity.defn
    def summarize_conversation(self, request: SummaryRequest) -> Summary:
        """Fold turns into a summary: a rolling one mid-conversation, or the closing one."""
        parts = []
        if request.earlier_summary:
            parts.append(f"Summary so far:\n{request.earlier_summary}")
        if request.turns:
            parts.append(f"Conversation:\n{transcript_text(request.turns, request.names)}")
        prompt = "\n\n".join(parts) or "(the conversation was empty)"
        model = self.settings.summary_model_id if request.final else self.settings.model_id
        response = self._converse(
            self._arguments(
                model, SUMMARY_PROMPT, [{"role": "user", "content": [{"text": prompt}]}]
            )
        )
        usage = response.get("usage", {})
        text = response_text(response)
        return Summary(
            text=text,
            input_tokens=usage.get("inputTokens", 0),
            output_tokens=usage.get("outputTokens", 0),
        )
