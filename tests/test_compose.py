"""compose.yaml, the whole stack on one machine: it parses and resolves (podman-compose
config, with the example env files in place), binds every port to 127.0.0.1 but the bot's,
takes secrets only from the env file, passes threadchat only documented variables, and wires
the UI's codec endpoint to the bot. Base images cannot be pulled here, so it is not run."""

import asyncio
import os
import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml
from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest
from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest

from tests.readme import documented_settings
from threadchat.temporal import DEV_SERVER_SEARCH_ATTRIBUTES, SEARCH_ATTRIBUTES

ROOT = Path(__file__).parent.parent
EXAMPLES = ROOT / "deploy" / "compose"
SECRETS = {"SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET", "SLACK_APP_TOKEN",
           "THREADCHAT_ENCRYPTION_KEY", "THREADCHAT_CODEC_TOKEN", "AWS_SECRET_ACCESS_KEY",
           "TEMPORAL_API_KEY"}  # fmt: skip


def env_names(path: Path) -> set[str]:
    """Variables an env file sets, or shows commented out as an option."""
    return set(re.findall(r"^#? ?([A-Z][A-Z0-9_]+)=", path.read_text(), re.M))


@pytest.fixture(scope="module")
def resolved(tmp_path_factory) -> dict:
    """compose.yaml as compose resolves it, in a copy with the examples as the env files."""
    work = tmp_path_factory.mktemp("compose")
    shutil.copy(ROOT / "compose.yaml", work)
    shutil.copytree(EXAMPLES, work / "deploy" / "compose")
    shutil.copy(EXAMPLES / "threadchat.env.example", work / "threadchat.env")
    shutil.copy(EXAMPLES / "compose.env.example", work / ".env")
    podman_compose = Path(sys.executable).with_name("podman-compose")
    result = subprocess.run(
        [str(podman_compose), "config"], cwd=work, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return yaml.safe_load(result.stdout)


def test_the_stack_resolves_with_every_piece(resolved):
    services = resolved["services"]
    assert set(services) == {
        "postgresql",
        "temporal-schema",
        "temporal",
        "temporal-namespace",
        "temporal-ui",
        "worker",
        "bot",
    }
    assert services["temporal"]["image"].startswith("temporalio/server:")
    assert services["temporal-schema"]["image"].startswith("temporalio/admin-tools:")
    assert not any("auto-setup" in s["image"] for s in services.values() if "image" in s)
    # The order of start: schema before server, namespace before threadchat.
    needs = {name: set(s.get("depends_on", {})) for name, s in services.items()}
    assert needs["temporal"] == {"temporal-schema"} and needs["worker"] == {"temporal-namespace"}
    assert services["worker"]["image"] == services["bot"]["image"]  # one image
    assert services["worker"]["command"] == ["worker"] and services["bot"]["command"] == ["bot"]


def test_ports_are_loopback_but_the_bots(resolved):
    for name, service in resolved["services"].items():
        for port in service.get("ports", []):
            if name == "bot":
                assert not str(port).startswith("127.0.0.1:"), port
            else:
                assert str(port).startswith("127.0.0.1:"), (name, port)
    assert resolved["services"]["bot"]["ports"]


def test_threadchat_gets_documented_variables_and_secrets_only_from_the_env_file(resolved):
    documented = set(documented_settings())
    example = env_names(EXAMPLES / "threadchat.env.example")
    for name in ("worker", "bot"):
        service = resolved["services"][name]
        passed = set(service["environment"])
        assert passed - documented == set(), f"{name} gets undocumented variables"
        assert not passed & SECRETS, f"{name} has a secret in compose.yaml"
        assert [entry["path"] for entry in service["env_file"]] == ["threadchat.env"]
    assert example - documented == set(), "undocumented in the env example"
    assert {"SLACK_BOT_TOKEN", "SLACK_APP_TOKEN", "THREADCHAT_ENCRYPTION_KEY"} <= example
    text = (ROOT / "compose.yaml").read_text()
    assert "xoxb-" not in text and "change-me" not in text  # no secret in the file itself


def test_health_checks_use_the_ports_the_settings_open(resolved):
    worker, bot = resolved["services"]["worker"], resolved["services"]["bot"]
    port = worker["environment"]["WORKER_HEALTH_PORT"]
    assert f"127.0.0.1:{port}/readyz" in " ".join(worker["healthcheck"]["test"])
    assert f"127.0.0.1:{bot['environment']['PORT']}/healthz" in " ".join(bot["healthcheck"]["test"])
    assert int(worker["stop_grace_period"].rstrip("s")) > 25  # the worker's drain


def test_the_ui_decodes_through_the_bot(resolved):
    ui, bot = resolved["services"]["temporal-ui"], resolved["services"]["bot"]
    bot_port = str(bot["ports"][0]).split(":")[-1]
    assert ui["environment"]["TEMPORAL_CODEC_ENDPOINT"] == f"http://127.0.0.1:{bot_port}/codec"
    ui_port = str(ui["ports"][0]).split(":")[1]
    origins = bot["environment"]["THREADCHAT_CODEC_ORIGINS"].split(",")
    assert f"http://127.0.0.1:{ui_port}" in origins


def test_the_namespace_job_creates_every_search_attribute(resolved):
    script = " ".join(resolved["services"]["temporal-namespace"]["command"])
    for attribute in DEV_SERVER_SEARCH_ATTRIBUTES:
        assert attribute in script, attribute
    assert "--retention" in script


async def test_the_namespace_job_runs_against_a_temporal_server(resolved, temporal_server):
    """Its script, as compose resolved it, run with the real Temporal CLI against the dev
    server: the namespace exists with its retention, with every search attribute, and a
    second run (compose up again) changes nothing and succeeds."""
    job = resolved["services"]["temporal-namespace"]
    namespace = f"compose-{uuid.uuid4().hex[:8]}"
    env = {
        "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
        "HOME": os.environ.get("HOME", "/tmp"),
        "TEMPORAL_ADDRESS": temporal_server[0].address,
        "NAMESPACE": namespace,
        "RETENTION": "3d",
    }
    for _ in range(2):
        ran = await asyncio.to_thread(
            subprocess.run,
            [*job["entrypoint"], *job["command"]],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert ran.returncode == 0, ran.stdout + ran.stderr
    client = temporal_server[1]
    described = await client.workflow_service.describe_namespace(
        DescribeNamespaceRequest(namespace=namespace)
    )
    assert described.config.workflow_execution_retention_ttl.ToSeconds() == 3 * 86400
    listed = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=namespace)
    )
    assert set(SEARCH_ATTRIBUTES) <= set(listed.custom_attributes)
    for name, kind in SEARCH_ATTRIBUTES.items():
        assert listed.custom_attributes[name] == kind, name


def test_the_jobs_scripts_are_valid_shell(resolved):
    jobs = {
        n: s for n, s in resolved["services"].items() if s.get("entrypoint", [""])[0] == "/bin/sh"
    }
    assert set(jobs) == {"temporal-schema", "temporal-namespace"}
    for name, job in jobs.items():
        checked = subprocess.run(
            ["sh", "-n", "-c", job["command"][0]], capture_output=True, text=True
        )
        assert checked.returncode == 0, f"{name}: {checked.stderr}"
        assert "set -e" in job["command"][0] or "-ec" in job["entrypoint"]
