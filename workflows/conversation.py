"""The conversation workflow: one Slack thread, from the first mention to its summary."""

from datetime import UTC, datetime, timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.bedrock import CONTEXT_OVERFLOW, BedrockActivities
    from activities.budgets import BudgetActivities
    from activities.conversations import ConversationActivities
    from activities.replies import ReplyActivities
    from activities.slack import SlackActivities
    from threadchat import context, dedupe, telemetry, texts
    from threadchat.model import (
        BudgetCheck,
        BudgetVerdict,
        ConversationResult,
        ConversationStart,
        ConversationState,
        ConversationStatus,
        DeliveredReply,
        EndNotice,
        EndRequest,
        ReplyRequest,
        SlackPost,
        SummaryRequest,
        TokenCharge,
        Turn,
        UserMessage,
    )
    from threadchat.temporal import CONVERSATION_STARTED, SLACK_PARTICIPANTS

# Temporal owns retries (botocore makes one attempt). Throttling and 5xx back off up to about
# a minute in all; errors that cannot succeed are non-retryable and fail at once.
BEDROCK_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=20),
    maximum_attempts=6,
)
SLACK_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=10,
)
SLACK_TIMEOUT = timedelta(seconds=30)
# Budget calls are short Temporal RPCs, run as local activities: no extra round trip per turn.
BUDGET_TIMEOUT = timedelta(seconds=5)
BUDGET_RETRY = RetryPolicy(maximum_attempts=3)
# A streamed answer may take minutes in all; the heartbeat timeout catches a dead worker.
STREAMING_TIMEOUT = timedelta(minutes=10)
# If rolling summaries keep failing, verbatim turns beyond this many budgets are dropped, so
# the carried state stays small (continue-as-new fails for good past 2 MiB).
MAX_KEPT_BUDGETS = 4
# Continue as new well before Temporal's 4 MiB suggestion when turns are large.
HISTORY_SIZE_CAP = 2 * 1024 * 1024


def _failure_type(err: ActivityError) -> str | None:
    cause = err.cause
    return cause.type if isinstance(cause, ApplicationError) else type(cause).__name__


@workflow.defn
class ConversationWorkflow:
    """One Slack thread's conversation: answer each message with the conversation so far as
    context, and end with a summary on /endchat or after a quiet spell."""

    @workflow.init
    def __init__(self, start: ConversationStart) -> None:
        # Signals can arrive before run() starts, so the state exists from the first moment.
        self.state = start.state or ConversationState(thread=start.thread)

    @workflow.run
    async def run(self, start: ConversationStart) -> ConversationResult:
        if self.state.settings is None:
            await self._open()
        while True:
            if self._history_is_long():
                await workflow.wait_condition(workflow.all_handlers_finished)
                workflow.continue_as_new(ConversationStart(self.state.thread, self.state))
            if not await self._wait_for_messages_or_silence():
                self.end(EndRequest(requested_by="", via="inactivity"))
            if self.state.end_request is not None:
                return await self._close()
            await self._answer(self._take_pending())
            await self._fold_old_turns()

    # -- Messages from the bot -----------------------------------------------------------

    @workflow.signal
    def user_message(self, message: UserMessage) -> None:
        """A message in the thread. Repeats (Slack retries, double delivery) are ignored."""
        if self.state.end_request is not None and not message.may_start:
            return  # the conversation is over; only a new mention starts another
        if not dedupe.remember(self.state.seen_ts, message.ts):
            return
        if self.state.end_request is not None:
            self.state.next_conversation.append(message)
            return
        self.state.pending.append(message)
        self.state.last_activity = workflow.now().timestamp()
        if message.user not in self.state.participants:
            self.state.participants.append(message.user)
            workflow.upsert_search_attributes(
                [SLACK_PARTICIPANTS.value_set(list(self.state.participants))]
            )

    @workflow.signal
    def end(self, request: EndRequest) -> None:
        """End the conversation. Only the first request counts, so ending is idempotent."""
        if self.state.end_request is None:
            self.state.end_request = request

    @workflow.query
    def status(self) -> ConversationStatus:
        return ConversationStatus(
            thread=self.state.thread,
            turn_count=self.state.turn_count,
            participants=list(self.state.participants),
            pending=len(self.state.pending),
            ending=self.state.end_request is not None,
            input_tokens=self.state.input_tokens,
            output_tokens=self.state.output_tokens,
            last_activity=self.state.last_activity,
        )

    # -- The steps of a conversation ------------------------------------------------------

    async def _open(self) -> None:
        """Fetch the worker's settings and what an earlier conversation in this thread left."""
        setup = await workflow.execute_activity_method(
            ConversationActivities.open_conversation,
            self.state.thread,
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=SLACK_RETRY,
            summary="open conversation",
        )
        self.state.settings = setup.settings
        # A conversation opened by a mention during the last one's end already carries it.
        self.state.previous_summary = self.state.previous_summary or setup.previous_summary
        self.state.conversation_key = workflow.info().run_id
        self.state.started_at = workflow.now().timestamp()

    async def _wait_for_messages_or_silence(self) -> bool:
        """Wait for new messages or an end request; False when the thread went quiet."""
        workflow.set_current_details(f"Waiting for messages after turn {self.state.turn_count}.")
        try:
            await workflow.wait_condition(
                lambda: bool(self.state.pending) or self.state.end_request is not None,
                timeout=timedelta(seconds=self.state.settings.inactivity_timeout_seconds),
                timeout_summary="inactivity",
            )
        except TimeoutError:
            # A message that came with the timer still counts.
            return bool(self.state.pending) and workflow.patched("message-with-timer")
        return True

    def _take_pending(self) -> list[UserMessage]:
        messages, self.state.pending = self.state.pending, []
        return messages

    async def _answer(self, messages: list[UserMessage]) -> None:
        """Answer everything that arrived since the last turn as one turn, unless the day's
        token allowance is used up. The turn is charged to whoever wrote last: the reply
        answers them."""
        self.state.turn_count += 1
        workflow.set_current_details(f"Answering turn {self.state.turn_count}.")
        await self._learn_names(messages)
        turn = Turn(messages=messages, reply=None)
        payer = messages[-1].user
        verdict = await self._check_budget(payer)
        if verdict.over:
            await self._post(
                texts.over_budget(verdict.over, payer, verdict.limit, self._seconds_to_midnight()),
                f"turn-{self.state.turn_count}-budget",
            )
            telemetry.count_turn("over_budget")
        else:
            await self._reply(turn)
            if turn.reply is not None and verdict.charge_user:
                await self._charge(payer, turn.input_tokens + turn.output_tokens)
        self.state.turns.append(turn)
        self.state.last_activity = workflow.now().timestamp()

    async def _reply(self, turn: Turn) -> None:
        """The model's answer in the thread, or a short notice there if it cannot be had."""
        try:
            reply = await self._reply_within_context(turn.messages)
        except ActivityError as err:
            failure = _failure_type(err)
            workflow.logger.warning("turn %s failed: %s", self.state.turn_count, failure)
            await self._post(texts.turn_failure(failure), f"turn-{self.state.turn_count}-notice")
            telemetry.count_turn("failed")
            return
        telemetry.count_turn("replied")
        turn.reply = reply.text
        turn.input_tokens, turn.output_tokens = reply.input_tokens, reply.output_tokens
        self._spend(reply.input_tokens, reply.output_tokens)

    async def _reply_within_context(self, messages: list[UserMessage]) -> DeliveredReply:
        """Reply with as much recent context as the budget allows; on overflow, once more
        with a quarter of it."""
        budget = self.state.settings.context_budget_tokens
        try:
            return await self._deliver_reply(self._reply_request(messages, budget))
        except ActivityError as err:
            if _failure_type(err) != CONTEXT_OVERFLOW:
                raise
            workflow.logger.warning("context overflow; retrying with a smaller window")
            return await self._deliver_reply(self._reply_request(messages, budget // 4))

    def _reply_request(self, messages: list[UserMessage], budget: int) -> ReplyRequest:
        return ReplyRequest(
            thread=self.state.thread,
            messages=context.prompt_messages(self.state.turns, messages, self.state.names, budget),
            context_notes=context.context_notes(
                self.state.previous_summary, self.state.rolling_summary
            ),
            idempotency_key=self._key(f"turn-{self.state.turn_count}-reply"),
            recipient_user=messages[-1].user,
        )

    async def _deliver_reply(self, request: ReplyRequest) -> DeliveredReply:
        """Generate the reply with Bedrock and get it into the thread.

        This is the one place that knows how a reply reaches Slack: streamed by one activity
        as the model writes, or generated and then posted by two.
        """
        if self.state.settings.streaming:
            return await workflow.execute_activity_method(
                ReplyActivities.stream_reply,
                request,
                start_to_close_timeout=STREAMING_TIMEOUT,
                heartbeat_timeout=timedelta(seconds=10),
                retry_policy=BEDROCK_RETRY,
                summary=f"stream reply {self.state.turn_count}",
            )
        generated = await workflow.execute_activity_method(
            BedrockActivities.generate_reply,
            request,
            start_to_close_timeout=timedelta(seconds=self.state.settings.model_timeout_seconds),
            retry_policy=BEDROCK_RETRY,
            summary=f"generate reply {self.state.turn_count}",
        )
        posted = await workflow.execute_activity_method(
            SlackActivities.post_message,
            SlackPost(request.thread, generated.text, request.idempotency_key),
            start_to_close_timeout=SLACK_TIMEOUT,
            retry_policy=SLACK_RETRY,
            summary=f"post reply {self.state.turn_count}",
        )
        return DeliveredReply(
            text=generated.text,
            input_tokens=generated.input_tokens,
            output_tokens=generated.output_tokens,
            ts=posted.ts,
        )

    async def _learn_names(self, messages: list[UserMessage]) -> None:
        """Look up display names of new speakers, so the model sees who said what."""
        unknown = sorted({m.user for m in messages} - set(self.state.names))
        if not unknown:
            return
        try:
            names = await workflow.execute_activity_method(
                SlackActivities.describe_users,
                unknown,
                start_to_close_timeout=SLACK_TIMEOUT,
                retry_policy=RetryPolicy(maximum_attempts=3),
                summary="look up names",
            )
        except ActivityError:
            names = {}  # ids are labels enough
        self.state.names.update({user: names.get(user, user) for user in unknown})

    async def _fold_old_turns(self) -> None:
        """Fold the oldest turns into the rolling summary once they outgrow the budget."""
        budget = self.state.settings.context_budget_tokens
        count = context.turns_to_fold(self.state.turns, self.state.names, budget)
        if count:
            try:
                summary = await self._summarize(self.state.turns[:count], final=False)
            except ActivityError as err:
                workflow.logger.warning("rolling summary failed: %s", _failure_type(err))
            else:
                self.state.rolling_summary = summary
                del self.state.turns[:count]
                self.state.folded_turns += count
        while len(self.state.turns) > 1 and (
            sum(context.turn_tokens(t, self.state.names) for t in self.state.turns)
            > MAX_KEPT_BUDGETS * budget
        ):
            del self.state.turns[0]

    async def _summarize(self, turns: list[Turn], *, final: bool) -> str:
        summary = await workflow.execute_activity_method(
            BedrockActivities.summarize_conversation,
            SummaryRequest(
                earlier_summary=self.state.rolling_summary,
                turns=turns,
                names=self.state.names,
                final=final,
            ),
            start_to_close_timeout=timedelta(seconds=self.state.settings.model_timeout_seconds),
            retry_policy=BEDROCK_RETRY,
            summary="final summary" if final else "rolling summary",
        )
        self._spend(summary.input_tokens, summary.output_tokens)
        return summary.text

    async def _close(self) -> ConversationResult:
        """Write the summary into the thread and finish with the transcript."""
        workflow.set_current_details("Ending: writing the summary.")
        unanswered = self._take_pending()
        if unanswered:
            self.state.turns.append(Turn(messages=unanswered, reply=None))
        ended_by = self.state.end_request.via
        try:
            summary = await self._summarize(self.state.turns, final=True)
        except ActivityError as err:
            workflow.logger.warning("final summary failed: %s", _failure_type(err))
            summary = ""
        summary_ts = await self._post(
            texts.summary_message(
                summary,
                ended_by=ended_by,
                participants=[
                    context.speaker(u, self.state.names) for u in self.state.participants
                ],
                turns=self.state.turn_count,
                duration_seconds=workflow.now().timestamp() - self.state.started_at,
            ),
            "summary",
        )
        requested_by = self.state.end_request.requested_by
        if summary_ts and requested_by and workflow.patched("tell-who-ended-it"):
            await self._tell_who_ended_it(requested_by, summary_ts)
        if self.state.next_conversation:
            self._open_next_conversation(summary)
        return ConversationResult(
            thread=self.state.thread,
            summary=summary,
            rolling_summary=self.state.rolling_summary,
            transcript=self.state.turns,
            turn_count=self.state.turn_count,
            participants=self.state.participants,
            ended_by=ended_by,
            input_tokens=self.state.input_tokens,
            output_tokens=self.state.output_tokens,
        )

    def _open_next_conversation(self, summary: str) -> None:
        """Someone mentioned the bot while this conversation was closing: rather than lose
        that message, go on as a new conversation that knows this one's summary."""
        messages = self.state.next_conversation
        participants = list(dict.fromkeys(m.user for m in messages))
        workflow.continue_as_new(
            ConversationStart(
                self.state.thread,
                ConversationState(
                    thread=self.state.thread,
                    previous_summary=summary,
                    participants=participants,
                    seen_ts=self.state.seen_ts,
                    pending=messages,
                ),
            ),
            search_attributes=workflow.info().typed_search_attributes.updated(
                SLACK_PARTICIPANTS.value_set(participants),
                CONVERSATION_STARTED.value_set(workflow.now()),
            ),
        )

    # -- Token allowances -------------------------------------------------------------------

    async def _check_budget(self, user: str) -> BudgetVerdict:
        """Whether the person's or this conversation's allowance for today is used up.
        Conversations from before allowances, and failed checks, answer anyway: a Temporal
        hiccup should not silence the bot."""
        if not workflow.patched("token-budgets"):
            return BudgetVerdict()
        self._roll_day()
        try:
            return await workflow.execute_local_activity_method(
                BudgetActivities.check_budget,
                BudgetCheck(
                    team=self.state.thread.team,
                    user=user,
                    day=self.state.budget_day,
                    conversation_tokens=self.state.day_tokens,
                ),
                start_to_close_timeout=BUDGET_TIMEOUT,
                retry_policy=BUDGET_RETRY,
                summary="check token budget",
            )
        except ActivityError as err:
            workflow.logger.warning("token budget check failed: %s", _failure_type(err))
            return BudgetVerdict()

    async def _charge(self, user: str, tokens: int) -> None:
        try:
            await workflow.execute_local_activity_method(
                BudgetActivities.charge_tokens,
                TokenCharge(
                    team=self.state.thread.team,
                    user=user,
                    day=self.state.budget_day,
                    tokens=tokens,
                    key=self._key(f"turn-{self.state.turn_count}"),
                ),
                start_to_close_timeout=BUDGET_TIMEOUT,
                retry_policy=BUDGET_RETRY,
                summary="charge tokens",
            )
        except ActivityError as err:
            workflow.logger.warning("could not charge tokens: %s", _failure_type(err))

    def _spend(self, input_tokens: int, output_tokens: int) -> None:
        self.state.input_tokens += input_tokens
        self.state.output_tokens += output_tokens
        self._roll_day()
        self.state.day_tokens += input_tokens + output_tokens

    def _roll_day(self) -> None:
        """Start a new count of the conversation's tokens when the UTC day changes."""
        today = workflow.now().astimezone(UTC).date().isoformat()
        if self.state.budget_day != today:
            self.state.budget_day, self.state.day_tokens = today, 0

    def _seconds_to_midnight(self) -> float:
        now = workflow.now().astimezone(UTC)
        midnight = datetime.combine(now.date() + timedelta(days=1), datetime.min.time(), UTC)
        return (midnight - now).total_seconds()

    # -- Bookkeeping -----------------------------------------------------------------------

    async def _tell_who_ended_it(self, user: str, summary_ts: str) -> None:
        """Answer the /endchat or End chat user privately, with a link to the summary."""
        try:
            await workflow.execute_activity_method(
                SlackActivities.notify_ended,
                EndNotice(thread=self.state.thread, user=user, summary_ts=summary_ts),
                start_to_close_timeout=SLACK_TIMEOUT,
                retry_policy=RetryPolicy(maximum_attempts=3),
                summary="tell who ended it",
            )
        except ActivityError as err:
            workflow.logger.warning("could not notify who ended it: %s", _failure_type(err))

    async def _post(self, text: str, key: str) -> str | None:
        """Post a notice or summary and return its ts; if Slack stays down, log it rather
        than fail the conversation."""
        try:
            posted = await workflow.execute_activity_method(
                SlackActivities.post_message,
                SlackPost(self.state.thread, text, self._key(key)),
                start_to_close_timeout=SLACK_TIMEOUT,
                retry_policy=SLACK_RETRY,
                summary=f"post {key}",
            )
        except ActivityError as err:
            workflow.logger.error("could not post %s: %s", key, _failure_type(err))
            return None
        return posted.ts

    def _key(self, name: str) -> str:
        """An idempotency key unique to this conversation (a thread can host several)."""
        return f"{self.state.conversation_key}:{name}"

    def _history_is_long(self) -> bool:
        info = workflow.info()
        return (
            info.is_continue_as_new_suggested()
            or info.get_current_history_length() >= self.state.settings.history_event_cap
            or (
                info.get_current_history_size() >= HISTORY_SIZE_CAP
                and workflow.patched("history-size-cap")
            )
        )
