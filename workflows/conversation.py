"""The conversation workflow: one Slack thread, from the first mention to its summary."""

import dataclasses
from datetime import UTC, datetime, timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.bedrock import CONTEXT_OVERFLOW, SUMMARY_PROMPT, BedrockActivities
    from activities.budgets import BudgetActivities
    from activities.conversations import ConversationActivities
    from activities.replies import ReplyActivities
    from activities.slack import SlackActivities
    from threadchat import context, dedupe, inference, telemetry, texts
    from threadchat.model import (
        AssistantGreeting,
        AssistantThread,
        BudgetCheck,
        BudgetVerdict,
        ChatMessage,
        ConversationResult,
        ConversationStart,
        ConversationState,
        ConversationStatus,
        DeliveredReply,
        EndNotice,
        EndRequest,
        Feedback,
        InferenceSettings,
        PrivateNote,
        RegenerateRequest,
        ReplyRef,
        ReplyRequest,
        SlackPost,
        Summary,
        SummaryRequest,
        ThreadTitle,
        TitleRequest,
        TokenCharge,
        Turn,
        UserMessage,
    )
    from threadchat.temporal import CONVERSATION_STARTED, CONVERSATION_TITLE, SLACK_PARTICIPANTS

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
# A first turn costs what a later one does: opening the conversation and looking up names
# run as local activities (no round trip to the server each), and the participants the bot
# started the conversation with are not written again. (A patch: earlier histories did
# both the long way.)
LEAN_FIRST_TURN = "lean-first-turn"
# Rolling summaries with prompt caching in mind: deeper folds, asked of the conversation
# itself (see _fold_old_turns). A patch: earlier histories folded to half the budget.
CACHED_FOLDS = "cached-folds"
# Every patch named in this module applies to a run that starts on this code, and one marker
# says so: else each patch writes its own marker and upserts TemporalChangeVersion (a
# visibility write) in every new run, three on a new conversation's first turn. Runs from
# before still check each patch as they did. A patch added later is not one of these: a run
# that started with this marker must still find it absent when it replays.
PATCHES_SO_FAR = "patches-so-far"
_SO_FAR = frozenset(
    {
        "token-budgets",
        "message-with-timer",
        "tell-who-ended-it",
        "history-size-cap",
        LEAN_FIRST_TURN,
        CACHED_FOLDS,
    }
)
# Files of the conversation remembered by name, for the note once they are out of the prompt.
MAX_SHARED_FILES = 100
# Ratings kept in the state (the newest); counts in metrics are not bounded by it.
MAX_FEEDBACK = 200


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
        self._patches_so_far: bool | None = None

    @workflow.run
    async def run(self, start: ConversationStart) -> ConversationResult:
        if self.state.settings is None:
            await self._open()
        while True:
            if self._history_is_long():
                await workflow.wait_condition(workflow.all_handlers_finished)
                workflow.continue_as_new(ConversationStart(self.state.thread, self.state))
            if not await self._wait_for_work_or_silence():
                self.end(EndRequest(requested_by="", via="inactivity"))
            if self.state.end_request is not None:
                return await self._close()
            if self._greeting_due():
                await self._greet()
            elif self.state.regenerate is not None:
                # Kept until done: a click meanwhile is refused as already regenerating.
                await self._answer_again(self.state.regenerate)
                self.state.regenerate = None
            else:
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
        if self.state.assistant is not None and message.text.strip() == texts.END_PROMPT:
            self.end(EndRequest(requested_by=message.user, via="prompt"))
            return
        self.state.pending.append(message)
        self.state.last_activity = workflow.now().timestamp()
        self._join(message.user)

    @workflow.signal
    def assistant_opened(self, opened: AssistantThread) -> None:
        """The thread is in Slack's assistant panel: greet whoever opened it (once, however
        often Slack delivers the event)."""
        if self.state.assistant is None:
            self.state.assistant = opened
            self._join(opened.user)

    @workflow.signal
    def context_changed(self, changed: AssistantThread) -> None:
        """The assistant panel's user moved to another channel: later turns see that one."""
        if self.state.assistant is None:
            self.state.assistant = changed
            self._join(changed.user)
        else:
            self.state.assistant.context_channel = changed.context_channel

    @workflow.signal
    def end(self, request: EndRequest) -> None:
        """End the conversation. Only the first request counts, so ending is idempotent."""
        if self.state.end_request is None:
            self.state.end_request = request

    @workflow.update
    async def regenerate(self, request: RegenerateRequest) -> None:
        """Answer the latest turn again, in place of its reply (the Regenerate button)."""
        # Checked again here: two clicks in one workflow task both pass the validator before
        # either handler runs.
        self._may_regenerate(request)
        self.state.regenerate = request

    @regenerate.validator
    def _may_regenerate(self, request: RegenerateRequest) -> None:
        """Refused requests never reach the history: the clicker learns why, privately."""
        refusal = self._regenerate_refusal(request)
        if refusal:
            raise ApplicationError(refusal, type=refusal, non_retryable=True)

    @workflow.signal
    def feedback(self, feedback: Feedback) -> None:
        """A 👍 or 👎 under a reply. A person's later rating of the same reply replaces their
        earlier one, and a repeated click counts once."""
        if feedback.rating not in ("up", "down"):
            return
        if feedback.reply.conversation_key != self.state.conversation_key:
            return  # a button left from an earlier conversation in this thread
        same_reply = [
            f
            for f in self.state.feedback
            if f.user == feedback.user and f.reply.turn == feedback.reply.turn
        ]
        if same_reply and same_reply[-1].rating == feedback.rating:
            return
        kept = [f for f in self.state.feedback if f not in same_reply]
        self.state.feedback = [*kept, feedback][-MAX_FEEDBACK:]
        telemetry.count_feedback(feedback.rating)

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
            cache_read_tokens=self.state.cache_read_tokens,
            cache_write_tokens=self.state.cache_write_tokens,
            feedback_up=sum(f.rating == "up" for f in self.state.feedback),
            feedback_down=sum(f.rating == "down" for f in self.state.feedback),
        )

    # -- The steps of a conversation ------------------------------------------------------

    async def _open(self) -> None:
        """Fetch the worker's settings and what an earlier conversation in this thread left.

        A conversation opened by its thread's first message (a mention at the top level, a
        DM), or by a mention during the last one's end, which carries that one's summary,
        has nothing earlier to look up.
        """
        thread = self.state.thread
        look_back = (
            not self.state.previous_summary
            and self.state.assistant is None  # a new panel thread has no past
            and all(m.ts != thread.thread_ts for m in self.state.pending)
        )
        if self._patched(LEAN_FIRST_TURN):
            setup = await workflow.execute_local_activity_method(
                ConversationActivities.open_conversation,
                args=[thread, look_back],
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=SLACK_RETRY,
                summary="open conversation",
            )
        else:
            setup = await workflow.execute_activity_method(
                ConversationActivities.open_conversation,
                thread,
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=SLACK_RETRY,
                summary="open conversation",
            )
        self.state.settings = setup.settings
        # A conversation opened by a mention during the last one's end already carries it.
        self.state.previous_summary = self.state.previous_summary or setup.previous_summary
        self.state.conversation_key = workflow.info().run_id
        self.state.started_at = workflow.now().timestamp()

    async def _wait_for_work_or_silence(self) -> bool:
        """Wait for new messages, a regenerate or an end request; False when the thread went
        quiet."""
        workflow.set_current_details(f"Waiting for messages after turn {self.state.turn_count}.")
        try:
            await workflow.wait_condition(
                lambda: (
                    bool(self.state.pending)
                    or self.state.end_request is not None
                    or self.state.regenerate is not None
                    or self._greeting_due()
                ),
                timeout=timedelta(seconds=self.state.settings.inactivity_timeout_seconds),
                timeout_summary="inactivity",
            )
        except TimeoutError:
            # A message that came with the timer still counts.
            return bool(self.state.pending) and self._patched("message-with-timer")
        return True

    def _last_exchange_continued(self) -> list[ChatMessage]:
        """The last reply's prompt with its answer, as a summary would continue it; empty
        when that prompt left out kept turns (it was over the budget), as the summary must
        see every turn it folds."""
        turns, names = self.state.turns, self.state.names
        if not turns or turns[-1].reply is None:
            return []
        budget = self.state.settings.context_budget_tokens
        prompt = context.prompt_messages(turns[:-1], turns[-1].messages, names, budget)
        history = context.history_messages(turns, names)
        return history if len(history) == len(prompt) + 1 else []

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
        shared = [f for m in messages for f in m.files]
        self.state.shared_files = (self.state.shared_files + shared)[-MAX_SHARED_FILES:]
        payer = messages[-1].user
        verdict = await self._check_budget(payer)
        if verdict.over:
            await self._post(
                texts.over_budget(verdict.over, payer, verdict.limit, self._seconds_to_midnight()),
                f"turn-{self.state.turn_count}-budget",
            )
            telemetry.count_turn("over_budget")
        else:
            used = await self._reply(turn)
            if turn.reply is not None and verdict.charge_user:
                await self._charge(payer, used, "")
        self.state.turns.append(turn)
        self.state.last_activity = self.state.answered_at = workflow.now().timestamp()
        if self.state.assistant is not None and not self.state.title and turn.reply:
            await self._name(turn)

    async def _reply(self, turn: Turn) -> int:
        """The model's answer in the thread, or a short notice there if it cannot be had;
        returns the tokens it used."""
        try:
            reply = await self._reply_within_context(turn.messages)
        except ActivityError as err:
            failure = _failure_type(err)
            workflow.logger.warning("turn %s failed: %s", self.state.turn_count, failure)
            await self._post(texts.turn_failure(failure), f"turn-{self.state.turn_count}-notice")
            telemetry.count_turn("failed")
            return 0
        blocked = reply.stop_reason in inference.BLOCKED
        telemetry.count_turn("blocked" if blocked else "replied")
        turn.reply, turn.stop_reason = reply.text, reply.stop_reason
        turn.reply_ts = reply.parts or [reply.ts]
        turn.input_tokens, turn.output_tokens = reply.input_tokens, reply.output_tokens
        return self._spend(reply)

    async def _answer_again(self, request: RegenerateRequest) -> None:
        """Regenerate: answer the latest turn once more, sampling more freely, and keep only
        the new answer. A failure leaves the old answer in place and tells the clicker."""
        turn, number = self.state.turns[-1], self.state.turn_count
        version = turn.version + 1
        key = f"turn-{number}-regenerate-{version}"
        verdict = await self._check_budget(request.user)
        if verdict.over:
            await self._tell(
                request.user,
                texts.over_budget(
                    verdict.over, request.user, verdict.limit, self._seconds_to_midnight()
                ),
                key,
            )
            return
        prompt = context.prompt_messages(
            self.state.turns[:-1],
            turn.messages,
            self.state.names,
            self.state.settings.context_budget_tokens,
        )
        reply_request = ReplyRequest(
            thread=self.state.thread,
            messages=prompt,
            context_notes=self._notes(prompt),
            idempotency_key=self._key(key),
            recipient_user=request.user,
            inference=self._inference("regenerate"),
            kind="regenerate",
            actions=ReplyRef(self.state.conversation_key, number, version),
            replace_ts=turn.reply_ts,
            cache=self._worth_caching(),
            **self._panel_context(),
        )
        try:
            reply = await self._stream_reply(reply_request, f"regenerate reply {number}")
        except ActivityError as err:
            failure = _failure_type(err)
            workflow.logger.warning("regenerating turn %s failed: %s", number, failure)
            await self._tell(request.user, texts.turn_failure(failure), f"{key}-notice")
            return
        telemetry.count_turn("regenerated")
        turn.version = version
        turn.reply, turn.stop_reason = reply.text, reply.stop_reason
        turn.reply_ts = reply.parts or turn.reply_ts
        turn.input_tokens += reply.input_tokens
        turn.output_tokens += reply.output_tokens
        used = self._spend(reply)
        if verdict.charge_user:
            await self._charge(request.user, used, key)
        self.state.last_activity = workflow.now().timestamp()

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
        prompt = context.prompt_messages(self.state.turns, messages, self.state.names, budget)
        return ReplyRequest(
            thread=self.state.thread,
            messages=prompt,
            context_notes=self._notes(prompt),
            idempotency_key=self._key(f"turn-{self.state.turn_count}-reply"),
            recipient_user=messages[-1].user,
            inference=self._inference("reply"),
            actions=ReplyRef(self.state.conversation_key, self.state.turn_count),
            cache=self._worth_caching(),
            **self._panel_context(),
        )

    def _panel_context(self) -> dict[str, str]:
        """In the assistant panel: the channel in view, and who views it."""
        panel = self.state.assistant
        if panel is None or not panel.context_channel:
            return {}
        return {"context_channel": panel.context_channel, "context_user": panel.user}

    def _notes(self, prompt: list[ChatMessage]) -> str:
        """The summaries, and the files shared earlier that `prompt` no longer shows."""
        return context.context_notes(
            self.state.previous_summary,
            self.state.rolling_summary,
            context.files_left_out(self.state.shared_files, prompt),
        )

    def _worth_caching(self) -> bool:
        """Cache points pay when the next turn comes while the cache holds this prompt (5
        minutes): a conversation whose last turn came sooner than that is taken for one."""
        last = self.state.answered_at
        window = self.state.settings.prompt_cache_seconds
        return not last or workflow.now().timestamp() - last < window

    def _inference(self, kind: str) -> InferenceSettings | None:
        """The conversation's model settings for a call of `kind`; None in conversations from
        before they were carried (the worker's own then apply)."""
        settings = self.state.settings
        if settings.inference is None:
            return None
        if kind == "regenerate":
            return inference.for_regenerate(settings.inference)
        if kind in ("rolling_summary", "final_summary"):
            model = settings.summary_model_id if kind == "final_summary" else ""
            return dataclasses.replace(
                settings.inference,
                model_id=model or settings.inference.model_id,
                system_prompt=SUMMARY_PROMPT,
            )
        return settings.inference

    async def _deliver_reply(self, request: ReplyRequest) -> DeliveredReply:
        """Generate the reply with Bedrock and get it into the thread.

        This is the one place that knows how a reply reaches Slack: streamed by one activity
        as the model writes, or generated and then posted by two.
        """
        if self.state.settings.streaming:
            return await self._stream_reply(request, f"stream reply {self.state.turn_count}")
        generated = await workflow.execute_activity_method(
            BedrockActivities.generate_reply,
            request,
            task_queue=self._bedrock_queue(),
            start_to_close_timeout=timedelta(seconds=self.state.settings.model_timeout_seconds),
            retry_policy=BEDROCK_RETRY,
            summary=f"generate reply {self.state.turn_count}",
        )
        posted = await workflow.execute_activity_method(
            SlackActivities.post_message,
            SlackPost(
                request.thread,
                texts.reply_text(generated.text, generated.stop_reason, generated.notes),
                request.idempotency_key,
                actions=request.actions,
            ),
            start_to_close_timeout=SLACK_TIMEOUT,
            retry_policy=SLACK_RETRY,
            summary=f"post reply {self.state.turn_count}",
        )
        return DeliveredReply(
            text=generated.text,
            input_tokens=generated.input_tokens,
            output_tokens=generated.output_tokens,
            ts=posted.ts,
            stop_reason=generated.stop_reason,
            call=generated.call,
            parts=posted.parts,
        )

    async def _stream_reply(self, request: ReplyRequest, summary: str) -> DeliveredReply:
        return await workflow.execute_activity_method(
            ReplyActivities.stream_reply,
            request,
            task_queue=self._bedrock_queue(),
            start_to_close_timeout=STREAMING_TIMEOUT,
            heartbeat_timeout=timedelta(seconds=10),
            retry_policy=BEDROCK_RETRY,
            summary=summary,
        )

    def _bedrock_queue(self) -> str | None:
        """Model calls' own task queue; None (the workflow's queue) in older conversations."""
        return self.state.settings.bedrock_task_queue or None

    async def _learn_names(self, messages: list[UserMessage]) -> None:
        """Look up display names of new speakers, so the model sees who said what."""
        unknown = sorted({m.user for m in messages} - set(self.state.names))
        if not unknown:
            return
        lookup = (
            workflow.execute_local_activity_method
            if self._patched(LEAN_FIRST_TURN)
            else workflow.execute_activity_method
        )
        try:
            names = await lookup(
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
        """Fold the oldest turns into the rolling summary once they outgrow the budget.

        With prompt caching, folds go deeper (to a quarter of the budget, not half): every
        fold rewrites the cached prompt, and between folds each turn reads it back at a tenth
        of the price. The summary is asked of the conversation itself, after its own turns,
        which the model reads back from the cache too.
        """
        budget = self.state.settings.context_budget_tokens
        cached_folds = self._patched(CACHED_FOLDS)
        count = context.turns_to_fold(
            self.state.turns, self.state.names, budget, budget // 4 if cached_folds else None
        )
        if count:
            try:
                summary = await self._summarize(
                    self.state.turns[:count], final=False, continuation=cached_folds
                )
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

    async def _summarize(
        self, turns: list[Turn], *, final: bool, continuation: bool = False
    ) -> str:
        request = SummaryRequest(
            earlier_summary=self.state.rolling_summary,
            turns=turns,
            names=self.state.names,
            final=final,
            inference=self._inference("final_summary" if final else "rolling_summary"),
        )
        conversation = self._last_exchange_continued() if continuation else []
        if conversation:
            request.inference = self._inference("reply")
            request.conversation = conversation
            request.context_notes = context.context_notes(
                self.state.previous_summary, self.state.rolling_summary
            )
            request.cache = self._worth_caching()
        summary = await workflow.execute_activity_method(
            BedrockActivities.summarize_conversation,
            request,
            task_queue=self._bedrock_queue(),
            start_to_close_timeout=timedelta(seconds=self.state.settings.model_timeout_seconds),
            retry_policy=BEDROCK_RETRY,
            summary="final summary" if final else "rolling summary",
        )
        self._spend(summary)
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
        if summary_ts and requested_by and self._patched("tell-who-ended-it"):
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
            feedback=self.state.feedback,
            cache_read_tokens=self.state.cache_read_tokens,
            cache_write_tokens=self.state.cache_write_tokens,
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
        if not self._patched("token-budgets"):
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
                    limits=self.state.settings.token_limits,
                ),
                start_to_close_timeout=BUDGET_TIMEOUT,
                retry_policy=BUDGET_RETRY,
                summary="check token budget",
            )
        except ActivityError as err:
            workflow.logger.warning("token budget check failed: %s", _failure_type(err))
            return BudgetVerdict()

    async def _charge(self, user: str, tokens: int, what: str) -> None:
        """Charge `user` for the current turn (`what` names a regenerate of it)."""
        try:
            await workflow.execute_local_activity_method(
                BudgetActivities.charge_tokens,
                TokenCharge(
                    team=self.state.thread.team,
                    user=user,
                    day=self.state.budget_day,
                    tokens=tokens,
                    key=self._key(what or f"turn-{self.state.turn_count}"),
                ),
                start_to_close_timeout=BUDGET_TIMEOUT,
                retry_policy=BUDGET_RETRY,
                summary="charge tokens",
            )
        except ActivityError as err:
            workflow.logger.warning("could not charge tokens: %s", _failure_type(err))

    def _spend(self, result: DeliveredReply | Summary) -> int:
        """Count what a model call cost the conversation; returns the tokens it used, prompt
        tokens read from or written to the cache included."""
        call = result.call
        read, written = (call.cache_read_tokens, call.cache_write_tokens) if call else (0, 0)
        self.state.input_tokens += result.input_tokens
        self.state.output_tokens += result.output_tokens
        self.state.cache_read_tokens += read
        self.state.cache_write_tokens += written
        used = result.input_tokens + result.output_tokens + read + written
        self._roll_day()
        self.state.day_tokens += used
        return used

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

    # -- The assistant panel -----------------------------------------------------------------

    def _greeting_due(self) -> bool:
        return self.state.assistant is not None and not self.state.greeted

    async def _greet(self) -> None:
        """Greet whoever opened the panel, with prompts for the channel they are viewing."""
        self.state.greeted = True
        panel = self.state.assistant
        try:
            await workflow.execute_activity_method(
                SlackActivities.greet,
                AssistantGreeting(
                    thread=self.state.thread,
                    user=panel.user,
                    context_channel=panel.context_channel,
                    idempotency_key=self._key("greeting"),
                ),
                start_to_close_timeout=SLACK_TIMEOUT,
                retry_policy=SLACK_RETRY,
                summary="greet",
            )
        except ActivityError as err:
            workflow.logger.warning("could not greet: %s", _failure_type(err))

    async def _name(self, turn: Turn) -> None:
        """Title the panel's thread after its first answer; the title is also a search
        attribute, so operators see it. A nicety: failing it changes nothing else."""
        try:
            named = await workflow.execute_activity_method(
                BedrockActivities.name_conversation,
                TitleRequest(
                    thread=self.state.thread,
                    question=context.user_turn_text(turn.messages, self.state.names),
                    answer=turn.reply or "",
                    inference=self._inference("rolling_summary"),
                ),
                task_queue=self._bedrock_queue(),
                start_to_close_timeout=timedelta(seconds=self.state.settings.model_timeout_seconds),
                retry_policy=RetryPolicy(maximum_attempts=3),
                summary="write a title",
            )
            self._spend(named)
            await workflow.execute_activity_method(
                SlackActivities.set_title,
                ThreadTitle(self.state.thread, named.text),
                start_to_close_timeout=SLACK_TIMEOUT,
                retry_policy=RetryPolicy(maximum_attempts=3),
                summary="set the title",
            )
        except ActivityError as err:
            workflow.logger.warning("could not title the thread: %s", _failure_type(err))
            return
        self.state.title = named.text
        workflow.upsert_search_attributes([CONVERSATION_TITLE.value_set(named.text)])

    async def _tell(self, user: str, text: str, key: str) -> None:
        """A note only `user` sees in the thread; best effort."""
        try:
            await workflow.execute_activity_method(
                SlackActivities.post_private,
                PrivateNote(thread=self.state.thread, user=user, text=text),
                start_to_close_timeout=SLACK_TIMEOUT,
                retry_policy=RetryPolicy(maximum_attempts=3),
                summary=f"tell {key}",
            )
        except ActivityError as err:
            workflow.logger.warning("could not tell %s: %s", key, _failure_type(err))

    def _regenerate_refusal(self, request: RegenerateRequest) -> str:
        """Why `request` may not regenerate (a texts.REGENERATE_REFUSED key), or ""."""
        state = self.state
        latest = state.turns[-1] if state.turns else None
        if state.end_request is not None:
            return "Ending"
        if request.user not in state.participants:
            return "NotParticipant"
        reply = request.reply
        if (
            latest is None
            or latest.reply is None
            or reply.conversation_key != state.conversation_key
            or reply.turn != state.turn_count
        ):
            return "NotLatest"
        if state.regenerate is not None or reply.version != latest.version:
            return "AlreadyRegenerating"
        return ""

    def _join(self, user: str) -> None:
        if user not in self.state.participants:
            self.state.participants.append(user)
            self._note_participants()

    def _note_participants(self) -> None:
        """Keep the SlackParticipants search attribute current. The bot starts a
        conversation with its first writer there already: writing the same list again
        would only cost the server a visibility update per new conversation."""
        participants = list(self.state.participants)
        noted = workflow.info().typed_search_attributes.get(SLACK_PARTICIPANTS)
        if noted == participants and self._patched(LEAN_FIRST_TURN):
            return
        workflow.upsert_search_attributes([SLACK_PARTICIPANTS.value_set(participants)])

    def _patched(self, patch_id: str) -> bool:
        """workflow.patched(), with one marker for all of PATCHES_SO_FAR in new runs."""
        if patch_id not in _SO_FAR:
            return workflow.patched(patch_id)
        if self._patches_so_far is None:
            self._patches_so_far = workflow.patched(PATCHES_SO_FAR)
        return self._patches_so_far or workflow.patched(patch_id)

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
                and self._patched("history-size-cap")
            )
        )
