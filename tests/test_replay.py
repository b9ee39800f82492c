"""Replays recorded conversation histories against today's workflow code.

A change that would break conversations already running in production (a reordered
activity, a new timer, a removed signal) fails here. To record fresh histories after an
intended, versioned change, run the scenario tests with THREADCHAT_RECORD_HISTORIES set:

    THREADCHAT_RECORD_HISTORIES=tests/histories/<n>-<what changed> pytest tests/test_e2e.py \
        tests/test_conversation.py tests/test_budgets.py tests/test_reply_actions.py \
        tests/test_model_calls.py tests/test_bursts.py tests/test_prompt_caching.py \
        tests/test_channels.py tests/test_files.py tests/test_assistant.py
"""

from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from workflows.budget import TokenBudgetWorkflow
from workflows.conversation import ConversationWorkflow

# One folder per recording; older ones stand for conversations started by older code.
HISTORIES = sorted((Path(__file__).parent / "histories").rglob("*.json"))


def test_there_are_recorded_histories():
    assert len(HISTORIES) >= 10, "record histories: see this module's docstring"


@pytest.mark.parametrize("path", HISTORIES, ids=[f"{p.parent.name}/{p.stem}" for p in HISTORIES])
async def test_recorded_history_replays(path: Path):
    history = WorkflowHistory.from_json(path.stem, path.read_text())
    await Replayer(workflows=[ConversationWorkflow, TokenBudgetWorkflow]).replay_workflow(history)
