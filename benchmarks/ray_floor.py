"""The floor of Ray Serve's request path: what a replica that does nothing answers, on the same ingress.

    .venv/bin/python benchmarks/ray_floor.py                 # measure: floor, optiserve, FastAPI (digits)
    .venv/bin/python benchmarks/ray_floor.py serve PORT      # run the do-nothing server alone

The do-nothing server is Ray Serve set up exactly as `optiserve serve --replicas 2` sets it up (the same
Ray and HAProxy environment from serve.on_ray.runner, the same deployment options from serve.settings), whose
replicas read each request's body and answer a fixed KServe V2 digits response: no JSON parsing, no
batching, no model, no cache, no metrics of its own. Its rate bounds what any server built on Ray Serve's
HTTP path can answer on this machine. It is measured interleaved with optiserve and with FastAPI + uvicorn
(its own virtualenv, `make bench-venvs`) serving the digits artifact, by the same load client.
"""

from __future__ import annotations

import argparse
import signal
import statistics
import subprocess
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ANSWER = (b'{"model_name":"digits","model_version":"1","outputs":[{"name":"logits","datatype":"FP32",'
          b'"shape":[1,10],"data":[0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9,1.0]}]}')
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(ANSWER)).encode())]


async def answer_fixed(scope, receive, send) -> None:
    """Read the whole body, answer the fixed response; lifespan and anything else are acknowledged."""
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": ANSWER})


class _FixedApp:
    """The ASGI app Ray Serve runs in each replica (it registers exception handlers on it: ignored)."""

    async def __call__(self, scope, receive, send) -> None:
        await answer_fixed(scope, receive, send)

    def add_exception_handler(self, *args, **kwargs) -> None:
        pass


def serve_fixed(port: int) -> None:
    """Start Ray Serve as optiserve does and deploy the do-nothing replicas; block until SIGTERM."""
    import os

    import ray
    from ray import serve

    from serve.on_ray.runner import ray_serve_environment
    from serve.settings import ServeSettings

    settings = ServeSettings(port=port, replicas=2)
    os.environ.update(ray_serve_environment(settings))
    ray.init(address="local", include_dashboard=False, log_to_driver=False,
             _system_config={"metrics_report_interval_ms": settings.metrics_report_interval_ms})
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    serve.start(http_options={"host": "127.0.0.1", "port": port})

    @serve.deployment
    @serve.ingress()
    class Fixed:
        def __serve_build_asgi_app__(self):
            return _FixedApp()

    app = Fixed.options(
        num_replicas=settings.replicas, max_ongoing_requests=settings.replica_concurrency,
        max_queued_requests=settings.replica_queue_limit, ray_actor_options={"num_cpus": 0.5},
        logging_config={"enable_access_log": False},
    ).bind()
    serve.run(app, name="digits", route_prefix="/v2/models/digits")
    print(f"fixed-answer Ray Serve on http://127.0.0.1:{port}", flush=True)
    stop.wait()
    serve.shutdown()
    ray.shutdown()


def measure(repeats: int, concurrency: list[int], seconds: float) -> None:
    from benchmarks.load_client import DigitsBodies, closed_loop
    from benchmarks.peer_systems import SYSTEMS, _stop_group, _wait_until_answers, start
    from optiserve.local_server import child_environment, free_ports

    artifact, logs = ROOT / "artifacts" / "digits", ROOT / "build" / "ray-floor"
    logs.mkdir(parents=True, exist_ok=True)
    bodies = DigitsBodies()
    systems = {"Ray Serve floor (fixed answer, no work)": None,
               **{s.label: s for s in SYSTEMS if s.key in ("optiserve", "fastapi")}}
    rates: dict[str, dict[int, list[float]]] = {name: {c: [] for c in concurrency} for name in systems}
    for repeat in range(repeats):
        names = list(systems)[repeat % len(systems):] + list(systems)[: repeat % len(systems)]
        for name in names:
            system, log_path = systems[name], logs / f"{len(rates[name][concurrency[0]])}-{name[:12]}.log"
            if system is None:
                port, haproxy_metrics, haproxy_stats = free_ports(3)
                environment = child_environment(haproxy_metrics, haproxy_stats, {"RAY_ADDRESS": "local"})
                process = subprocess.Popen([sys.executable, __file__, "serve", str(port)], cwd=ROOT,
                                           stdout=open(log_path, "w"), stderr=subprocess.STDOUT,
                                           start_new_session=True, env=environment)
                url, stop = f"http://127.0.0.1:{port}/v2/models/digits/infer", lambda: _stop_group(process)
                _wait_until_answers(url, bodies.next(), log_path)
            else:
                running = start(system, artifact, "digits", log_path, bodies.next())
                url, stop = running.url, running.stop
            try:
                closed_loop(url, bodies, max(concurrency), 2)  # warm-up
                for c in concurrency:
                    rates[name][c].append(closed_loop(url, bodies, c, seconds)["rps"])
                print(f"repeat {repeat + 1}/{repeats} {name}: " + ", ".join(
                    f"c={c}: {rates[name][c][-1]:,.0f}" for c in concurrency) + " req/s", file=sys.stderr, flush=True)
            finally:
                stop()
    _print_table(rates, concurrency)


def _print_table(rates: dict[str, dict[int, list[float]]], concurrency: list[int]) -> None:
    floor = next(iter(rates))
    print("| system | " + " | ".join(f"c={c} req/s (each repeat)" for c in concurrency) + " |")
    print("|---|" + "---|" * len(concurrency))
    for name, cells in rates.items():
        row = []
        for c in concurrency:
            median = statistics.median(cells[c])
            share = "" if name == floor else f", {median / statistics.median(rates[floor][c]):.0%} of the floor"
            row.append(f"{median:,.0f}{share} ({' / '.join(f'{r:,.0f}' for r in cells[c])})")
        print(f"| {name} | " + " | ".join(row) + " |")


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "serve":
        serve_fixed(int(sys.argv[2]))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[8, 32, 128])
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    measure(args.repeats, args.concurrency, args.seconds)


if __name__ == "__main__":
    main()
