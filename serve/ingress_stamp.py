"""When the HAProxy ingress received a request, and so how long it waited there before its replica got it.

optiserve's HAProxy rewrite (serve/ingress.py) stamps every request with `RECEIVED_HEADER` (Unix time in
milliseconds, replacing any the client sent). A replica then counts the request's deadline from the ingress,
HAProxy's queue included, and reports the wait as a metric. HAProxy and the replica may run on different
nodes: a stamp that cannot be a real wait is clocks disagreeing, and is not counted.
"""

from __future__ import annotations

import logging
import time

RECEIVED_HEADER = "x-optiserve-received-ms"
TRANSFER_S = 1.0  # beyond HAProxy's queue timeout, the longest a request takes to reach its replica


def waited_at_ingress(received_ms: str | None, now_s: float, limit_s: float) -> float | None:
    """Seconds a request spent between HAProxy receiving it (its RECEIVED_HEADER) and `now_s` (Unix time).

    None without a stamp (another ingress), or where it cannot be a real wait: negative, or over `limit_s`
    (HAProxy's queue timeout plus transfer time), which only clocks that disagree between nodes give.
    """
    waited = _seconds_since(received_ms, now_s)
    return waited if waited is not None and 0 <= waited <= limit_s else None


def _seconds_since(received_ms: str | None, now_s: float) -> float | None:
    """`now_s` less the stamp's time; None without a stamp, or one that is not a whole number of milliseconds."""
    if received_ms is None:
        return None
    try:
        return now_s - int(received_ms) / 1000
    except ValueError:
        return None


class IngressStamp:
    """How long each request waited at the HAProxy ingress, from its stamp, where HAProxy writes one.

    `trusted`: HAProxy runs with optiserve's rewrite, so a stamp is HAProxy's, never a client's.
    `queue_timeout_ms`: HAProxy's queue timeout; with a second for the transfer, the longest real wait.
    """

    def __init__(self, trusted: bool, queue_timeout_ms: float) -> None:
        self._trusted = trusted
        self._limit_s = queue_timeout_ms / 1000 + TRANSFER_S
        self._skew_reported = False

    def waited(self, headers: dict[str, str]) -> float | None:
        if not self._trusted:
            return None
        stamp, now_s = headers.get(RECEIVED_HEADER), time.time()
        waited = waited_at_ingress(stamp, now_s, self._limit_s)
        if waited is None and stamp is not None and not self._skew_reported:
            self._skew_reported = True
            since = _seconds_since(stamp, now_s)
            logging.getLogger("ray.serve.optiserve").warning(
                "%s %r says the ingress received a request %.1f s ago, expected 0 to %.0f s: the ingress's clock "
                "and this node's disagree; deadlines count from the replica", RECEIVED_HEADER, stamp,
                float("nan") if since is None else since, self._limit_s)
        return waited
