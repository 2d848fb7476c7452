"""Shared by tests/pool (`nox -s pool`): what the pool tests need before they start anything.

Not a conftest.py on purpose (a second module named `conftest` would shadow tests/conftest.py for
the main suite). The main suite does not collect tests/pool (pyproject's --ignore): these tests need
HAProxy, Node and the built TypeScript client, which `nox -s pool` provides.
"""

from __future__ import annotations

import os
import shutil
import subprocess

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
