"""The worker keeps the workflow module's bytecode even when Python is told not to write any:
the workflow sandbox loads that module again for every workflow."""

import os
import subprocess
import sys

# Loads the conversation workflow into a sandbox, as a worker does for each new workflow, and
# prints where its bytecode is cached ("" when nowhere).
LOAD = """
import asyncio, importlib.util, os, sys
from temporalio import workflow
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner
from threadchat.commands.worker import keep_bytecode
from workflows.conversation import ConversationWorkflow
keep_bytecode()
async def load():
    SandboxedWorkflowRunner().prepare_workflow(
        workflow._Definition.must_from_class(ConversationWorkflow)
    )
asyncio.run(load())
cached = importlib.util.cache_from_source(sys.modules[ConversationWorkflow.__module__].__file__)
print(cached if os.path.exists(cached) else "")
"""


def test_the_sandboxed_workflow_module_is_loaded_from_bytecode(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPYCACHEPREFIX"}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    done = subprocess.run(
        [sys.executable, "-c", LOAD],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    cached = done.stdout.strip()
    assert "threadchat-bytecode-" in cached, cached  # cached, in the worker's own directory
    assert not os.path.exists(cached)  # which went at exit
