"""When the HAProxy ingress received a request, and so how long it waited there before its replica got it.

optiserve's HAProxy rewrite (serve/on_ray/ingress.py) stamps every request with `RECEIVED_HEADER` (Unix time in
milliseconds, replacing any the client sent). A replica then counts the request's deadline from the ingress,
HAProxy's queue included, and reports the wait as a metric. HAProxy and the replica may run on different
nodes: a stamp that cannot be a real wait is clocks disagreeing, and is not counted.

Ray binds each replica's own HTTP server (serve/http/replica_server.py) where a client may reach it without HAProxy,
and so send a stamp of its own. Where the admission policy has an `ingress_token` (the embedded server makes a
fresh one each start), HAProxy adds it to every request (`TOKEN_HEADER`, replacing any the client sent) and
the replica's server keeps a stamp only where the token came with it (`IngressProof`): a client cannot shorten
its own deadline (a false 504) or lengthen it. Without a token (a cluster whose policy names none), a stamp is
still believed only as a real wait: not in the future, and not older than HAProxy's queue timeout plus
`TRANSFER_S`; within that a client sending its own can only bring its own 504 nearer.
"""

from __future__ import annotations

import hmac
import logging
import time

RECEIVED_HEADER = "x-optiserve-received-ms"
TOKEN_HEADER = "x-optiserve-ingress"  # the ingress's token, proving the stamp beside it is the ingress's
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


class IngressProof:
    """Keeps a request's stamp only where it came with the ingress's token (`token`; "" where there is none:
    stamps are then kept, for IngressStamp's own checks). The token header is removed either way."""

    def __init__(self, token: str) -> None:
        self._token = token.encode()
        self._unproven_reported = False

    def keep_proven_stamp(self, headers: dict[str, str]) -> None:
        proof = headers.pop(TOKEN_HEADER, "")
        if not self._token or RECEIVED_HEADER not in headers:
            return
        if not hmac.compare_digest(proof.encode("latin-1"), self._token):
            del headers[RECEIVED_HEADER]
            if not self._unproven_reported:
                self._unproven_reported = True
                logging.getLogger("ray.serve.optiserve").warning(
                    "a request came with %s but without the ingress's token: a client sent it, not HAProxy (or "
                    "HAProxy runs with another admission policy); its deadline counts from the replica",
                    RECEIVED_HEADER)
