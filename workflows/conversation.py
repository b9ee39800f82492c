"""The conversation workflow: one Slack thread, from the first mention to its summary.

`run` is the story: open, then answer each batch of messages (or regenerate, or greet)
until someone ends the conversation or the thread goes quiet, then summarise. How a turn is
answered lives in `workflows.turn`; the activities it calls, in `workflows.steps`.
"""

from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ApplicationError

# The turn and its steps are deterministic workflow code with no state of their own: passed
# through, they are imported once per worker instead of once per conversation (the sandbox
# re-imports what it loads for every new workflow). tests/test_workflow_code.py guards them.
with workflow.unsafe.imports_passed_through():
    from threadchat import context, dedupe, telemetry, texts
    from threadchat.model import (
        ApprovalDecision,
        AssistantGreeting,
        AssistantThread,
        ConversationResult,
        ConversationStart,
        ConversationState,
        ConversationStatus,
        EndRequest,
        Feedback,
        MessageRevision,
        RegenerateRequest,
        StopRequest,
        ThreadRead,
        Turn,
        UserMessage,
    )
    from threadchat.temporal import CONVERSATION_STARTED, SLACK_PARTICIPANTS
    from workflows import steps
    from workflows.turn import Responder

# Continue as new well before Temporal's 4 MiB suggestion when turns are large.
HISTORY_SIZE_CAP = 2 * 1024 * 1024
# Ratings kept in the state (the newest); counts in metrics are not bounded by it.
MAX_FEEDBACK = 200
# Ends that no participant asks for: a quiet thread, an operator's signal.
ENDED_BY_NOBODY = {"inactivity", "operator"}
# Stop clicks remembered, so that Slack's retry of one stops nothing else.
MAX_STOPS_SEEN = 20
# Messages kept for the next answer without being answered (the newest).
MAX_ASIDE = 50
# The part of the context budget the thread's earlier messages may fill.
THREAD_SHARE = 4


# Under Worker Versioning a conversation is Pinned to the build it started on (the worker's
# default behaviour; the server refuses one named here from an unversioned worker), and
# moves to the current build only at a continue-as-new (docs/upgrading.md).
@workflow.defn
class ConversationWorkflow:
    """One Slack thread's conversation: answer each message with the conversation so far as
    context, and end with a summary on /endchat or after a quiet spell."""

    @workflow.init
    def __init__(self, start: ConversationStart) -> None:
        # Signals can arrive before run() starts, so the state exists from the first moment.
        self.state = start.state or ConversationState(thread=start.thread)
        self.responder = Responder(self.state)

    @workflow.run
    async def run(self, start: ConversationStart) -> ConversationResult:
        if self.state.settings is None:
            await self._open()
            if not (self.state.pending or self.state.assistant):
                return self._result("", "refused")  # only a refused guest asked
        while True:
            if self._history_is_long():
                await workflow.wait_condition(workflow.all_handlers_finished)
                self._continue_as_new(self.state)
            if not await self._wait_for_work_or_silence():
                self.end(EndRequest(requested_by="", via="inactivity"))
            if self.state.end_request is not None:
                return await self._close()
            if self._greeting_due():
                await self._greet()
            elif self.state.regenerate is not None:
                # Kept until done: a click meanwhile is refused as already regenerating.
                await self.responder.answer_again(self.state.regenerate)
                self.state.regenerate = None
            elif self.state.pending:  # else people wrote among themselves: kept, not answered
                await self.responder.answer(self._take_pending())
                await self.responder.fold_old_turns()

    # -- Messages from the bot -----------------------------------------------------------

    @workflow.signal
    def user_message(self, message: UserMessage) -> None:
        """A message in the thread. Repeats (Slack retries, double delivery) are ignored."""
        if self.state.end_request is not None and not message.may_start:
            return  # the conversation is over; only a new mention starts another
        if self._refuses(message):
            return
        if not dedupe.remember(self.state.seen_ts, message.ts):
            return
        if self.state.end_request is not None:
            self.state.next_conversation.append(message)
            return
        if message.app:
            self._set_aside(message)  # another app's post: context, never a turn
            return
        if self.state.assistant is not None and message.text.strip() == texts.END_PROMPT:
            self.end(EndRequest(requested_by=message.user, via="prompt"))
            return
        self.state.last_activity = workflow.now().timestamp()
        if message.user not in self.state.participants and self.state.participants:
            self._switch_to_mentions()
        self._join(message.user)
        if self._answers(message):
            self.state.pending.append(message)
        else:
            self._set_aside(message)

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
            self.state.assistant.context_message_ts = changed.context_message_ts

    @workflow.signal
    def viewing_changed(self, changed: AssistantThread) -> None:
        """In the agent messaging experience (app_context_changed): what a participant views
        now. A thread its user started by writing is never greeted."""
        if changed.user not in self.state.participants:
            return
        if self.state.assistant is None:
            self.state.assistant = changed
            self.state.greeted = True
        else:
            self.state.assistant.user = changed.user
            self.state.assistant.context_channel = changed.context_channel
            self.state.assistant.context_message_ts = changed.context_message_ts

    @workflow.signal
    def revise(self, revision: MessageRevision) -> None:
        """A message was edited or deleted in Slack: the conversation keeps what the thread
        shows now. An edit is not answered again; a deleted message leaves the prompt, the
        kept turns and every summary still to be written."""
        state = self.state
        turns = state.turns + [t for t in [self.responder.current] if t is not None]
        if revision.text is not None:
            for message in state.pending + state.aside + [m for t in turns for m in t.messages]:
                if message.ts == revision.ts and message.user == revision.user:
                    message.text = revision.text
            return
        state.pending = [m for m in state.pending if m.ts != revision.ts]
        state.aside = [m for m in state.aside if m.ts != revision.ts]
        for turn in turns:
            turn.messages = [m for m in turn.messages if m.ts != revision.ts]
        # A turn whose every message was deleted goes with its answer, which would tell it.
        state.turns = [t for t in state.turns if t.messages]
        if revision.ts in state.folded_ts:
            # The rolling summary cannot be rewritten without the turns it folded, which are
            # gone: it goes, so the deleted words never reach a prompt or a summary again.
            state.rolling_summary = ""

    @workflow.signal
    def stop(self, request: StopRequest) -> None:
        """Stop clicked on the thread's agent session: the answer being written stops where
        it is. Only a participant may stop it; Slack's retry of the event stops once."""
        if request.user not in self.state.participants:
            workflow.logger.warning("ignored a Stop from a non-participant")
            return
        if dedupe.remember(self.state.stops_seen, request.event_id, MAX_STOPS_SEEN):
            self.responder.stop(request)

    @workflow.signal
    def end(self, request: EndRequest) -> None:
        """End the conversation: only a participant may (or silence, or an operator), so no
        path into the workflow can skip the check. The first request counts."""
        if (
            request.via not in ENDED_BY_NOBODY
            and request.requested_by not in self.state.participants
        ):
            workflow.logger.warning("ignored an end request from a non-participant")
            return
        if self.state.end_request is None:
            self.state.end_request = request

    @workflow.update
    async def regenerate(self, request: RegenerateRequest) -> None:
        """Answer the latest turn again, in place of its reply (the Regenerate button)."""
        if self._still_answering(request):
            # Clicked as the answer finished, before the turn was recorded: after it.
            await workflow.wait_condition(lambda: not self._still_answering(request))
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

    @workflow.update
    def decide(self, decision: ApprovalDecision) -> None:
        """Approve or Deny clicked on a tool call waiting for approval. The decision, who
        and when, is in the history (this update's acceptance)."""
        self._may_decide(decision)
        self.responder.decisions[decision.key] = decision

    @decide.validator
    def _may_decide(self, decision: ApprovalDecision) -> None:
        """Only the asker decides, once: anyone else's click, a double click or Slack's
        retry is refused and never reaches the history."""
        refusal = self.responder.approval_refusal(decision)
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
            title=self.state.title,
            kept=len(self.state.aside),
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
        setup = await steps.open_conversation(thread, look_back)
        self.state.settings = setup.settings
        # Messages that came before the settings did are checked now.
        refused = [m for m in self.state.pending if self._refuses(m)]
        self.state.pending = [m for m in self.state.pending if m not in refused]
        for user in {m.user for m in refused} - {m.user for m in self.state.pending}:
            self.state.participants.remove(user)
        self.state.previous_summary = self.state.previous_summary or setup.previous_summary
        self.state.conversation_key = workflow.info().run_id
        self.state.started_at = workflow.now().timestamp()
        # Messages that came before the settings did learn now whether they are answered.
        if len(self.state.participants) > 1:
            self._switch_to_mentions()
        waiting, self.state.pending = self.state.pending, []
        for message in waiting:
            if self._answers(message):
                self.state.pending.append(message)
            else:
                self._set_aside(message)
        await self._read_thread()

    async def _read_thread(self) -> None:
        """A mention inside a thread people were already having: read what they said, once,
        so the first answer knows what is being talked about. A mention that is the thread's
        root (or the panel's first message) has nothing before it, and costs no read."""
        state = self.state
        first = state.pending[0] if state.pending else None
        if first is None or first.ts == state.thread.thread_ts or state.assistant is not None:
            return
        budget = state.settings.context_budget_tokens // THREAD_SHARE
        state.thread_context = await steps.read_thread(ThreadRead(state.thread, first.ts, budget))
        if state.thread_context.unread:
            partly = bool(state.thread_context.quotes)
            state.notice = texts.THREAD_PARTLY_UNREAD if partly else texts.THREAD_UNREAD

    async def _wait_for_work_or_silence(self) -> bool:
        """Wait for new messages, a regenerate or an end request; False when the thread went
        quiet."""
        workflow.set_current_details(f"Waiting for messages after turn {self.state.turn_count}.")
        since = self.state.last_activity
        try:
            await workflow.wait_condition(
                lambda: (
                    bool(self.state.pending)
                    # People writing among themselves keep the conversation from going quiet.
                    or self.state.last_activity > since
                    or self.state.end_request is not None
                    or self.state.regenerate is not None
                    or self._greeting_due()
                ),
                timeout=timedelta(seconds=self.state.settings.inactivity_timeout_seconds),
                timeout_summary="inactivity",
            )
        except TimeoutError:
            return bool(self.state.pending)  # a message that came with the timer still counts
        return True

    def _take_pending(self) -> list[UserMessage]:
        messages, self.state.pending = self.state.pending, []
        return messages

    async def _close(self) -> ConversationResult:
        """Write the summary into the thread and finish with the transcript."""
        workflow.set_current_details("Ending: writing the summary.")
        state = self.state
        unanswered = state.aside + self._take_pending()
        state.aside = []
        if unanswered:
            state.turns.append(Turn(messages=unanswered, reply=None))
        summary = await self.responder.final_summary()
        summary_ts = await steps.post(
            state.thread,
            texts.summary_message(
                summary,
                ended_by=state.end_request.via,
                participants=[context.speaker(u, state.names) for u in state.participants],
                turns=state.turn_count,
                duration_seconds=workflow.now().timestamp() - state.started_at,
            ),
            self.responder.key("summary"),
            "summary",
            list(state.participants),
            session_status="closed",
        )
        requested_by = state.end_request.requested_by
        if summary_ts and requested_by:
            await steps.tell_who_ended_it(state.thread, requested_by, summary_ts)
        if state.next_conversation:
            self._open_next_conversation(summary)
        return self._result(summary, state.end_request.via)

    def _result(self, summary: str, ended_by: str) -> ConversationResult:
        state = self.state
        return ConversationResult(
            thread=state.thread,
            summary=summary,
            rolling_summary=state.rolling_summary,
            transcript=state.turns,
            turn_count=state.turn_count,
            participants=state.participants,
            ended_by=ended_by,
            input_tokens=state.input_tokens,
            output_tokens=state.output_tokens,
            feedback=state.feedback,
            cache_read_tokens=state.cache_read_tokens,
            cache_write_tokens=state.cache_write_tokens,
        )

    def _open_next_conversation(self, summary: str) -> None:
        """Someone mentioned the bot while this conversation was closing: rather than lose
        that message, go on as a new conversation that knows this one's summary."""
        messages = self.state.next_conversation
        participants = list(dict.fromkeys(m.user for m in messages))
        self._continue_as_new(
            ConversationState(
                thread=self.state.thread,
                previous_summary=summary,
                participants=participants,
                seen_ts=self.state.seen_ts,
                pending=messages,
            ),
            search_attributes=workflow.info().typed_search_attributes.updated(
                SLACK_PARTICIPANTS.value_set(participants),
                CONVERSATION_STARTED.value_set(workflow.now()),
            ),
        )

    def _continue_as_new(self, state: ConversationState, **options) -> None:
        # A Pinned conversation moves to the current worker build here (docs/upgrading.md).
        workflow.continue_as_new(
            ConversationStart(state.thread, state),
            initial_versioning_behavior=workflow.ContinueAsNewVersioningBehavior.AUTO_UPGRADE,
            **options,
        )

    def _history_is_long(self) -> bool:
        info = workflow.info()
        return (
            info.is_continue_as_new_suggested()
            or info.get_current_history_length() >= self.state.settings.history_event_cap
            or info.get_current_history_size() >= HISTORY_SIZE_CAP
        )

    # -- The assistant panel -----------------------------------------------------------------

    def _greeting_due(self) -> bool:
        return self.state.assistant is not None and not self.state.greeted

    async def _greet(self) -> None:
        """Greet whoever opened the panel, with prompts for the channel they are viewing."""
        self.state.greeted = True
        panel = self.state.assistant
        await steps.greet(
            AssistantGreeting(
                thread=self.state.thread,
                user=panel.user,
                context_channel=panel.context_channel,
                idempotency_key=self.responder.key("greeting"),
            )
        )

    # -- Who takes part ------------------------------------------------------------------------

    def _still_answering(self, request: RegenerateRequest) -> bool:
        """Whether `request` is for the turn being answered: Slack shows the buttons when
        the answer ends, a moment before the workflow has recorded the turn."""
        reply = request.reply
        return (
            self.responder.current is not None
            and reply.conversation_key == self.state.conversation_key
            and reply.turn == self.state.turn_count
        )

    def _regenerate_refusal(self, request: RegenerateRequest) -> str:
        """Why `request` may not regenerate (a texts.REGENERATE_REFUSED key), or ""."""
        state = self.state
        latest = state.turns[-1] if state.turns else None
        if state.end_request is not None:
            return "Ending"
        if request.user not in state.participants:
            return "NotParticipant"
        if self._still_answering(request):
            return ""  # the update waits for the turn, then checks again
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

    def _answers(self, message: UserMessage) -> bool:
        """Whether a message is answered, or kept as context for the next answer. A mention
        always is, and so is everything in a DM or the assistant panel."""
        state, settings = self.state, self.state.settings
        if settings is None:
            return True  # _open decides once the settings are here
        if message.may_start or state.thread.channel.startswith("D") or state.assistant:
            return True
        mode = settings.reply_mode
        return mode == "always" or (mode == "auto" and not state.mentions_only)

    def _switch_to_mentions(self) -> None:
        """A second person wrote in a channel thread: under "auto", from now on only
        mentions are answered, and the next answer says so."""
        state, settings = self.state, self.state.settings
        if settings is None or state.mentions_only or settings.reply_mode != "auto":
            return
        if state.thread.channel.startswith("D") or state.assistant is not None:
            return
        state.mentions_only = True
        state.notice = texts.join_notes(state.notice, texts.MENTIONS_ONLY)

    def _set_aside(self, message: UserMessage) -> None:
        self.state.aside = (self.state.aside + [message])[-MAX_ASIDE:]

    def _refuses(self, message: UserMessage) -> bool:
        """A Slack Connect guest's message, where guests may not take part. Before the
        conversation has its settings it waits in `pending`, and _open decides."""
        guest = bool(message.team) and message.team != self.state.thread.team
        settings = self.state.settings
        return guest and settings is not None and not settings.allow_external_users

    def _join(self, user: str) -> None:
        """Keep the SlackParticipants search attribute current. The bot starts a
        conversation with its first writer there already: writing the same list again
        would only cost the server a visibility update per new conversation."""
        if user in self.state.participants:
            return
        self.state.participants.append(user)
        participants = list(self.state.participants)
        if workflow.info().typed_search_attributes.get(SLACK_PARTICIPANTS) != participants:
            workflow.upsert_search_attributes([SLACK_PARTICIPANTS.value_set(participants)])
