"""`threadchat dev`: the whole product on one machine, in one command.

It starts the Temporal dev server (SQLite in the data directory, Web UI on 8233), the worker
and the bot. Without Slack credentials it serves the local Slack Web API instead, and without
AWS credentials the local Bedrock server with its offline model, so it runs on nothing but
Python. Without THREADCHAT_TOOLS_FILE it starts our sample MCP server (a team directory) and
gives the worker devtools/tools.yaml, so the bot has tools to call.
"""

import asyncio
import contextlib
import dataclasses
import logging
import secrets
import shutil
import socket
from pathlib import Path

import boto3

from devtools.bedrock import LocalBedrock
from devtools.playground import Playground
from devtools.sample_mcp import SampleMcpProcess
from devtools.slack import LocalSlack
from devtools.temporal_server import TemporalDevServer
from threadchat.codec import CODEC_PATH, data_converter
from threadchat.commands.operator import OperatorError
from threadchat.commands.worker import build_workers, run_workers
from threadchat.config import Settings, load_tools_file
from threadchat.slack_client import pooled_client
from threadchat.temporal import ensure_search_attributes

log = logging.getLogger(__name__)

TEMPORAL_PORT = 7233
TEMPORAL_UI_PORT = 8233
PLAYGROUND_PORT = 3001
# Fixed, as the others: files' links (in the saved workspace, and in conversations Temporal
# keeps) name the local Slack's address, and must still work after a restart.
LOCAL_SLACK_PORT = 3002
# The sample MCP server's, as devtools/tools.yaml names it.
SAMPLE_MCP_PORT = 3004
SAMPLE_TOOLS_FILE = Path(__file__).resolve().parent.parent.parent / "devtools" / "tools.yaml"
TEMPORAL_DB = "temporal.db"
PLAYGROUND_DIR = "playground"


def codec_endpoint(settings: Settings) -> str:
    """The codec endpoint's URL for the dev UI (in a browser on this machine): the bot's
    codec listener, never PORT."""
    host = settings.codec_host
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    elif ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.codec_port}{CODEC_PATH}"


def has_aws_credentials() -> bool:
    return boto3.session.Session().get_credentials() is not None


def reset_data(data_dir: Path) -> list[Path]:
    """Remove what `threadchat dev` keeps in `data_dir` (Temporal's database and the
    playground's workspace), so the next start is clean; returns what was removed."""
    removed = [p for p in sorted(data_dir.glob(f"{TEMPORAL_DB}*")) if p.is_file()]
    for path in removed:
        path.unlink()
    playground = data_dir / PLAYGROUND_DIR
    if playground.is_dir():
        shutil.rmtree(playground)
        removed.append(playground)
    return removed


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something already listens there (a wildcard listener counts too)."""
    with socket.socket() as sock:
        # Only a listener blocks the bind, not a closed connection in TIME_WAIT.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def check_can_start(settings: Settings, bedrock: str) -> None:
    """Refuse to start, in one line, rather than half start: `--bedrock aws` without
    credentials, or a port taken (the dev server would otherwise quietly join another
    Temporal server already on 7233)."""
    if bedrock == "aws" and not has_aws_credentials():
        raise OperatorError(
            "--bedrock aws: no AWS credentials found (set AWS_PROFILE or AWS_ACCESS_KEY_ID "
            "and AWS_SECRET_ACCESS_KEY), or use --bedrock local"
        )
    ports = {
        TEMPORAL_PORT: "Temporal",
        TEMPORAL_UI_PORT: "Temporal UI",
        settings.slack.port: "the bot, PORT",
    }
    if not settings.slack.bot_token:
        ports[PLAYGROUND_PORT] = "Slack playground"
        ports[LOCAL_SLACK_PORT] = "the local Slack API"
    if settings.encryption_keys:
        ports[settings.codec_port] = "the codec endpoint, THREADCHAT_CODEC_PORT"
    if not settings.tools_file:
        ports[SAMPLE_MCP_PORT] = "the sample MCP server"
    busy = [f"{port} ({what})" for port, what in ports.items() if port and port_in_use(port)]
    if busy:
        raise OperatorError(
            f"{'ports' if len(busy) > 1 else 'port'} {', '.join(busy)} already in use on "
            f"127.0.0.1: is another threadchat dev or Temporal server running? Stop it first"
        )


async def run_dev(
    settings: Settings, stop: asyncio.Event, bedrock: str = "auto", reset: bool = False
) -> None:
    """Run everything until `stop` is set; `bedrock` is "auto", "local" or "aws". Temporal's
    data and the playground's workspace are kept in the data directory across restarts;
    `reset` starts without them."""
    check_can_start(settings, bedrock)
    data_dir = Path(settings.data_dir)
    if reset:
        removed = reset_data(data_dir)
        print(f"--reset: removed {len(removed)} item(s) from {data_dir}, starting clean.")
    # With THREADCHAT_ENCRYPTION_KEY, the bot serves the codec endpoint on its own listener,
    # and the dev UI uses it to show decrypted history.
    codec_url = codec_endpoint(settings)
    server = TemporalDevServer(
        db_file=str(data_dir / TEMPORAL_DB),
        port=TEMPORAL_PORT,
        ui_port=TEMPORAL_UI_PORT,
        extra_args=["--ui-codec-endpoint", codec_url] if settings.encryption_keys else [],
    )
    async with contextlib.AsyncExitStack() as stack:
        client = await server.start(data_converter=data_converter(settings.encryption_keys))
        stack.callback(server.stop)
        await ensure_search_attributes(client)
        lines = [f"Temporal UI:    http://127.0.0.1:{TEMPORAL_UI_PORT}"]
        if settings.encryption_keys:
            lines.append(f"Codec endpoint: {codec_url} (payloads encrypted)")

        offline_model = bedrock == "local" or (bedrock == "auto" and not has_aws_credentials())
        if offline_model:
            local_bedrock = LocalBedrock()
            endpoint = await local_bedrock.start()
            stack.push_async_callback(local_bedrock.stop)
            settings = dataclasses.replace(
                settings,
                bedrock=dataclasses.replace(
                    settings.bedrock,
                    endpoint_url=endpoint,
                    knowledge_endpoint_url=endpoint,  # it serves Retrieve too
                    local=True,
                ),
            )
            reason = "--bedrock local" if bedrock == "local" else "No AWS credentials found"
            print(f"{reason}: using the local Bedrock server's offline model.")
            lines.append(f"Local Bedrock:  {endpoint}")

        if not settings.slack.bot_token:
            from bot.app import EVENTS_PATH

            local_slack = LocalSlack()
            api_url = await local_slack.start(port=LOCAL_SLACK_PORT)
            stack.push_async_callback(local_slack.stop)
            signing_secret = secrets.token_hex(16)
            settings = dataclasses.replace(
                settings,
                slack=dataclasses.replace(
                    settings.slack,
                    bot_token=local_slack.bot_token,
                    signing_secret=signing_secret,
                    app_token=None,
                    api_url=api_url,
                ),
            )
            playground = Playground(
                local_slack,
                f"http://127.0.0.1:{settings.slack.port}{EVENTS_PATH}",
                signing_secret,
                temporal_ui_url=f"http://127.0.0.1:{TEMPORAL_UI_PORT}",
                # Set just above when the local Bedrock server stands in for the model.
                offline_model=offline_model,
                workspace=data_dir / PLAYGROUND_DIR,
            )
            playground_url = await playground.start(port=PLAYGROUND_PORT)
            stack.push_async_callback(playground.stop)
            lines.insert(0, f"Slack playground: {playground_url}")
            lines.append(f"Local Slack API: {api_url}")

        if not settings.tools_file:
            sample = SampleMcpProcess(data_dir / "sample_mcp.jsonl", port=SAMPLE_MCP_PORT)
            lines.append(f"Sample MCP:     {await sample.start()} (tools: {SAMPLE_TOOLS_FILE})")
            stack.callback(sample.stop)
            settings = dataclasses.replace(
                settings,
                tools_file=str(SAMPLE_TOOLS_FILE),
                tools=load_tools_file(str(SAMPLE_TOOLS_FILE)),
            )

        from bot.app import serve

        slack_client = await stack.enter_async_context(
            pooled_client(settings.slack.bot_token or "", settings.slack.api_url)
        )
        workers = build_workers(client, settings, slack_client=slack_client)
        if not settings.slack.socket_mode:
            lines.append(f"Slack events:   http://127.0.0.1:{settings.slack.port}/slack/events")
        print("threadchat dev is running. Ctrl-C stops it.\n  " + "\n  ".join(lines), flush=True)
        await asyncio.gather(
            run_workers(workers, stop),
            serve(settings, client, stop, host="127.0.0.1"),
        )
