"""One person's token use on one UTC day, kept by Temporal so every worker sees the same count.

Conversations charge it after each turn (a signal, deduplicated by the turn's key) and the
budget activity reads it with a query before calling the model. It closes a while after its
day ends; the next day's use starts a new workflow with a new id.
"""

from datetime import UTC, datetime, timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from threadchat import dedupe
    from threadchat.model import TokenCharge

# Turns that finish just after midnight still charge the day they were checked against.
GRACE = timedelta(hours=1)


@workflow.defn
class TokenBudgetWorkflow:
    @workflow.init
    def __init__(self, day: str, used: int = 0, keys: list[str] | None = None) -> None:
        self.used = used
        self.keys = keys or []

    @workflow.run
    async def run(self, day: str, used: int = 0, keys: list[str] | None = None) -> int:
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
            workflow.continue_as_new(args=[day, self.used, self.keys])
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self.used

    @workflow.signal
    def charge(self, charge: TokenCharge) -> None:
        if dedupe.remember(self.keys, charge.key):
            self.used += charge.tokens

    @workflow.query
    def tokens_used(self) -> int:
        return self.used
