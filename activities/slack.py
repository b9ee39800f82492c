"""Slack activities: posting into threads exactly once, and looking up people's names.

The client (threadchat.slack_client) makes one attempt per call: Temporal retries instead,
and a retried post first looks for the message it may already have made, by the idempotency
key stored in the message's metadata.
"""

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import timedelta

from cachetools import TTLCache
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.sessions import AgentSessions
from threadchat import prompt, texts
from threadchat.actions import approval_blocks, message_body
from threadchat.context import estimate_tokens
from threadchat.formatting import slack_markdown, split_markdown
from threadchat.mentions import neutralize
from threadchat.model import (
    ApprovalRequest,
    AssistantGreeting,
    EndNotice,
    PostedMessage,
    PrivateNote,
    Quote,
    SlackPost,
    StoppedReply,
    ThreadContext,
    ThreadRead,
    ThreadRef,
    ThreadTitle,
)
from threadchat.slack_text import app_name, message_text

log = logging.getLogger(__name__)

METADATA_EVENT_TYPE = "threadchat_message"
RETRYABLE_ERRORS = {
    "ratelimited",
    "internal_error",
    "fatal_error",
    "service_unavailable",
    "request_timeout",
}


def classify(err: SlackApiError) -> ApplicationError:
    """Rate limits wait for Retry-After; server trouble retries; the rest cannot succeed."""
    response = err.response
    error = response.get("error") or f"http_{response.status_code}"
    if response.status_code == 429 or error == "ratelimited":
        headers = {k.lower(): v for k, v in (response.headers or {}).items()}
        delay = max(1, int(float(headers.get("retry-after", "1") or 1)))
        return ApplicationError(
            f"Slack rate limit, retry after {delay}s",
            type="SlackRateLimited",
            next_retry_delay=timedelta(seconds=delay),
        )
    retryable = response.status_code >= 500 or error in RETRYABLE_ERRORS
    return ApplicationError(
        f"Slack error: {error}", type=f"Slack:{error}", non_retryable=not retryable
    )


def message_metadata(idempotency_key: str, **extra: object) -> dict:
    """Metadata that marks a message as the one posted for `idempotency_key`."""
    return {
        "event_type": METADATA_EVENT_TYPE,
        "event_payload": {"idempotency_key": idempotency_key, **extra},
    }


# Temporal's and Slack's clocks may differ a little: messages are read from this much before
# the activity was first scheduled.
CLOCK_SKEW_SECONDS = 2


def message_key(message: dict) -> str | None:
    """The idempotency key a message was posted with, if it is one of ours."""
    return ((message.get("metadata") or {}).get("event_payload") or {}).get("idempotency_key")


async def messages_since_scheduled(client: AsyncWebClient, thread: ThreadRef) -> list[dict]:
    """The thread's messages since this activity was first scheduled, with their metadata.

    A retry reads them once to find what earlier attempts posted. Only this short window is
    read, so it is one page in all but the busiest threads (Slack limits thread reads).
    """
    since = activity.info().scheduled_time.timestamp() - CLOCK_SKEW_SECONDS
    messages: list[dict] = []
    cursor = None
    while True:
        response = await client.conversations_replies(
            channel=thread.channel,
            ts=thread.thread_ts,
            oldest=f"{since:.6f}",
            include_all_metadata=True,
            limit=200,
            cursor=cursor,
        )
        messages += response.get("messages", [])
        cursor = (response.get("response_metadata") or {}).get("next_cursor")
        if not response.get("has_more") or not cursor:
            return messages


# Display names change rarely: each worker keeps them for an hour, for the people of many
# conversations, instead of a users.info call per person per new conversation.
NAMES_KEPT = 10_000
NAMES_TTL_SECONDS = 3600

# A thread read stops after this many pages of 200 (Slack returns the oldest first): enough
# for all but the longest threads, and one call for nearly all.
THREAD_PAGES = 5
# Messages of a thread that are a person or an app saying something; joins, topic changes
# and the like are not.
_SAID = {None, "thread_broadcast", "file_share", "bot_message", "me_message"}


# Both run as local activities, and the SDK (temporalio 1.35) cannot replay a history in which
# a local activity failed by its timeout (30 s, workflows/steps.py): they stop in time
# themselves and answer with what they have.
LOCAL_DEADLINE_SECONDS = 20


class SlackActivities:
    """Activities that call the Slack Web API."""

    def __init__(
        self,
        client: AsyncWebClient,
        prompts_for: Callable[[str], list] | None = None,
        sessions: AgentSessions | None = None,
    ):
        self.client = client
        self.sessions = sessions or AgentSessions(client)
        self.names: TTLCache[str, str] = TTLCache(maxsize=NAMES_KEPT, ttl=NAMES_TTL_SECONDS)
        # The suggested prompts for a channel in view: operators' (per-channel settings)
        # or the defaults.
        self.prompts_for = prompts_for or texts.suggested_prompts
        self._me: tuple[str, str] | None = None

    @activity.defn
    async def greet(self, greeting: AssistantGreeting) -> None:
        """The assistant panel's greeting, once, and prompts for the channel in view."""
        text = (
            texts.GREETING_IN_CHANNEL.format(user=greeting.user, channel=greeting.context_channel)
            if greeting.context_channel
            else texts.GREETING.format(user=greeting.user)
        )
        await self.post_message(
            SlackPost(greeting.thread, text, greeting.idempotency_key, participants=[greeting.user])
        )
        try:
            await self.client.assistant_threads_setSuggestedPrompts(
                channel_id=greeting.thread.channel,
                thread_ts=greeting.thread.thread_ts,
                prompts=self.prompts_for(greeting.context_channel),
            )
        except SlackApiError as err:
            raise classify(err) from err

    @activity.defn
    async def set_title(self, title: ThreadTitle) -> None:
        """The conversation's title: its agent session's (or its assistant thread's)."""
        try:
            await self.sessions.rename(
                title.thread, neutralize(title.title, title.participants or None)
            )
        except SlackApiError as err:
            raise classify(err) from err

    @activity.defn
    async def post_message(self, post: SlackPost) -> PostedMessage:
        """Post `post.text` into the thread, at most once per idempotency key.

        Text over Slack's Markdown limit goes out as several messages, in order, each with a
        key of its own so that a retry posts only the parts still missing. It may be model
        text (a reply, a summary): mentions are neutralised and links never unfurled.
        """
        parts = split_markdown(slack_markdown(neutralize(post.text, post.participants or None)))
        written: list[str] = []
        try:
            posted = {}
            if activity.info().attempt > 1:
                recent = await messages_since_scheduled(self.client, post.thread)
                posted = {message_key(m): m["ts"] for m in recent if message_key(m)}
            for index, part in enumerate(parts):
                key = post.idempotency_key if len(parts) == 1 else f"{post.idempotency_key}/{index}"
                if key in posted:
                    log.info("part already landed on an earlier attempt: ts=%s", posted[key])
                    written.append(posted[key])
                    continue
                last = index == len(parts) - 1
                response = await self.client.chat_postMessage(
                    channel=post.thread.channel,
                    thread_ts=post.thread.thread_ts,
                    metadata=message_metadata(key),
                    unfurl_links=False,
                    unfurl_media=False,
                    **message_body(part, post.actions if last else None),
                )
                written.append(response["ts"])
        except SlackApiError as err:
            raise classify(err) from err
        if post.session_status:
            try:
                await self.sessions.set_status(post.thread, post.session_status)
            except Exception as err:  # a nicety: never a reason to post again
                log.debug("could not set the session status: %s", type(err).__name__)
        return PostedMessage(ts=written[-1] if written else "", parts=written)

    @activity.defn
    async def mark_stopped(self, stopped: StoppedReply) -> str:
        """Stop: the answer's last message keeps what it showed, under a line naming who
        stopped it (an edit, not a new answer); with nothing shown, the line alone. The session
        leaves `processing`. Returns the ts of the message that says it."""
        text = texts.stopped_text(stopped.text, stopped.stopped_by)
        text = neutralize(text, stopped.participants or None)
        if not stopped.ts:
            post = SlackPost(
                stopped.thread,
                text,
                stopped.idempotency_key,
                actions=stopped.actions,
                session_status="active",
            )
            return (await self.post_message(post)).ts
        channel = stopped.thread.channel
        with contextlib.suppress(SlackApiError):  # as a rule Slack stopped it at the click
            await self.client.chat_stopStream(channel=channel, ts=stopped.ts)
        try:
            await self.client.chat_update(
                channel=channel,
                ts=stopped.ts,
                metadata=message_metadata(stopped.idempotency_key),
                **message_body(text, stopped.actions),
            )
        except SlackApiError as err:
            raise classify(err) from err
        try:
            await self.sessions.set_status(stopped.thread, "active")
        except Exception as err:  # a nicety, as after an answer
            log.debug("could not set the session status: %s", type(err).__name__)
        return stopped.ts

    @activity.defn
    async def ask_approval(self, ask: ApprovalRequest) -> str:
        """The message a tool call waits on, with Approve and Deny; at most once per call (a
        retry finds it by its key). The session is `suspended` while it waits."""
        text = texts.approval_prompt(ask.asker, ask.tool, ask.arguments)
        text = neutralize(text, [ask.asker])  # the arguments are model text
        try:
            if activity.info().attempt > 1:
                recent = await messages_since_scheduled(self.client, ask.thread)
                for message in recent:
                    if message_key(message) == ask.key:
                        return message["ts"]
            response = await self.client.chat_postMessage(
                channel=ask.thread.channel,
                thread_ts=ask.thread.thread_ts,
                text=text,
                blocks=approval_blocks(text, ask.key),
                metadata=message_metadata(ask.key),
                unfurl_links=False,
                unfurl_media=False,
            )
        except SlackApiError as err:
            raise classify(err) from err
        await self._session(ask.thread, "suspended")
        return response["ts"]

    @activity.defn
    async def settle_approval(self, ask: ApprovalRequest) -> None:
        """The approval message says how it ended, in place of its buttons; the answer goes
        on (`processing`)."""
        # The outcome names who decided: a display name, which pings nobody either.
        prompt = texts.approval_prompt(ask.asker, ask.tool, ask.arguments)
        text = neutralize(f"{prompt}\n{ask.outcome}", [ask.asker])
        try:
            await self.client.chat_update(
                channel=ask.thread.channel,
                ts=ask.ts,
                text=text,
                # Without the buttons: the blocks are replaced, not kept.
                blocks=[{"type": "markdown", "text": text}],
            )
        except SlackApiError as err:
            raise classify(err) from err
        await self._session(ask.thread, "processing")

    async def _session(self, thread: ThreadRef, status: str) -> None:
        try:
            await self.sessions.set_status(thread, status)
        except Exception as err:  # a nicety: never a reason to post again
            log.debug("could not set the session status: %s", type(err).__name__)

    @activity.defn
    async def post_private(self, note: PrivateNote) -> None:
        """Tell one person something in the thread, where only they see it."""
        try:
            await self.client.chat_postEphemeral(
                channel=note.thread.channel,
                user=note.user,
                thread_ts=note.thread.thread_ts,
                markdown_text=neutralize(
                    note.text, [note.user, *note.participants] if note.participants else None
                ),
            )
        except SlackApiError as err:
            raise classify(err) from err

    @activity.defn
    async def notify_ended(self, notice: EndNotice) -> None:
        """Tell whoever ended the conversation where its summary is, only to them."""
        try:
            link = await self.client.chat_getPermalink(
                channel=notice.thread.channel, message_ts=notice.summary_ts
            )
            await self.client.chat_postEphemeral(
                channel=notice.thread.channel,
                user=notice.user,
                text=texts.ended_notice(link["permalink"]),
            )
        except SlackApiError as err:
            raise classify(err) from err

    @activity.defn
    async def read_thread(self, read: ThreadRead) -> ThreadContext:
        """The thread's messages before the mention that opened a conversation, the newest
        that fit `max_tokens`, each labelled by its author as Slack gives it. If Slack will
        not tell (rate limited, no access), says why instead of failing: the conversation
        goes on without them."""
        try:
            async with asyncio.timeout(LOCAL_DEADLINE_SECONDS):
                return await self._read_thread(read)
        except TimeoutError:
            log.warning("reading the thread took too long; answering without it")
            return ThreadContext(unread="timeout")

    async def _read_thread(self, read: ThreadRead) -> ThreadContext:
        try:
            me = await self._identity()
        except SlackApiError as err:
            return ThreadContext(unread=_refusal(err))
        messages, unread = await self._thread_messages(read.thread, read.before)
        if unread and not messages:
            return ThreadContext(unread=unread)
        said = [m for m in messages if m.get("subtype") in _SAID and m.get("ts")]
        people = sorted({m["user"] for m in said if m.get("user") and not m.get("bot_id")})
        try:
            names = await self.describe_users(people)
        except ApplicationError:
            names = {}
        quotes = [_thread_quote(m, me, names) for m in said]
        quotes = [q for q in quotes if q.text]
        kept: list[Quote] = []
        room = read.max_tokens
        for quote in reversed(quotes):  # the newest first, while they fit
            cost = estimate_tokens(prompt.message_block(quote))
            if cost > room:
                break
            room -= cost
            kept.append(quote)
        return ThreadContext(quotes=kept[::-1], left_out=len(quotes) - len(kept), unread=unread)

    async def _identity(self) -> tuple[str, str]:
        """The bot's own user and bot ids, asked of Slack once per worker."""
        if self._me is None:
            response = await self.client.auth_test()
            self._me = (response.get("user_id") or "", response.get("bot_id") or "")
        return self._me

    async def _thread_messages(self, thread: ThreadRef, before: str) -> tuple[list[dict], str]:
        """The thread's messages before `before`, oldest first, and why Slack stopped telling
        ("" when it did not): a later page refused (apps distributed outside the Marketplace
        get one read a minute) keeps the pages read."""
        messages: list[dict] = []
        cursor = None
        for _ in range(THREAD_PAGES):
            try:
                response = await self.client.conversations_replies(
                    channel=thread.channel,
                    ts=thread.thread_ts,
                    latest=before,
                    inclusive=False,
                    limit=200,
                    cursor=cursor,
                )
            except SlackApiError as err:
                return messages, _refusal(err)
            messages += [m for m in response.get("messages", []) if m.get("ts") != before]
            cursor = (response.get("response_metadata") or {}).get("next_cursor")
            if not response.get("has_more") or not cursor:
                break
        return messages, ""

    @activity.defn
    async def describe_users(self, user_ids: list[str]) -> dict[str, str]:
        """Display names for user ids; ids that cannot be looked up (or not in time) are
        left out."""
        names: dict[str, str] = {}
        try:
            async with asyncio.timeout(LOCAL_DEADLINE_SECONDS):
                await self._describe(user_ids, names)
        except TimeoutError:
            log.warning("looking up names took too long; %d of %d found", len(names), len(user_ids))
        return names

    async def _describe(self, user_ids: list[str], names: dict[str, str]) -> None:
        for user_id in user_ids:
            if user_id in self.names:
                names[user_id] = self.names[user_id]
                continue
            try:
                response = await self.client.users_info(user=user_id)
            except SlackApiError as err:
                if err.response.status_code == 429:
                    raise classify(err) from err
                log.warning("users.info failed for %s: %s", user_id, err.response.get("error"))
                continue
            user = response.get("user") or {}
            profile = user.get("profile") or {}
            name = profile.get("display_name") or profile.get("real_name") or user.get("name")
            if name:
                names[user_id] = self.names[user_id] = name


# How the thread read labels the bot's own earlier answers.
OWN_NAME = "you"


def _thread_quote(message: dict, me: tuple[str, str], names: dict[str, str]) -> Quote:
    """A message of the thread as the prompt frames it: a person by the name looked up for
    their id, another app by its name, the bot's own answers as its own."""
    user, bot_id, ts = message.get("user") or "", message.get("bot_id") or "", message["ts"]
    text = message_text(message)
    if (user and user == me[0]) or (bot_id and bot_id == me[1]):
        return Quote(user=me[0] or bot_id, name=OWN_NAME, ts=ts, text=text)
    if bot_id:
        return Quote(user=bot_id, name=f"{app_name(message)} (app)", ts=ts, text=text)
    return Quote(user=user, name=names.get(user, user), ts=ts, text=text)


def _refusal(err: SlackApiError) -> str:
    error = err.response.get("error") or f"http_{err.response.status_code}"
    log.warning("could not read the thread's earlier messages: %s", error)
    return error
