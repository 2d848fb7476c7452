"""A loopback HTTP server that attacks its client: compression bombs, drips, cookies, redirect games.

Like ``media_server`` it runs ``http.server`` in threads, but it keeps connections alive (so a client
that pools connections would reuse them), writes exactly the headers a route asks for, and records
every request it receives (path, Cookie header, the client's port). Every wait is bounded and
``close()`` ends them all.
"""

from __future__ import annotations

import functools
import http.server
import socket
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field


@functools.lru_cache(maxsize=4)
def gzip_bomb(expanded_bytes: int, layers: int = 2) -> bytes:
    """Zeros, gzipped ``layers`` times: 1 GiB in two layers is 1.8 KB (the incident's file)."""
    inner = zlib.compressobj(9, zlib.DEFLATED, 31)
    zeros = bytes(1 << 20)
    parts = [inner.compress(zeros) for _ in range(expanded_bytes >> 20)]
    data = b"".join(parts) + inner.flush()
    for _ in range(layers - 1):
        outer = zlib.compressobj(9, zlib.DEFLATED, 31)
        data = outer.compress(data) + outer.flush()
    return data


@dataclass
class Route:
    status: int = 200
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    drip_interval_s: float = 0.0
    """> 0: send the body one byte at a time, this far apart (bounded by ``HostileServer.DRIP_LIMIT_S``)."""
    rate_bytes_per_s: int = 0
    """> 0: send the body at this rate, in 1/20 s pieces."""
    drip_head: bool = False
    """With ``drip_interval_s``: drip the status line and headers too, not only the body."""


@dataclass(frozen=True)
class Seen:
    path: str
    cookie: str | None
    accept_encoding: str | None
    client_port: int
    at: float


class HostileServer:
    DRIP_LIMIT_S = 20.0

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.seen: list[Seen] = []
        self._closing = threading.Event()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                server.seen.append(
                    Seen(
                        self.path,
                        self.headers.get("Cookie"),
                        self.headers.get("Accept-Encoding"),
                        self.client_address[1],
                        time.monotonic(),
                    )
                )
                route = server.routes.get(self.path)
                if route is None:
                    self.send_error(404, "Not Found")
                    return
                if route.drip_head:
                    server._drip_head(self, route)
                    return
                self.send_response(route.status)
                for name, value in route.headers:
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(route.body)))
                self.end_headers()
                server._send(self, route)

        class QuietServer(http.server.ThreadingHTTPServer):
            request_queue_size = 256  # tests open over a hundred connections at once

            def handle_error(self, request: object, client_address: object) -> None:
                pass

        self._httpd = QuietServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def route(self, path: str, body: bytes = b"", *headers: tuple[str, str], **options: object) -> str:
        self.routes[path] = Route(headers=list(headers), body=body, **options)  # type: ignore[arg-type]
        return self.base_url + path

    def redirect(self, path: str, location: str, body: bytes = b"", *headers: tuple[str, str]) -> str:
        return self.route(path, body, ("Location", location), *headers, status=302)

    def requests_for(self, path: str) -> list[Seen]:
        return [seen for seen in self.seen if seen.path == path]

    def _drip_head(self, handler: http.server.BaseHTTPRequestHandler, route: Route) -> None:
        lines = [f"HTTP/1.1 {route.status} OK", *(f"{name}: {value}" for name, value in route.headers)]
        head = ("\r\n".join([*lines, f"Content-Length: {len(route.body)}"]) + "\r\n\r\n").encode()
        self._send(handler, Route(body=head + route.body, drip_interval_s=route.drip_interval_s))

    def _send(self, handler: http.server.BaseHTTPRequestHandler, route: Route) -> None:
        out, body = handler.wfile, route.body
        try:
            if route.drip_interval_s > 0:
                deadline = time.monotonic() + self.DRIP_LIMIT_S
                for index in range(len(body)):
                    out.write(body[index : index + 1])
                    out.flush()
                    if self._closing.wait(route.drip_interval_s) or time.monotonic() > deadline:
                        handler.close_connection = True
                        return
            elif route.rate_bytes_per_s > 0:
                piece = max(1, route.rate_bytes_per_s // 20)
                for start in range(0, len(body), piece):
                    out.write(body[start : start + piece])
                    out.flush()
                    if self._closing.wait(0.05):
                        handler.close_connection = True
                        return
            else:
                out.write(body)
        except (BrokenPipeError, ConnectionResetError):
            handler.close_connection = True

    def close(self) -> None:
        self._closing.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5)


def peak_rss_probe() -> Callable[[], int]:
    """Reset the process's peak RSS (Linux ``clear_refs``); the returned function gives the growth since,
    in bytes, of the peak over the RSS at the reset."""
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")
    start = _status_kib("VmRSS")
    return lambda: (_status_kib("VmHWM") - start) * 1024


def _status_kib(key: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{key} not in /proc/self/status")


class RawServer:
    """Answers every connection with ``response`` as raw bytes (malformed ones too), then closes it.

    Reads at most 64 KiB of the request first, and waits for it at most 5 s.
    """

    def __init__(self) -> None:
        self.response = b""
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._listener.getsockname()[1]}/audio"

    def _serve(self) -> None:
        while not self._closing.is_set():
            try:
                connection, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with connection:
                connection.settimeout(5)
                try:
                    request = b""
                    while b"\r\n\r\n" not in request and len(request) < 65536:
                        piece = connection.recv(4096)
                        if not piece:
                            break
                        request += piece
                    connection.sendall(self.response)
                except OSError:
                    pass

    def close(self) -> None:
        self._closing.set()
        self._listener.close()
        self._thread.join(5)
