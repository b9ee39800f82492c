"""Replays recorded conversation histories against today's workflow code.

A change that would break conversations already running (a reordered activity, a new timer,
a removed signal) fails here; docs/upgrading.md says what to do then. To record the set of a
new version, run the scenario tests with THREADCHAT_RECORD_HISTORIES set:

    THREADCHAT_RECORD_HISTORIES=tests/histories/<version> pytest tests/test_e2e.py \
        tests/test_conversation.py tests/test_budgets.py tests/test_reply_actions.py \
        tests/test_model_calls.py tests/test_bursts.py tests/test_prompt_caching.py \
        tests/test_channels.py tests/test_files.py tests/test_assistant.py \
        tests/test_trust.py tests/test_thread_context.py tests/test_sessions.py \
        tests/test_stop.py tests/test_tools.py tests/test_knowing.py
"""

from pathlib import Path

import pytest
from temporalio import workflow
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer
from temporalio.workflow import NondeterminismError

from threadchat.model import ConversationResult, ConversationStart
from workflows import steps
from workflows.budget import TokenBudgetWorkflow
from workflows.conversation import ConversationWorkflow
from workflows.memory import MemoryWorkflow

# One folder per version whose conversations may still be running.
HISTORIES = sorted((Path(__file__).parent / "histories").rglob("*.json"))


def test_there_are_recorded_histories():
    assert len(HISTORIES) >= 10, "record histories: see this module's docstring"


@pytest.mark.parametrize("path", HISTORIES, ids=[f"{p.parent.name}/{p.stem}" for p in HISTORIES])
async def test_recorded_history_replays(path: Path):
    history = WorkflowHistory.from_json(path.stem, path.read_text())
    await Replayer(
        workflows=[ConversationWorkflow, TokenBudgetWorkflow, MemoryWorkflow]
    ).replay_workflow(history)


@workflow.defn(name="ConversationWorkflow")
class PostsBeforeItSummarises(ConversationWorkflow):
    """Today's workflow with one activity moved: the summary's post goes out first."""

    @workflow.run
    async def run(self, start: ConversationStart) -> ConversationResult:
        return await super().run(start)

    async def _close(self) -> ConversationResult:
        await steps.post(self.state.thread, "ending", self.responder.key("early"), "early", [])
        return await super()._close()


def ended_conversations() -> list[Path]:
    """Histories whose conversation was summarised (their run closed with a summary)."""
    return [p for p in HISTORIES if "summarize_conversation" in p.read_text()]


async def test_a_change_of_activity_order_fails_to_replay():
    ended = ended_conversations()
    assert ended, "no recorded conversation ends: record histories"
    replayer = Replayer(workflows=[PostsBeforeItSummarises])
    history = WorkflowHistory.from_json(ended[0].stem, ended[0].read_text())
    with pytest.raises(NondeterminismError):
        await replayer.replay_workflow(history)
