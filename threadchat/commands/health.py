"""The worker's own health endpoints, for orchestrators (WORKER_HEALTH_PORT).

- `GET /healthz` (liveness): 200 while the process serves and its workers have not died. It
  does not ask Temporal, so an outage of Temporal never gets healthy workers restarted.
- `GET /readyz` (readiness): 200 only when Temporal answers and the server lists this
  worker among the pollers of both task queues (workflow tasks on the main queue, activity
  tasks on both). 503 while draining after SIGTERM.
"""

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from datetime import timedelta

from aiohttp import web
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client
from temporalio.worker import Worker

log = logging.getLogger(__name__)

RPC_TIMEOUT = timedelta(seconds=2)


async def _polled_by(client: Client, task_queue: str, kind: int, identity: str) -> bool:
    response = await client.workflow_service.describe_task_queue(
        DescribeTaskQueueRequest(
            namespace=client.namespace,
            task_queue=TaskQueue(name=task_queue),
            task_queue_type=kind,
        ),
        timeout=RPC_TIMEOUT,
    )
    return any(poller.identity == identity for poller in response.pollers)


async def readiness(client: Client, workers: list[Worker], stop: asyncio.Event) -> dict:
    """What /readyz reports: each check by name, and `ok` when all pass."""
    # Draining after SIGTERM counts as not ready: new work should go to other workers.
    checks = {"running": not stop.is_set() and all(w.is_running for w in workers)}
    try:
        checks["temporal"] = await client.service_client.check_health(timeout=RPC_TIMEOUT)
    except Exception as err:  # an outage is an answer here, not a crash
        log.debug("readiness: Temporal health check failed: %s", err)
        checks["temporal"] = False
    for worker in workers:
        kinds = [TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY]
        if worker.config().get("workflows"):
            kinds.append(TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW)
        identity = worker.config().get("identity") or client.identity
        try:
            polled = checks["temporal"] and all(
                [await _polled_by(client, worker.task_queue, kind, identity) for kind in kinds]
            )
        except Exception as err:
            log.debug("readiness: describe %s failed: %s", worker.task_queue, err)
            polled = False
        checks[f"polling {worker.task_queue}"] = polled
    return {"ok": all(checks.values()), "checks": checks}


def build_health_app(client: Client, workers: list[Worker], stop: asyncio.Event) -> web.Application:
    """The two endpoints, over the workers `run_workers` runs and its stop event."""

    async def healthz(request: web.Request) -> web.Response:
        # A worker that shut down on its own (a fatal poll error) will not come back.
        dead = [w.task_queue for w in workers if w.is_shutdown and not stop.is_set()]
        return web.json_response({"ok": not dead, "dead": dead}, status=503 if dead else 200)

    async def readyz(request: web.Request) -> web.Response:
        report = await readiness(client, workers, stop)
        return web.json_response(report, status=200 if report["ok"] else 503)

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app


@contextlib.asynccontextmanager
async def serve_health(
    host: str, port: int | None, client: Client, workers: list[Worker], stop: asyncio.Event
) -> AsyncIterator[None]:
    """Serve /healthz and /readyz on host:port while the block runs; nothing when port is
    None."""
    if port is None:
        yield
        return
    runner = web.AppRunner(build_health_app(client, workers, stop), access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        log.info("worker health on %s:%s (/healthz, /readyz)", host, port)
        yield
    finally:
        await runner.cleanup()
