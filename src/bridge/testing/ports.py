"""Free loopback ports for servers that tests, benchmarks and the dev server start.

A port the kernel hands out for port 0 lies in Linux's ephemeral range (32768-60999), the range
every outgoing connection takes its local port from. Between choosing such a port and a server
binding it, an outgoing connection (the SDK's, a proxy's health check, a client's) can take it:
a CI run failed with "Address already in use" on a metrics port chosen that way. So ports are
chosen below that range, where only explicit binds land, and never twice in one process.
"""

from __future__ import annotations

import contextlib
import random
import socket
import threading

__all__ = ["LOOPBACK", "NoFreePortError", "free_port", "free_ports"]

LOOPBACK = "127.0.0.1"
PORT_RANGE = (20000, 32000)

_handed_out: set[int] = set()
_handed_out_lock = threading.Lock()
_rng = random.SystemRandom()


class NoFreePortError(RuntimeError):
    pass


def free_port(kind: socket.SocketKind = socket.SOCK_STREAM) -> int:
    """One port free on 127.0.0.1 right now, below the ephemeral range."""
    tcp_ports, udp_ports = free_ports(tcp=1) if kind == socket.SOCK_STREAM else free_ports(udp=1)
    return (tcp_ports or udp_ports)[0]


def free_ports(*, tcp: int = 0, udp: int = 0) -> tuple[list[int], list[int]]:
    """Distinct free ports (TCP ports first, then UDP), none handed out before in this process.
    All their sockets are held open together until every port is found."""
    with contextlib.ExitStack() as stack:
        tcp_ports = [_bind_new_port(stack, socket.SOCK_STREAM) for _ in range(tcp)]
        udp_ports = [_bind_new_port(stack, socket.SOCK_DGRAM) for _ in range(udp)]
    return tcp_ports, udp_ports


def _bind_new_port(stack: contextlib.ExitStack, kind: socket.SocketKind) -> int:
    for _ in range(200):
        port = _rng.randint(*PORT_RANGE)
        with _handed_out_lock:
            if port in _handed_out:
                continue
            sock = socket.socket(socket.AF_INET, kind)
            try:
                sock.bind((LOOPBACK, port))
            except OSError:
                sock.close()
                continue
            _handed_out.add(port)
        stack.enter_context(sock)
        return port
    raise NoFreePortError(f"no free port found on {LOOPBACK} in {PORT_RANGE[0]}-{PORT_RANGE[1]}")
