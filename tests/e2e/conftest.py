import pytest

from optiserve.local_server import start_server, stop_server


@pytest.fixture(scope="module")
def server(digits_artifact, tmp_path_factory):
    """The real server: Ray Serve (HAProxy ingress), two replicas of the digits model, on loopback."""
    log = tmp_path_factory.mktemp("server") / "server.log"
    running = start_server([digits_artifact], log, "--replicas", "2", "--max-wait-ms", "5")
    yield running
    assert stop_server(running) == 0, f"server did not stop cleanly:\n{log.read_text()[-3000:]}"
