"""optiserve.local_server, the harness that starts servers for the tests and benchmarks: its port choice."""

import socket

from optiserve.local_server import free_ports


def test_free_ports_are_all_different_and_free():
    ports = free_ports(64)
    assert len(set(ports)) == 64
    for port in ports:  # each can be bound once they are handed over
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))
