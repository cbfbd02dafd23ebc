"""serve/on_ray/runner.py's pure parts: the replicas' port block, the environment Ray's processes get."""

import socket

import pytest

from serve.on_ray import ingress, runner
from serve.on_ray.runner import (
    REPLICA_PORT_BLOCK, REPLICA_PORT_BLOCKS, free_port_block, init_with_retry, own_ports_environment,
    ray_serve_environment,
)
from serve.settings import ServeSettings


def test_servers_on_different_ports_start_their_search_in_different_blocks(monkeypatch):
    monkeypatch.setattr(runner, "_bind_error", lambda host, port: None)
    first_a, end_a = free_port_block(8000)
    first_b, _ = free_port_block(8001)
    assert end_a - first_a == REPLICA_PORT_BLOCK and first_a in REPLICA_PORT_BLOCKS
    assert first_a != first_b


def test_a_block_where_something_listens_is_skipped():
    first, _ = free_port_block(8000)
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)  # as Ray Serve's fallback proxy listens
        listener.bind(("127.0.0.1", first + 7))
        listener.listen()
        assert free_port_block(8000)[0] == first + REPLICA_PORT_BLOCK


@pytest.mark.parametrize("options, quiet", [
    ({}, True), ({"ingress_request_metrics": True}, False), ({"access_log": True}, False),
])
def test_haproxy_logs_each_request_only_where_something_reads_the_lines(options, quiet):
    environment = ray_serve_environment(ServeSettings(**options), ("digits",))
    policy = ingress.AdmissionPolicy.from_environment(environment)
    assert policy.quiet_requests is quiet and policy.listen_after_apps == ("digits",)
    assert policy.queue_timeout_ms == ServeSettings(**options).ingress_queue_timeout_ms == 10_000


@pytest.mark.parametrize("replica_http", [True, False])
def test_the_replicas_own_servers_follow_the_setting_and_fit_in_the_servers_port_block(replica_http):
    policy = ingress.AdmissionPolicy.from_environment(
        ray_serve_environment(ServeSettings(replica_http=replica_http), ("digits",)))
    assert policy.replica_http is replica_http
    first, end = free_port_block(8000)
    ports = own_ports_environment((first, end))
    ray_first, ray_last = ingress.ray_port_range(ports)
    own_first, own_last = ray_first + ingress.port_offset(ports), ray_last + ingress.port_offset(ports)
    proxies = {int(ports["RAY_SERVE_FALLBACK_PROXY_HTTP_PORT"]), int(ports["RAY_SERVE_FALLBACK_PROXY_GRPC_PORT"])}
    assert first == ray_first and ray_last < own_first and own_last < end  # Ray's, then the replicas' own
    assert not proxies & set(range(ray_first, own_last + 1)) and proxies < set(range(first, end))


class FlakyInit:
    """ray.init's stand-in: fails with each of `errors` in turn, then starts."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.calls = 0
        self.clean_ups = 0

    def init(self) -> None:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)

    def clean_up(self) -> None:
        self.clean_ups += 1


def test_a_ray_node_that_timed_out_during_startup_is_started_once_more(capsys):
    ray = FlakyInit(Exception("The current node timed out during startup. This could happen because ..."))
    init_with_retry(ray.init, ray.clean_up)
    assert ray.calls == 2 and ray.clean_ups == 1
    assert "starting it once more" in capsys.readouterr().out


def test_other_startup_failures_and_a_second_timeout_are_raised():
    other = FlakyInit(ValueError("bad port"))
    with pytest.raises(ValueError, match="bad port"):
        init_with_retry(other.init, other.clean_up)
    assert other.calls == 1 and other.clean_ups == 0
    twice = FlakyInit(*[Exception("node timed out during startup")] * 2)
    with pytest.raises(Exception, match="timed out during startup"):
        init_with_retry(twice.init, twice.clean_up)
    assert twice.calls == 2


def test_a_variable_ray_ignores_refuses_the_start_where_a_feature_needs_it():
    """Ray sees an environment without the variable: as a Ray that no longer reads it would."""
    from serve.on_ray.contract import HAPROXY_BINARY

    with pytest.raises(RuntimeError, match=f"Ray 9.9 ignores {HAPROXY_BINARY.name}") as refused:
        runner.check_ray_takes_up({HAPROXY_BINARY.name: "/venv/bin/optiserve-haproxy"}, {}, "9.9")
    assert "ingress_admission" in str(refused.value) and "serve/on_ray/contract.py" in str(refused.value)


def test_a_tuning_variable_ray_ignores_is_warned_about(capsys):
    from serve.on_ray.contract import HAPROXY_THREADS

    runner.check_ray_takes_up({HAPROXY_THREADS.name: "1"}, {}, "9.9")
    assert f"warning: Ray 9.9 ignores {HAPROXY_THREADS.name}" in capsys.readouterr().out


def test_variables_ray_takes_up_pass_in_silence(capsys):
    environment = ray_serve_environment(ServeSettings(), ("digits",))
    runner.check_ray_takes_up(environment, environment, "2.60.0")
    assert capsys.readouterr().out == ""


def test_a_soft_stop_that_finds_no_haproxy_says_so(capsys, monkeypatch):
    monkeypatch.setattr(runner, "_is_haproxy", lambda process: False)  # as if HAProxy were named otherwise
    runner._soft_stop_haproxy(grace_s=0.1)
    assert "found no process named 'haproxy'" in capsys.readouterr().out
