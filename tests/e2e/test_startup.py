"""What clients see while the server starts: the port stays closed (connection refused) until every model
has a replica behind the ingress (serve/on_ray/ingress.py), then inference answers 200 at once; never a 404.
Readiness may answer 503 {"ready": false} for a moment before it turns 200, and 200 means inference works."""

import json
import time
import urllib.error
import urllib.request

import numpy as np

from optiserve.local_server import STARTUP_TIMEOUT_S, launch_server, stop_server


def _poll(url: str, body: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body); status 0 when no HTTP answer came (the port is not open yet)."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=body), timeout=5) as response:
            return response.status, _lower(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, _lower(error.headers), error.read()
    except OSError:
        return 0, {}, b""


def _lower(headers) -> dict[str, str]:
    return {name.lower(): value for name, value in headers.items()}


def test_start_up_answers_503_until_ready_and_ready_means_inference_works(digits_artifact, tmp_path):
    image = np.random.default_rng(0).random(64).tolist()
    infer_body = json.dumps({"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": image}]})
    server = launch_server([digits_artifact], tmp_path / "server.log", "--replicas", "2")
    seen: list[tuple[float, str, int, dict[str, str], bytes]] = []
    try:
        started, ready_at = time.monotonic(), None
        while time.monotonic() - started < STARTUP_TIMEOUT_S:
            assert server.process.poll() is None, (tmp_path / "server.log").read_text()[-3000:]
            at = time.monotonic() - started
            seen.append((at, "ready", *_poll(f"{server.url}/v2/health/ready")))
            seen.append((at, "infer", *_poll(f"{server.url}/v2/models/digits/infer", infer_body.encode())))
            if ready_at is None and seen[-2][2] == 200:
                ready_at = at
            if ready_at is not None and at - ready_at > 1.0:
                break
            time.sleep(0.02)
    finally:
        assert stop_server(server) == 0

    last: dict[str, int] = {}
    changes = []
    for at, route, status, _, _ in seen:
        if last.get(route) != status:
            changes.append((round(at, 2), route, status))
            last[route] = status
    print(f"\nstart-up answers (seconds, route, status; 0 = connection refused), changes only: {changes}")
    assert ready_at is not None, f"never ready within {STARTUP_TIMEOUT_S}s"

    for at, route, status, headers, body in seen:
        if at >= ready_at:
            assert status == 200, f"{route} answered {status} {body[:200]!r} at {at:.2f}s, after ready at {ready_at:.2f}s"
        elif status == 503 and route == "ready":
            assert json.loads(body) == {"ready": False}, body
        else:
            # Ray's ingress used to answer 404 before any route existed, then 503 while a model started; the port
            # now opens only once every model has a replica
            assert status in (0, 200), f"{route} answered {status} {body[:200]!r} at {at:.2f}s while starting"
