"""Streaming replies: Bedrock ConverseStream into Slack's streaming messages, in one activity.

Exactly one complete reply, whatever fails:
- A retry (worker killed, stream broken, response lost) first looks for the finished reply by
  its idempotency key and returns it. Otherwise it takes over the unfinished messages earlier
  attempts left: those it heartbeated, and the bot's unkeyed messages in the thread since the
  activity was first scheduled (a killed worker's last heartbeats may never arrive). It
  replaces them with the complete answer.
- A failure that will not be retried stops and removes the unfinished message, so the
  thread shows the workflow's notice instead of half an answer.

Where Slack refuses streaming (an older workspace, a missing method), the reply falls back to
one message edited with chat.update at a pace within Slack's limits, and if editing fails too,
to a single post of the whole answer.
"""

import asyncio
import contextlib
import functools
import logging
import threading
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities import slack as slack_activities
from activities.bedrock import (
    HEARTBEAT_SECONDS,
    BedrockActivities,
    ModelRequest,
    check_stop_reason,
    classify,
)
from activities.sessions import AgentSessions
from threadchat import telemetry, texts, tool_prompt, tools
from threadchat.actions import message_body, reply_actions
from threadchat.context import estimate_tokens
from threadchat.formatting import SAFE_LIMIT, slack_markdown, split_markdown
from threadchat.inference import STOPPED
from threadchat.mentions import MentionGuard, neutralize
from threadchat.model import DeliveredReply, ReplyRef, ReplyRequest
from threadchat.texts import THINKING_RETRYING

log = logging.getLogger(__name__)

# How often text reaches Slack while streaming, and while editing one message as a fallback
# (chat.update is rate limited at about one call per second per message).
STREAM_FLUSH_SECONDS = 0.25
UPDATE_FLUSH_SECONDS = 1.2
SLOW_TURN_SECONDS = 10
# Slack rate limits waited out within one attempt, before the activity fails and retries.
RATE_LIMIT_WAITS = 3


class StoppedBySlack(Exception):
    """Slack stopped the answer's stream (someone clicked Stop): nothing more is written."""


def _stopped_stream(err: SlackApiError) -> bool:
    return err.response.get("error") == "message_not_in_streaming_state"


class SlackReplyWriter:
    """Writes one growing reply into a thread: streamed, edited in place, or posted once.

    Everything it writes is model text, so mentions are neutralised on the way (what is
    streamed is exactly what the finished text is) and links are never unfurled where Slack
    lets a post say so."""

    def __init__(
        self,
        client: AsyncWebClient,
        request: ReplyRequest,
        earlier: list[str],
        session_status: str | None = None,
    ):
        self.client = client
        # Passed with the answer's last chat.stopStream: the session leaves `processing` on a
        # call made anyway. `settled` once Slack took it.
        self.session_status = session_status
        self.settled = False
        self.request = request
        self.thread = request.thread
        # Messages an earlier attempt left, or the answer a regenerate replaces, are
        # replaced at the end, not streamed into again.
        self.earlier = earlier
        self.mode = "replace" if earlier else "stream"
        self.actions: ReplyRef | None = request.actions
        self.messages: list[str] = []  # ts of the messages this attempt created, in order
        self.sent = ""  # text already in the current (last) message
        self.pending = ""  # text not yet sent
        self.last_flush = 0.0
        self.participants = request.participants or None
        self.guard = MentionGuard(self.participants)
        self.said = ""  # what the model wrote so far
        self.shown_before = ""  # what the finished messages of the answer show
        self.prompt_tokens = 0  # the prompt's size, estimated
        # The current message's stream holds task cards (it may have no text yet).
        self.cards = False
        if request.stream_ts and not earlier:
            # A round after tool calls goes on in the answer's open stream.
            self.messages, self.sent, self.cards = [request.stream_ts], request.shown, True
            self.mode = request.stream_mode or "stream"

    @property
    def ts(self) -> str | None:
        return self.messages[-1] if self.messages and (self.sent or self.cards) else None

    async def show_tasks(self, cards: list[dict]) -> None:
        """Task cards (Slack's `task_update` chunks) in the answer's stream, after the text
        so far; a stream is started for them if the model called tools before writing. Only
        while streaming: a replaced or edited answer lists its tools in a line instead."""
        if self.mode != "stream" or not cards:
            return
        await self._flush()

        def shown(text: str) -> str:  # cut after: neutralising may lengthen it
            return neutralize(text, self.participants)[: tool_prompt.CARD_TEXT]

        for card in cards:  # tool output and sources are untrusted: they ping nobody
            for key in ("title", "output"):
                if key in card:
                    card[key] = shown(card[key])
            for source in card.get("sources", []):
                source["text"] = shown(source["text"])
        try:
            await self._send_stream("", chunks=cards)
            self.cards = True
        except SlackApiError as err:
            if self.ts is not None and _stopped_stream(err):
                raise StoppedBySlack from err
            if _retry_later(err):
                raise slack_activities.classify(err) from err
            log.info("task cards refused (%s); the answer lists its tools", _error(err))

    def progress(self) -> dict:
        """Heartbeat details: the messages a retry takes over (it also reads the thread, as
        the last heartbeats of a killed worker may never arrive), and what the last one shows,
        which a Stop keeps if this worker dies while it stops."""
        return {"messages": self.earlier + self.messages, "shown": self.sent}

    def _created(self, ts: str, text: str) -> None:
        self.messages.append(ts)
        activity.heartbeat({**self.progress(), "shown": text})

    async def append(self, text: str) -> None:
        self.pending += self.guard.feed(text)
        interval = STREAM_FLUSH_SECONDS if self.mode == "stream" else UPDATE_FLUSH_SECONDS
        if self.mode in ("stream", "update") and time.monotonic() - self.last_flush >= interval:
            await self._flush()

    async def _flush(self) -> None:
        """Send the pending text, starting a new message whenever one would outgrow Slack's
        limit; cuts prefer paragraph ends."""
        self.last_flush = time.monotonic()
        while self.pending.strip() and self.mode in ("stream", "update"):
            room = SAFE_LIMIT - len(self.sent)
            chunk = self.pending[:room]
            if len(self.pending) > room and "\n\n" in chunk:
                chunk = chunk[: chunk.rindex("\n\n") + 2]
            if not chunk.strip():
                await self._finish_message(None)
                continue
            self.pending = self.pending[len(chunk) :]
            if self.mode == "stream":
                await self._stream(chunk)
            else:
                await self._edit(chunk)
            self.sent += chunk
            if self.pending.strip():
                await self._finish_message(None)

    async def _send_stream(self, shown: str, **content) -> None:
        """Start the answer's stream with `content` (text or chunks), or append to it."""
        if self.ts is None:
            response = await self.client.chat_startStream(
                channel=self.thread.channel,
                thread_ts=self.thread.thread_ts,
                recipient_team_id=self.thread.team,
                recipient_user_id=self.request.recipient_user,
                **content,
            )
            self._created(response["ts"], shown)
        else:
            await _patiently(
                self.client.chat_appendStream, channel=self.thread.channel, ts=self.ts, **content
            )

    async def _stream(self, chunk: str) -> None:
        try:
            await self._send_stream(chunk, markdown_text=chunk)
        except SlackApiError as err:
            if self.ts is not None and _stopped_stream(err):
                raise StoppedBySlack from err
            if _retry_later(err) or self.ts is not None:
                raise slack_activities.classify(err) from err
            log.info("streaming unavailable (%s); editing one message instead", _error(err))
            self.mode = "update"
            await self._edit(chunk)

    async def _edit(self, chunk: str) -> None:
        try:
            if self.ts is None:
                response = await self.client.chat_postMessage(
                    channel=self.thread.channel,
                    thread_ts=self.thread.thread_ts,
                    markdown_text=chunk,
                    unfurl_links=False,
                    unfurl_media=False,
                )
                self._created(response["ts"], chunk)
            else:
                await self.client.chat_update(
                    channel=self.thread.channel, ts=self.ts, markdown_text=self.sent + chunk
                )
        except SlackApiError as err:
            if _retry_later(err) or self.ts is None:
                raise slack_activities.classify(err) from err
            log.info("chat.update unavailable (%s); posting the answer once", _error(err))
            self.mode = "single"

    async def _finish_message(self, metadata: dict | None, actions: ReplyRef | None = None) -> None:
        """Close the current message (before a new part starts, or at the end, with the
        reply's buttons)."""
        try:
            if self.mode == "stream":
                last = metadata is not None
                await _patiently(
                    self.client.chat_stopStream,
                    channel=self.thread.channel,
                    ts=self.ts,
                    metadata=metadata,
                    blocks=reply_actions(actions) if actions else None,
                    session_status=self.session_status if last else None,
                )
                self.settled = last and self.session_status is not None
            else:
                await _patiently(
                    self.client.chat_update,
                    channel=self.thread.channel,
                    ts=self.ts,
                    metadata=metadata,
                    **message_body(self.sent, actions),
                )
        except SlackApiError as err:
            if self.mode == "stream" and _stopped_stream(err):
                raise StoppedBySlack from err
            raise slack_activities.classify(err) from err
        self.shown_before += self.sent
        self.sent = ""

    def stopped(self, tokens: dict) -> DeliveredReply:
        """The answer as far as it showed when Stop was clicked, its current message (the
        workflow adds the line saying who stopped it) and what it cost."""
        shown = self.messages[-1:] if self.sent else []
        return DeliveredReply(
            text=(self.shown_before + self.sent).strip() if self.mode != "replace" else "",
            ts=shown[0] if shown else "",
            stop_reason=STOPPED,
            parts=self.earlier + self.messages if self.mode != "replace" else [],
            shown=self.sent,
            **tokens,
        )

    async def finish(self, text: str, metadata: dict) -> list[str]:
        """Complete the reply with its full `text`; returns the ts of its messages."""
        # Tables stream as raw pipes; Slack can't render them, so the finished text shows
        # them as code blocks. Converting the whole answer also catches tables that were
        # split across chunks.
        text = neutralize(text, self.participants)
        final = slack_markdown(text)
        self.pending += self.guard.flush()
        if self.mode in ("stream", "update"):
            await self._flush()
            one_message = len(self.earlier) + len(self.messages) == 1
            if self.mode != "single" and self.ts is not None and final == text and one_message:
                await self._finish_message(metadata, self.actions)
                return [self.messages[-1]]
        # The whole answer is known: lay it out over the messages already in the thread
        # (in order: once one can't be reused, the rest are posted anew), post the rest,
        # and remove what is left over.
        existing = self.earlier + self.messages
        parts = split_markdown(final)
        written: list[str] = []
        reusable = len(existing)
        for index, part in enumerate(parts):
            last = index == len(parts) - 1
            meta, actions = (metadata, self.actions) if last else (None, None)
            if index < reusable:
                if await self._replace(existing[index], part, meta, actions):
                    written.append(existing[index])
                    continue
                reusable = index
            response = await self._call(
                self.client.chat_postMessage,
                channel=self.thread.channel,
                thread_ts=self.thread.thread_ts,
                metadata=meta,
                unfurl_links=False,
                unfurl_media=False,
                **message_body(part, actions),
            )
            self._created(response["ts"], part)
            written.append(response["ts"])
        await self.remove(existing[min(reusable, len(parts)) :])
        return written

    async def _replace(
        self, ts: str, part: str, metadata: dict | None, actions: ReplyRef | None
    ) -> bool:
        with contextlib.suppress(SlackApiError):  # it may not be streaming (any more)
            await self.client.chat_stopStream(channel=self.thread.channel, ts=ts)
        try:
            await self.client.chat_update(
                channel=self.thread.channel,
                ts=ts,
                metadata=metadata,
                **message_body(part, actions),
            )
        except SlackApiError as err:
            if _retry_later(err):
                raise slack_activities.classify(err) from err
            log.info("could not replace an unfinished reply (%s)", _error(err))
            await self.remove([ts])
            return False
        return True

    async def remove(self, messages: list[str]) -> None:
        """Stop and delete messages, best effort: leftovers of an answer that won't finish."""
        for ts in messages:
            with contextlib.suppress(SlackApiError):
                await self.client.chat_stopStream(channel=self.thread.channel, ts=ts)
            with contextlib.suppress(SlackApiError):
                await self.client.chat_delete(channel=self.thread.channel, ts=ts)

    @staticmethod
    async def _call(method, **arguments) -> dict:
        try:
            return await method(**arguments)
        except SlackApiError as err:
            raise slack_activities.classify(err) from err


async def _patiently(method, **arguments) -> dict:
    """Call a Slack method, waiting out rate limits in place: failing the activity would
    make the retry ask the model for the whole answer again."""
    for attempt in range(RATE_LIMIT_WAITS + 1):
        try:
            return await method(**arguments)
        except SlackApiError as err:
            failure = slack_activities.classify(err)
            if failure.type != "SlackRateLimited" or attempt == RATE_LIMIT_WAITS:
                raise
            await asyncio.sleep(failure.next_retry_delay.total_seconds())
    raise AssertionError("unreachable")


def _error(err: SlackApiError) -> str:
    return str(err.response.get("error") or err.response.status_code)


def _retry_later(err: SlackApiError) -> bool:
    """Rate limits and server trouble are retried; other errors mean the method is unusable."""
    return not slack_activities.classify(err).non_retryable


class ReplyActivities:
    """The streaming reply: one activity from the model's first token to the final message."""

    def __init__(
        self,
        bedrock: BedrockActivities,
        slack: AsyncWebClient,
        sessions: AgentSessions | None = None,
    ):
        self.bedrock = bedrock
        self.slack = slack
        self.sessions = sessions or AgentSessions(slack)
        self.executor = ThreadPoolExecutor(64, thread_name_prefix="converse-stream")
        self.bot_user: str | None = None

    @activity.defn
    async def stream_reply(self, request: ReplyRequest) -> DeliveredReply:
        """Generate the reply with ConverseStream and stream it into the thread."""
        info = activity.info()
        earlier = list(request.replace_ts)
        if info.attempt > 1:
            done, earlier = await self._earlier_attempts(request, info.heartbeat_details)
            if done:
                return done
        writer = SlackReplyWriter(self.slack, request, earlier)
        heartbeats = asyncio.create_task(self._heartbeat(writer))
        try:
            delivered = await self._write(request, writer)
        except StoppedBySlack:
            return await self._stop(request, writer)
        except asyncio.CancelledError:
            details = activity.cancellation_details()
            if details is None or not details.cancel_requested:
                raise  # the worker shuts down: another attempt answers
            return await self._stop(request, writer)
        except Exception as err:
            policy = info.retry_policy
            last_attempt = policy is not None and info.attempt >= (policy.maximum_attempts or 0) > 0
            final = isinstance(err, ApplicationError) and err.non_retryable
            if final or last_attempt:
                # A failed regenerate leaves the answer it was to replace as it was.
                keep = set(request.replace_ts)
                await writer.remove(
                    [ts for ts in writer.earlier + writer.messages if ts not in keep]
                )
                # What the workflow says next may be only for one person (a failed
                # regenerate), which does not clear the status.
                await self._set_status(request, "active")
            raise
        finally:
            heartbeats.cancel()
        # Slack clears an assistant thread's status when the app posts in the thread, not
        # when it edits: an answer that only replaced messages (a regenerate, a retry taking
        # over) must. A session leaves `processing` with the last chat.stopStream, or here;
        # not while tools run for the answer.
        if delivered.tool_uses:
            return delivered
        if not writer.settled and (not self.sessions.refused or not writer.messages):
            await self._set_status(request, "active")
        return delivered

    async def _stop(self, request: ReplyRequest, writer: SlackReplyWriter) -> DeliveredReply:
        """Stop (the workflow cancelled this activity, or Slack stopped its stream): the model
        call is abandoned, nothing more is written, and what showed is returned as it is.
        Leftovers of an earlier attempt go; the answer a regenerate was to replace stays."""
        keep = set(request.replace_ts)
        if writer.mode == "replace":
            await writer.remove([ts for ts in writer.earlier if ts not in keep])
        await self._set_status(request, "active")
        tokens = {
            "input_tokens": writer.prompt_tokens,
            "output_tokens": estimate_tokens(writer.said) if writer.said else 0,
        }
        return writer.stopped(tokens)

    async def _write(self, request: ReplyRequest, writer: SlackReplyWriter) -> DeliveredReply:
        info = activity.info()
        waited = time.time() - info.scheduled_time.timestamp()
        slow = info.attempt > 1 and waited > SLOW_TURN_SECONDS
        await self._set_status(
            request, "processing", THINKING_RETRYING if slow else "", request.session_title
        )
        writer.session_status = self.sessions.stop_stream_status
        # Files are downloaded while the request is built: off the event loop.
        model_request = await asyncio.get_running_loop().run_in_executor(
            self.executor, functools.partial(self.bedrock.reply_request, request, streaming=True)
        )
        started = time.time()
        # Until Bedrock reports usage at the end, what a Stop is charged for.
        writer.prompt_tokens = model_request.estimated_input_tokens()
        usage, response, stop_reason = {}, {}, "end_turn"
        await writer.show_tasks(self._finished_tasks(request))
        uses = tool_prompt.StreamedToolUses()
        # After tool rounds, the text goes on in the message below what it showed.
        gap = "\n\n" if request.stream_ts and request.shown.strip() else ""
        async for kind, value in self._model_events(model_request):
            if kind == "text":
                await writer.append(value if writer.said else gap + value)
                writer.said += value
            elif kind == "tool_start":
                uses.start(value)
            elif kind == "tool_delta":
                uses.delta(value)
            elif kind == "response":
                response = value
            elif kind == "stop":
                stop_reason = value
                check_stop_reason(stop_reason)
            elif kind == "usage":
                usage = value
        call = model_request.record(response, usage, stop_reason, started)
        telemetry.record_model_call(call)
        tokens = {"input_tokens": call.input_tokens, "output_tokens": call.output_tokens}
        if stop_reason == "tool_use" and uses.uses() and not request.last_round:
            return await self._ask_for_tools(request, writer, uses.uses(), call, tokens)
        text = writer.said.strip() or ("" if gap else texts.EMPTY_ANSWER)
        notes = texts.join_notes(request.notes, texts.file_notes(model_request.unread))
        if stop_reason == "tool_use":  # asked for more tools than a turn may use
            notes = texts.join_notes(notes, texts.TOOL_ROUNDS_USED)
        cited = texts.sources_line(request.sources, text, request.cited_by_number)
        notes = texts.join_notes(cited, notes)
        shown = texts.reply_text(text, stop_reason, notes)
        if shown.startswith(text):
            await writer.append(shown[len(text) :])  # a note after the answer streams too
        if request.stream_ts:  # the whole message: what it showed before this round, and this
            shown = request.shown + (gap if writer.said else "") + shown
        # Once the whole answer is being laid out, a Stop is too late: half a layout would
        # leave neither answer in the thread.
        metadata = slack_activities.message_metadata(request.idempotency_key, **tokens)
        finishing = asyncio.ensure_future(writer.finish(shown, metadata))
        try:
            parts = await asyncio.shield(finishing)
        except asyncio.CancelledError:
            parts = await finishing
        return DeliveredReply(
            text=text, ts=parts[-1], stop_reason=stop_reason, call=call, parts=parts, **tokens
        )

    async def _ask_for_tools(
        self, request: ReplyRequest, writer: SlackReplyWriter, uses: list, call, tokens: dict
    ) -> DeliveredReply:
        """The model asks for tools: their cards go into the open stream (waiting, or
        running), and the workflow runs them; the answer's next round goes on here."""
        specs = tools.tools_by_model_name(request.tools)
        cards = [
            tool_prompt.task_card(
                use,
                specs.get(use.name),
                "pending" if getattr(specs.get(use.name), "approval", False) else "in_progress",
            )
            for use in uses
        ]
        await writer.show_tasks(cards)
        await writer._flush()
        return DeliveredReply(
            text=writer.said.strip(),
            ts=writer.ts or "",
            stop_reason="tool_use",
            call=call,
            parts=writer.earlier + writer.messages,
            shown=writer.sent,
            tool_uses=uses,
            mode=writer.mode,
            **tokens,
        )

    @staticmethod
    def _finished_tasks(request: ReplyRequest) -> list[dict]:
        """The last round's calls, done: complete or error, with what they found."""
        if not request.rounds:
            return []
        specs = tools.tools_by_model_name(request.tools)
        done = request.rounds[-1]
        results = {r.tool_use_id: r for r in done.results}
        return [
            tool_prompt.task_card(
                use,
                specs.get(use.name),
                "error"
                if results.get(use.tool_use_id) is None
                or results[use.tool_use_id].status == "error"
                else "complete",
                results.get(use.tool_use_id),
            )
            for use in done.uses
        ]

    async def _earlier_attempts(
        self, request: ReplyRequest, details
    ) -> tuple[DeliveredReply | None, list[str]]:
        """What earlier attempts left: the finished reply, when only its result was lost; else
        the messages they created and did not finish, oldest first.

        Heartbeats reach Temporal only every few seconds, so a killed attempt's last ones may
        be lost: the thread itself is read, from when this activity was first scheduled.
        Turns are answered one at a time, so our bot's messages there without another
        reply's key can only be this reply's.
        """
        try:
            recent = await slack_activities.messages_since_scheduled(self.slack, request.thread)
            bot_user = await self._bot_user()
        except SlackApiError as err:
            raise slack_activities.classify(err) from err
        for message in recent:
            if slack_activities.message_key(message) == request.idempotency_key:
                payload = message["metadata"]["event_payload"]
                done = DeliveredReply(
                    text=message.get("text") or "(reply posted in Slack)",
                    input_tokens=payload.get("input_tokens", 0),
                    output_tokens=payload.get("output_tokens", 0),
                    ts=message["ts"],
                    parts=[message["ts"]],
                )
                return done, []
        unfinished = (
            set(request.replace_ts)
            | set(filter(None, [request.stream_ts]))
            | {
                m["ts"]
                for m in recent
                if m.get("user") == bot_user
                and m["ts"] != request.thread.thread_ts
                and slack_activities.message_key(m) is None
            }
        )
        progress = details[0] if details and isinstance(details[0], dict) else {}
        unfinished |= set(progress.get("messages") or [])
        return None, sorted(unfinished, key=lambda ts: tuple(int(p) for p in ts.split(".")))

    async def _bot_user(self) -> str:
        if self.bot_user is None:
            self.bot_user = (await self.slack.auth_test())["user_id"]
        return self.bot_user

    async def _heartbeat(self, writer: SlackReplyWriter) -> None:
        """Keep heartbeating, also while the model is still thinking. Not at once: a beat
        before any progress would only cost an RPC per turn, and most replies are done
        before the first one is due."""
        while True:
            await asyncio.sleep(HEARTBEAT_SECONDS)
            activity.heartbeat(writer.progress())

    async def _set_status(
        self, request: ReplyRequest, status: str, text: str = "", title: str = ""
    ) -> None:
        """The session's status (or the assistant thread's "is thinking…") is a nicety:
        failing to set it never fails a turn."""
        try:
            await self.sessions.set_status(
                request.thread, status, initiator=request.recipient_user, text=text, title=title
            )
        except Exception as err:
            log.debug("could not set the session status: %s", type(err).__name__)

    async def _model_events(self, request: ModelRequest) -> AsyncIterator[tuple[str, object]]:
        """("response", metadata), then ("text", delta), ("stop", reason) and ("usage",
        usage) from ConverseStream.

        boto3 reads the stream with blocking calls, so a worker thread reads it and hands
        the events over to this coroutine.
        """
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        done = object()
        abandoned = threading.Event()  # the reply failed: stop paying for tokens

        def read() -> None:
            try:
                response = self.bedrock.invoke(self.bedrock.client.converse_stream, request)
                metadata = {"ResponseMetadata": response.get("ResponseMetadata") or {}}
                loop.call_soon_threadsafe(queue.put_nowait, metadata)
                for event in response["stream"]:
                    if abandoned.is_set():
                        response["stream"].close()
                        return
                    loop.call_soon_threadsafe(queue.put_nowait, event)
            except Exception as err:
                loop.call_soon_threadsafe(queue.put_nowait, err)
            finally:
                loop.call_soon_threadsafe(queue.put_nowait, done)

        reader = loop.run_in_executor(self.executor, read)
        try:
            while (event := await queue.get()) is not done:
                if isinstance(event, Exception):
                    raise classify(event) from event
                if "ResponseMetadata" in event:
                    yield "response", event
                elif "contentBlockStart" in event:
                    yield "tool_start", event["contentBlockStart"]
                elif "contentBlockDelta" in event:
                    delta = event["contentBlockDelta"]
                    if "toolUse" in delta.get("delta", {}):
                        yield "tool_delta", delta
                    else:
                        yield "text", delta["delta"].get("text", "")
                elif "messageStop" in event:
                    yield "stop", event["messageStop"].get("stopReason", "end_turn")
                elif "metadata" in event:
                    yield "usage", event["metadata"].get("usage", {})
            await reader
        finally:
            abandoned.set()
