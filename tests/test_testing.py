"""The test support's own rules (``streamer.testing``)."""

from __future__ import annotations

import socket

from streamer import testing


def test_server_ports_lie_below_the_ephemeral_range_and_are_never_handed_out_twice():
    """A client connection can never take a port a test is about to give its server."""
    lowest_ephemeral = testing._ephemeral_ports_from()
    ports = [testing.free_port() for _ in range(200)]
    assert len(set(ports)) == len(ports)
    assert all(testing.SERVER_PORTS_FROM <= port < lowest_ephemeral for port in ports)


def test_a_held_port_is_not_free():
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", testing.free_port()))
        held = holder.getsockname()[1]
        assert not testing._bindable(held, socket.SOCK_STREAM)
        assert testing._bindable(held, socket.SOCK_DGRAM)  # TCP only: UDP is another namespace
