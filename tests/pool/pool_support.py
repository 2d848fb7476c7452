"""Shared by tests/pool (`nox -s pool`): what the pool tests need before they start anything.

Not a conftest.py on purpose (a second module named `conftest` would shadow tests/conftest.py for
the main suite). The main suite does not collect tests/pool (pyproject's --ignore): these tests need
HAProxy, Node and the built TypeScript client, which `nox -s pool` provides.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time

import pytest

from bridge.testing.pool import find_repo

HAPROXY_HINT = "install it: apt-get update && apt-get install -y haproxy (Debian's 2.6 or newer)"


@pytest.fixture(scope="session", autouse=True)
def pool_prerequisites() -> None:
    """HAProxy and Node on PATH, the TS client built: fail (never skip) with what is missing."""
    if not os.environ.get("BRIDGE_POOL_TESTS"):
        pytest.fail("run these tests through `nox -s pool` (it builds the TypeScript client first)")
    haproxy = shutil.which("haproxy") or (
        "/usr/sbin/haproxy" if os.path.exists("/usr/sbin/haproxy") else None
    )
    if haproxy is None:
        pytest.fail(f"haproxy is not installed; {HAPROXY_HINT}")
    version = subprocess.run([haproxy, "-v"], capture_output=True, text=True, check=True).stdout.split("\n")[
        0
    ]
    print(version)
    if shutil.which("node") is None:
        pytest.fail("node is not on PATH (the pool's cloud is the TypeScript client)")
    cloud = find_repo() / "clients" / "typescript" / "dist" / "test" / "pool" / "cloud.js"
    if not cloud.exists():
        pytest.fail(
            f"{cloud} is missing: build the TypeScript client "
            "(cd clients/typescript && npm ci && npm run build)"
        )


def busiest_processes(count: int = 6, interval_s: float = 0.5) -> str:
    """The processes that used the most CPU over ``interval_s``, from /proc: a failure message's
    answer to "was something else running?" (a leftover of an earlier run, another job)."""

    def cpu_ticks() -> dict[int, int]:
        ticks = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/stat") as f:
                        fields = f.read().rsplit(")", 1)[1].split()
                    ticks[int(entry)] = int(fields[11]) + int(fields[12])  # utime + stime
                except (OSError, IndexError, ValueError):
                    continue
        return ticks

    before = cpu_ticks()
    time.sleep(interval_s)
    after = cpu_ticks()
    used = sorted(((after[pid] - before.get(pid, 0), pid) for pid in after), reverse=True)[:count]
    hz = os.sysconf("SC_CLK_TCK")
    lines = []
    for ticks, pid in used:
        if not ticks:
            break
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                command = " ".join(f.read().decode(errors="replace").replace("\0", " ").split())[:100]
            if not command:  # a kernel thread
                with open(f"/proc/{pid}/comm") as comm:
                    command = f"[{comm.read().strip()}]"
        except OSError:
            command = "?"
        lines.append(f"{100 * ticks / hz / interval_s:.0f}% pid {pid}: {command}")
    return "; ".join(lines) or "nothing used the CPU"
