"""The systems under test: how each one starts on a free loopback port, answers, and stops.

optiserve runs from this repo's .venv through optiserve.local_server; each peer
runs `benchmarks/peers/<peer>/service.py PORT` with its own virtualenv's Python
(.bench-venvs/<peer>, built by `make bench-venvs` from the peer's
requirements.txt), in its own process group, so stopping it stops every
process it started.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from optiserve.local_server import free_port, start_server, stop_server  # noqa: E402

VENVS = ROOT / ".bench-venvs"
PEERS_DIR = ROOT / "benchmarks" / "peers"
STARTUP_TIMEOUT_S = 240
STOP_TIMEOUT_S = 20

# Same for every server: 2 worker processes or replicas (the cores; the README's
# recommendation for optiserve's --replicas), 1 onnxruntime thread each
# (optiserve's per-replica default), batches of at most 32 (optiserve's default).
WORKERS = 2
THREADS = 1
MAX_BATCH = 32
BATCH_WAIT_S = 0.01  # Ray Serve's documented default window; used for every peer that needs one


@dataclass(frozen=True)
class System:
    key: str
    label: str
    peer: str | None = None  # None: optiserve itself
    server_args: tuple[str, ...] = field(default=())


SYSTEMS = [
    System("optiserve", f"optiserve ({WORKERS} replicas, HAProxy)", server_args=("--replicas", str(WORKERS))),
    System("fastapi", "FastAPI + uvicorn, unbatched", "fastapi"),
    System("rayserve", "Ray Serve @serve.batch, default proxy", "rayserve"),
    System("bentoml", "BentoML adaptive batching", "bentoml"),
    System("mlserver", "MLServer adaptive batching", "mlserver"),
    System("litserve", "LitServe batching", "litserve"),
]


@dataclass
class Running:
    url: str
    stop: callable
    pids: list[int]


def peer_python(peer: str) -> Path:
    return VENVS / peer / "bin" / "python"


def start(system: System, artifact: Path, model: str, log_path: Path, first_body: bytes) -> Running:
    """Start `system` serving `artifact`; return once a real inference request answers 200."""
    if system.peer is None:
        # RAY_ADDRESS=local: a fresh local Ray even when a `ray start` cluster runs on this host
        # (optiserve's ray.init() would otherwise join it and fail on _system_config)
        server = start_server([artifact], log_path, *system.server_args, env={"RAY_ADDRESS": "local"})
        running = Running(f"{server.url}/v2/models/{model}/infer", lambda: stop_server(server), [server.process.pid])
    else:
        running = _start_peer(system.peer, artifact, model, log_path)
    try:
        _wait_until_answers(running.url, first_body, log_path)
    except BaseException:
        running.stop()
        raise
    return running


def _start_peer(peer: str, artifact: Path, model: str, log_path: Path) -> Running:
    python = peer_python(peer)
    if not python.exists():
        raise RuntimeError(f"{python} missing: run `make bench-venvs` first")
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "VIRTUAL_ENV", "PYTHONPATH"))},
        "PEER_ARTIFACT": str(artifact.resolve()), "PEER_THREADS": str(THREADS), "PEER_WORKERS": str(WORKERS),
        "PEER_MAX_BATCH": str(MAX_BATCH), "PEER_BATCH_WAIT_S": str(BATCH_WAIT_S),
        "OMP_NUM_THREADS": str(THREADS), "BENTOML_DO_NOT_TRACK": "True", "TOKENIZERS_PARALLELISM": "false",
    }
    log = open(log_path, "w")
    process = subprocess.Popen([str(python), str(PEERS_DIR / peer / "service.py"), str(port)],
                               cwd=PEERS_DIR / peer, stdout=log, stderr=subprocess.STDOUT, env=env,
                               start_new_session=True)
    return Running(f"http://127.0.0.1:{port}/v2/models/{model}/infer", lambda: _stop_group(process), [process.pid])


def _stop_group(process: subprocess.Popen) -> int:
    """SIGTERM the peer's process group (the peer and everything it started), SIGKILL what remains."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        code = process.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        code = None
    time.sleep(1)
    try:
        os.killpg(process.pid, signal.SIGKILL)  # stragglers of this group only
    except ProcessLookupError:
        pass
    return process.wait() if code is None else code


def _wait_until_answers(url: str, body: bytes, log_path: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    last = "no answer"
    while time.monotonic() < deadline:
        request = urllib.request.Request(url, body, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                answer = json.loads(response.read())
                if response.status == 200 and answer:
                    return
        except urllib.error.HTTPError as error:
            last = f"HTTP {error.code}: {error.read()[:300]!r}"
        except (OSError, ValueError) as error:
            last = repr(error)
        time.sleep(1)
    raise RuntimeError(f"{url} not answering after {STARTUP_TIMEOUT_S}s ({last}); log: {log_path}\n"
                       f"{log_path.read_text(errors='replace')[-2000:]}")
