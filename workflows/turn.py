"""A turn: from the messages to answer to the reply in the thread, and what it cost.

The one place that knows how a model call becomes a reply in Slack: a turn's answer, a
regenerate, the rolling and final summaries and the title. Workflow code, deterministic: the
conversation drives it, and its only I/O is the activities in `steps`.
"""

import contextlib
import dataclasses
from asyncio import gather
from datetime import UTC, datetime, timedelta

from temporalio import exceptions, workflow
from temporalio.exceptions import ActivityError

from workflows import steps

with workflow.unsafe.imports_passed_through():
    from activities.bedrock import CONTEXT_OVERFLOW, SUMMARY_PROMPT
    from threadchat import context, inference, telemetry, texts, tools, turn_size
    from threadchat.model import (
        ApprovalDecision,
        ApprovalRequest,
        BudgetCheck,
        BudgetVerdict,
        ChatMessage,
        ConversationState,
        DeliveredReply,
        GeneratedReply,
        InferenceSettings,
        Memory,
        MemoryLookup,
        RegenerateRequest,
        ReplyRef,
        ReplyRequest,
        SlackPost,
        StoppedReply,
        StopRequest,
        Summary,
        SummaryRequest,
        ThreadTitle,
        TitleRequest,
        TokenCharge,
        ToolCall,
        ToolCatalog,
        ToolCatalogRequest,
        ToolOutcome,
        ToolRound,
        ToolSpec,
        ToolUse,
        Turn,
        UserMessage,
    )
    from threadchat.temporal import CONVERSATION_TITLE

# Built-in tools whose results are cited under the answer.
SLACK_SEARCH = "slack_search"  # the one built-in that runs as the asker, with their token
SEARCHES = ("knowledge", SLACK_SEARCH)
# Slack may stop an answer's stream before its agent_session_stopped event arrives: how long
# the stopped answer waits for the event, to say who stopped it.
STOP_EVENT_WAIT = timedelta(seconds=10)
# If rolling summaries keep failing, verbatim turns beyond this many budgets are dropped, so
# the carried state stays small (continue-as-new fails for good past 2 MiB).
MAX_KEPT_BUDGETS = 4
# Messages remembered as folded into the rolling summary, so deleting one drops it; a day of
# a busy thread.
MAX_FOLDED_TS = 2000
# Files of the conversation remembered by name, for the note once they are out of the prompt.
MAX_SHARED_FILES = 100


class Responder:
    """Answers a conversation's turns. It keeps no state of its own: everything lives in the
    conversation's `ConversationState`, which continue-as-new carries."""

    def __init__(self, state: ConversationState) -> None:
        self.state = state
        # The turn being answered: not yet in state.turns, still open to edits and deletions.
        self.current: Turn | None = None
        # While a turn or a regenerate runs: the calls under way (the model's, tools'), and
        # a Stop for them.
        self.busy = False
        self.in_flight: list[workflow.ActivityHandle] = []
        self.stop_request: StopRequest | None = None
        # Tool calls waiting for approval this turn, and the decisions, by idempotency key.
        self.approvals: dict[str, ApprovalRequest] = {}
        self.decisions: dict[str, ApprovalDecision] = {}
        self.round_tokens = 0  # what the turn's tool rounds cost before its answer
        # The asker's Slack action token (a search sees what they may see), taken when the
        # turn starts: messages deleted meanwhile must not hand a search someone else's.
        self.action_token = ""

    def stop(self, request: StopRequest) -> None:
        """Stop clicked: the answer being written stops where it is. With nothing running
        it changes nothing (Slack shows Stop only while a turn is processed, but a click
        and the answer's end can cross)."""
        if not self.busy or self.stop_request is not None:
            return
        self.stop_request = request
        for handle in self.in_flight:
            handle.cancel()

    def key(self, name: str) -> str:
        """An idempotency key unique to this conversation (a thread can host several)."""
        return f"{self.state.conversation_key}:{name}"

    # -- A turn -------------------------------------------------------------------------------

    async def answer(self, messages: list[UserMessage]) -> None:
        """Answer everything that arrived since the last turn as one turn, unless the day's
        token allowance is used up. The turn is charged to whoever wrote last: the reply
        answers them."""
        state = self.state
        state.turn_count += 1
        workflow.set_current_details(f"Answering turn {state.turn_count}.")
        # What was kept unanswered since the last turn comes first, as it came first.
        messages, state.aside = state.aside + messages, []
        fitted = turn_size.fit_turn(messages)
        messages = fitted.messages
        notes = texts.join_notes(
            texts.turn_size_note(fitted.messages_left_out, fitted.files_left_out, fitted.cut_short),
            state.notice,
        )
        state.notice = ""
        await self._learn_names(messages)
        turn = self.current = Turn(messages=messages, reply=None)
        asker = messages[-1].user
        tokens = (m.action_token for m in reversed(messages) if m.user == asker and m.action_token)
        self.action_token = next(tokens, "")
        shared = [f for m in messages for f in m.files]
        state.shared_files = (state.shared_files + shared)[-MAX_SHARED_FILES:]
        payer, key = messages[-1].user, f"turn-{state.turn_count}"
        self.busy = True
        verdict = await self._check_budget(payer, key)
        if verdict.over == "rate":
            await self._tell(payer, texts.too_fast(verdict.limit), f"{key}-rate")
            telemetry.count_turn("rate_limited")
        elif verdict.over:
            await self._post(self._over_budget(verdict, payer), f"{key}-budget")
            telemetry.count_turn("over_budget")
        else:
            used = await self._reply(turn, notes)
            await self._settle(payer, verdict, used, key)
        self.current, self.busy, self.stop_request = None, False, None
        self.approvals, self.decisions, self.action_token = {}, {}, ""
        if turn.messages:  # else every message was deleted while it was answered
            # Only this turn's search could use Slack's action tokens, which soon expire:
            # the state that continue-as-new carries, and the transcript, keep none.
            for message in turn.messages:
                message.action_token = ""
            state.turns.append(turn)
        state.last_activity = state.answered_at = workflow.now().timestamp()
        if state.assistant is not None and not state.title and turn.reply:
            await self._name(turn)
        elif state.turn_count == 1 and state.assistant is None and turn.messages:
            self._keep_title(texts.question_title(turn.messages[0].text))

    async def _reply(self, turn: Turn, notes: str) -> int:
        """The model's answer in the thread (with `notes` under it), or a short notice there
        if it cannot be had; returns the tokens it used."""
        number = self.state.turn_count
        self.round_tokens = 0
        try:
            reply = await self._reply_within_context(turn.messages, notes)
        except ActivityError as err:
            if self.stop_request is not None:
                reply = _stopped_before_it_said(err)
            else:
                reply = None
                failure = steps.failure_type(err)
        if reply is None:
            workflow.logger.warning("turn %s failed: %s", number, failure)
            await self._post(texts.turn_failure(failure), f"turn-{number}-notice")
            telemetry.count_turn("failed")
            return self.round_tokens
        if reply.stop_reason == inference.STOPPED:
            await self._mark_stopped(turn, reply)
            telemetry.count_turn("stopped")
            return self._spend(reply) + self.round_tokens
        telemetry.count_turn("blocked" if reply.stop_reason in inference.BLOCKED else "replied")
        turn.reply, turn.stop_reason = reply.text, reply.stop_reason
        turn.reply_ts = reply.parts or [reply.ts]
        turn.input_tokens, turn.output_tokens = reply.input_tokens, reply.output_tokens
        return self._spend(reply) + self.round_tokens

    async def _reply_within_context(
        self, messages: list[UserMessage], notes: str
    ) -> DeliveredReply:
        """Reply with as much recent context as the budget allows; on overflow, once more
        with a quarter of it."""
        budget = self.state.settings.context_budget_tokens
        memories = await self._memories(messages[-1].user)
        try:
            return await self._deliver(self._reply_request(messages, budget, notes, memories))
        except ActivityError as err:
            if steps.failure_type(err) != CONTEXT_OVERFLOW:
                raise
            workflow.logger.warning("context overflow; retrying with a smaller window")
            request = self._reply_request(messages, budget // 4, notes, memories)
            return await self._deliver(request)

    async def _memories(self, user: str) -> list[Memory]:
        """What the asker asked the bot to remember, where the channel has the `memory`
        tools: theirs alone, for their own turns."""
        if "memory" not in self.state.settings.tool_servers:
            return []
        return await steps.memories_of(MemoryLookup(self.state.thread.team, user))

    def _reply_request(
        self, messages: list[UserMessage], budget: int, notes: str, memories: list[Memory]
    ) -> ReplyRequest:
        state = self.state
        budget -= self._thread_tokens()
        prompt = context.prompt_messages(state.turns, messages, state.names, budget)
        return ReplyRequest(
            thread=state.thread,
            messages=prompt,
            context_notes=self._notes(prompt),
            idempotency_key=self.key(f"turn-{state.turn_count}-reply"),
            recipient_user=messages[-1].user,
            inference=self._inference("reply"),
            actions=ReplyRef(state.conversation_key, state.turn_count),
            cache=self._worth_caching(),
            notes=notes,
            participants=list(state.participants),
            thread_context=state.thread_context,
            session_title=self._session_title(messages),
            memories=memories,
            **self._panel_context(),
        )

    def _session_title(self, messages: list[UserMessage]) -> str:
        """A thread's session is titled by its first question, with its first status: no
        model call, no call of its own. The panel's gets a written title (`_name`)."""
        state = self.state
        if state.title or state.assistant is not None or state.turn_count > 1:
            return ""
        return texts.question_title(messages[0].text)

    async def _deliver(self, request: ReplyRequest) -> DeliveredReply:
        """Get the model's reply into the thread: streamed by one activity as the model
        writes, or generated and then posted by two. In between, the tool rounds the model
        asks for; one answer message however many there are."""
        settings = self.state.settings
        catalog = await self._catalog(request.recipient_user)
        request.tools, request.rounds = catalog.tools, []
        if catalog.unavailable:
            request.notes = texts.join_notes(
                request.notes, texts.tools_unavailable(catalog.unavailable)
            )
        said: list[str] = []
        while True:
            reply = await self._model_round(request)
            if reply.stop_reason == inference.STOPPED:
                return reply  # its text is what the message showed, earlier rounds' too
            said.append(reply.text)
            if not reply.tool_uses:
                break
            self.round_tokens += self._spend(reply)
            results = await self._run_tools(reply.tool_uses, request)
            request.rounds.append(ToolRound(reply.text, reply.tool_uses, results))
            self._cite(request)
            if settings.streaming:
                request.stream_ts, request.shown = reply.ts, reply.shown
                request.stream_mode = reply.mode
            request.last_round = len(request.rounds) >= settings.max_tool_rounds
            if self.stop_request is not None:
                return self._stopped_between_rounds(request, said)
        text = "\n\n".join(t for t in said if t.strip()) or reply.text
        if settings.streaming:
            reply.text = text
            return reply
        used = [t for r in request.rounds for t in r.uses]
        notes = texts.join_notes(
            reply.notes,
            texts.sources_line(request.sources, text, request.cited_by_number),
            texts.tools_used(_tool_titles(used, request.tools)),
        )
        posted = await steps.post_message(
            SlackPost(
                request.thread,
                texts.reply_text(text, reply.stop_reason, notes),
                request.idempotency_key,
                actions=request.actions,
                participants=request.participants,
                session_status="active",
            ),
            f"post reply {self.state.turn_count}",
        )
        return DeliveredReply(
            text=text,
            input_tokens=reply.input_tokens,
            output_tokens=reply.output_tokens,
            ts=posted.ts,
            stop_reason=reply.stop_reason,
            call=reply.call,
            parts=posted.parts,
        )

    async def _model_round(self, request: ReplyRequest) -> DeliveredReply | GeneratedReply:
        settings, number = self.state.settings, self.state.turn_count
        which = f" round {len(request.rounds) + 1}" if request.rounds else ""
        if settings.streaming:
            streaming = steps.stream_reply(settings, request, f"stream reply {number}{which}")
            return await self._stoppable(streaming)
        return await self._stoppable(
            steps.generate_reply(settings, request, f"generate reply {number}{which}")
        )

    def _stopped_between_rounds(self, request: ReplyRequest, said: list[str]) -> DeliveredReply:
        """Stop while tools ran: the answer's open message keeps what it showed."""
        return DeliveredReply(
            text="\n\n".join(t for t in said if t.strip()),
            input_tokens=0,
            output_tokens=0,
            ts=request.stream_ts,
            stop_reason=inference.STOPPED,
            parts=[request.stream_ts] if request.stream_ts else [],
            shown=request.shown,
        )

    # -- Tools --------------------------------------------------------------------------------

    @staticmethod
    def _cite(request: ReplyRequest) -> None:
        """The searches' sources so far, for under the answer, once each."""
        searches = [
            r
            for done in request.rounds
            for r in done.results
            if r.sources and _server_of(r, done, request) in SEARCHES
        ]
        unique = {s.url: s for r in searches for s in r.sources}
        request.sources = list(unique.values())
        request.cited_by_number = len(searches) == 1

    async def _catalog(self, user: str) -> ToolCatalog:
        """The tools this conversation's channel may use; none without a tools file, at no
        cost."""
        state = self.state
        if not state.settings.tool_servers:
            return ToolCatalog()
        return await steps.list_tools(
            state.settings,
            ToolCatalogRequest(state.thread, user),
            state.settings.tool_servers,
        )

    async def _run_tools(self, uses: list[ToolUse], request: ReplyRequest) -> list[ToolOutcome]:
        """One round's calls, at once; each waits for the asker's approval first if its
        server says so. Whatever happens, each call has an outcome to tell the model."""
        specs = tools.tools_by_model_name(request.tools)
        number, round_number = self.state.turn_count, len(request.rounds) + 1

        async def run(use: ToolUse) -> ToolOutcome:
            spec = specs.get(use.name)
            if spec is None:
                return ToolOutcome(use.tool_use_id, "error", texts.NO_SUCH_TOOL)
            call = ToolCall(
                tool_use_id=use.tool_use_id,
                server=spec.server,
                name=spec.name,
                arguments=use.input,
                idempotency_key=self.key(f"turn-{number}-tool-{use.tool_use_id}"),
                thread=self.state.thread,
                user=request.recipient_user,
                action_token=self.action_token if spec.server == SLACK_SEARCH else "",
                round=round_number,
            )
            refusal = await self._approval(call, spec) if spec.approval else ""
            if refusal:
                outcome = ToolOutcome(use.tool_use_id, "error", refusal)
                telemetry.count_tool_call(spec.server, spec.name, "denied", 0)
                return outcome
            outcome = await self._call_tool(call, spec.timeout_seconds)
            telemetry.count_tool_call(spec.server, spec.name, outcome.status, outcome.duration_ms)
            return outcome

        return list(await gather(*(run(use) for use in uses)))

    async def _call_tool(self, call: ToolCall, timeout_seconds: float) -> ToolOutcome:
        if self.stop_request is not None:
            return ToolOutcome(call.tool_use_id, "error", texts.TOOL_STOPPED)
        try:
            calling = steps.call_tool(self.state.settings, call, timeout_seconds)
            return await self._stoppable(calling)
        except ActivityError as err:
            failure = steps.failure_type(err)
            workflow.logger.warning("tool %s/%s failed: %s", call.server, call.name, failure)
            stopped = self.stop_request is not None
            return ToolOutcome(
                call.tool_use_id,
                "error",
                texts.TOOL_STOPPED_RUNNING if stopped else texts.TOOL_FAILED,
            )

    async def _approval(self, call: ToolCall, spec: ToolSpec) -> str:
        """Wait for the asker to approve the call: "" when they do, else what the model is
        told. Nobody deciding within the approval timeout is a denial; so is a Stop."""
        state = self.state
        ask = ApprovalRequest(
            thread=state.thread,
            key=call.idempotency_key,
            asker=call.user,
            tool=f"{spec.server} / {spec.name}",
            arguments=call.arguments,
            participants=list(state.participants),
        )
        self.approvals[ask.key] = ask
        ask.ts = await steps.ask_approval(ask)
        with contextlib.suppress(TimeoutError):  # nobody decided: a denial
            await workflow.wait_condition(
                lambda: ask.key in self.decisions or self.stop_request is not None,
                timeout=timedelta(seconds=state.settings.approval_timeout_seconds),
                timeout_summary=f"approval of {ask.tool}",
            )
        del self.approvals[ask.key]  # a click from now on is too late
        decision = self.decisions.get(ask.key)
        asker = state.names.get(call.user, call.user)
        if decision is not None:
            name = state.names.get(decision.user, decision.user)
            ask.outcome = texts.approval_decided(decision.approve, name)
            refusal = "" if decision.approve else texts.not_approved(name)
        elif self.stop_request is not None:
            ask.outcome, refusal = texts.APPROVAL_STOPPED, texts.TOOL_STOPPED
        else:
            ask.outcome, refusal = texts.APPROVAL_TIMED_OUT, texts.approval_timed_out(asker)
        await steps.settle_approval(ask)
        return refusal

    def approval_refusal(self, decision: ApprovalDecision) -> str:
        """Why `decision` cannot decide (a texts.APPROVAL_REFUSED key), or "": only the
        person whose message the turn answers decides, once."""
        ask = self.approvals.get(decision.key)
        if decision.key in self.decisions:
            return "Decided"
        if ask is None:
            return "NotWaiting"
        if decision.user != ask.asker:
            return "NotAsker"
        return ""

    async def _stoppable(self, handle: workflow.ActivityHandle):
        """Await a model call that a Stop may cancel. A Stop that came before it started
        cancels it at once (the history still shows it scheduled)."""
        self.in_flight.append(handle)
        if self.stop_request is not None:
            handle.cancel()
        try:
            return await handle
        finally:
            self.in_flight.remove(handle)

    async def _mark_stopped(self, turn: Turn, reply: DeliveredReply) -> None:
        """Keep the stopped turn as it showed, and say under it who stopped it. Slack may
        have stopped the stream (and so the answer) before its event reached us: it is
        waited for a little, for the name."""
        state = self.state
        if self.stop_request is None:
            try:
                await workflow.wait_condition(
                    lambda: self.stop_request is not None,
                    timeout=STOP_EVENT_WAIT,
                    timeout_summary="the Stop event",
                )
            except TimeoutError:
                workflow.logger.warning("Slack stopped turn %s; nobody said who", state.turn_count)
        user = self.stop_request.user if self.stop_request else ""
        shown = await steps.mark_stopped(
            StoppedReply(
                thread=state.thread,
                ts=reply.ts,
                text=reply.shown,
                stopped_by=state.names.get(user, user),
                idempotency_key=self.key(f"turn-{state.turn_count}-stopped"),
                actions=ReplyRef(state.conversation_key, state.turn_count),
                participants=list(state.participants),
            )
        )
        turn.reply, turn.stop_reason, turn.stopped_by = reply.text, inference.STOPPED, user
        turn.reply_ts = reply.parts or [shown]
        turn.input_tokens, turn.output_tokens = reply.input_tokens, reply.output_tokens

    # -- Regenerate ---------------------------------------------------------------------------

    async def answer_again(self, request: RegenerateRequest) -> None:
        """Regenerate: answer the latest turn once more, sampling more freely, and keep only
        the new answer. A failure leaves the old answer in place and tells the clicker."""
        state = self.state
        turn, number = state.turns[-1], state.turn_count
        version = turn.version + 1
        key = f"turn-{number}-regenerate-{version}"
        verdict = await self._check_budget(request.user, key)
        if verdict.over:
            refusal = (
                texts.too_fast(verdict.limit)
                if verdict.over == "rate"
                else self._over_budget(verdict, request.user)
            )
            await self._tell(request.user, refusal, key)
            return
        budget = state.settings.context_budget_tokens - self._thread_tokens()
        prompt = context.prompt_messages(state.turns[:-1], turn.messages, state.names, budget)
        reply_request = ReplyRequest(
            thread=state.thread,
            messages=prompt,
            context_notes=self._notes(prompt),
            idempotency_key=self.key(key),
            recipient_user=request.user,
            inference=self._inference("regenerate"),
            kind="regenerate",
            actions=ReplyRef(state.conversation_key, number, version),
            replace_ts=turn.reply_ts,
            cache=self._worth_caching(),
            participants=list(state.participants),
            thread_context=state.thread_context,
            **self._panel_context(),
        )
        self.busy = True
        try:
            reply = await self._stoppable(
                steps.stream_reply(state.settings, reply_request, f"regenerate reply {number}")
            )
        except ActivityError as err:
            if self.stop_request is not None:
                reply = _stopped_before_it_said(err)
            else:
                failure = steps.failure_type(err)
                workflow.logger.warning("regenerating turn %s failed: %s", number, failure)
                await self._settle(request.user, verdict, 0, key)
                await self._tell(request.user, texts.turn_failure(failure), f"{key}-notice")
                return
        finally:
            self.busy, self.stop_request = False, None
        if reply.stop_reason == inference.STOPPED:
            # The answer it was to replace stays as it was: nothing of the new one showed.
            telemetry.count_turn("stopped")
            await self._settle(request.user, verdict, self._spend(reply), key)
            return
        telemetry.count_turn("regenerated")
        turn.version = version
        turn.reply, turn.stop_reason = reply.text, reply.stop_reason
        turn.reply_ts = reply.parts or turn.reply_ts
        turn.input_tokens += reply.input_tokens
        turn.output_tokens += reply.output_tokens
        await self._settle(request.user, verdict, self._spend(reply), key)
        state.last_activity = workflow.now().timestamp()

    # -- Summaries and the title ----------------------------------------------------------------

    async def fold_old_turns(self) -> None:
        """Fold the oldest turns into the rolling summary once they outgrow the budget.

        Folds go deep (to a quarter of the budget): every fold rewrites the cached prompt,
        and between folds each turn reads it back at a tenth of the price. The summary is
        asked of the conversation itself, after its own turns, which the model reads back
        from the cache too.
        """
        state = self.state
        # The thread's earlier messages open every prompt: the turns fit in what they leave.
        budget = state.settings.context_budget_tokens - self._thread_tokens()
        count = context.turns_to_fold(state.turns, state.names, budget, budget // 4)
        if count:
            try:
                summary = await self._summarize(state.turns[:count], final=False)
            except ActivityError as err:
                workflow.logger.warning("rolling summary failed: %s", steps.failure_type(err))
            else:
                state.rolling_summary = summary
                folded = [m.ts for t in state.turns[:count] for m in t.messages]
                state.folded_ts = (state.folded_ts + folded)[-MAX_FOLDED_TS:]
                del state.turns[:count]
                state.folded_turns += count
        while len(state.turns) > 1 and (
            sum(context.turn_tokens(t, state.names) for t in state.turns)
            > MAX_KEPT_BUDGETS * budget
        ):
            del state.turns[0]

    async def final_summary(self) -> str:
        """The whole conversation summarised for the thread; "" if the model cannot."""
        try:
            return await self._summarize(self.state.turns, final=True)
        except ActivityError as err:
            workflow.logger.warning("final summary failed: %s", steps.failure_type(err))
            return ""

    async def _summarize(self, turns: list[Turn], *, final: bool) -> str:
        state = self.state
        request = SummaryRequest(
            earlier_summary=state.rolling_summary,
            turns=turns,
            names=state.names,
            final=final,
            inference=self._inference("final_summary" if final else "rolling_summary"),
        )
        conversation = [] if final else self._last_exchange_continued()
        if conversation:
            request.inference = self._inference("reply")
            request.conversation = conversation
            request.context_notes = context.context_notes(
                state.previous_summary, state.rolling_summary
            )
            request.cache = self._worth_caching()
            request.thread_context = state.thread_context
        summary = await steps.summarize(state.settings, request)
        self._spend(summary)
        return summary.text

    def _last_exchange_continued(self) -> list[ChatMessage]:
        """The last reply's prompt with its answer, as a summary would continue it; empty
        when that prompt left out kept turns (it was over the budget), as the summary must
        see every turn it folds."""
        turns, names = self.state.turns, self.state.names
        if not turns or turns[-1].reply is None:
            return []
        budget = self.state.settings.context_budget_tokens - self._thread_tokens()
        prompt = context.prompt_messages(turns[:-1], turns[-1].messages, names, budget)
        history = context.history_messages(turns, names)
        return history if len(history) == len(prompt) + 1 else []

    async def _name(self, turn: Turn) -> None:
        """Title the panel's thread (its agent session) after its first answer; the title is
        also a search attribute, so operators see it. A nicety: failing it changes nothing
        else."""
        state = self.state
        try:
            named = await steps.write_title(
                state.settings,
                TitleRequest(
                    thread=state.thread,
                    question=context.user_turn_text(turn.messages, state.names),
                    answer=turn.reply or "",
                    inference=self._inference("rolling_summary"),
                ),
            )
            self._spend(named)
            await steps.set_title(ThreadTitle(state.thread, named.text, list(state.participants)))
        except ActivityError as err:
            workflow.logger.warning("could not title the thread: %s", steps.failure_type(err))
            return
        self._keep_title(named.text)

    def _keep_title(self, title: str) -> None:
        """The title is also a search attribute, so operators see it."""
        self.state.title = title
        if title and self.state.settings.title_in_visibility:
            workflow.upsert_search_attributes([CONVERSATION_TITLE.value_set(title)])

    # -- What goes into a prompt ----------------------------------------------------------------

    def _panel_context(self) -> dict[str, str]:
        """In the assistant panel: the channel in view, and who views it."""
        panel = self.state.assistant
        if panel is None or not panel.context_channel:
            return {}
        return {
            "context_channel": panel.context_channel,
            "context_user": panel.user,
            "context_message_ts": panel.context_message_ts,
        }

    def _thread_tokens(self) -> int:
        """What the thread's earlier messages take of the budget (they were read to fit)."""
        thread = self.state.thread_context
        return sum(context.estimate_tokens(q.text) for q in thread.quotes) if thread else 0

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

    def _inference(self, kind: str) -> InferenceSettings:
        """The conversation's model settings for a call of `kind`."""
        settings = self.state.settings
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

    async def _learn_names(self, messages: list[UserMessage]) -> None:
        """Look up display names of new speakers, so the model sees who said what."""
        unknown = sorted({m.user for m in messages if not m.app} - set(self.state.names))
        if unknown:
            names = await steps.describe_users(unknown)
            self.state.names.update({user: names.get(user, user) for user in unknown})

    # -- What it costs ------------------------------------------------------------------------

    async def _check_budget(self, user: str, name: str) -> BudgetVerdict:
        """Whether the person's or this conversation's allowance for today is used up, or
        the person starts turns too fast; if not, what the turn may cost is reserved."""
        state = self.state
        self._roll_day()
        settings = state.settings
        return await steps.check_budget(
            BudgetCheck(
                team=state.thread.team,
                user=user,
                day=state.budget_day,
                conversation_tokens=state.day_tokens,
                limits=settings.token_limits,
                reserve=settings.context_budget_tokens + settings.inference.max_tokens,
                key=self.key(name),
            )
        )

    async def _settle(self, user: str, verdict: BudgetVerdict, used: int, name: str) -> None:
        """Charge what the turn cost, less what its check reserved (a failed turn gives the
        reservation back)."""
        if not verdict.charge_user:
            return
        state = self.state
        tokens = used - verdict.reserved
        await steps.charge_tokens(
            TokenCharge(state.thread.team, user, state.budget_day, tokens, self.key(name))
        )

    def _spend(self, result: DeliveredReply | Summary) -> int:
        """Count what a model call cost the conversation; returns the tokens it used, prompt
        tokens read from or written to the cache included."""
        state, call = self.state, result.call
        read, written = (call.cache_read_tokens, call.cache_write_tokens) if call else (0, 0)
        state.input_tokens += result.input_tokens
        state.output_tokens += result.output_tokens
        state.cache_read_tokens += read
        state.cache_write_tokens += written
        used = result.input_tokens + result.output_tokens + read + written
        self._roll_day()
        state.day_tokens += used
        return used

    def _roll_day(self) -> None:
        """Start a new count of the conversation's tokens when the UTC day changes."""
        today = workflow.now().astimezone(UTC).date().isoformat()
        if self.state.budget_day != today:
            self.state.budget_day, self.state.day_tokens = today, 0

    def _over_budget(self, verdict: BudgetVerdict, user: str) -> str:
        now = workflow.now().astimezone(UTC)
        midnight = datetime.combine(now.date() + timedelta(days=1), datetime.min.time(), UTC)
        seconds = (midnight - now).total_seconds()
        return texts.over_budget(verdict.over, user, verdict.limit, seconds)

    # -- Notes in the thread --------------------------------------------------------------------

    async def _post(self, text: str, name: str) -> None:
        state = self.state
        await steps.post(state.thread, text, self.key(name), name, list(state.participants))

    async def _tell(self, user: str, text: str, name: str) -> None:
        await steps.tell(self.state.thread, user, text, name, list(self.state.participants))


def _stopped_before_it_said(err: ActivityError) -> DeliveredReply:
    """A model call a Stop ended without its answer: abandoned (generated, not streamed), or
    its worker died while stopping, when its last heartbeat says what showed."""
    cause = err.cause
    details = cause.last_heartbeat_details if isinstance(cause, exceptions.TimeoutError) else ()
    progress = details[0] if details and isinstance(details[0], dict) else {}
    messages, shown = list(progress.get("messages") or []), str(progress.get("shown") or "")
    return DeliveredReply(
        text=shown,
        input_tokens=0,
        output_tokens=context.estimate_tokens(shown) if shown else 0,
        ts=messages[-1] if shown and messages else "",
        stop_reason=inference.STOPPED,
        parts=messages,
        shown=shown,
    )


def _tool_titles(uses: list[ToolUse], specs: list[ToolSpec]) -> list[str]:
    """The tools a turn used, once each, as the answer's line names them."""
    named = tools.tools_by_model_name(specs)
    titles = [f"{named[u.name].server} / {named[u.name].name}" for u in uses if u.name in named]
    return list(dict.fromkeys(titles))


def _server_of(outcome: ToolOutcome, done: ToolRound, request: ReplyRequest) -> str:
    """The server of the tool that gave `outcome`."""
    named = tools.tools_by_model_name(request.tools)
    use = next((u for u in done.uses if u.tool_use_id == outcome.tool_use_id), None)
    spec = named.get(use.name) if use else None
    return spec.server if spec else ""
