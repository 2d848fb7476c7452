"""Build and run a real, local LiveKit server for tests, benchmarks and local development.

Why a real server: the bridge's behaviour under reconnects, kills and restarts can only be
trusted when measured against the actual SFU, not a fake. This module therefore:

* uses a ``livekit-server`` at the pinned :data:`LIVEKIT_SERVER_VERSION` that is already there
  (``$LIVEKIT_SERVER_BIN``, else on PATH; its ``--version`` is checked), else builds one once with
  ``go install`` (progress lines while it builds) and caches it under :func:`cache_dir`;
* runs it as a subprocess with a config rendered from ``bridge/testing/resources/livekit-dev.yaml``
  that keeps everything on loopback (signal API, ICE candidates, UDP mux, STUN): no packet
  leaves 127.0.0.1;
* uses dev keys only (a fixed, public secret): never point it at anything real.

It is deliberately synchronous (plain ``subprocess`` and ``urllib``) so test fixtures written
for any async framework, and plain scripts, can use it.

CLI::

    python -m bridge.testing.devserver build          # build (or find) the binary, print its path
    python -m bridge.testing.devserver run [--port N] # run until Ctrl-C / SIGTERM
    python -m bridge.testing.devserver token ID ROOM  # a dev-key token for the local server
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import importlib.resources
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import types
import urllib.error
import urllib.request
import weakref
from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import IO

from .ports import LOOPBACK, NoFreePortError, free_ports

LIVEKIT_SERVER_VERSION = "v1.13.5"
LIVEKIT_SERVER_MODULE = "github.com/livekit/livekit-server/cmd/server"

# Public dev credentials: only ever used for a server bound to loopback.
DEV_API_KEY = "devkey"
DEV_API_SECRET = "livekit-bridge-dev-secret-not-for-production-use"

# The server refuses nothing shorter, but logs an error for secrets under 32 characters.
_MIN_SECRET_LEN = 32
# Key and secret are written unquoted into YAML: keep them to characters YAML reads literally.
_CREDENTIAL_RE = re.compile(r"[A-Za-z0-9_.\-]+")
_LOG_TAIL_BYTES = 2048
_POLL_INTERVAL_S = 0.1
# livekit-server answers GET / ~100 ms BEFORE it marks itself running, and a SIGTERM in that
# window is silently lost (Stop() returns early and the process then never exits on SIGTERM;
# seen with v1.13.5, server.go Start/Stop). Waiting this long after the first 200 makes a later
# stop() graceful (exits in ~10 ms) instead of always running into the SIGKILL.
_SETTLE_S = 0.25
# How long stop() lets the server exit on a plain SIGTERM before forcing it (see stop()).
_FORCE_STOP_AFTER_S = 0.2

# urllib honours http_proxy & co. by default; an empty ProxyHandler keeps health checks on loopback.
_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class DevServerError(RuntimeError):
    """The local LiveKit server could not be built, started or reached."""


# --------------------------------------------------------------------------------------------
# Binary: build once, cache forever (per version)
# --------------------------------------------------------------------------------------------


def cache_dir() -> Path:
    """Where built binaries are kept: $LIVEKIT_BRIDGE_CACHE, else the XDG cache folder."""
    explicit = os.environ.get("LIVEKIT_BRIDGE_CACHE")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "livekit-bridge"


def server_binary_path() -> Path:
    """Path of the cached server binary (``go install`` names it ``server``)."""
    return cache_dir() / f"livekit-server-{LIVEKIT_SERVER_VERSION}" / "server"


def _is_executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


SERVER_BIN_ENV = "LIVEKIT_SERVER_BIN"
# livekit-server v1.13.5's go.mod says `go 1.26`; Go >= 1.21 can fetch that toolchain itself
# (GOTOOLCHAIN=auto, through the module proxy), older ones cannot.
_GO_NEEDED = (1, 26)
_GO_CAN_SWITCH = (1, 21)
_GO_VERSION_RE = re.compile(r"^go(\d+)\.(\d+)")
# How often a build prints a progress line, and how much of go's output a failure shows.
_PROGRESS_EVERY_S = 15.0
_FAILURE_TAIL_LINES = 40

# What `livekit-server --version` prints: "livekit-server version 1.13.5".
_VERSION_RE = re.compile(r"version v?(\d+\.\d+\.\d+\S*)")
_versions: dict[tuple[str, int, int], str | None] = {}
_skipped: set[str] = set()


def server_version(binary: Path) -> str | None:
    """``vX.Y.Z`` as ``binary --version`` reports it; None if it does not run or says no version."""
    try:
        stat = binary.stat()
    except OSError:
        return None
    key = (str(binary), stat.st_mtime_ns, stat.st_size)
    if key not in _versions:
        try:
            out = subprocess.run(
                [str(binary), "--version"], capture_output=True, text=True, timeout=20, check=False
            )
            match = _VERSION_RE.search(out.stdout + out.stderr)
            _versions[key] = f"v{match.group(1)}" if match else None
        except (OSError, subprocess.SubprocessError):
            _versions[key] = None
    return _versions[key]


def _to_stderr(message: str) -> None:
    # Notes and build progress never go to stdout: `devserver build` prints the path there, and
    # tools that run a dev server speak their own protocol on it.
    print(message, file=sys.stderr, flush=True)


def find_server_binary(log: Callable[[str], None] = _to_stderr) -> Path | None:
    """A livekit-server at the pinned version that is already there, without building anything.

    In order: ``$LIVEKIT_SERVER_BIN`` (an error if it is not the pinned version: it was named on
    purpose), a ``livekit-server`` on PATH (skipped, with a note, at another version), the cache.
    """
    named = os.environ.get(SERVER_BIN_ENV)
    if named:
        found = shutil.which(named)
        path = Path(found) if found else Path(named)
        version = server_version(path) if _is_executable(path) else None
        if version != LIVEKIT_SERVER_VERSION:
            what = f"is livekit-server {version}" if version else "does not run as livekit-server --version"
            raise DevServerError(
                f"{SERVER_BIN_ENV}={named} {what}; the bridge needs {LIVEKIT_SERVER_VERSION}. "
                f"Point it at a {LIVEKIT_SERVER_VERSION} binary, or unset it to build one."
            )
        return path
    on_path = shutil.which("livekit-server")
    if on_path:
        version = server_version(Path(on_path))
        if version == LIVEKIT_SERVER_VERSION:
            return Path(on_path)
        if on_path not in _skipped:  # said once per process, not at every server start
            _skipped.add(on_path)
            shown = version or "(unknown version)"
            log(f"not using {on_path}: it is livekit-server {shown}, not {LIVEKIT_SERVER_VERSION}")
    cached = server_binary_path()
    return cached if _is_executable(cached) else None


def ensure_server_binary(log: Callable[[str], None] = _to_stderr) -> Path:
    """A livekit-server at the pinned version: one already there (:func:`find_server_binary`),
    else built with ``go install`` into the cache, showing progress while it builds."""
    found = find_server_binary(log)
    if found is not None:
        return found
    target = server_binary_path()
    go = shutil.which("go")
    if go is None:
        raise DevServerError(
            f"livekit-server {LIVEKIT_SERVER_VERSION} is not built yet ({target} is missing) and the "
            f"'go' tool was not found on PATH. Install Go >= {_GO_NEEDED[0]}.{_GO_NEEDED[1]} and retry, or "
            f"put a livekit-server {LIVEKIT_SERVER_VERSION} on PATH or in ${SERVER_BIN_ENV}."
        )
    _check_go(go)
    log(
        f"building livekit-server {LIVEKIT_SERVER_VERSION} into {target} (a few minutes, once; "
        f"progress every {_PROGRESS_EVERY_S:g}s)…"
    )
    started = time.monotonic()
    _go_install_into(go, target, log)
    log(f"built livekit-server {LIVEKIT_SERVER_VERSION} in {_elapsed(time.monotonic() - started)}")
    return target


def _elapsed(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def _check_go(go: str) -> None:
    """Refuse, with what to do, a Go that cannot build the pinned livekit-server."""
    needed = f"{_GO_NEEDED[0]}.{_GO_NEEDED[1]}"
    try:
        out = subprocess.run(
            [go, "env", "GOVERSION", "GOTOOLCHAIN"], capture_output=True, text=True, timeout=60, check=False
        ).stdout.splitlines()
    except (OSError, subprocess.SubprocessError) as err:
        raise DevServerError(f"'{go} env' failed ({err}); livekit-server needs Go >= {needed}") from err
    version = out[0].strip() if out else ""
    toolchain = out[1].strip() if len(out) > 1 else ""
    match = _GO_VERSION_RE.match(version)
    found = (int(match.group(1)), int(match.group(2))) if match else (0, 0)
    if found >= _GO_NEEDED:
        return
    if found < _GO_CAN_SWITCH:
        raise DevServerError(
            f"{go} is {version or 'a Go older than 1.16'}: livekit-server {LIVEKIT_SERVER_VERSION} needs "
            f"Go >= {needed}. Install a newer Go (https://go.dev/dl), or put a livekit-server "
            f"{LIVEKIT_SERVER_VERSION} on PATH or in ${SERVER_BIN_ENV}."
        )
    if toolchain.startswith("local"):
        raise DevServerError(
            f"{go} is {version} with GOTOOLCHAIN={toolchain}: livekit-server {LIVEKIT_SERVER_VERSION} "
            f"needs Go >= {needed}. Set GOTOOLCHAIN=auto (go then fetches go{needed} as a module), "
            "or install a newer Go."
        )


class _BuildOutput:
    """Reads ``go install -v`` output in a thread: counts downloads and compiled packages, passes
    anything else (messages, errors) straight through, keeps a tail for the failure message."""

    def __init__(self, stream: IO[str], log: Callable[[str], None]) -> None:
        self.downloaded = 0
        self.compiled = 0
        self.tail: collections.deque[str] = collections.deque(maxlen=_FAILURE_TAIL_LINES)
        self._stream = stream
        self._log = log
        self._thread = threading.Thread(target=self._read, name="go-install-output", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        for raw in self._stream:
            line = raw.rstrip("\n")
            self.tail.append(line)
            if line.startswith("go: downloading "):
                self.downloaded += 1
            elif line and " " not in line:
                self.compiled += 1  # -v prints each package's import path as it is built
            elif line:
                self._log(f"  {line}")

    def join(self) -> None:
        self._thread.join(timeout=5)


def _go_install_into(go: str, target: Path, log: Callable[[str], None] = _to_stderr) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    # Build into a private folder next to the target, then rename: a killed or failed build
    # never leaves a half-written binary at the path that _is_executable() trusts.
    staging = Path(tempfile.mkdtemp(prefix=".build-", dir=target.parent))
    try:
        env = {
            **os.environ,
            "GOBIN": str(staging),
            # livekit-server needs no cgo; without it the build needs no C toolchain.
            "CGO_ENABLED": "0",
            # Resolve the module's own go.mod as-is (no vendoring surprises from the caller's env).
            "GOFLAGS": "-mod=mod",
        }
        spec = f"{LIVEKIT_SERVER_MODULE}@{LIVEKIT_SERVER_VERSION}"
        # -v names each package as it is compiled: counted into a progress line every
        # _PROGRESS_EVERY_S, so the first build (minutes) is never silent.
        started = time.monotonic()
        proc = subprocess.Popen(
            [go, "install", "-v", spec],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
        )
        assert proc.stdout is not None
        output = _BuildOutput(proc.stdout, log)
        try:
            while True:
                try:
                    proc.wait(timeout=_PROGRESS_EVERY_S)
                    break
                except subprocess.TimeoutExpired:
                    log(
                        f"  … {_elapsed(time.monotonic() - started)}: {output.downloaded} modules "
                        f"downloaded, {output.compiled} packages compiled"
                    )
        finally:
            if proc.poll() is None:  # interrupted: do not leave go running
                proc.kill()
                proc.wait()
            output.join()
        built = staging / "server"
        if proc.returncode != 0 or not _is_executable(built):
            tail = "\n".join(output.tail)
            raise DevServerError(
                f"'go install {spec}' failed (exit code {proc.returncode}); its output ended:\n{tail}"
            )
        os.replace(built, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# Config and ports
# --------------------------------------------------------------------------------------------


def _config_template() -> str:
    return (
        importlib.resources.files("bridge.testing.resources")
        .joinpath("livekit-dev.yaml")
        .read_text(encoding="utf-8")
    )


def render_config(*, port: int, tcp_port: int, udp_port: int, api_key: str, api_secret: str) -> str:
    """The server config (YAML text) for these ports and dev credentials."""
    return _config_template().format(
        port=port, tcp_port=tcp_port, udp_port=udp_port, api_key=api_key, api_secret=api_secret
    )


def _read_tail(path: Path, limit: int = _LOG_TAIL_BYTES) -> str:
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - limit))
            return f.read().decode("utf-8", errors="replace")
    except OSError:
        return "<no log>"


def _kill_quietly(proc: subprocess.Popen[bytes]) -> None:
    """Last-resort cleanup at interpreter exit: never leave an orphaned server behind."""
    if proc.poll() is None:
        with contextlib.suppress(OSError):
            proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)


# --------------------------------------------------------------------------------------------
# The server process
# --------------------------------------------------------------------------------------------


LOST_LEAVE_TIMEOUT_S = 25.0
"""How long the server keeps a participant whose leave it never read: a client that vanished
without a leave was dropped after 20.2 s (v1.13.5, docs/design/lessons.md)."""


def leave_lost_on_the_wire(log: str) -> bool:
    """Whether the server's log of a participant (``log_lines_naming``) shows the SDK's close racing
    the server's last signal message: the server's write met a reset connection ("error writing to
    websocket ... broken pipe") and it never logged the "participant closing" that a leave it reads
    produces. The leave was discarded with the connection; the server drops the participant only
    when its media connection times out (``LOST_LEAVE_TIMEOUT_S``). Only the participant's last
    session counts (from its last "starting RTC session"): an identity that joined again has the
    earlier ones in the log too."""
    lines = log.splitlines()
    starts = [i for i, line in enumerate(lines) if "starting RTC session" in line]
    last = "\n".join(lines[starts[-1] :]) if starts else log
    return "error writing to websocket" in last and "participant closing" not in last


class LocalLiveKitServer:
    """A livekit-server subprocess on loopback with dev keys.

    Ports not given are picked free on 127.0.0.1 once, in ``__init__``, and kept for the life
    of the object, so :meth:`restart` comes back on the same URL (clients can reconnect).
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        tcp_port: int | None = None,
        udp_port: int | None = None,
        api_key: str = DEV_API_KEY,
        api_secret: str = DEV_API_SECRET,
        log_dir: Path | str | None = None,
    ) -> None:
        _check_credentials(api_key, api_secret)
        self._chosen_ports = (port, tcp_port, udp_port)
        self._started_once = False
        self._pick_ports()
        self._api_key = api_key
        self._api_secret = api_secret
        # Private folder (0700) for the rendered config, which contains the secret.
        self._workdir = Path(tempfile.mkdtemp(prefix="livekit-dev-"))
        self._log_path = Path(log_dir or self._workdir) / f"livekit-server-{self._port}.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._finalizer: weakref.finalize[[subprocess.Popen[bytes]], LocalLiveKitServer] | None = None

    def __repr__(self) -> str:
        # Deliberately without the secret.
        return f"LocalLiveKitServer(url={self.url!r}, api_key={self._api_key!r}, running={self.is_running})"

    # -- properties ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """WebSocket URL for ``rtc.Room.connect``."""
        return f"ws://{LOOPBACK}:{self._port}"

    @property
    def http_url(self) -> str:
        """HTTP URL of the server API (for ``api.LiveKitAPI``)."""
        return f"http://{LOOPBACK}:{self._port}"

    @property
    def port(self) -> int:
        return self._port

    @property
    def tcp_port(self) -> int:
        return self._tcp_port

    @property
    def udp_port(self) -> int:
        return self._udp_port

    @property
    def api_key(self) -> str:
        return self._api_key

    @property
    def api_secret(self) -> str:
        return self._api_secret

    @property
    def log_path(self) -> Path:
        """Server stdout+stderr; appended to across restarts."""
        return self._log_path

    def log_tail(self, limit_bytes: int = _LOG_TAIL_BYTES) -> str:
        """The last ``limit_bytes`` of the log (its first line may be cut), without reading it all."""
        return _read_tail(self._log_path, limit_bytes)

    def log_lines_naming(self, identities: list[str], keep: int = 40, *, room: str | None = None) -> str:
        """The last ``keep`` log lines that name one of ``identities`` (its joins, leaves and their
        reasons), in ``room`` if given (an identity can recur in other rooms): what a test shows
        when the server keeps a participant it expected gone."""
        text = self._log_path.read_text(errors="replace") if self._log_path.exists() else ""
        lines = [
            line
            for line in text.splitlines()
            if any(f'"{i}"' in line for i in identities) and (room is None or f'"{room}"' in line)
        ]
        return "\n".join(lines[-keep:])

    def log_of_participants(self, left: Mapping[str, Sequence[str]]) -> str:
        """``log_lines_naming`` for participants left in rooms (room -> identities), room by room."""
        logs = (self.log_lines_naming(list(identities), room=room) for room, identities in left.items())
        return "\n".join(log for log in logs if log)

    def leaves_lost_on_the_wire(self, left: Mapping[str, Sequence[str]]) -> bool:
        """Whether the server lost the leave of every participant left in rooms (room -> identities),
        each judged on its own log (``leave_lost_on_the_wire``): then its own timeout removes them."""
        return bool(left) and all(
            leave_lost_on_the_wire(self.log_lines_naming([identity], room=room))
            for room, identities in left.items()
            for identity in identities
        )

    @property
    def process(self) -> subprocess.Popen[bytes] | None:
        """The current (or last) server process, for tests that inspect it."""
        return self._proc

    @property
    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self, timeout: float = 20.0) -> None:
        """Start the server and wait until its HTTP API answers; raise DevServerError otherwise.

        On the first start, ports this object picked itself are picked again if another process
        took one in the meantime (up to 3 tries); a restart always keeps them.
        """
        for attempt in range(3):
            try:
                self._start_once(timeout)
                self._started_once = True
                return
            except DevServerError as err:
                clash = "address already in use" in str(err)
                if self._started_once or not clash or attempt == 2 or None not in self._chosen_ports:
                    raise
                self._repick_ports()

    def _pick_ports(self) -> None:
        """Fill in the ports the caller did not choose with free ones."""
        port, tcp_port, udp_port = self._chosen_ports
        try:
            tcp_free, udp_free = free_ports(tcp=2, udp=1)
        except NoFreePortError as err:
            raise DevServerError(str(err)) from None
        self._port = port if port is not None else tcp_free[0]
        self._tcp_port = tcp_port if tcp_port is not None else tcp_free[1]
        self._udp_port = udp_port if udp_port is not None else udp_free[0]

    def _repick_ports(self) -> None:
        self._pick_ports()
        self._log_path = self._log_path.with_name(f"livekit-server-{self._port}.log")

    def _start_once(self, timeout: float) -> None:
        if self.is_running:
            raise DevServerError(f"server already running at {self.url}")
        binary = ensure_server_binary()
        config = self._write_config()
        self._log_path.parent.mkdir(parents=True, exist_ok=True)
        with self._log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                [str(binary), "--config", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self._workdir,
                # Own session: Ctrl-C in a terminal reaches only us, and we stop the server
                # with a grace period instead of it dying mid-test.
                start_new_session=True,
            )
        if self._finalizer is not None:
            self._finalizer.detach()  # the previous process is already reaped
        self._finalizer = weakref.finalize(self, _kill_quietly, self._proc)
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.kill()
            raise

    def stop(self, grace: float = 2.0) -> None:
        """Shut down within ``grace`` seconds: SIGTERM, then a second SIGTERM, then SIGKILL.

        On the first SIGTERM the server waits for connected participants to leave, re-checking
        only every 5 s; a second SIGTERM makes it skip that wait and disconnect them itself.
        Tests must never wait for participants, so the second one follows almost at once and
        SIGKILL is the last resort.
        """
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        deadline = time.monotonic() + grace
        proc.terminate()
        # An empty server exits within ~10 ms of the first SIGTERM: give it that chance.
        if self._wait_until(min(deadline, time.monotonic() + _FORCE_STOP_AFTER_S)):
            return
        proc.terminate()
        if not self._wait_until(deadline):
            self.kill()

    def kill(self) -> None:
        """SIGKILL at once and reap: a crash, for fault-injection tests."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill()
        proc.wait()

    def restart(self, timeout: float = 20.0) -> None:
        """Start again on the same ports (stopping first if still running)."""
        self.stop()
        self.start(timeout=timeout)

    def close(self) -> None:
        """Stop the server and delete its private temp folder (config, and the log unless
        ``log_dir`` was given). The object can still be started again afterwards."""
        self.stop()
        shutil.rmtree(self._workdir, ignore_errors=True)

    def __enter__(self) -> LocalLiveKitServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: types.TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            # Keep the log for the post-mortem when the block failed.
            self.stop()

    # -- tokens -------------------------------------------------------------------------------

    def token(
        self,
        identity: str,
        room: str,
        *,
        name: str | None = None,
        can_publish: bool = True,
        can_subscribe: bool = True,
        can_publish_data: bool = True,
        ttl_seconds: int = 3600,
    ) -> str:
        """A join token for ``room`` signed with this server's dev key."""
        return dev_token(
            identity,
            room,
            api_key=self._api_key,
            api_secret=self._api_secret,
            name=name,
            can_publish=can_publish,
            can_subscribe=can_subscribe,
            can_publish_data=can_publish_data,
            ttl_seconds=ttl_seconds,
        )

    # -- internals ----------------------------------------------------------------------------

    def _write_config(self) -> Path:
        # Recreated if __exit__ already removed it and the object is being reused.
        self._workdir.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = self._workdir / "livekit.yaml"
        text = render_config(
            port=self._port,
            tcp_port=self._tcp_port,
            udp_port=self._udp_port,
            api_key=self._api_key,
            api_secret=self._api_secret,
        )
        # The file holds the secret: create it owner-only.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        return path

    def _wait_until(self, deadline: float) -> bool:
        """Wait for the process to exit until ``deadline`` (monotonic); True if it did."""
        assert self._proc is not None
        try:
            self._proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            return False
        return True

    def _wait_ready(self, timeout: float) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + timeout
        while True:
            code = self._proc.poll()
            if code is not None:
                raise self._start_error(f"livekit-server exited with code {code} during start-up")
            if self._http_ok():
                time.sleep(_SETTLE_S)
                return
            if time.monotonic() >= deadline:
                raise self._start_error(f"livekit-server did not answer on {self.http_url} within {timeout}s")
            time.sleep(_POLL_INTERVAL_S)

    def _http_ok(self) -> bool:
        try:
            with _HTTP.open(self.http_url + "/", timeout=1.0) as resp:
                return bool(resp.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def _start_error(self, message: str) -> DevServerError:
        return DevServerError(f"{message}; last log lines ({self._log_path}):\n{self.log_tail()}")


def dev_token(
    identity: str,
    room: str,
    *,
    api_key: str = DEV_API_KEY,
    api_secret: str = DEV_API_SECRET,
    name: str | None = None,
    can_publish: bool = True,
    can_subscribe: bool = True,
    can_publish_data: bool = True,
    ttl_seconds: int = 3600,
) -> str:
    """A LiveKit join token for ``room`` as ``identity``, signed with the given (dev) key."""
    # Imported here: building/running the server needs no SDK, only tokens do.
    from livekit import api

    grants = api.VideoGrants(
        room_join=True,
        room=room,
        can_publish=can_publish,
        can_subscribe=can_subscribe,
        can_publish_data=can_publish_data,
    )
    token = (
        api.AccessToken(api_key, api_secret)
        .with_identity(identity)
        .with_grants(grants)
        .with_ttl(timedelta(seconds=ttl_seconds))
    )
    if name is not None:
        token = token.with_name(name)
    jwt: str = token.to_jwt()
    return jwt


def _check_credentials(api_key: str, api_secret: str) -> None:
    # Messages never include the secret itself.
    if not _CREDENTIAL_RE.fullmatch(api_key):
        raise ValueError("api_key must be non-empty and use only letters, digits, '_', '.', '-'")
    if not _CREDENTIAL_RE.fullmatch(api_secret):
        raise ValueError("api_secret must use only letters, digits, '_', '.', '-'")
    if len(api_secret) < _MIN_SECRET_LEN:
        raise ValueError(f"api_secret must be at least {_MIN_SECRET_LEN} characters")


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------


class _Terminated(Exception):
    """Raised from the SIGTERM handler so `run` stops the server the same way as on Ctrl-C."""


def _raise_terminated(signum: int, frame: types.FrameType | None) -> None:
    raise _Terminated


def _cmd_build() -> int:
    print(ensure_server_binary())
    return 0


def _cmd_token(identity: str, room: str) -> int:
    # Printing a token is fine here: it is signed with the public dev secret and only opens rooms
    # on a loopback dev server.
    print(dev_token(identity, room))
    return 0


def _cmd_run(port: int | None) -> int:
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    server = LocalLiveKitServer(port=port)
    try:
        started = time.monotonic()
        server.start()
        print(f"livekit-server {LIVEKIT_SERVER_VERSION} ready in {time.monotonic() - started:.1f}s")
        print(f"  url:        {server.url}")
        print(f"  api key:    {server.api_key}")
        # Printing the secret is fine ONLY here: it is the fixed, public dev secret of a
        # loopback-only dev server. Never print secrets anywhere else.
        print(f"  api secret: {server.api_secret}")
        print(f"  log:        {server.log_path}")
        print("Ctrl-C to stop.", flush=True)
        while server.is_running:
            time.sleep(0.5)
        print(f"livekit-server exited on its own; see {server.log_path}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, _Terminated):
        print("stopping…", flush=True)
        return 0
    finally:
        server.stop()
        if not server.process or server.process.returncode == 0:
            server.close()  # clean exit: nothing worth keeping in the temp folder
        signal.signal(signal.SIGTERM, previous)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bridge.testing.devserver",
        description="Build and run a loopback-only LiveKit dev server.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("build", help="build (or find) the cached livekit-server binary and print its path")
    run = sub.add_parser("run", help="run a loopback-only dev server until Ctrl-C / SIGTERM")
    run.add_argument("--port", type=int, default=None, help="signal/HTTP port (default: a free one)")
    token = sub.add_parser("token", help="print a dev-key token to join ROOM as IDENTITY (local server only)")
    token.add_argument("identity")
    token.add_argument("room")
    args = parser.parse_args(argv)
    try:
        if args.command == "build":
            return _cmd_build()
        if args.command == "token":
            return _cmd_token(args.identity, args.room)
        return _cmd_run(args.port)
    except DevServerError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
