"""`threadchat worker` with WORKER_HEALTH_PORT, as the real console script: /readyz is 200 only
while Temporal lists it as a poller of both queues, /healthz does not depend on Temporal, and
readiness drops when Temporal goes away and when the worker drains."""

import signal
import uuid

import aiohttp

from devtools.processes import ChildProcess, until
from devtools.temporal_server import TemporalDevServer, free_port


async def get(url: str) -> tuple[int, dict] | None:
    """Status and JSON body, or None while nothing listens."""
    try:
        async with aiohttp.ClientSession() as session, session.get(url) as response:
            return response.status, await response.json()
    except aiohttp.ClientConnectionError:
        return None


async def test_worker_answers_healthz_and_readyz_and_follows_temporal(tmp_path):
    # A server of its own: the test stops it.
    server = TemporalDevServer(db_file=str(tmp_path / "temporal.db"))
    await server.start()
    port = free_port()
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "SLACK_BOT_TOKEN": "xoxb-health",
        "SLACK_API_URL": "http://127.0.0.1:9/api/",  # never called by a worker with no work
        "TEMPORAL_ADDRESS": server.address,
        "TEMPORAL_TASK_QUEUE": f"health-q-{uuid.uuid4().hex[:6]}",
        "HOST": "127.0.0.1",
        "WORKER_HEALTH_PORT": str(port),
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    queue = env["TEMPORAL_TASK_QUEUE"]
    worker = ChildProcess("worker", "health", env)
    base = f"http://127.0.0.1:{port}"
    try:

        async def ready():
            answer = await get(f"{base}/readyz")
            return answer if answer and answer[0] == 200 else None

        status, body = await until(ready, 30, "/readyz to answer 200", worker.tail)
        assert body["ok"] is True
        assert body["checks"] == {
            "running": True,
            "temporal": True,
            f"polling {queue}": True,
            f"polling {queue}-bedrock": True,
            f"polling {queue}-tools": True,
        }
        assert await get(f"{base}/healthz") == (200, {"ok": True, "dead": []})

        server.stop()  # Temporal goes away: not ready, but alive (no restart for an outage)

        async def not_ready():
            answer = await get(f"{base}/readyz")
            return answer if answer and answer[0] == 503 else None

        status, body = await until(not_ready, 30, "/readyz to answer 503", worker.tail)
        assert body["ok"] is False and body["checks"]["temporal"] is False
        assert (await get(f"{base}/healthz"))[0] == 200

        worker.send(signal.SIGTERM)
        assert await worker.wait_exit(60) == 0, worker.tail()
        assert await get(f"{base}/healthz") is None  # the port is released
    finally:
        worker.stop()
        server.stop()


async def test_no_health_port_unless_asked(tmp_path):
    """Without WORKER_HEALTH_PORT nothing extra listens (two workers on one host would clash)."""
    from threadchat.config import load_settings

    assert load_settings({}).worker_health_port is None
    assert load_settings({"WORKER_HEALTH_PORT": "8081"}).worker_health_port == 8081
