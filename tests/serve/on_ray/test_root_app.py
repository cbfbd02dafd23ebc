"""The root app's reading of the ingress's /-/routes table (serve/on_ray/root_app.py), over real HTTP on loopback."""

import http.server
import json
import logging
import threading

import pytest

from serve.on_ray import root_app
from serve.on_ray.contract import OPTISERVE_LOGGER


@pytest.fixture
def routes_answering(request):
    """A /-/routes URL on loopback answering `request.param` (JSON text), status 200."""
    body = request.param.encode()

    class Routes(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Routes)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/-/routes"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("routes_answering", [json.dumps({"/v2/models/digits": "digits", "/": "optiserve"})],
                         indirect=True)
def test_rays_table_gives_the_routed_applications(routes_answering):
    assert root_app.routed_apps(routes_answering) == {"digits", "optiserve"}


@pytest.mark.parametrize("routes_answering", [json.dumps(["digits", "optiserve"]),
                                              json.dumps({"digits": {"route": "/v2/models/digits"}})],
                         indirect=True)
def test_a_table_of_another_shape_counts_as_none_routed_and_is_warned_about_once(routes_answering, caplog):
    caplog.set_level(logging.WARNING, logger=OPTISERVE_LOGGER)
    assert root_app.routed_apps(routes_answering) == set()
    assert root_app.routed_apps(routes_answering) == set()
    (record,) = caplog.records
    assert "expected a JSON object {route prefix: application}" in record.getMessage()


def test_an_unreachable_table_counts_as_none_routed():
    assert root_app.routed_apps("http://127.0.0.1:9/-/routes") == set()
