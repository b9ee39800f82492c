"""Layering. The package's ground floor imports nothing of the rooms built on it: model,
config, ids, context, texts, formatting, codec, the Slack client and telemetry stand alone, and
only threadchat/commands/ (the entry points) wires bot/, workflows/, activities/ and devtools/
together. Activities import no workflow, and the Slack app no activity."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "threadchat"
UPPER = {"bot", "workflows", "activities", "devtools"}


def imported(path: Path) -> set[str]:
    modules = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            modules |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            modules.add(node.module)
            if node.module == "threadchat":
                modules |= {f"threadchat.{alias.name}" for alias in node.names}
    return modules


@pytest.mark.parametrize("path", sorted(PACKAGE.glob("*.py")), ids=lambda p: p.name)
def test_lower_modules_import_nothing_above_them(path):
    above = {
        m for m in imported(path) if m.split(".")[0] in UPPER or m.startswith("threadchat.commands")
    }
    assert not above, f"{path.name} imports {sorted(above)}"


def test_the_entry_points_are_where_the_console_script_says():
    assert (PACKAGE / "commands" / "cli.py").exists()
    assert (
        'threadchat = "threadchat.commands.cli:main"'
        in (PACKAGE.parent / "pyproject.toml").read_text()
    )


ROOT = PACKAGE.parent
# Who may not import whom: activities sit below the workflows (which schedule them), and the
# Slack app reaches Slack through threadchat/slack_client.py, never through an activity.
FORBIDDEN = {"activities": {"workflows", "bot"}, "bot": {"activities"}}


@pytest.mark.parametrize(
    "path",
    sorted(p for room in FORBIDDEN for p in (ROOT / room).rglob("*.py")),
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_no_import_runs_the_wrong_way(path):
    room = path.relative_to(ROOT).parts[0]
    wrong = {m for m in imported(path) if m.split(".")[0] in FORBIDDEN[room]}
    assert not wrong, f"{path.relative_to(ROOT)} imports {sorted(wrong)}"


def test_the_budget_activities_name_the_budget_workflow_as_it_is_defined():
    from temporalio import workflow

    from activities.budgets import BUDGET_WORKFLOW, RESERVE_UPDATE
    from workflows.budget import TokenBudgetWorkflow

    definition = workflow._Definition.must_from_class(TokenBudgetWorkflow)
    assert definition.name == BUDGET_WORKFLOW
    assert RESERVE_UPDATE in definition.updates
