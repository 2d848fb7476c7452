"""A loopback HTTP server for playback tests: serves generated audio and misbehaves on request.

Runs in a thread (plain ``http.server``) so it serves whatever the bridge's event loop is doing.
Every misbehaviour is bounded in time, and ``close()`` ends them all.
"""

from __future__ import annotations

import http.server
import threading
import time
from dataclasses import dataclass
from typing import Literal

Mode = Literal["normal", "truncate", "stall", "trickle"]


@dataclass
class Resource:
    data: bytes
    mode: Mode = "normal"
    content_type: str = "application/octet-stream"
    trickle_bytes_per_s: int = 64_000
    sent_all_at: float | None = None
    """``time.monotonic()`` when the last byte was written (trickle mode records it)."""


class MediaServer:
    STALL_LIMIT_S = 20.0

    def __init__(self) -> None:
        self.resources: dict[str, Resource] = {}
        self.redirects: dict[str, str] = {}
        self._closing = threading.Event()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:  # quiet
                pass

            def do_GET(self) -> None:
                if self.path in server.redirects:
                    self.send_response(302)
                    self.send_header("Connection", "close")
                    self.close_connection = True
                    self.send_header("Location", server.redirects[self.path])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                resource = server.resources.get(self.path)
                if resource is None:
                    self.send_error(404, "Not Found")
                    return
                self.send_response(200)
                # No keep-alive: an idle pooled connection would count as a live task in leak checks.
                self.send_header("Connection", "close")
                self.close_connection = True
                self.send_header("Content-Type", resource.content_type)
                self.send_header("Content-Length", str(len(resource.data)))
                self.end_headers()
                server._send(self, resource)

        class QuietServer(http.server.ThreadingHTTPServer):
            def handle_error(self, request: object, client_address: object) -> None:
                pass  # clients hanging up mid-response are part of these tests

        self._httpd = QuietServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def add(self, path: str, data: bytes, mode: Mode = "normal", **options: object) -> str:
        self.resources[path] = Resource(data, mode, **options)  # type: ignore[arg-type]
        return self.base_url + path

    def redirect(self, path: str, location: str) -> str:
        self.redirects[path] = location
        return self.base_url + path

    def _send(self, handler: http.server.BaseHTTPRequestHandler, resource: Resource) -> None:
        data, out = resource.data, handler.wfile
        try:
            if resource.mode == "truncate":  # promise everything, deliver half, hang up
                out.write(data[: len(data) // 2])
                handler.close_connection = True
            elif resource.mode == "stall":  # a little, then nothing (bounded)
                out.write(data[:1024])
                out.flush()
                self._closing.wait(self.STALL_LIMIT_S)
                handler.close_connection = True
            elif resource.mode == "trickle":  # a slow download: 1/20 s pieces at the given rate
                piece = max(1, resource.trickle_bytes_per_s // 20)
                for start in range(0, len(data), piece):
                    out.write(data[start : start + piece])
                    out.flush()
                    if self._closing.wait(0.05):
                        return
                resource.sent_all_at = time.monotonic()
            else:
                out.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the bridge hung up (a stop, a size limit): expected

    def close(self) -> None:
        self._closing.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5)
