"""Daily token allowances: checked before a turn calls the model, charged after it.

Every answered turn is charged to the person who asked, limit or not. Per-person use lives
in a `TokenBudgetWorkflow` per person and UTC day, so it survives restarts and every worker
sees the same count. The limits are read from this worker's config
at each check, so a changed limit applies from the next turn of every conversation; a
channel's own limits (THREADCHAT_CHANNELS_FILE) are those its conversation started with.
"""

import asyncio
import logging
from datetime import timedelta

from temporalio import activity
from temporalio.client import Client, WithStartWorkflowOperation
from temporalio.common import WorkflowIDConflictPolicy

from threadchat.ids import budget_id
from threadchat.model import BudgetCheck, BudgetVerdict, Reservation, TokenCharge, TokenLimits

log = logging.getLogger(__name__)

# workflows/budget.py, by name: activities sit below the workflows and import none of them
# (tests/test_layout.py checks the names against the workflow).
BUDGET_WORKFLOW = "TokenBudgetWorkflow"
RESERVE_UPDATE = "reserve"

UPDATE_TIMEOUT = timedelta(seconds=2)
# Well inside the local activity's own timeout (workflows/steps.py: BUDGET_TIMEOUT).
CHECK_DEADLINE = timedelta(seconds=2.5)


class BudgetActivities:
    def __init__(self, client: Client, task_queue: str, limits: TokenLimits):
        self.client = client
        self.task_queue = task_queue
        self.limits = limits

    @activity.defn
    async def check_budget(self, check: BudgetCheck) -> BudgetVerdict:
        """Never fails and never times out: it runs as a local activity, and one that fails
        by its timeout leaves a history the Python SDK (1.35) cannot replay. A check that
        cannot be made lets the turn go ahead, charged after."""
        try:
            async with asyncio.timeout(CHECK_DEADLINE.total_seconds()):
                return await self._check(check)
        except Exception as err:
            log.warning("token budget check failed: %s", type(err).__name__)
            return BudgetVerdict(charge_user=True)

    async def _check(self, check: BudgetCheck) -> BudgetVerdict:
        limits = check.limits or self.limits
        per_user, per_conversation = limits.per_user, limits.per_conversation
        rate = self.limits.turns_per_minute  # the worker's: channels set no rate of their own
        if per_conversation and check.conversation_tokens >= per_conversation:
            return BudgetVerdict("conversation", per_conversation)
        if not (per_user or rate) or not check.reserve:
            # Nothing to hold against: the charge after the call counts the turn all the
            # same (the App Home shows everyone their use; a limit set later starts true).
            return BudgetVerdict(charge_user=True)
        refused = await self._reserve(
            check, Reservation(f"{check.key}/reserve", check.reserve, limit=per_user, rate=rate)
        )
        if refused:
            return BudgetVerdict(refused, per_user if refused == "user" else rate)
        return BudgetVerdict(charge_user=True, reserved=check.reserve)

    @activity.defn
    async def charge_tokens(self, charge: TokenCharge) -> None:
        """Like the check, it never times out (a local activity too): a charge that cannot
        be made in time is logged and lost, not retried into a timeout."""
        try:
            async with asyncio.timeout(CHECK_DEADLINE.total_seconds()):
                await self._charge(charge)
        except Exception as err:
            log.warning("could not charge tokens: %s", type(err).__name__)

    async def _charge(self, charge: TokenCharge) -> None:
        # Signal-with-start: the day's first charge opens the person's budget.
        await self.client.start_workflow(
            BUDGET_WORKFLOW,
            charge.day,
            id=budget_id(charge.team, charge.user, charge.day),
            task_queue=self.task_queue,
            start_signal="charge",
            start_signal_args=[charge],
        )

    async def _reserve(self, check: BudgetCheck, reservation: Reservation) -> str:
        """Update-with-start: the day's first turn opens the person's budget. A budget left on
        a task queue no worker polls any more would hold the update: give up early, and the
        failed check lets the turn go ahead (charged after)."""
        start = WithStartWorkflowOperation(
            BUDGET_WORKFLOW,
            check.day,
            id=budget_id(check.team, check.user, check.day),
            task_queue=self.task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        )
        return await self.client.execute_update_with_start_workflow(
            RESERVE_UPDATE,
            reservation,
            start_workflow_operation=start,
            result_type=str,
            rpc_timeout=UPDATE_TIMEOUT,
        )
