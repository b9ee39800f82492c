"""The turn and the steps run passed through the workflow sandbox (a new conversation then
loads only the small workflow module; see docs/upgrading.md), so the sandbox does not guard
them at run time. This guards them by reading them: no clock, no randomness, no I/O, no
threads, except through Temporal's workflow APIs."""

import ast
from pathlib import Path

import pytest

WORKFLOWS = Path(__file__).resolve().parents[1] / "workflows"
PASSED_THROUGH = ["turn.py", "steps.py"]
# Modules whose use in workflow code is I/O, a clock, randomness or threads.
FORBIDDEN_MODULES = {
    "asyncio", "boto3", "botocore", "aiohttp", "os", "random", "requests", "secrets",
    "slack_sdk", "socket", "subprocess", "threading", "time", "urllib", "uuid",
}  # fmt: skip
# Calls that read the wall clock; workflow.now() is the deterministic one.
CLOCK_CALLS = {"now", "utcnow", "today", "fromtimestamp"}
FORBIDDEN_BUILTINS = {"open", "print", "input", "eval", "exec"}
# Safe in workflow code: gather only awaits what the workflow started, in a fixed order (a
# turn's tool calls run at once with it), on Temporal's deterministic event loop.
ALLOWED_NAMES = {("asyncio", "gather")}


def problems(source: str) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.split(".")[0] in FORBIDDEN_MODULES]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = {(node.module, a.name) for a in node.names}
            if node.module.split(".")[0] in FORBIDDEN_MODULES and not names <= ALLOWED_NAMES:
                found.append(node.module)
        elif isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Name) and func.id in FORBIDDEN_BUILTINS:
                found.append(f"{func.id}()")
            if (
                isinstance(func, ast.Attribute)
                and func.attr in CLOCK_CALLS
                and not (isinstance(func.value, ast.Name) and func.value.id == "workflow")
            ):
                found.append(f"{ast.unparse(func)}()")
    return found


@pytest.mark.parametrize("name", PASSED_THROUGH)
def test_passed_through_workflow_code_does_no_io_and_reads_no_clock(name):
    assert problems((WORKFLOWS / name).read_text()) == []


@pytest.mark.parametrize(
    "source",
    [
        "import time",
        "from random import choice",
        "x = datetime.now()",
        "x = datetime.fromtimestamp(0)",
        "open('f')",
        "import uuid",
        "from asyncio import sleep",
    ],
)
def test_the_check_finds_what_it_forbids(source):
    assert problems(source)


def test_the_check_allows_the_workflow_clock():
    assert problems("x = workflow.now()") == []
