"""The image's install path, run for real: deploy/docker/install.sh into a fresh venv, then the
bridge started from that venv through the image's entrypoint, probed with the image's healthcheck,
and stopped with SIGTERM (what `docker stop` and the kubelet send)."""

from __future__ import annotations

import json
import os
import re
import resource
import signal
import stat
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from deploy_support import REPO

ENTRYPOINT = REPO / "deploy/docker/entrypoint.sh"
HEALTHCHECK = REPO / "deploy/docker/healthcheck.py"
LISTENING = re.compile(r"listening on (\S+)")
FDS_PER_SESSION = 16  # bridge.capacity.FDS_PER_SESSION


def _bridge_env(venv: Path, **settings: str) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("BRIDGE_", "LIVEKIT_")) and key != "PORT"
    }
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env.update(settings)
    return env


def _low_nofile() -> None:
    """Start the entrypoint with the soft limit that stops a bridge at ~9 sessions."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(1024, hard), hard))


@contextmanager
def _running_bridge(venv: Path, **settings: str) -> Iterator[tuple[subprocess.Popen[str], str, str]]:
    """The bridge started through the image's entrypoint; yields (process, listening address, what
    it printed until then)."""
    proc = subprocess.Popen(
        ["sh", str(ENTRYPOINT)],
        env=_bridge_env(venv, **settings),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=_low_nofile,
    )
    try:
        address, seen = "", []
        deadline = time.monotonic() + 60
        assert proc.stdout is not None
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            seen.append(line)
            if match := LISTENING.search(line):
                address = match.group(1)
                break
        assert address, "the bridge did not start:\n" + "".join(seen)
        yield proc, address, "".join(seen)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def _healthcheck(venv: Path, **settings: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(venv / "bin/python"), str(HEALTHCHECK)],
        env=_bridge_env(venv, **settings),
        capture_output=True,
        text=True,
        timeout=20,
    )


def _stop(proc: subprocess.Popen[str]) -> tuple[int, float, str]:
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=15)
    return proc.returncode, time.monotonic() - started, output


def _soft_nofile(pid: int) -> int:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return int(line.split()[3])
    raise AssertionError("no 'Max open files' line")


def test_install_script_installs_only_the_locked_set(installed_venv: Path) -> None:
    listed = subprocess.run(
        [str(installed_venv / "bin/python"), "-m", "pip", "list", "--format=json"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    installed = {p["name"].lower().replace("_", "-"): p["version"] for p in json.loads(listed)}
    locked = dict(
        re.findall(r"^([a-z0-9][a-z0-9._-]*)==(\S+)", (REPO / "deploy/requirements.lock").read_text(), re.M)
    )
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert installed.pop("livekit-bridge") == version
    # pip and setuptools come with the venv itself; everything else is exactly the lock.
    for tool in ("pip", "setuptools", "wheel"):
        installed.pop(tool, None)
    assert installed == locked


def test_bridge_from_the_installed_venv_serves_health_and_stops_on_sigterm(installed_venv: Path) -> None:
    # HOME as in the image (no such folder, read-only root): the quiet copy of the SDK's library can
    # only be the one install.sh wrote into the venv.
    with _running_bridge(installed_venv, PORT="0", HOME="/nonexistent") as (proc, address, startup):
        quiet = installed_venv / "lib/livekit-bridge"
        assert f"SDK native library: {quiet}/liblivekit_ffi-" in startup, startup
        assert "(libwebrtc's log sink at LS_WARNING)" in startup, startup
        host, port = address.rsplit(":", 1)
        assert host == "127.0.0.1"
        check = _healthcheck(installed_venv, PORT=port)
        assert (check.returncode, check.stdout.strip()) == (0, "SERVING"), check.stderr

        # The entrypoint raised the soft limit it was started with (1024) to BRIDGE_NOFILE's
        # default, or the hard limit when that is lower.
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        expected = 65536 if hard == resource.RLIM_INFINITY else min(65536, hard)
        assert _soft_nofile(proc.pid) == expected
        assert expected // FDS_PER_SESSION > 100 or hard < 65536

        code, took, output = _stop(proc)
    print(f"SIGTERM -> exit {code} in {took:.2f} s")
    assert code == 0, output
    assert took < 5, output
    assert "received SIGTERM" in output

    after = _healthcheck(installed_venv, PORT=port)
    assert after.returncode == 1
    assert after.stderr.startswith("unhealthy:")


def test_bridge_on_a_unix_socket_as_in_the_sidecar_shape(installed_venv: Path, tmp_path: Path) -> None:
    sock = tmp_path / "run" / "bridge.sock"
    sock.parent.mkdir()
    with _running_bridge(installed_venv, LIVEKIT_GRPC_SOCKET=str(sock)) as (proc, address, _):
        assert address == f"unix:{sock}"
        assert stat.S_IMODE(sock.stat().st_mode) == 0o600
        check = _healthcheck(installed_venv, LIVEKIT_GRPC_SOCKET=str(sock))
        assert (check.returncode, check.stdout.strip()) == (0, "SERVING"), check.stderr
        code, _, output = _stop(proc)
    assert code == 0, output
    assert not sock.exists(), "the bridge leaves no socket behind"


def test_healthcheck_fails_fast_when_nothing_answers(installed_venv: Path, tmp_path: Path) -> None:
    started = time.monotonic()
    check = _healthcheck(installed_venv, LIVEKIT_GRPC_SOCKET=str(tmp_path / "nothing.sock"))
    assert check.returncode == 1
    assert "unhealthy" in check.stderr
    assert time.monotonic() - started < 10


def test_entrypoint_refuses_a_bad_nofile(installed_venv: Path) -> None:
    result = subprocess.run(
        ["sh", str(ENTRYPOINT)],
        env=_bridge_env(installed_venv, BRIDGE_NOFILE="lots"),
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert result.returncode == 2
    assert "BRIDGE_NOFILE" in result.stderr


def test_install_script_refuses_an_existing_directory(tmp_path: Path) -> None:
    result = subprocess.run(
        ["sh", str(REPO / "deploy/docker/install.sh"), str(tmp_path)],
        env={**os.environ, "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert result.returncode == 2
    assert "exists" in result.stderr


@pytest.mark.parametrize("lock", ["deploy/requirements.lock", "deploy/requirements-build.lock"])
def test_locks_pin_every_requirement_with_hashes(lock: str) -> None:
    text = (REPO / lock).read_text()
    requirements = re.split(
        r"\n(?=[a-z0-9])", text[text.index("\n", text.index("nox -s deploy_lock")) :].strip()
    )
    assert requirements
    for requirement in requirements:
        name = requirement.split()[0]
        assert re.fullmatch(r"[a-z0-9][a-z0-9._-]*==[^=\s]+", name), name
        assert "--hash=sha256:" in requirement, f"{name} has no hash"


def test_lock_covers_every_dependency_of_the_bridge() -> None:
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    locked = set(
        re.findall(r"^([a-z0-9][a-z0-9._-]*)==", (REPO / "deploy/requirements.lock").read_text(), re.M)
    )
    for requirement in declared:
        name = re.match(r"[A-Za-z0-9._-]+", requirement)
        assert name is not None
        assert name.group(0).lower().replace("_", "-") in locked, requirement
