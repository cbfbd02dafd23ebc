"""Ray Serve with @serve.batch behind its default (Python) proxy, as Ray's batching guide shows.

Ray's docs: `@serve.batch(max_batch_size, batch_wait_timeout_s)` on an async
method taking a list; `max_ongoing_requests` above `max_batch_size` so full
batches can reach a replica; one replica per core (`num_replicas`). No
HAProxy (that is optiserve's change). Started as `python service.py PORT`;
SIGTERM shuts Serve and Ray down.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import BATCH_WAIT_S, INFER_PATH, MAX_BATCH, WORKERS, PeerModel, request_item  # noqa: E402
from ray import serve  # noqa: E402
from starlette.requests import Request  # noqa: E402


@serve.deployment(num_replicas=WORKERS, max_ongoing_requests=2 * MAX_BATCH)
class OnnxDeployment:
    def __init__(self) -> None:
        self.model = PeerModel()

    @serve.batch(max_batch_size=MAX_BATCH, batch_wait_timeout_s=BATCH_WAIT_S)
    async def infer(self, items: list) -> list:
        return self.model.infer(items)

    async def __call__(self, request: Request) -> dict:
        output = await self.infer(request_item(self.model, await request.json()))
        return self.model.response(output)


if __name__ == "__main__":
    import ray

    os.environ.pop("RAY_SERVE_ENABLE_HA_PROXY", None)
    os.environ["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])  # replicas import `common`
    ray.init(address="local", include_dashboard=False, log_to_driver=False)  # never join a `ray start` cluster
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    serve.start(http_options={"host": "127.0.0.1", "port": int(sys.argv[1])})
    serve.run(OnnxDeployment.bind(), route_prefix=INFER_PATH)
    print("ray serve peer ready", flush=True)
    stop.wait()
    serve.shutdown()
    ray.shutdown()
