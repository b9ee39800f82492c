"""The `threadchat` command: configuration errors are one clear line and exit code 2."""

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.readme import documented_settings

THREADCHAT = str(Path(sys.executable).with_name("threadchat"))
BASE_ENV = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp")}


def run(args: list[str], **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [THREADCHAT, *args], env={**BASE_ENV, **env}, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize(
    ("command", "env", "variable"),
    [
        ("bot", {}, "SLACK_BOT_TOKEN"),
        ("worker", {}, "SLACK_BOT_TOKEN"),
        ("bot", {"SLACK_BOT_TOKEN": "xoxb-1"}, "SLACK_SIGNING_SECRET"),
        ("bot", {"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_SIGNING_SECRET": "s", "PORT": "http"}, "PORT"),
        (
            "worker",
            {"SLACK_BOT_TOKEN": "xoxb-1", "CHAT_INACTIVITY_TIMEOUT": "soon"},
            "CHAT_INACTIVITY_TIMEOUT",
        ),
        (
            "worker",
            {"SLACK_BOT_TOKEN": "xoxb-1", "BEDROCK_TEMPERATURE": "warm"},
            "BEDROCK_TEMPERATURE",
        ),
        ("dev", {"SLACK_API_URL": "slack.example"}, "SLACK_API_URL"),
        ("dev", {"SLACK_BOT_TOKEN": "xoxb-1"}, "SLACK_SIGNING_SECRET"),
        ("bot", {"SLACK_BOT_TOKEN": "x", "SLACK_SIGNING_SECRET": "s", "PORT": "99999"}, "PORT"),
        ("worker", {"SLACK_BOT_TOKEN": "x", "BEDROCK_TEMPERATURE": "nan"}, "BEDROCK_TEMPERATURE"),
        ("worker", {"SLACK_BOT_TOKEN": "x", "BEDROCK_TEMPERATURE": "5"}, "BEDROCK_TEMPERATURE"),
        ("worker", {"SLACK_BOT_TOKEN": "x", "BEDROCK_READ_TIMEOUT": "inf"}, "BEDROCK_READ_TIMEOUT"),
        (
            "worker",
            {"SLACK_BOT_TOKEN": "x", "CHAT_INACTIVITY_TIMEOUT": "999999999d"},
            "CHAT_INACTIVITY_TIMEOUT",
        ),
        (
            "worker",
            {"SLACK_BOT_TOKEN": "x", "THREADCHAT_STREAMING": "maybe"},
            "THREADCHAT_STREAMING",
        ),
        (
            "dev",
            {"AWS_ENDPOINT_URL_BEDROCK_RUNTIME": "localhost:1"},
            "AWS_ENDPOINT_URL_BEDROCK_RUNTIME",
        ),
        (
            "worker",
            {"SLACK_BOT_TOKEN": "x", "TEMPORAL_BEDROCK_TASK_QUEUE": "threadchat"},
            "TEMPORAL_BEDROCK_TASK_QUEUE",
        ),
        (
            "worker",
            {"SLACK_BOT_TOKEN": "x", "BEDROCK_MAX_CALLS_PER_SECOND": "0"},
            "BEDROCK_MAX_CALLS_PER_SECOND",
        ),
        ("worker", {"SLACK_BOT_TOKEN": "x", "BEDROCK_TOP_P": "2"}, "BEDROCK_TOP_P"),
        (
            "worker",
            {"SLACK_BOT_TOKEN": "x", "BEDROCK_GUARDRAIL_ID": "g"},
            "BEDROCK_GUARDRAIL_VERSION",
        ),
        (
            "worker",
            {"SLACK_BOT_TOKEN": "x", "BEDROCK_GUARDRAIL_ID": "g", "BEDROCK_GUARDRAIL_VERSION": "v"},
            "BEDROCK_GUARDRAIL_VERSION",
        ),
        (
            "worker",
            {"SLACK_BOT_TOKEN": "x", "BEDROCK_GUARDRAIL_VERSION": "1"},
            "BEDROCK_GUARDRAIL_ID",
        ),
        *(
            ("worker", {"SLACK_BOT_TOKEN": "x", "TEMPORAL_ADDRESS": address}, "TEMPORAL_ADDRESS")
            for address in (
                "temporal",  # no port
                "temporal:7x33",
                "temporal:0",
                "temporal:70000",
                "temporal :7233",
                " temporal:7233",
                "http://temporal:7233",
            )
        ),
        ("conversations", {"TEMPORAL_ADDRESS": "localhost"}, "TEMPORAL_ADDRESS"),
        (
            "bot",
            {"SLACK_BOT_TOKEN": "x", "SLACK_SIGNING_SECRET": "s", "TEMPORAL_ADDRESS": "h:"},
            "TEMPORAL_ADDRESS",
        ),
        *(
            ("worker", {"SLACK_BOT_TOKEN": "x", name: "/nonexistent/threadchat.pem"}, name)
            for name in (
                "TEMPORAL_TLS_CLIENT_CERT_PATH",
                "TEMPORAL_TLS_CLIENT_KEY_PATH",
                "TEMPORAL_TLS_SERVER_CA_CERT_PATH",
                "TEMPORAL_CONFIG_FILE",
            )
        ),
        ("worker", {"SLACK_BOT_TOKEN": "x", "WORKER_HEALTH_PORT": "http"}, "WORKER_HEALTH_PORT"),
    ],
)
def test_config_errors_name_the_variable_and_exit_2(command, env, variable):
    result = run([command], **env)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and variable in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_secrets_are_not_echoed_in_config_errors():
    result = run(["bot"], SLACK_BOT_TOKEN="xoxb-very-secret-token", PORT="-1")
    assert result.returncode == 2
    assert "xoxb-very-secret-token" not in result.stderr + result.stdout


def test_help_lists_the_commands():
    result = run(["--help"])
    assert result.returncode == 0
    for command in ("dev", "worker", "bot"):
        assert command in result.stdout


def test_a_bad_channels_file_is_one_line_naming_the_file_the_line_and_the_key(tmp_path):
    path = tmp_path / "channels.yml"
    path.write_text("C0SUPPORT:\n  system_prompt: hello\n  modle_id: x\n")
    result = run(["worker"], SLACK_BOT_TOKEN="x", THREADCHAT_CHANNELS_FILE=str(path))
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert "THREADCHAT_CHANNELS_FILE" in line and "channels.yml line 3" in line, line
    assert "C0SUPPORT.modle_id" in line and "Traceback" not in result.stderr
    missing = run(["worker"], SLACK_BOT_TOKEN="x", THREADCHAT_CHANNELS_FILE=str(tmp_path / "no"))
    assert missing.returncode == 2 and "cannot be read" in missing.stderr


def test_dev_reset_forgets_temporal_and_the_playground_but_nothing_else(tmp_path):
    from threadchat.commands.dev import reset_data

    for name in ("temporal.db", "temporal.db-wal", "playground/workspace.json", "keep.txt"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    removed = reset_data(tmp_path)
    assert len(removed) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]
    assert reset_data(tmp_path / "never-created") == []
    assert "--reset" in run(["dev", "--help"]).stdout


def test_a_missing_tls_file_is_named_even_with_the_others_present(tmp_path):
    cert = tmp_path / "client.pem"
    cert.write_text("not checked before the key is")
    result = run(
        ["worker"],
        SLACK_BOT_TOKEN="x",
        TEMPORAL_TLS_CLIENT_CERT_PATH=str(cert),
        TEMPORAL_TLS_CLIENT_KEY_PATH=str(tmp_path / "client.key"),
    )
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert "TEMPORAL_TLS_CLIENT_KEY_PATH" in line and "client.key" in line, line


@pytest.mark.parametrize("command", ["worker", "bot"])
def test_help_lists_every_setting_the_readme_says_the_command_reads(command):
    documented = documented_settings()
    assert len(documented) > 40  # the table was found and parsed
    wanted = {name for name, users in documented.items() if users & {command, "all"}}
    result = run([command, "--help"])
    assert result.returncode == 0, result.stderr
    settings = result.stdout.split("configuration table):", 1)[1]
    listed = set(re.findall(r"\b[A-Z][A-Z0-9_]{2,}\b", settings))
    assert wanted - listed == set(), f"missing from {command} --help"
    assert listed - set(documented) == set(), f"in {command} --help but not in the README"


def test_readme_lists_every_search_attribute():
    from threadchat.temporal import SEARCH_ATTRIBUTES

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    for name in SEARCH_ATTRIBUTES:
        assert f"`{name}`" in readme.split("## Deploying and scaling", 1)[1], name


def test_dev_refuses_a_port_in_use_in_one_line(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run(["dev"], PORT=str(port), THREADCHAT_DATA_DIR=str(tmp_path))
    assert result.returncode == 2, result.stdout + result.stderr
    [line] = result.stderr.strip().splitlines()
    assert f"{port} (the bot, PORT)" in line and "already in use" in line, line
    assert not (tmp_path / "temporal.db").exists()  # nothing was started


def test_dev_with_bedrock_aws_and_no_credentials_stops_at_once(tmp_path):
    result = run(
        ["dev", "--bedrock", "aws"],
        THREADCHAT_DATA_DIR=str(tmp_path),
        HOME=str(tmp_path),  # no ~/.aws
        AWS_EC2_METADATA_DISABLED="true",
        AWS_CONFIG_FILE=str(tmp_path / "none"),
        AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"),
    )
    assert result.returncode == 2, result.stdout + result.stderr
    [line] = result.stderr.strip().splitlines()
    assert "--bedrock aws" in line and "AWS credentials" in line, line
    assert not (tmp_path / "temporal.db").exists()


def test_every_variable_config_reads_is_in_the_readme():
    source = (Path(__file__).parent.parent / "threadchat" / "config.py").read_text()
    read = set(re.findall(r'env, "([A-Z][A-Z0-9_]+)"', source))
    read |= set(re.findall(r'env\.get\("([A-Z][A-Z0-9_]+)"', source))
    assert {"WORKER_HEALTH_PORT", "TEMPORAL_ADDRESS", "PORT"} <= read  # the scan works
    assert read - set(documented_settings()) == set()


@pytest.mark.parametrize(
    ("address", "ok"),
    [
        ("127.0.0.1:7233", True),
        ("temporal-frontend.temporal.svc.cluster.local:7233", True),
        ("ns.acct.tmprl.cloud:7233", True),
        ("[::1]:7233", True),
        ("temporal", False),
        (":7233", False),
        ("temporal:", False),
        ("temporal:65536", False),
        ("temporal:-1", False),
        ("[::1:7233", False),
        ("grpc://temporal:7233", False),
        ("temporal:7233\n", False),
    ],
)
def test_check_address(address, ok):
    from threadchat.config import check_address

    assert (check_address(address) is None) == ok, check_address(address)
