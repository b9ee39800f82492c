"""Daily token allowances, per person and per conversation: over the allowance the thread
gets a clear notice and the model is not called. Per-person use is kept by Temporal (a budget
workflow per person and day), so it holds across threads and worker restarts."""

import dataclasses
import uuid

import pytest

from devtools.stack import Stack, eventually
from threadchat import texts
from threadchat.config import DEFAULT_USER_DAILY_TOKENS, ConfigError, load_settings
from threadchat.ids import budget_id
from threadchat.model import TokenLimits
from workflows.budget import TokenBudgetWorkflow
from workflows.conversation import ConversationWorkflow

# Any answered turn costs more than this (the system prompt alone is longer).
SMALL_ALLOWANCE = 10


def someone() -> str:
    """A user id of this test's own: a person's use is kept across threads and task queues,
    so tests sharing ids would share it too."""
    return "U0" + uuid.uuid4().hex[:10].upper()


async def stack_with_limits(make_stack, **limits: int) -> Stack:
    stack = await make_stack(worker=False)
    stack.settings = dataclasses.replace(stack.settings, token_limits=TokenLimits(**limits))
    await stack.start_worker()
    return stack


def model_calls(stack: Stack) -> int:
    return len(stack.converse_requests())


async def test_a_person_over_their_allowance_gets_a_notice_and_no_model_call(make_stack):
    stack = await stack_with_limits(make_stack, per_user=SMALL_ALLOWANCE)
    alice, bob = someone(), someone()
    ts = await stack.mention(stack.channel, "first question", user=alice)
    await stack.replies(stack.channel, ts, 1)
    status = await stack.handle(stack.channel, ts).query(ConversationWorkflow.status)
    spent = status.input_tokens + status.output_tokens
    assert spent > SMALL_ALLOWANCE

    # Her use is kept by Temporal, under her id and today's date (workflow time).
    [budget] = [
        w
        async for w in stack.client.list_workflows(
            f"TaskQueue = '{stack.settings.temporal.task_queue}' "
            "AND WorkflowType = 'TokenBudgetWorkflow'"
        )
    ]
    assert budget.id.startswith(budget_id("T0LOCAL", alice, ""))
    handle = stack.client.get_workflow_handle(budget.id)
    assert await handle.query(TokenBudgetWorkflow.tokens_used) == spent

    calls = model_calls(stack)
    await stack.say(stack.channel, ts, "second question", user=alice)
    replies = await stack.replies(stack.channel, ts, 2)
    assert (
        f"<@{alice}>, you have used today's allowance of {SMALL_ALLOWANCE} tokens"
        in (replies[1]["text"])
    )
    # In another thread too, and after a worker restart: nothing in memory.
    for worker in stack.workers:
        await worker.shutdown()
    await stack.start_worker()
    other = await stack.mention(stack.channel, "a new thread", user=alice)
    [notice] = await stack.replies(stack.channel, other, 1)
    assert "allowance" in notice["text"]
    assert model_calls(stack) == calls

    # Bob has an allowance of his own, in the same thread.
    await stack.say(stack.channel, ts, "bob asks", user=bob)
    replies = await stack.replies(stack.channel, ts, 3)
    assert "bob asks" in replies[2]["text"]
    assert model_calls(stack) == calls + 1
    assert await handle.query(TokenBudgetWorkflow.tokens_used) == spent


async def test_a_conversation_over_its_allowance_stops_calling_the_model(make_stack):
    stack = await stack_with_limits(make_stack, per_conversation=SMALL_ALLOWANCE)
    ts = await stack.mention(stack.channel, "first question")
    await stack.replies(stack.channel, ts, 1)
    calls = model_calls(stack)
    await stack.say(stack.channel, ts, "second question", user=someone())
    replies = await stack.replies(stack.channel, ts, 2)
    assert "this conversation has used today's allowance" in replies[1]["text"]
    assert model_calls(stack) == calls
    status = await stack.handle(stack.channel, ts).query(ConversationWorkflow.status)
    assert status.turn_count == 2
    # Another thread is another conversation, with its own allowance.
    other = await stack.mention(stack.channel, "elsewhere")
    [reply] = await stack.replies(stack.channel, other, 1)
    assert "elsewhere" in reply["text"]


async def test_use_is_counted_and_shown_with_no_allowance_set(make_stack):
    stack = await make_stack()
    assert stack.settings.token_limits == TokenLimits(0, 0)
    carol = someone()
    ts = await stack.mention(stack.channel, "count me", user=carol)
    await stack.replies(stack.channel, ts, 1)
    await stack.say(stack.channel, ts, "and again", user=carol)
    await stack.replies(stack.channel, ts, 2)
    status = await stack.handle(stack.channel, ts).query(ConversationWorkflow.status)
    spent = status.input_tokens + status.output_tokens
    assert spent > 0
    line = f"Tokens used today: {spent:,}."

    async def home_shows_it() -> bool:
        return line in str((await stack.open_home(carol))["blocks"])

    await eventually(home_shows_it, what=line)


async def test_a_charge_repeated_by_a_retry_counts_once(make_stack, client):
    stack = await stack_with_limits(make_stack, per_user=1_000_000)
    ts = await stack.mention(stack.channel, "question", user=someone())
    await stack.replies(stack.channel, ts, 1)
    handle = await eventually(lambda: _budget_handle(stack), what="the person's budget workflow")
    # The turn reserved (an update) before the call and settles (the charge) after it.
    await eventually(lambda: _signal_count(handle, 1), what="the turn's charge")
    used = await handle.query(TokenBudgetWorkflow.tokens_used)
    charge = (await handle.fetch_history()).events
    signaled = [
        e.workflow_execution_signaled_event_attributes
        for e in charge
        if e.HasField("workflow_execution_signaled_event_attributes")
    ]
    assert len(signaled) == 1
    # Send the same charge again, as a retried activity would.
    payload = signaled[0].input
    await handle.signal("charge", *await client.data_converter.decode(payload.payloads))
    await eventually(lambda: _signal_count(handle, 2), what="the repeated charge to be handled")
    assert await handle.query(TokenBudgetWorkflow.tokens_used) == used


async def _budget_handle(stack: Stack):
    query = (
        f"TaskQueue = '{stack.settings.temporal.task_queue}' "
        "AND WorkflowType = 'TokenBudgetWorkflow'"
    )
    found = [w async for w in stack.client.list_workflows(query)]
    return stack.client.get_workflow_handle(found[0].id) if found else None


async def _signal_count(handle, count: int) -> bool:
    events = (await handle.fetch_history()).events
    completed = [e for e in events if e.HasField("workflow_task_completed_event_attributes")]
    signals = [e for e in events if e.HasField("workflow_execution_signaled_event_attributes")]
    return len(signals) >= count and events[-1].event_id == completed[-1].event_id


def test_the_notice_says_whose_allowance_and_when_it_renews():
    person = texts.over_budget("user", "U0A", 50_000, 3 * 3600 + 125)
    assert "<@U0A>, you have used today's allowance of 50,000 tokens" in person
    assert "00:00 UTC (in 3 h 2 min)" in person
    assert "this conversation has" in texts.over_budget("conversation", "U0A", 10, 59)


@pytest.mark.parametrize(
    "variable", ["THREADCHAT_USER_DAILY_TOKENS", "THREADCHAT_CONVERSATION_DAILY_TOKENS"]
)
def test_allowances_are_whole_numbers(variable):
    with pytest.raises(ConfigError) as raised:
        load_settings({variable: "lots"})
    assert raised.value.variable == variable
    assert str(raised.value) == f"{variable}: must be a whole number, got 'lots'"
    # A person's day is bounded by default; an explicit 0 lifts it.
    assert load_settings({}).token_limits == TokenLimits(DEFAULT_USER_DAILY_TOKENS, 0, 10)
    assert load_settings({"THREADCHAT_USER_DAILY_TOKENS": "0"}).token_limits.per_user == 0


async def test_a_person_starting_turns_too_fast_is_told_privately(make_stack):
    stack = await stack_with_limits(make_stack, turns_per_minute=2)
    person = someone()
    first = await stack.mention(stack.channel, "one", user=person)
    await stack.replies(stack.channel, first, 1)
    second = await stack.mention(stack.channel, "two", user=person)
    await stack.replies(stack.channel, second, 1)
    calls = model_calls(stack)
    third = await stack.mention(stack.channel, "three", user=person)
    notes = await eventually(
        lambda: stack.private_notes(stack.channel, person), what="the private note"
    )
    assert notes == [texts.too_fast(2)]
    assert model_calls(stack) == calls and stack.slack.bot_replies(stack.channel, third) == []
    # Someone else is not slowed down by it.
    other = await stack.mention(stack.channel, "four", user=someone())
    await stack.replies(stack.channel, other, 1)


async def test_turns_at_once_reserve_before_the_call_and_settle_after(make_stack):
    # Each turn reserves its context budget and max tokens (about 8,000) before calling the
    # model: with 12,000 allowed, turns checked after the first two reservations are refused,
    # however many start at once, and what is kept is exactly what the answers cost.
    stack = await stack_with_limits(make_stack, per_user=12_000)
    person = someone()
    threads = []
    for i in range(4):
        threads.append(await stack.mention(stack.channel, f"question {i}", user=person))
    for ts in threads:
        await stack.replies(stack.channel, ts, 1)
    answered = model_calls(stack)
    assert 1 <= answered <= 2, answered  # unreserved, all four would have been answered
    spent = 0
    for ts in threads:
        status = await stack.handle(stack.channel, ts).query(ConversationWorkflow.status)
        spent += (
            status.input_tokens
            + status.output_tokens
            + status.cache_read_tokens
            + status.cache_write_tokens
        )
    day = await stack.handle(stack.channel, threads[0]).query(ConversationWorkflow.status)
    budget = [
        w
        async for w in stack.client.list_workflows(
            f"TaskQueue = '{stack.settings.temporal.task_queue}' "
            "AND WorkflowType = 'TokenBudgetWorkflow'"
        )
    ]
    handle = stack.client.get_workflow_handle(budget[0].id)
    await eventually(
        lambda: _equals(handle.query(TokenBudgetWorkflow.tokens_used), spent),
        what="the reservations settled to the answers' cost",
    )
    assert day.thread.thread_ts == threads[0]


async def _equals(value, expected) -> bool:
    return await value == expected


async def test_a_check_that_cannot_be_made_returns_in_time_and_lets_the_turn_go(client):
    """The check is a local activity, and one that fails by its timeout leaves a history the
    SDK cannot replay: it must answer well inside its timeout, even when the person's budget
    sits on a task queue no worker polls (as after a test, or a build drained too early)."""
    import time

    from activities.budgets import BudgetActivities
    from threadchat.model import BudgetCheck
    from workflows.steps import BUDGET_TIMEOUT

    person, day = someone(), "2026-12-06"
    await client.start_workflow(
        "TokenBudgetWorkflow",
        day,
        id=budget_id("T0LOCAL", person, day),
        task_queue=f"nobody-polls-{uuid.uuid4().hex}",
    )
    budgets = BudgetActivities(client, "unused", TokenLimits(per_user=1_000, turns_per_minute=5))
    began = time.monotonic()
    verdict = await budgets.check_budget(
        BudgetCheck("T0LOCAL", person, day, 0, reserve=100, key="k")
    )
    assert time.monotonic() - began < BUDGET_TIMEOUT.total_seconds()
    assert verdict.charge_user and not verdict.over and verdict.reserved == 0
