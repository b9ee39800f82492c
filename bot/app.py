"""The Slack app: built here, listeners registered, served over HTTP or Socket Mode."""

import asyncio
import functools
import logging
import time
from datetime import timedelta

from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response
from slack_bolt.async_app import AsyncApp
from slack_bolt.logger.messages import warning_client_prioritized_and_token_skipped
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.response import BoltResponse
from temporalio.client import Client
from temporalio.converter import PayloadCodec

from bot.conversations import Conversations, request_arrived
from bot.listeners import register_listeners
from bot.parsing import malformed
from threadchat import signature, telemetry
from threadchat.codec import CODEC_PATH, EncryptionCodec, codec_routes
from threadchat.config import DEFAULT_CODEC_ORIGINS, ConfigError, Settings, SlackSettings
from threadchat.model import TokenLimits
from threadchat.slack_client import CountingWebClient

log = logging.getLogger(__name__)

EVENTS_PATH = "/slack/events"


class _SameTokenNotice(logging.Filter):
    """Bolt reads SLACK_BOT_TOKEN from the environment by itself and, given our client as
    well, warns at every start that the token is unused: it is the same token (config.py
    read it for the client), so the warning only alarms."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != warning_client_prioritized_and_token_skipped()


_same_token_notice = _SameTokenNotice()


def build_app(
    settings: SlackSettings,
    temporal: Client,
    task_queue: str,
    limits: TokenLimits | None = None,
) -> AsyncApp:
    logging.getLogger(f"slack_bolt.{AsyncApp.__name__}").addFilter(_same_token_notice)
    app = AsyncApp(
        client=CountingWebClient(token=settings.bot_token, base_url=settings.api_url),
        signing_secret=settings.signing_secret or "",
        # Socket Mode frames are authenticated by the app token; HTTP requests by signature.
        request_verification_enabled=not settings.socket_mode,
        process_before_response=True,
    )
    register_listeners(app, Conversations(temporal, task_queue), settings, limits or TokenLimits())
    return app


def build_web_app(
    app: AsyncApp | None, temporal: Client, signing_secret: str = ""
) -> web.Application:
    """`POST /slack/events` (when `app` is given, verified with `signing_secret`) and
    `GET /healthz`: what PORT serves, to Slack and to load balancers."""
    if app is not None and not signing_secret:
        raise ValueError("a signing secret is required to serve Slack events")

    async def slack_events(request: web.Request) -> web.Response:
        started = time.monotonic()
        request_arrived(started)
        with telemetry.span("slack.request"):
            bolt_response = await dispatch(request)
        telemetry.metrics.ack_latency.record(timedelta(seconds=time.monotonic() - started))
        telemetry.metrics.slack_requests.add(1, {"status": str(bolt_response.status)})
        return await to_aiohttp_response(bolt_response)

    async def dispatch(request: web.Request) -> BoltResponse:
        """Hand a request to Bolt once its signature holds; input Bolt cannot even parse is
        refused with a 4xx.

        The order is the point: size and signature headers first (no body read), then the
        signature over the raw bytes, and only then is the body parsed. Errors inside
        listeners (Temporal unreachable) are Bolt's to answer, with a 5xx so that Slack
        delivers the event again; anything raised before or around them is bad input.
        """
        if (request.content_length or 0) > signature.MAX_BODY_BYTES:
            return BoltResponse(status=413, body='{"error": "request body too large"}')
        timestamp = request.headers.get("X-Slack-Request-Timestamp")
        signed = request.headers.get("X-Slack-Signature")
        if not signature.plausible(timestamp, signed, time.time()):
            return BoltResponse(status=401, body='{"error": "invalid request"}')
        try:
            raw = await request.read()  # at most client_max_size, else 413
        except web.HTTPRequestEntityTooLarge:
            return BoltResponse(status=413, body='{"error": "request body too large"}')
        # hashlib lets go of the GIL on large inputs: big bodies are hashed off the loop.
        check = functools.partial(signature.valid, signing_secret, timestamp, signed, raw)
        ok = await asyncio.to_thread(check) if len(raw) > 64 * 1024 else check()
        if not ok:
            return BoltResponse(status=401, body='{"error": "invalid request"}')
        try:
            body = raw.decode("utf-8")
            if malformed(body):
                return BoltResponse(status=400, body='{"error": "malformed payload"}')
            return await app.async_dispatch(
                AsyncBoltRequest(body=body, query=request.query_string, headers=request.headers)
            )
        except Exception as err:
            log.warning("refused a Slack request Bolt could not handle: %s", type(err).__name__)
            return BoltResponse(status=400, body='{"error": "unprocessable request"}')

    async def healthz(request: web.Request) -> web.Response:
        try:
            healthy = await temporal.service_client.check_health(timeout=timedelta(seconds=2))
        except Exception:
            healthy = False
        return web.json_response(
            {"ok": healthy, "temporal": "ok" if healthy else "unreachable"},
            status=200 if healthy else 503,
        )

    web_app = web.Application(client_max_size=signature.MAX_BODY_BYTES)
    web_app.router.add_get("/healthz", healthz)
    if app is not None:
        web_app.router.add_post(EVENTS_PATH, slack_events)
    return web_app


def build_codec_app(
    codec: PayloadCodec,
    codec_token: str | None = None,
    codec_origins: tuple[str, ...] = DEFAULT_CODEC_ORIGINS,
) -> web.Application:
    """The remote codec endpoint alone, `POST /codec/decode` and `/codec/encode` (bearer
    `codec_token`; CORS for the Temporal Web UI at `codec_origins`): for operators, on a
    listener of its own, so that exposing /slack/events to Slack never exposes it."""
    web_app = web.Application(client_max_size=signature.MAX_BODY_BYTES * 4)
    web_app.add_routes(codec_routes(codec, codec_token, codec_origins))
    return web_app


async def start_http(web_app: web.Application, host: str, port: int) -> web.AppRunner:
    """Serve until the runner is cleaned up; returns the runner (its port may be 0 → chosen)."""
    # Hand-overs take milliseconds; a client stalled mid-request must not hold SIGTERM.
    runner = web.AppRunner(web_app, access_log=None, shutdown_timeout=5)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    return runner


def bound_port(runner: web.AppRunner) -> int:
    return runner.addresses[0][1]


async def serve(settings: Settings, temporal: Client, stop: asyncio.Event, host: str) -> None:
    """Run the bot until `stop` is set: Socket Mode when an app token is set, else HTTP.

    `/healthz` is served on PORT in both modes, for load balancers and orchestrators; with
    encryption keys, the codec endpoint on THREADCHAT_CODEC_HOST:THREADCHAT_CODEC_PORT.
    """
    settings.require_codec_guard()
    app = build_app(settings.slack, temporal, settings.temporal.task_queue, settings.token_limits)
    socket_mode = settings.slack.socket_mode
    web_app = build_web_app(
        None if socket_mode else app, temporal, signing_secret=settings.slack.signing_secret or ""
    )
    runner = await start_http(web_app, host, settings.slack.port)
    runners = [runner]
    if settings.encryption_keys:
        codec_app = build_codec_app(
            EncryptionCodec(settings.encryption_keys), settings.codec_token, settings.codec_origins
        )
        try:
            codec_runner = await start_http(codec_app, settings.codec_host, settings.codec_port)
        except BaseException:
            await runner.cleanup()
            raise
        runners.append(codec_runner)
        log.info(
            "codec endpoint %s on %s:%s%s",
            CODEC_PATH,
            settings.codec_host,
            bound_port(codec_runner),
            "" if settings.codec_token else " (decode without a token: loopback only)",
        )
    try:
        if socket_mode:
            await _serve_socket_mode(app, settings.slack.app_token or "", stop)
        else:
            log.info("bot serving %s on %s:%s", EVENTS_PATH, host, bound_port(runner))
            await stop.wait()
    finally:
        log.info("bot shutting down")
        for each in runners:
            await each.cleanup()  # lets in-flight HTTP requests finish their hand-over


async def _serve_socket_mode(app: AsyncApp, app_token: str, stop: asyncio.Event) -> None:
    from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
    from slack_sdk.errors import SlackApiError

    # slack_sdk retries a refused connection for ever; a bad token must stop the bot instead.
    try:
        await app.client.apps_connections_open(app_token=app_token)
    except SlackApiError as err:
        raise ConfigError(
            "SLACK_APP_TOKEN", f"was refused by Slack: {err.response.get('error')}"
        ) from None

    handler = AsyncSocketModeHandler(app, app_token)
    # Envelopes are handled in tasks slack_sdk does not keep; track them so that stopping
    # lets each hand-over to Temporal finish and ack, as the HTTP server does.
    in_flight: set[asyncio.Task] = set()
    listeners = handler.client.socket_mode_request_listeners

    async def tracked(client, request) -> None:
        request_arrived(time.monotonic())
        task = asyncio.current_task()
        in_flight.add(task)
        try:
            await handler.handle(client, request)
        finally:
            in_flight.discard(task)

    listeners[listeners.index(handler.handle)] = tracked
    connecting = asyncio.create_task(handler.connect_async())
    try:
        await asyncio.wait(
            [connecting, asyncio.create_task(stop.wait())], return_when=asyncio.FIRST_COMPLETED
        )
        if connecting.done():
            connecting.result()
            log.info("bot connected in Socket Mode")
            await stop.wait()
    finally:
        connecting.cancel()
        if in_flight:
            await asyncio.wait(in_flight, timeout=10)
        await handler.close_async()
