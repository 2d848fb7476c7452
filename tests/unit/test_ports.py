"""Ports for test servers are chosen where outgoing connections cannot take them first."""

from __future__ import annotations

import socket

from bridge.testing.ports import PORT_RANGE, free_port, free_ports


def _ephemeral_range() -> tuple[int, int]:
    with open("/proc/sys/net/ipv4/ip_local_port_range", encoding="ascii") as f:
        low, high = (int(part) for part in f.read().split())
    return low, high


def test_ports_lie_below_the_ephemeral_range_and_are_never_handed_out_twice() -> None:
    low, _ = _ephemeral_range()
    tcp, udp = free_ports(tcp=20, udp=20)
    singles = [free_port(), free_port(socket.SOCK_DGRAM)]
    every = tcp + udp + singles
    assert len(set(every)) == len(every) == 42
    assert all(PORT_RANGE[0] <= port <= PORT_RANGE[1] < low for port in every)


def test_a_port_handed_out_can_be_bound_by_its_kind() -> None:
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        with socket.socket(socket.AF_INET, kind) as sock:
            sock.bind(("127.0.0.1", free_port(kind)))
