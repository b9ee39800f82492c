"""The `threadchat` command: `dev`, `worker` and `bot`, and the operator views
`conversations` and `show`."""

import argparse
import asyncio
import logging
import os
import signal
import sys

from threadchat.commands.operator import OperatorError
from threadchat.config import COMMAND_SETTINGS, ConfigError, Settings, load_settings
from threadchat.telemetry import configure_logging, make_runtime, tracing_interceptors

log = logging.getLogger("threadchat")


def _stop_event() -> asyncio.Event:
    """An event set by SIGTERM or SIGINT, so every command drains gracefully."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


def _runtime(settings: Settings):
    return make_runtime(settings.metrics_port and f"{settings.host}:{settings.metrics_port}")


def _reader_data_converter(settings: Settings):
    """For the operator views: without keys, encrypted history is named as such."""
    from threadchat.codec import reader_data_converter

    return reader_data_converter(settings.encryption_keys)


def _data_converter(settings: Settings):
    """Encrypting with THREADCHAT_ENCRYPTION_KEY when set: the bot, the worker and the operator
    views must all use the same keys."""
    from threadchat.codec import data_converter

    return data_converter(settings.encryption_keys)


async def _worker(settings: Settings) -> None:
    from threadchat.commands.health import serve_health
    from threadchat.commands.worker import build_workers, run_workers
    from threadchat.slack_client import pooled_client
    from threadchat.temporal import connect, ensure_search_attributes

    if not settings.encryption_keys:
        # Anyone who can read the namespace (or a backup of it) reads every conversation.
        log.warning(
            "THREADCHAT_ENCRYPTION_KEY is not set: conversations are stored in Temporal "
            "unencrypted (see README, Encryption at rest)"
        )
    client = await connect(
        settings.temporal,
        _runtime(settings),
        tracing_interceptors("threadchat-worker", settings.otlp_endpoint),
        _data_converter(settings),
    )
    await ensure_search_attributes(client)
    stop = _stop_event()
    async with pooled_client(settings.slack.bot_token or "", settings.slack.api_url) as slack:
        workers = build_workers(client, settings, slack_client=slack)
        port = settings.worker_health_port
        async with serve_health(settings.host, port, client, workers, stop):
            await run_workers(workers, stop)


async def _bot(settings: Settings) -> None:
    from bot.app import serve
    from threadchat.temporal import connect

    client = await connect(
        settings.temporal,
        _runtime(settings),
        tracing_interceptors("threadchat-bot", settings.otlp_endpoint),
        _data_converter(settings),
    )
    await serve(settings, client, _stop_event(), host=settings.host)


async def _dev(settings: Settings, bedrock: str = "auto", reset: bool = False) -> None:
    try:
        from devtools.temporal_server import temporal_cli
        from threadchat.commands.dev import run_dev

        temporal_cli()
    except (ImportError, FileNotFoundError):
        # Production installs (the image) leave out the local servers and the Temporal CLI.
        raise OperatorError(
            "threadchat dev needs the local servers and the Temporal CLI: from a clone, "
            "pip install -e '.[local]'"
        ) from None

    await run_dev(settings, _stop_event(), bedrock=bedrock, reset=reset)


async def _conversations(
    settings: Settings, channel: str | None = None, user: str | None = None, as_json: bool = False
) -> None:
    from threadchat.commands import operator
    from threadchat.temporal import connect

    operator.running_query(channel=channel, user=user)  # bad ids fail before connecting
    client = await connect(settings.temporal, data_converter=_reader_data_converter(settings))
    rows = await operator.list_conversations(
        client, channel=channel, user=user, task_queue=settings.temporal.task_queue
    )
    print(operator.rows_json(rows) if as_json else operator.format_table(rows))


async def _show(
    settings: Settings, ref: str, as_json: bool = False, invocations: bool = False
) -> None:
    from threadchat.commands import operator
    from threadchat.temporal import connect

    operator.parse_ref(ref)  # a bad link fails before connecting
    client = await connect(settings.temporal, data_converter=_reader_data_converter(settings))
    if invocations:
        rows = await operator.load_invocations(client, ref)
        print(operator.invocations_json(rows) if as_json else operator.format_invocations(rows))
        return
    view = await operator.load_conversation(client, ref)
    print(operator.conversation_json(view) if as_json else operator.format_conversation(view))


async def _forget(
    settings: Settings, ref: str | None, user: str | None = None, team: str | None = None
) -> None:
    from threadchat.commands import operator
    from threadchat.temporal import connect

    if (ref is None) == (user is None):
        raise operator.OperatorError("forget takes a LINK_OR_ID or --user U…, one of them")
    if ref is not None:
        operator.parse_ref(ref)  # a bad link fails before connecting
    client = await connect(settings.temporal, data_converter=_data_converter(settings))
    if user is not None:
        forgotten = await operator.forget_memory(client, user, team)
        if not forgotten:
            print(f"{user} has no memory in Temporal: nothing to delete")
        for each in forgotten:
            held = (
                "an unknown number of memories"
                if each.memories is None
                else f"{each.memories} memor{'y' if each.memories == 1 else 'ies'}"
            )
            print(f"deleted {each.workflow_id}: {held}, {each.runs} run(s), from Temporal")
        return
    deleted = await operator.forget_conversation(client, ref)
    print(f"deleted {deleted} run(s) of the conversation from Temporal")


COMMANDS = {
    "dev": ("run everything locally: Temporal dev server, worker and bot", _dev),
    "worker": ("run the Temporal worker (Bedrock and Slack activities)", _worker),
    "bot": ("run the Slack bot (Socket Mode with SLACK_APP_TOKEN, else HTTP on PORT)", _bot),
    "conversations": ("list active conversations (Temporal settings only)", _conversations),
    "show": ("print a conversation's transcript, with the summary if ended", _show),
    "forget": (
        "delete a conversation, or with --user a person's memory, from Temporal (a data request)",
        _forget,
    ),
}


def _settings_epilog(command: str) -> str | None:
    names = COMMAND_SETTINGS.get(command)
    if not names:
        return None
    lines, line = [], " "
    for name in names:
        if len(line) + len(name) > 90:
            lines.append(line)
            line = " "
        line += f" {name}"
    lines.append(line)
    return "settings (environment variables; see the README's configuration table):\n" + (
        "\n".join(lines)
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="threadchat", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    parsers = {
        name: sub.add_parser(
            name,
            help=text,
            description=text,
            epilog=_settings_epilog(name),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        for name, (text, _) in COMMANDS.items()
    }
    parsers["dev"].add_argument(
        "--bedrock",
        choices=["auto", "local", "aws"],
        default="auto",
        help="local: the offline model; aws: real Bedrock; auto: aws when credentials exist",
    )
    parsers["dev"].add_argument(
        "--reset",
        action="store_true",
        help="start clean: forget Temporal's data and the playground's workspace",
    )
    parsers["conversations"].add_argument("--channel", help="only this channel (id, C...)")
    parsers["conversations"].add_argument("--user", help="only with this participant (id, U...)")
    parsers["show"].add_argument("ref", metavar="LINK_OR_ID", help="thread link or workflow id")
    parsers["forget"].add_argument(
        "ref", metavar="LINK_OR_ID", nargs="?", help="thread link or workflow id"
    )
    parsers["forget"].add_argument(
        "--user", help="instead: what this person (U...) asked the bot to remember"
    )
    parsers["forget"].add_argument("--team", help="with --user: only in this team (T...)")
    parsers["show"].add_argument(
        "--invocations",
        action="store_true",
        help="every model call instead (model, parameters, tokens, stop reason, latency), "
        "and the tool calls between them",
    )
    for name in ("conversations", "show"):
        parsers[name].add_argument("--json", dest="as_json", action="store_true", help="as JSON")
    args = parser.parse_args(argv)
    options = {key: value for key, value in vars(args).items() if key != "command"}

    code = 0
    try:
        settings = load_settings()
        configure_logging(settings.log_level, settings.log_json)
        if args.command == "worker":
            settings.require_slack_token()
        elif args.command == "bot" or (args.command == "dev" and settings.slack.bot_token):
            settings.require_bot_credentials()
        if args.command in ("bot", "dev"):
            settings.require_codec_guard()
        asyncio.run(COMMANDS[args.command][1](settings, **options))
    except ConfigError as err:
        print(f"threadchat: configuration error: {err}", file=sys.stderr)
        code = 2
    except OperatorError as err:
        print(f"threadchat: {err}", file=sys.stderr)
        code = err.exit_code
    except KeyboardInterrupt:
        code = 130
    except Exception as err:
        log.error("%s failed: %s: %s", args.command, type(err).__name__, err)
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    # The Temporal SDK can abort at interpreter shutdown (rc 134); our work is done here.
    os._exit(code)
