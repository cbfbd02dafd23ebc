"""serve/ingress_stamp.py: a request's wait at the HAProxy ingress, from the stamp HAProxy writes."""

import logging
import time

import pytest

from serve.ingress_stamp import RECEIVED_HEADER, IngressStamp, waited_at_ingress


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
