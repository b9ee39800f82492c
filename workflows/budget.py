"""One person's token use on one UTC day, kept by Temporal so every worker sees the same count.

Before a turn calls the model, the budget activity reserves what it may cost (an update: the
check and the hold are one step, also for turns starting at once); after it, the
conversation charges the cost less the reservation (a signal, deduplicated by the turn's
key). It closes a while after its
day ends; the next day's use starts a new workflow with a new id.
"""

from datetime import UTC, datetime, timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from threadchat import dedupe
    from threadchat.model import Reservation, TokenCharge

# Turns that finish just after midnight still charge the day they were checked against.
GRACE = timedelta(hours=1)


# Turn start times kept for the rate limit: more than any per-minute rate worth setting.
MAX_RECENT_TURNS = 200


@workflow.defn
class TokenBudgetWorkflow:
    @workflow.init
    def __init__(
        self,
        day: str,
        used: int = 0,
        keys: list[str] | None = None,
        turns: list[float] | None = None,
    ) -> None:
        self.used = used
        self.keys = keys or []
        self.turns = turns or []  # epoch seconds each turn started (its reservation)

    @workflow.run
    async def run(
        self,
        day: str,
        used: int = 0,
        keys: list[str] | None = None,
        turns: list[float] | None = None,
    ) -> int:
        day_ends = datetime.fromisoformat(day).replace(tzinfo=UTC) + timedelta(days=1)
        while True:
            remaining = day_ends + GRACE - workflow.now()
            try:
                await workflow.wait_condition(
                    lambda: workflow.info().is_continue_as_new_suggested(),
                    timeout=max(remaining, timedelta(seconds=1)),
                )
            except TimeoutError:
                break
            # A very busy person: carry the count into a fresh history.
            await workflow.wait_condition(workflow.all_handlers_finished)
            workflow.continue_as_new(args=[day, self.used, self.keys, self.turns])
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self.used

    @workflow.update
    def reserve(self, reservation: Reservation) -> str:
        """Check and hold in one step, so turns starting at once cannot all pass a check
        before any is counted: "" when held, else why not ("user" or "rate")."""
        if reservation.key in self.keys:
            return ""  # a retried reservation: already held
        now = workflow.now().timestamp()
        if reservation.limit and self.used >= reservation.limit:
            return "user"
        if reservation.rate and sum(t > now - 60 for t in self.turns) >= reservation.rate:
            return "rate"
        dedupe.remember(self.keys, reservation.key)
        self.used += reservation.tokens
        self.turns = [*self.turns, now][-MAX_RECENT_TURNS:]
        return ""

    @workflow.signal
    def charge(self, charge: TokenCharge) -> None:
        """A turn's cost, less what it reserved; a repeated key counts once."""
        if dedupe.remember(self.keys, charge.key):
            self.used += charge.tokens

    @workflow.query
    def tokens_used(self) -> int:
        return self.used
