"""Find a local server's model replica processes (Ray titles them `ray::ServeReplica:<app>:<deployment>`).

Only descendants of the server's own process are considered, so other Ray
instances on the same host (other tests, other users) are never touched.
"""

from __future__ import annotations

import time

import psutil

from optiserve.local_server import RunningServer


def replica_processes(server: RunningServer, app: str = "digits") -> list[psutil.Process]:
    title = f"ServeReplica:{app}:"
    found = []
    for child in psutil.Process(server.process.pid).children(recursive=True):
        try:
            if any(title in part for part in child.cmdline()[:1]):
                found.append(child)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return sorted(found, key=lambda process: process.pid)


def wait_for_replicas(server: RunningServer, count: int, timeout_s: float, app: str = "digits",
                      without: frozenset[int] = frozenset()) -> list[psutil.Process]:
    """Poll until `count` replica processes run, none of them a pid in `without` (e.g. one killed)."""
    deadline = time.monotonic() + timeout_s
    while True:
        processes = [p for p in replica_processes(server, app) if p.pid not in without and p.is_running()]
        if len(processes) == count or time.monotonic() > deadline:
            return processes
        time.sleep(0.2)


def rss_bytes(processes: list[psutil.Process]) -> dict[int, int]:
    """Resident memory of each process, by pid."""
    return {process.pid: process.memory_info().rss for process in processes}
