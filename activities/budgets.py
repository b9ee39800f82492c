"""Daily token allowances: checked before a turn calls the model, charged after it.

Every answered turn is charged to the person who asked, limit or not. Per-person use lives
in a `TokenBudgetWorkflow` per person and UTC day, so it survives restarts and every worker
sees the same count. The limits are read from this worker's config
at each check, so a changed limit applies from the next turn of every conversation; a
channel's own limits (THREADCHAT_CHANNELS_FILE) are those its conversation started with.
"""

import logging
from datetime import timedelta

from temporalio import activity
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from threadchat.ids import budget_id
from threadchat.model import BudgetCheck, BudgetVerdict, TokenCharge, TokenLimits

log = logging.getLogger(__name__)

# workflows/budget.py, by name: activities sit below the workflows and import none of them
# (tests/test_layout.py checks both names against the workflow).
BUDGET_WORKFLOW = "TokenBudgetWorkflow"
TOKENS_USED_QUERY = "tokens_used"

QUERY_TIMEOUT = timedelta(seconds=2)


class BudgetActivities:
    def __init__(self, client: Client, task_queue: str, limits: TokenLimits):
        self.client = client
        self.task_queue = task_queue
        self.limits = limits

    @activity.defn
    async def check_budget(self, check: BudgetCheck) -> BudgetVerdict:
        limits = check.limits or self.limits
        per_user, per_conversation = limits.per_user, limits.per_conversation
        if per_conversation and check.conversation_tokens >= per_conversation:
            return BudgetVerdict("conversation", per_conversation)
        if per_user and await self._used(check) >= per_user:
            return BudgetVerdict("user", per_user)
        # Charged whether or not a per-person limit is set: the App Home shows everyone
        # their use today, and a limit set later starts from the true count.
        return BudgetVerdict(charge_user=True)

    @activity.defn
    async def charge_tokens(self, charge: TokenCharge) -> None:
        # Signal-with-start: the day's first charge opens the person's budget.
        await self.client.start_workflow(
            BUDGET_WORKFLOW,
            charge.day,
            id=budget_id(charge.team, charge.user, charge.day),
            task_queue=self.task_queue,
            start_signal="charge",
            start_signal_args=[charge],
        )

    async def _used(self, check: BudgetCheck) -> int:
        handle = self.client.get_workflow_handle(budget_id(check.team, check.user, check.day))
        try:
            # A budget left on a task queue no worker polls any more would hold the query
            # until its timeout: give up early and let the turn go ahead.
            return await handle.query(TOKENS_USED_QUERY, result_type=int, rpc_timeout=QUERY_TIMEOUT)
        except RPCError as err:
            if err.status == RPCStatusCode.NOT_FOUND:
                return 0  # nothing spent today
            raise
