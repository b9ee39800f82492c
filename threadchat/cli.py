"""The `threadchat` command: `dev`, `worker` and `bot`."""

import argparse
import asyncio
import logging
import os
import signal
import sys

from threadchat.config import ConfigError, Settings, load_settings

log = logging.getLogger("threadchat")


def configure_logging(level: str) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if level != "DEBUG":
        # Bolt logs a rejected request's body (message text included) at INFO, and the local
        # servers of `dev` log every request.
        logging.getLogger("slack_bolt").setLevel(logging.WARNING)
        logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


def _stop_event() -> asyncio.Event:
    """An event set by SIGTERM or SIGINT, so every command drains gracefully."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def _worker(settings: Settings) -> None:
    from threadchat.temporal import connect, ensure_search_attributes
    from threadchat.worker import build_worker, run_worker

    client = await connect(settings.temporal)
    await ensure_search_attributes(client)
    await run_worker(build_worker(client, settings), _stop_event())


async def _bot(settings: Settings) -> None:
    from bot.app import serve
    from threadchat.temporal import connect

    client = await connect(settings.temporal)
    await serve(settings, client, _stop_event(), host=os.environ.get("HOST", "0.0.0.0"))


async def _dev(settings: Settings, bedrock: str = "auto") -> None:
    from threadchat.dev import run_dev

    await run_dev(settings, _stop_event(), bedrock=bedrock)


COMMANDS = {
    "dev": ("run everything locally: Temporal dev server, worker and bot", _dev),
    "worker": ("run the Temporal worker (Bedrock and Slack activities)", _worker),
    "bot": ("run the Slack bot (Socket Mode with SLACK_APP_TOKEN, else HTTP on PORT)", _bot),
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="threadchat", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    parsers = {name: sub.add_parser(name, help=text) for name, (text, _) in COMMANDS.items()}
    parsers["dev"].add_argument(
        "--bedrock",
        choices=["auto", "local", "aws"],
        default="auto",
        help="local: the offline model; aws: real Bedrock; auto: aws when credentials exist",
    )
    args = parser.parse_args(argv)
    options = {"bedrock": args.bedrock} if args.command == "dev" else {}

    code = 0
    try:
        settings = load_settings()
        configure_logging(settings.log_level)
        if args.command == "worker":
            settings.require_slack_token()
        elif args.command == "bot" or (args.command == "dev" and settings.slack.bot_token):
            settings.require_bot_credentials()
        asyncio.run(COMMANDS[args.command][1](settings, **options))
    except ConfigError as err:
        print(f"threadchat: configuration error: {err}", file=sys.stderr)
        code = 2
    except KeyboardInterrupt:
        code = 130
    except Exception as err:
        log.error("%s failed: %s: %s", args.command, type(err).__name__, err)
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    # The Temporal SDK can abort at interpreter shutdown (rc 134); our work is done here.
    os._exit(code)
