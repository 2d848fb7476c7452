"""Shared by tests/deploy: the image's install path, the Helm chart and the compose file (`nox -s deploy`).

They need what that session provides (helm, the compose checker, rendered charts, a temp dir for
the install) through BRIDGE_DEPLOY_* variables, so the main suite (`nox -s tests`) does not collect
them (pyproject's --ignore). This is not a conftest.py on purpose: a second module named `conftest`
would shadow tests/conftest.py for the main suite's `from conftest import ...`.
"""

from __future__ import annotations

import importlib.util
import os
import types
from pathlib import Path

import pytest

__all__ = ["REPO", "deploy_env", "free_port"]

REPO = Path(__file__).resolve().parents[2]


def _load_ports_module() -> types.ModuleType:
    """bridge.testing.ports, loaded from its file: this session does not install the checkout's
    package (see the module docstring), and that module needs nothing beyond the standard library."""
    path = REPO / "src" / "bridge" / "testing" / "ports.py"
    spec = importlib.util.spec_from_file_location("bridge_testing_ports", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


free_port = _load_ports_module().free_port


def deploy_env(name: str) -> str:
    value = os.environ.get(f"BRIDGE_DEPLOY_{name}")
    if not value:
        pytest.fail(f"BRIDGE_DEPLOY_{name} is not set: run these tests through `nox -s deploy`")
    return value


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


def build_context(target: Path) -> Path:
    """What the Dockerfile's build stage has in WORKDIR /src: its COPY instructions (before the
    second FROM) replayed from this checkout, __pycache__ left out as .dockerignore does. Returns
    the /src stand-in, so install.sh runs on exactly the files the image build gives it."""
    import re
    import shutil

    text = re.sub(r"\\\n", " ", (REPO / "Dockerfile").read_text())
    build_stage = text.split("\nFROM ")[1]
    src = target / "src"
    src.mkdir(parents=True)
    for line in build_stage.splitlines():
        words = line.split()
        if not words or words[0] != "COPY":
            continue
        *sources, dest = [w for w in words[1:] if not w.startswith("--")]
        for source in sources:
            origin, into = REPO / source, src / dest
            if origin.is_dir():
                ignore = shutil.ignore_patterns("__pycache__", "*.py[cod]")
                shutil.copytree(origin, into, ignore=ignore, dirs_exist_ok=True)
            else:
                into.mkdir(parents=True, exist_ok=True)
                shutil.copy2(origin, into / origin.name)
    return src


@pytest.fixture(scope="session")
def installed_venv() -> Path:
    """A venv made by deploy/docker/install.sh (the Dockerfile's install step) in a fresh temp dir,
    run as the build stage runs it: on the files the Dockerfile copies, nothing else."""
    import subprocess
    import sys
    import time

    root = Path(deploy_env("INSTALL_DIR"))
    venv = root / "venv"
    if not venv.exists():
        src = build_context(root / "context")
        started = time.monotonic()
        result = subprocess.run(
            ["sh", str(src / "deploy/docker/install.sh"), str(venv), str(src)],
            env={**os.environ, "PYTHON": sys.executable},
            capture_output=True,
            text=True,
            timeout=900,
        )
        print(f"install.sh took {time.monotonic() - started:.0f} s")
        assert result.returncode == 0, f"install.sh failed:\n{result.stdout}\n{result.stderr}"
    return venv
