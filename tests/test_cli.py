"""The `threadchat` command: configuration errors are one clear line and exit code 2."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

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
