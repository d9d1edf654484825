"""free_port: the ports the tests, benches and demo start servers on."""

from __future__ import annotations

import socket

import pytest

from siteserver.launch import LISTEN_PORTS, ephemeral_start, free_port


def test_a_free_port_is_outside_the_range_outgoing_connections_take() -> None:
    # bind(0) answers from the ephemeral range, where a client's connect() can take the port
    # before the server binds it (a bench's site failed so with EADDRINUSE)
    low = ephemeral_start()
    if low <= LISTEN_PORTS.start:
        pytest.skip(f"the ephemeral range starts at {low}: no listen ports below it, bind(0) it is")
    for _ in range(50):
        port = free_port()
        assert port in LISTEN_PORTS and port < low
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))  # free indeed


def test_a_preferred_port_is_kept_when_free_and_replaced_when_taken() -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", free_port()))
        held.listen()
        taken = held.getsockname()[1]
        other = free_port(taken)
        assert other != taken
        assert free_port(other) == other
