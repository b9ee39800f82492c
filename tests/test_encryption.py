"""Encryption at rest: every Temporal payload is sealed with AES-256-GCM (threadchat.codec),
keys rotate, the raw history on the server holds no plaintext of any message or reply, and
the codec endpoint shows operators the decrypted history, to them only: on a listener of its
own (never on PORT, which faces Slack), on loopback unless a token guards it, and encoding
only with the token."""

import asyncio
import base64
import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import aiohttp
import pytest
from google.protobuf import json_format
from google.protobuf.message import Message
from temporalio.api.common.v1 import Payload, Payloads
from temporalio.client import Client
from temporalio.converter import default as default_converter

from bot.app import bound_port, build_codec_app, start_http
from devtools.slack_events import slash_command
from devtools.stack import ALICE, BOB, TEAM, eventually, start_stack
from devtools.temporal_server import temporal_cli
from threadchat.codec import (
    ENCODING,
    KEY_ID,
    DecryptionError,
    EncryptedPayloadError,
    EncryptionCodec,
    data_converter,
    key_id,
    reader_data_converter,
)
from threadchat.config import ConfigError, load_settings
from threadchat.ids import conversation_id, thread_permalink

THREADCHAT = str(Path(sys.executable).with_name("threadchat"))
BASE_ENV = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp")}
UI_ORIGIN = "http://localhost:8233"
KEY_VARIABLE = "THREADCHAT_ENCRYPTION_KEY"


def b64(key: bytes, urlsafe: bool = True) -> str:
    return (base64.urlsafe_b64encode if urlsafe else base64.b64encode)(key).decode()


# --- The codec -------------------------------------------------------------------------


async def test_round_trip_encrypts_every_payload_with_a_fresh_nonce():
    converter = data_converter([os.urandom(32)])
    values = ["a secret about kumquats", {"turns": ["kumquats again"]}, None]
    encoded = await converter.encode(values)
    assert len(encoded) == 3
    for payload in encoded:
        assert payload.metadata["encoding"] == ENCODING
        assert b"kumquats" not in payload.SerializeToString()
    assert await converter.decode(encoded, [str, dict, type(None)]) == values
    again = await converter.encode(values[:1])
    assert again[0].data[:12] != encoded[0].data[:12]  # a new nonce each time
    assert again[0].data != encoded[0].data


async def test_rotation_new_key_encrypts_old_keys_still_decrypt():
    old, new = os.urandom(32), os.urandom(32)
    before = await data_converter([old]).encode(["written with the old key"])
    assert before[0].metadata[KEY_ID] == key_id(old).encode()

    rotated = data_converter([new, old])
    assert await rotated.decode(before, [str]) == ["written with the old key"]
    after = await rotated.encode(["written after rotation"])
    assert after[0].metadata[KEY_ID] == key_id(new).encode()
    # Once the old key is dropped, what the new key wrote still opens...
    assert await data_converter([new]).decode(after, [str]) == ["written after rotation"]
    # ...and what only the old key opens fails, naming the key id it needs.
    with pytest.raises(DecryptionError, match=key_id(old)):
        await data_converter([new]).decode(before, [str])


async def test_wrong_key_or_tampered_data_fails_clearly_without_the_key():
    key = os.urandom(32)
    codec = EncryptionCodec([key])
    [sealed] = await codec.encode([Payload(metadata={"encoding": b"json/plain"}, data=b'"x"')])

    with pytest.raises(DecryptionError) as unknown:
        await EncryptionCodec([os.urandom(32)]).decode([sealed])
    assert "not among" in str(unknown.value) and key_id(key) in str(unknown.value)
    assert b64(key) not in str(unknown.value)

    tampered = Payload()
    tampered.CopyFrom(sealed)
    tampered.data = sealed.data[:-1] + bytes([sealed.data[-1] ^ 1])
    with pytest.raises(DecryptionError, match="failed authentication"):
        await codec.decode([tampered])


async def test_payloads_written_before_encryption_pass_through():
    plain = await default_converter().encode(["from before encryption", 42])
    converter = data_converter([os.urandom(32)])
    assert await converter.decode(plain, [str, int]) == ["from before encryption", 42]
    assert data_converter([]).payload_codec is None  # no keys: no codec at all


async def test_readers_without_keys_pass_plain_payloads_and_name_encrypted_ones():
    key = os.urandom(32)
    reader = reader_data_converter(())
    plain = await default_converter().encode(["written before encryption"])
    assert await reader.decode(plain, [str]) == ["written before encryption"]
    sealed = await data_converter([key]).encode(["a secret"])
    with pytest.raises(EncryptedPayloadError) as err:
        await reader.decode(sealed, [str])
    assert err.value.key_id == key_id(key) and "a secret" not in str(err.value)
    assert await reader_data_converter([key]).decode(sealed, [str]) == ["a secret"]


def test_codec_rejects_bad_keys():
    with pytest.raises(ValueError):
        EncryptionCodec([])
    with pytest.raises(ValueError):
        EncryptionCodec([os.urandom(16)])


# --- Configuration ---------------------------------------------------------------------


def test_keys_parse_urlsafe_and_standard_base64_and_stay_out_of_repr():
    # Keys whose encodings differ between the two alphabets.
    first = bytes([0xFB, 0xFF] * 16)
    second = bytes([0xFF, 0xFE] * 16)
    raw = f"{b64(first)}, {b64(second, urlsafe=False).rstrip('=')}"
    token = "codec-token-" + uuid.uuid4().hex
    settings = load_settings({"THREADCHAT_ENCRYPTION_KEY": raw, "THREADCHAT_CODEC_TOKEN": token})
    assert settings.encryption_keys == (first, second) and settings.codec_token == token
    assert "encryption_keys" not in repr(settings) and token not in repr(settings)
    assert load_settings({}).encryption_keys == ()


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("not*base64!", "not valid base64"),
        (b64(os.urandom(16)), "32 bytes"),
        (f"{b64(os.urandom(32))},{b64(os.urandom(31))}", "key 2"),
        (f"{b64(os.urandom(32))},", "key 2 is empty"),
    ],
)
def test_bad_keys_are_config_errors_that_do_not_echo_the_key(value, problem):
    with pytest.raises(ConfigError) as err:
        load_settings({"THREADCHAT_ENCRYPTION_KEY": value})
    assert err.value.variable == "THREADCHAT_ENCRYPTION_KEY"
    assert problem in str(err.value)
    for part in value.split(","):
        if part:
            assert part not in str(err.value)


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({KEY_VARIABLE: "c2VjcmV0LWtleS10b28tc2hvcnQ="}, KEY_VARIABLE),  # 20 bytes
        ({KEY_VARIABLE: "%%%%secret%%%%"}, KEY_VARIABLE),
        ({"THREADCHAT_CODEC_ORIGINS": "localhost:8233"}, "THREADCHAT_CODEC_ORIGINS"),
        ({"THREADCHAT_CODEC_PORT": "70000"}, "THREADCHAT_CODEC_PORT"),
    ],
)
@pytest.mark.parametrize("command", ["worker", "bot", "show"])
def test_cli_config_errors_exit_2_in_one_line_without_the_key(command, env, variable):
    args = [command, "threadchat-T-C-1.2"] if command == "show" else [command]
    result = subprocess.run(
        [THREADCHAT, *args],
        env={**BASE_ENV, "SLACK_BOT_TOKEN": "xoxb-1", "SLACK_SIGNING_SECRET": "s", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and variable in lines[0], result.stderr
    assert "Traceback" not in result.stderr
    key = env.get("THREADCHAT_ENCRYPTION_KEY")
    assert not key or key not in result.stderr + result.stdout


# --- End to end ------------------------------------------------------------------------


def payloads_in(message: Message, inside_search_attributes: bool = False):
    """Every Payload in a protobuf message, with whether it is a search attribute (those are
    indexed by the server, so they cannot be encrypted; they hold ids, not text)."""
    if message.DESCRIPTOR.full_name == "temporal.api.common.v1.Payload":
        yield message, inside_search_attributes
        return
    in_search = inside_search_attributes or (
        message.DESCRIPTOR.full_name == "temporal.api.common.v1.SearchAttributes"
    )
    for _field, value in message.ListFields():
        if isinstance(value, Message):
            items = [value]
        elif hasattr(value, "values") and callable(value.values):
            items = list(value.values())  # a map
        elif isinstance(value, str | bytes):
            items = []
        else:
            try:
                items = list(value)  # a repeated field
            except TypeError:
                items = []
        for item in items:
            if isinstance(item, Message):
                yield from payloads_in(item, in_search)


def payload_data(value) -> list[bytes]:
    """The `data` of every payload in a history printed as protobuf JSON."""
    if isinstance(value, list):
        return [data for item in value for data in payload_data(item)]
    if not isinstance(value, dict):
        return []
    found = [base64.b64decode(value["data"])] if isinstance(value.get("data"), str) else []
    return found + [data for item in value.values() for data in payload_data(item)]


async def run_cli(*args: str, **env: str) -> subprocess.CompletedProcess:
    """The CLI in a subprocess, off the event loop that runs the stack's worker."""
    return await asyncio.to_thread(
        subprocess.run,
        [THREADCHAT, *args],
        env={**BASE_ENV, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_raw_history_holds_no_plaintext_and_the_codec_endpoint_decrypts(temporal_server):
    server = temporal_server[0]
    keys = (os.urandom(32), os.urandom(32))  # the second is an older key, still accepted
    encrypting = await Client.connect(server.address, data_converter=data_converter(keys))
    raw = await Client.connect(server.address)  # what anyone with Temporal access sees
    # Continue as new after every turn, so run inputs carried across runs are covered too.
    # The worker knows its keys, as THREADCHAT_ENCRYPTION_KEY tells it: titles then stay out
    # of visibility, where they would be plain text.
    stack = await start_stack(encrypting, history_event_cap=20, encryption_keys=keys)
    codec_runner = None
    try:
        secrets_ = [f"kumquat-{uuid.uuid4().hex[:10]}", f"pin-{uuid.uuid4().hex[:10]}"]
        ts = await stack.mention(stack.channel, f"my locker code is {secrets_[0]}")
        [first] = await stack.replies(stack.channel, ts, 1)
        assert secrets_[0] in first["text"]
        await stack.say(stack.channel, ts, f"and my pin is {secrets_[1]}", user=BOB)
        replies = await stack.replies(stack.channel, ts, 2)
        assert secrets_[1] in replies[1]["text"]
        status, body = await stack.sender.send_command(
            slash_command(command="/endchat", text="", channel_id=stack.channel, user_id=ALICE)
        )
        assert status == 200 and thread_permalink("local", stack.channel, ts) in body, body
        result = await stack.handle(stack.channel, ts).result()  # decrypted by the codec
        assert result.summary and secrets_[0] in result.summary
        replies = await stack.replies(stack.channel, ts, 3)

        workflow_id = conversation_id(TEAM, stack.channel, ts)
        runs = [r async for r in raw.list_workflows(f"WorkflowId = '{workflow_id}'")]
        assert len(runs) > 1  # continue-as-new happened, so its input is checked too
        reply_words = [b"offline model", b"You said"]  # what every reply and summary contains
        needles = [s.encode() for s in secrets_] + reply_words
        encrypted: list[Payload] = []
        kinds: set[str] = set()
        for run in runs:
            history = await raw.get_workflow_handle(run.id, run_id=run.run_id).fetch_history()
            as_json = history.to_json()
            for needle in needles:
                assert needle.decode() not in as_json
            for event in history.events:
                kind = event.WhichOneof("attributes")
                data = event.SerializeToString()
                for needle in needles:
                    assert needle not in data, f"plaintext {needle!r} in a {kind} event"
                # The SDK's core writes some marker details unencoded: a patch marker's patch
                # id, and a local activity marker's bookkeeping (`data`: sequence, activity
                # type, times). A local activity's result is encrypted like any payload, and
                # the plaintext check above covers every marker.
                unencoded = []
                if kind == "marker_recorded_event_attributes":
                    marker = event.marker_recorded_event_attributes
                    if marker.marker_name == "core_patch":
                        unencoded = [p for p, _ in payloads_in(marker)]
                    elif marker.marker_name == "core_local_activity":
                        unencoded = [p for p, _ in payloads_in(marker.details["data"])]
                for payload, search_attribute in payloads_in(event):
                    if search_attribute or any(payload is p for p in unencoded):
                        continue
                    assert payload.metadata["encoding"] == ENCODING, f"{kind}: {payload}"
                    assert payload.metadata[KEY_ID] == key_id(keys[0]).encode()
                    encrypted.append(payload)
                    kinds.add(kind)
        # Messages arrive as signal(-with-start) payloads, replies as activity results, the
        # summary as the workflow result, state as continue-as-new input.
        for kind in (
            "workflow_execution_started_event_attributes",
            "workflow_execution_signaled_event_attributes",
            "activity_task_scheduled_event_attributes",
            "activity_task_completed_event_attributes",
            "workflow_execution_continued_as_new_event_attributes",
            "workflow_execution_completed_event_attributes",
        ):
            assert kind in kinds, kind

        # The operator views read the encrypted history with the key, and cannot without it.
        temporal_env = {
            "TEMPORAL_ADDRESS": server.address,
            "TEMPORAL_TASK_QUEUE": stack.settings.temporal.task_queue,
        }
        key_env = {"THREADCHAT_ENCRYPTION_KEY": ",".join(b64(k) for k in keys)}
        shown = await run_cli("show", workflow_id, **temporal_env, **key_env)
        assert shown.returncode == 0, shown.stderr
        assert secrets_[0] in shown.stdout and secrets_[1] in shown.stdout
        unkeyed = await run_cli("show", workflow_id, **temporal_env)
        assert secrets_[0] not in unkeyed.stdout + unkeyed.stderr
        assert_says_encrypted(unkeyed, keys[0])

        # The codec endpoint: what the worker wrote, decrypted for the Temporal UI.
        token = uuid.uuid4().hex
        web_app = build_codec_app(encrypting.data_converter.payload_codec, codec_token=token)
        codec_runner = await start_http(web_app, "127.0.0.1", 0)
        base = f"http://127.0.0.1:{bound_port(codec_runner)}/codec"
        body = json_format.MessageToJson(Payloads(payloads=encrypted))
        headers = {
            "Content-Type": "application/json",
            "X-Namespace": "default",
            "Origin": UI_ORIGIN,
        }
        auth = {"Authorization": f"Bearer {token}"}
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{base}/decode", data=body, headers=headers | auth) as resp:
                assert resp.status == 200, await resp.text()
                assert resp.headers["Access-Control-Allow-Origin"] == UI_ORIGIN
                decoded = json_format.Parse(await resp.read(), Payloads())
            plain = b"".join(p.data for p in decoded.payloads)
            assert all(p.metadata["encoding"] != ENCODING for p in decoded.payloads)
            for needle in needles:
                assert needle in plain
            assert json.loads(decoded.payloads[0].data) is not None  # plain JSON again

            for refused in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": token}):
                async with session.post(
                    f"{base}/decode", data=body, headers=headers | refused
                ) as resp:
                    assert resp.status == 401
                    assert secrets_[0] not in await resp.text()

            # The browser's preflight: allowed for the UI's origin, with X-Namespace.
            preflight = {
                "Origin": UI_ORIGIN,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type,x-namespace,authorization",
            }
            async with session.options(f"{base}/decode", headers=preflight) as resp:
                assert resp.status < 300
                assert resp.headers["Access-Control-Allow-Origin"] == UI_ORIGIN
                assert "POST" in resp.headers["Access-Control-Allow-Methods"]
                allowed = resp.headers["Access-Control-Allow-Headers"].lower()
                assert "x-namespace" in allowed and "content-type" in allowed
            stranger = {**preflight, "Origin": "https://evil.example"}
            async with session.options(f"{base}/decode", headers=stranger) as resp:
                assert "Access-Control-Allow-Origin" not in resp.headers

            # Encode, then decode: the UI's round trip; and a bad body is a 400.
            plain_body = json_format.MessageToJson(Payloads(payloads=list(decoded.payloads[:1])))
            async with session.post(
                f"{base}/encode", data=plain_body, headers=headers | auth
            ) as resp:
                assert resp.status == 200
                reencoded = json_format.Parse(await resp.read(), Payloads())
            assert reencoded.payloads[0].metadata["encoding"] == ENCODING
            async with session.post(
                f"{base}/decode", data="{not json", headers=headers | auth
            ) as resp:
                assert resp.status == 400

        # Temporal's own CLI speaks the same remote codec protocol as the Web UI.
        show = [temporal_cli(), "workflow", "show", "-w", workflow_id, "--output", "json"]
        show += ["--address", server.address, "--codec-endpoint", base]
        decrypted = await asyncio.to_thread(
            subprocess.run,
            [*show, "--codec-auth", f"Bearer {token}"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert decrypted.returncode == 0, decrypted.stderr
        shown_data = b"".join(payload_data(json.loads(decrypted.stdout)))
        assert secrets_[0].encode() in shown_data  # in the last run's result and its input

        async with aiohttp.ClientSession() as session:
            # The stack's bot was built without a codec: no endpoint at all.
            bot_codec = stack.bot_url.replace("/slack/events", "/codec/decode")
            async with session.post(bot_codec, data=body, headers=headers) as resp:
                assert resp.status in (404, 405)
    finally:
        if codec_runner is not None:
            await codec_runner.cleanup()
        await stack.close()


# --- The codec endpoint's own listener (issue 19, item 5) ------------------------------


@pytest.mark.parametrize(
    ("env", "host", "error"),
    [
        ({}, "127.0.0.1", None),
        ({"THREADCHAT_CODEC_HOST": "::1"}, "::1", None),
        ({"THREADCHAT_CODEC_HOST": "localhost"}, "localhost", None),
        ({"THREADCHAT_CODEC_HOST": "127.0.0.2"}, "127.0.0.2", None),
        ({"THREADCHAT_CODEC_HOST": "0.0.0.0"}, "", "THREADCHAT_CODEC_TOKEN"),
        ({"THREADCHAT_CODEC_HOST": "10.1.2.3"}, "", "THREADCHAT_CODEC_TOKEN"),
        ({"THREADCHAT_CODEC_HOST": "codec.internal"}, "", "THREADCHAT_CODEC_TOKEN"),
        ({"THREADCHAT_CODEC_HOST": "0.0.0.0", "THREADCHAT_CODEC_TOKEN": "t"}, "0.0.0.0", None),
        ({"THREADCHAT_CODEC_HOST": "http://x/"}, "", "THREADCHAT_CODEC_HOST"),
    ],
)
def test_off_loopback_the_codec_endpoint_needs_a_token(env, host, error):
    keyed = {KEY_VARIABLE: b64(os.urandom(32)), **env}
    if error:
        with pytest.raises(ConfigError) as err:
            load_settings(keyed).require_codec_guard()
        assert err.value.variable == error
    else:
        settings = load_settings(keyed)
        settings.require_codec_guard()
        assert settings.codec_host == host and settings.codec_port == 8234
    # Without keys there is no codec endpoint to guard.
    if error == "THREADCHAT_CODEC_TOKEN":
        load_settings(env).require_codec_guard()


def test_the_bot_will_not_serve_an_unguarded_codec_off_loopback():
    key = b64(os.urandom(32))
    result = subprocess.run(
        [THREADCHAT, "bot"],
        env={
            **BASE_ENV,
            "SLACK_BOT_TOKEN": "xoxb-1",
            "SLACK_SIGNING_SECRET": "s",
            KEY_VARIABLE: key,
            "THREADCHAT_CODEC_HOST": "0.0.0.0",
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert "THREADCHAT_CODEC_TOKEN" in line and "0.0.0.0" in line
    assert key not in result.stderr + result.stdout


async def test_without_a_token_decode_is_open_on_loopback_and_encode_is_refused():
    codec = EncryptionCodec([os.urandom(32)])
    [sealed] = await codec.encode([Payload(metadata={"encoding": b"json/plain"}, data=b'"hi"')])
    runner = await start_http(build_codec_app(codec), "127.0.0.1", 0)
    base = f"http://127.0.0.1:{bound_port(runner)}/codec"
    headers = {"Content-Type": "application/json"}
    try:
        async with aiohttp.ClientSession() as session:
            body = json_format.MessageToJson(Payloads(payloads=[sealed]))
            async with session.post(f"{base}/decode", data=body, headers=headers) as resp:
                assert resp.status == 200
                assert json_format.Parse(await resp.read(), Payloads()).payloads[0].data == b'"hi"'
            plain = json_format.MessageToJson(
                Payloads(payloads=[Payload(metadata={"encoding": b"json/plain"}, data=b'"x"')])
            )
            async with session.post(f"{base}/encode", data=plain, headers=headers) as resp:
                assert resp.status == 403
                assert "THREADCHAT_CODEC_TOKEN" in (await resp.json())["error"]
    finally:
        await runner.cleanup()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_the_bot_serves_the_codec_on_its_own_port_never_beside_slack_events(
    temporal_server,
):
    server = temporal_server[0]
    key = os.urandom(32)
    [sealed] = await EncryptionCodec([key]).encode(
        [Payload(metadata={"encoding": b"json/plain"}, data=b'"the locker code"')]
    )
    port, codec_port = free_port(), free_port()
    env = {
        **BASE_ENV,
        "TEMPORAL_ADDRESS": server.address,
        "SLACK_BOT_TOKEN": "xoxb-unused",
        "SLACK_SIGNING_SECRET": "secret",
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "THREADCHAT_CODEC_PORT": str(codec_port),
        KEY_VARIABLE: b64(key),
    }
    bot = await asyncio.create_subprocess_exec(
        THREADCHAT, "bot", env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    body = json_format.MessageToJson(Payloads(payloads=[sealed]))
    headers = {"Content-Type": "application/json"}
    try:
        async with aiohttp.ClientSession() as session:

            async def up() -> bool:
                try:
                    async with session.get(f"http://127.0.0.1:{port}/healthz") as resp:
                        return resp.status == 200
                except aiohttp.ClientConnectionError:
                    assert bot.returncode is None, await bot.stderr.read()
                    return False

            await eventually(up, timeout=30, what="the bot's /healthz")
            slack_side = f"http://127.0.0.1:{port}/codec/decode"
            async with session.post(slack_side, data=body, headers=headers) as resp:
                assert resp.status in (404, 405)
                assert b"the locker code" not in await resp.read()

            codec_side = f"http://127.0.0.1:{codec_port}/codec/decode"
            async with session.post(codec_side, data=body, headers=headers) as resp:
                assert resp.status == 200
                decoded = json_format.Parse(await resp.read(), Payloads())
            assert decoded.payloads[0].data == b'"the locker code"'
    finally:
        bot.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(bot.communicate(), 30)
    assert bot.returncode == 0, stderr
    assert f"127.0.0.1:{codec_port}".encode() in stderr  # the log says where it is


@pytest.mark.parametrize(
    ("env", "url"),
    [
        ({}, "http://127.0.0.1:8234/codec"),
        ({"THREADCHAT_CODEC_PORT": "9000"}, "http://127.0.0.1:9000/codec"),
        ({"THREADCHAT_CODEC_HOST": "::1"}, "http://[::1]:8234/codec"),
        (
            {"THREADCHAT_CODEC_HOST": "0.0.0.0", "THREADCHAT_CODEC_TOKEN": "t"},
            "http://127.0.0.1:8234/codec",
        ),
    ],
)
def test_threadchat_dev_points_the_temporal_ui_at_the_codec_listener(env, url):
    from threadchat.commands.dev import codec_endpoint

    settings = load_settings({KEY_VARIABLE: b64(os.urandom(32)), "PORT": "3000", **env})
    assert codec_endpoint(settings) == url  # never PORT (3000), which faces Slack


def assert_says_encrypted(result: subprocess.CompletedProcess, key: bytes) -> None:
    """One line, exit 2: the history is encrypted, with which key, and what to set."""
    assert result.returncode == 2, result.stdout + result.stderr
    [line] = result.stderr.strip().splitlines()
    assert "encrypted" in line and KEY_VARIABLE in line and key_id(key) in line, line
    assert "Traceback" not in result.stderr and "?" not in result.stdout


async def test_operator_views_without_the_key_say_the_history_is_encrypted(temporal_server):
    server = temporal_server[0]
    key = os.urandom(32)
    encrypting = await Client.connect(server.address, data_converter=data_converter([key]))
    stack = await start_stack(encrypting)  # its worker answers the status query, encrypted
    try:
        ts = await stack.mention(stack.channel, "a running, encrypted conversation")
        await stack.replies(stack.channel, ts, 1)
        env = {
            "TEMPORAL_ADDRESS": server.address,
            "TEMPORAL_TASK_QUEUE": stack.settings.temporal.task_queue,
        }
        listed = await run_cli("conversations", **env)
        assert_says_encrypted(listed, key)
        shown = await run_cli("show", conversation_id(TEAM, stack.channel, ts), **env)
        assert_says_encrypted(shown, key)
        keyed = await run_cli("conversations", **env, **{KEY_VARIABLE: b64(key)})
        assert keyed.returncode == 0 and "encrypted" not in keyed.stderr, keyed.stderr
    finally:
        await stack.close()


async def test_a_panel_conversation_keeps_its_title_out_of_visibility(temporal_server):
    """Search attributes never pass through the codec: with encryption on, the title (the
    only free text a conversation writes) is told by the conversation, not indexed."""
    import dataclasses

    from threadchat.commands import operator
    from threadchat.temporal import CONVERSATION_TITLE

    server = temporal_server[0]
    keys = (os.urandom(32),)
    encrypting = await Client.connect(server.address, data_converter=data_converter(keys))
    raw = await Client.connect(server.address)
    stack = await start_stack(encrypting, worker=False)
    stack.settings = dataclasses.replace(stack.settings, encryption_keys=keys)
    await stack.start_worker()
    try:
        dm, thread = await stack.open_panel()
        await stack.replies(dm, thread, 1)
        secret = f"quince-{uuid.uuid4().hex[:8]}"
        await stack.panel_say(dm, thread, f"tell me about {secret}")
        await stack.replies(dm, thread, 2)
        title = await eventually(lambda: stack.slack.titles.get((dm, thread)), what="a title")
        handle = encrypting.get_workflow_handle(conversation_id(TEAM, dm, thread))
        await eventually(lambda: _titled(handle, title), what="the conversation knowing its title")
        # Every search attribute of every event, and the execution's own: ids only.
        history = await raw.get_workflow_handle(handle.id).fetch_history()
        for event in history.events:
            for payload, search_attribute in payloads_in(event):
                if search_attribute:
                    assert secret.encode() not in payload.data
                    assert title.encode() not in payload.data
        described = await raw.get_workflow_handle(handle.id).describe()
        assert CONVERSATION_TITLE not in described.typed_search_attributes
        # The App Home and the operator's list still show it, from the conversation.
        home = await stack.open_home(ALICE)
        assert title in json.dumps(home)
        rows = await operator.list_conversations(
            encrypting, task_queue=stack.settings.temporal.task_queue
        )
        assert [r.title for r in rows] == [title]
    finally:
        await stack.close()


async def _titled(handle, title: str) -> bool:
    from workflows.conversation import ConversationWorkflow

    return (await handle.query(ConversationWorkflow.status)).title == title


async def test_tool_calls_on_the_record_are_read_with_the_key(temporal_server, tmp_path):
    from devtools.sample_mcp import SampleMcpProcess
    from tests.test_tools import tools_file, waiting_for_approval
    from threadchat import actions

    server = temporal_server[0]
    key = os.urandom(32)
    encrypting = await Client.connect(server.address, data_converter=data_converter([key]))
    raw = await Client.connect(server.address)
    directory = SampleMcpProcess(tmp_path / "calls.jsonl")
    await directory.start()
    stack = await start_stack(encrypting, tools_file=tools_file(tmp_path, directory.url))
    try:
        secret = f"kumquat{uuid.uuid4().hex[:8]}"
        ts = await stack.mention(stack.channel, f"use file_ticket title={secret} body=broken")
        ask = await waiting_for_approval(stack, ts)
        assert await stack.click(stack.channel, ask["ts"], actions.TOOL_APPROVE) == 200
        await stack.replies(stack.channel, ts, 2)
        workflow_id = conversation_id(TEAM, stack.channel, ts)
        # The call's arguments and the decision are in the history encrypted only.
        history = await raw.get_workflow_handle(workflow_id).fetch_history()
        decided = "workflow_execution_update_accepted_event_attributes"
        payloads = [(e, p) for e in history.events for p, _ in payloads_in(e)]
        called = [p for e, p in payloads if e.HasField("activity_task_scheduled_event_attributes")]
        assert called and all(secret.encode() not in p.data for p in called)
        decisions = [p for e, p in payloads if e.HasField(decided)]
        assert decisions and all(p.metadata["encoding"] == ENCODING for p in decisions)
        env = {
            "TEMPORAL_ADDRESS": server.address,
            "TEMPORAL_TASK_QUEUE": stack.settings.temporal.task_queue,
        }
        args = ("show", workflow_id, "--invocations", "--json")
        keyed = await run_cli(*args, **env, **{KEY_VARIABLE: b64(key)})
        assert keyed.returncode == 0, keyed.stderr
        [call] = [row for row in json.loads(keyed.stdout) if row["kind"] == "tool"]
        assert call["arguments"] == {"title": secret, "body": "broken"}
        assert (call["outcome"], call["approval"], call["approved_by"]) == (
            "success",
            "approved",
            ALICE,
        )
        assert_says_encrypted(await run_cli(*args, **env), key)
    finally:
        await stack.close()
        directory.stop()
