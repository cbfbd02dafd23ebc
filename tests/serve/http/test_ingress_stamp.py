"""serve/http/ingress_stamp.py: a request's wait at the HAProxy ingress, from the stamp HAProxy writes."""

import logging
import time

import pytest

from serve.http.ingress_stamp import RECEIVED_HEADER, TOKEN_HEADER, IngressProof, IngressStamp, waited_at_ingress


@pytest.mark.parametrize("received_ms, waited", [
    ("1000000", 2.5),  # received 2.5 s before "now"
    (None, None),  # no header: another ingress
    ("soon", None),  # not a stamp
    ("1003000", None),  # in the future: clocks that disagree
    ("990000", None),  # 12.5 s, beyond HAProxy's queue timeout + transfer: clocks that disagree
])
def test_the_wait_at_the_ingress_is_read_from_its_stamp(received_ms, waited):
    assert waited_at_ingress(received_ms, now_s=1002.5, limit_s=11.0) == (None if waited is None else
                                                                            pytest.approx(waited))


def stamped(seconds_ago: float) -> dict[str, str]:
    """Headers with HAProxy's stamp for a request received `seconds_ago` (negative: in the future)."""
    return {RECEIVED_HEADER: str(int((time.time() - seconds_ago) * 1000))}


def test_a_stamp_counts_only_where_haproxy_wrote_it_and_clock_skew_is_reported_once():
    assert IngressStamp(trusted=False, queue_timeout_ms=10_000).waited(stamped(2.0)) is None
    stamps = IngressStamp(trusted=True, queue_timeout_ms=10_000)
    assert stamps.waited(stamped(2.0)) == pytest.approx(2.0, abs=0.05)
    assert stamps.waited({}) is None
    records: list[logging.LogRecord] = []
    recorder = logging.Handler(logging.WARNING)
    recorder.emit = records.append  # the replica's logger, whatever Ray made of its propagation
    logger = logging.getLogger("ray.serve.optiserve")
    logger.addHandler(recorder)
    try:
        assert stamps.waited(stamped(-30.0)) is None and stamps.waited(stamped(-30.0)) is None
    finally:
        logger.removeHandler(recorder)
    (warning,) = [record.getMessage() for record in records]
    assert "clock" in warning and "-30" in warning


TOKEN = "s3cret-Token_1"


@pytest.mark.parametrize("proof, kept", [(TOKEN, True), (None, False), ("guess", False), (TOKEN + "x", False)])
def test_with_a_token_a_stamp_is_kept_only_where_the_token_came_with_it(proof, kept):
    headers = {**stamped(2.0), "x-other": "1"} | ({TOKEN_HEADER: proof} if proof is not None else {})
    IngressProof(TOKEN).keep_proven_stamp(headers)
    assert (RECEIVED_HEADER in headers) is kept and TOKEN_HEADER not in headers and headers["x-other"] == "1"


def test_without_a_token_stamps_are_left_to_the_window_of_a_real_wait():
    headers = {**stamped(2.0), TOKEN_HEADER: "anything"}
    IngressProof("").keep_proven_stamp(headers)
    assert RECEIVED_HEADER in headers and TOKEN_HEADER not in headers


@pytest.mark.parametrize("seconds_ago", [9.0, -5.0])  # would bring its 504 near / put its deadline off
def test_a_clients_own_stamp_moves_its_deadline_neither_way(seconds_ago):
    stamps, proof = IngressStamp(trusted=True, queue_timeout_ms=10_000), IngressProof(TOKEN)
    direct = stamped(seconds_ago)  # a client that reached the replica's own server without HAProxy
    proof.keep_proven_stamp(direct)
    assert stamps.waited(direct) is None  # its deadline counts from the replica, as for a request with no stamp
    ingress = {**stamped(2.0), TOKEN_HEADER: TOKEN}
    proof.keep_proven_stamp(ingress)
    assert stamps.waited(ingress) == pytest.approx(2.0, abs=0.05)
