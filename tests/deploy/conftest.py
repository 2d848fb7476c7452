"""tests/deploy: the image's install path, the Helm chart and the compose file (`nox -s deploy`).

They need what that session provides (helm, the compose checker, rendered charts, a temp dir for
the install) through BRIDGE_DEPLOY_* variables, so the main suite (`nox -s tests`) skips collecting
them.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

if not os.environ.get("BRIDGE_DEPLOY_TESTS"):
    collect_ignore_glob = ["test_*.py"]

REPO = Path(__file__).resolve().parents[2]


def deploy_env(name: str) -> str:
    value = os.environ.get(f"BRIDGE_DEPLOY_{name}")
    if not value:
        pytest.fail(f"BRIDGE_DEPLOY_{name} is not set: run these tests through `nox -s deploy`")
    return value


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def installed_venv() -> Path:
    """A venv made by deploy/docker/install.sh (the Dockerfile's install step) in a fresh temp dir."""
    import subprocess
    import sys
    import time

    venv = Path(deploy_env("INSTALL_DIR")) / "venv"
    if not venv.exists():
        started = time.monotonic()
        result = subprocess.run(
            ["sh", str(REPO / "deploy/docker/install.sh"), str(venv), str(REPO)],
            env={**os.environ, "PYTHON": sys.executable},
            capture_output=True,
            text=True,
            timeout=900,
        )
        print(f"install.sh took {time.monotonic() - started:.0f} s")
        assert result.returncode == 0, f"install.sh failed:\n{result.stdout}\n{result.stderr}"
    return venv
