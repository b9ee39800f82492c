"""Streaming replies: Bedrock ConverseStream into Slack's streaming messages, in one activity.

The activity heartbeats the ts of the Slack message it writes into. If it is retried after a
crash, the retry finds either the finished message (by its idempotency key, and returns it) or
the ts of the unfinished one in the heartbeat details, and replaces that message with the
complete answer: the thread ends up with one complete reply, never two partial ones.

Where Slack refuses streaming (an older workspace, a missing method), the reply falls back to
one message edited with chat.update at a pace within Slack's limits, and if editing fails too,
to a single post of the whole answer.
"""

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from temporalio import activity

from activities import slack as slack_activities
from activities.bedrock import BedrockActivities, check_stop_reason, classify
from threadchat.formatting import SAFE_LIMIT, split_markdown
from threadchat.model import DeliveredReply, ReplyRequest
from threadchat.texts import THINKING

log = logging.getLogger(__name__)

# How often text reaches Slack while streaming, and while editing one message as a fallback
# (chat.update is rate limited at about one call per second per message).
STREAM_FLUSH_SECONDS = 0.25
UPDATE_FLUSH_SECONDS = 1.2
HEARTBEAT_SECONDS = 2.0


class SlackReplyWriter:
    """Writes one growing reply into a thread: streamed, edited in place, or posted once."""

    def __init__(self, client: AsyncWebClient, request: ReplyRequest, replace_ts: str | None):
        self.client = client
        self.request = request
        self.thread = request.thread
        # A message left unfinished by a crashed attempt is replaced, not streamed into again.
        self.mode = "replace" if replace_ts else "stream"
        self.ts = replace_ts
        self.finished_ts: list[str] = []  # earlier parts of a very long answer
        self.sent = ""  # text already in the current message
        self.pending = ""  # text not yet sent
        self.last_flush = 0.0

    def _started(self, ts: str) -> None:
        # Recorded at once: a retry must know this message even if this attempt dies now.
        self.ts = ts
        activity.heartbeat(ts)

    async def append(self, text: str) -> None:
        self.pending += text
        interval = STREAM_FLUSH_SECONDS if self.mode == "stream" else UPDATE_FLUSH_SECONDS
        if self.mode in ("stream", "update") and time.monotonic() - self.last_flush >= interval:
            await self._flush()

    async def _flush(self) -> None:
        """Send the pending text, starting a new message whenever one would outgrow Slack's
        limit; cuts prefer paragraph ends."""
        self.last_flush = time.monotonic()
        while self.pending.strip():
            room = SAFE_LIMIT - len(self.sent)
            chunk = self.pending[:room]
            if len(self.pending) > room and "\n\n" in chunk:
                chunk = chunk[: chunk.rindex("\n\n") + 2]
            if not chunk.strip():
                await self._roll_over()
                continue
            self.pending = self.pending[len(chunk) :]
            if self.mode == "stream":
                await self._stream(chunk)
            elif self.mode == "update":
                await self._edit(self.sent + chunk)
            self.sent += chunk
            if self.pending.strip():
                await self._roll_over()

    async def _stream(self, chunk: str) -> None:
        try:
            if self.ts is None:
                response = await self.client.chat_startStream(
                    channel=self.thread.channel,
                    thread_ts=self.thread.thread_ts,
                    recipient_team_id=self.thread.team,
                    recipient_user_id=self.request.recipient_user,
                    markdown_text=chunk,
                )
                self._started(response["ts"])
            else:
                await self.client.chat_appendStream(
                    channel=self.thread.channel, ts=self.ts, markdown_text=chunk
                )
        except SlackApiError as err:
            if _retry_later(err) or self.ts is not None:
                raise slack_activities.classify(err) from err
            log.info("streaming unavailable (%s); editing one message instead", _error(err))
            self.mode = "update"
            await self._edit(chunk)

    async def _edit(self, text: str) -> None:
        try:
            if self.ts is None:
                response = await self.client.chat_postMessage(
                    channel=self.thread.channel,
                    thread_ts=self.thread.thread_ts,
                    markdown_text=text,
                    unfurl_links=False,
                )
                self._started(response["ts"])
            else:
                await self.client.chat_update(
                    channel=self.thread.channel, ts=self.ts, markdown_text=text
                )
        except SlackApiError as err:
            if _retry_later(err) or self.ts is None:
                raise slack_activities.classify(err) from err
            log.info("chat.update unavailable (%s); posting the answer once", _error(err))
            self.mode = "single"

    async def _roll_over(self) -> None:
        """Finish the current message before it outgrows Slack's limit; start the next."""
        if self.ts is not None:
            await self._finish_message(self.sent, metadata=None)
            self.finished_ts.append(self.ts)
        self.ts, self.sent = None, ""

    async def finish(self, text: str, metadata: dict) -> str:
        """Complete the reply with its full `text`; returns the ts of its last message."""
        if self.mode in ("replace", "single"):
            # The whole answer is known: lay it out into as many messages as it needs.
            parts = split_markdown(text)
            for index, part in enumerate(parts):
                last = index == len(parts) - 1
                await self._write_whole(part, metadata if last else None, first=index == 0)
            return self.ts
        await self._flush()
        await self._finish_message(self.sent, metadata)
        return self.ts

    async def _write_whole(self, part: str, metadata: dict | None, first: bool) -> None:
        if first and self.ts is not None:
            with contextlib.suppress(SlackApiError):  # it may already be stopped
                await self.client.chat_stopStream(channel=self.thread.channel, ts=self.ts)
            try:
                await self.client.chat_update(
                    channel=self.thread.channel,
                    ts=self.ts,
                    markdown_text=part,
                    metadata=metadata,
                )
                return
            except SlackApiError as err:
                if _retry_later(err):
                    raise slack_activities.classify(err) from err
                log.info("could not replace the unfinished reply (%s)", _error(err))
                with contextlib.suppress(SlackApiError):
                    await self.client.chat_delete(channel=self.thread.channel, ts=self.ts)
        response = await self.client.chat_postMessage(
            channel=self.thread.channel,
            thread_ts=self.thread.thread_ts,
            markdown_text=part,
            metadata=metadata,
            unfurl_links=False,
        )
        self._started(response["ts"])

    async def _finish_message(self, text: str, metadata: dict | None) -> None:
        try:
            if self.mode == "stream":
                await self.client.chat_stopStream(
                    channel=self.thread.channel, ts=self.ts, metadata=metadata
                )
            else:
                await self.client.chat_update(
                    channel=self.thread.channel, ts=self.ts, markdown_text=text, metadata=metadata
                )
        except SlackApiError as err:
            raise slack_activities.classify(err) from err


def _error(err: SlackApiError) -> str:
    return str(err.response.get("error") or err.response.status_code)


def _retry_later(err: SlackApiError) -> bool:
    """Rate limits and server trouble are retried; other errors mean the method is unusable."""
    return not slack_activities.classify(err).non_retryable


class ReplyActivities:
    """The streaming reply: one activity from the model's first token to the final message."""

    def __init__(self, bedrock: BedrockActivities, slack: AsyncWebClient):
        self.bedrock = bedrock
        self.slack = slack
        self.executor = ThreadPoolExecutor(64, thread_name_prefix="converse-stream")

    @activity.defn
    async def stream_reply(self, request: ReplyRequest) -> DeliveredReply:
        """Generate the reply with ConverseStream and stream it into the thread."""
        info = activity.info()
        if info.attempt > 1:
            done = await slack_activities.find_posted(
                self.slack, request.thread, request.idempotency_key
            )
            if done:  # an earlier attempt finished; only its result was lost
                usage = done["metadata"]["event_payload"]
                return DeliveredReply(
                    text=done.get("text", ""),
                    input_tokens=usage.get("input_tokens", 0),
                    output_tokens=usage.get("output_tokens", 0),
                    ts=done["ts"],
                )
        replace_ts = info.heartbeat_details[0] if info.heartbeat_details else None
        writer = SlackReplyWriter(self.slack, request, replace_ts)
        heartbeats = asyncio.create_task(self._heartbeat(writer))
        try:
            await self._set_status(request, THINKING)
            text, usage = "", {}
            async for kind, value in self._model_events(request):
                if kind == "text":
                    if not text:
                        await self._set_status(request, "")
                    text += value
                    await writer.append(value)
                elif kind == "stop":
                    check_stop_reason(value)
                elif kind == "usage":
                    usage = value
            text = text.strip() or "(the model returned an empty answer)"
            metadata = slack_activities.message_metadata(
                request.idempotency_key,
                input_tokens=usage.get("inputTokens", 0),
                output_tokens=usage.get("outputTokens", 0),
            )
            ts = await writer.finish(text, metadata)
        finally:
            heartbeats.cancel()
        return DeliveredReply(
            text=text,
            input_tokens=usage.get("inputTokens", 0),
            output_tokens=usage.get("outputTokens", 0),
            ts=ts,
        )

    async def _heartbeat(self, writer: SlackReplyWriter) -> None:
        """Heartbeat the message being written, also while the model is still thinking."""
        while True:
            activity.heartbeat(*([writer.ts] if writer.ts else []))
            await asyncio.sleep(HEARTBEAT_SECONDS)

    async def _set_status(self, request: ReplyRequest, status: str) -> None:
        """The "is thinking…" indicator is a nicety: failing to set it never fails a turn."""
        try:
            await self.slack.assistant_threads_setStatus(
                channel_id=request.thread.channel,
                thread_ts=request.thread.thread_ts,
                status=status,
            )
        except Exception as err:
            log.debug("could not set the thread status: %s", type(err).__name__)

    async def _model_events(self, request: ReplyRequest) -> AsyncIterator[tuple[str, object]]:
        """("text", delta), ("stop", reason) and ("usage", usage) from ConverseStream.

        boto3 reads the stream with blocking calls, so a worker thread reads it and hands
        the events over to this coroutine.
        """
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        done = object()

        def read() -> None:
            try:
                response = self.bedrock.client.converse_stream(
                    **self.bedrock.reply_arguments(request)
                )
                for event in response["stream"]:
                    loop.call_soon_threadsafe(queue.put_nowait, event)
            except Exception as err:
                loop.call_soon_threadsafe(queue.put_nowait, err)
            finally:
                loop.call_soon_threadsafe(queue.put_nowait, done)

        reader = loop.run_in_executor(self.executor, read)
        while (event := await queue.get()) is not done:
            if isinstance(event, Exception):
                raise classify(event) from event
            if "contentBlockDelta" in event:
                yield "text", event["contentBlockDelta"]["delta"].get("text", "")
            elif "messageStop" in event:
                yield "stop", event["messageStop"].get("stopReason", "end_turn")
            elif "metadata" in event:
                yield "usage", event["metadata"].get("usage", {})
        await reader
