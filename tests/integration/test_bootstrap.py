"""The README's commands (`./dev nox ...`) work where the system Python refuses `pip install`.

``./dev`` makes a private venv with the interpreter's own ``venv`` module and installs the pinned nox
there. The main test builds a Python 3.11 that carries the PEP 668 ``EXTERNALLY-MANAGED`` marker
(as Debian 12 and Ubuntu 24.04 ship it), proves that it refuses ``pip install``, and runs ``./dev``
on it with an empty cache: nox is installed, lists the project's sessions, and runs a session of its
own on that interpreter. Needs PyPI (nox is installed from it), like the rest of the suite.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DEV = REPO / "dev"
BASH = shutil.which("bash") or "/bin/bash"
VERSION = f"python{sys.version_info.major}.{sys.version_info.minor}"


def readme_commands() -> list[str]:
    block = re.search(r"```sh\n(.*?)```", (REPO / "README.md").read_text(encoding="utf-8"), re.S)
    assert block is not None, "the README opens with a sh block"
    return [line.split("#")[0].strip() for line in block.group(1).splitlines() if line.strip()]


def test_the_readme_commands_use_dev_and_ci_runs_the_readme_test_command() -> None:
    bridge, tests = readme_commands()
    assert bridge == "./dev nox -s bridge"
    assert tests.startswith("./dev nox -s lint tests")
    ci = [
        line.strip()
        for line in (REPO / ".ci" / "run").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert tests in ci, f"{tests!r} is not a line of .ci/run"
    assert "pip install" not in "\n".join(ci)
    assert os.access(DEV, os.X_OK)


def test_dev_says_in_one_line_that_python311_is_missing(tmp_path: Path) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    out = subprocess.run(
        [BASH, str(DEV), "nox", "-l"],
        env={"PATH": str(empty), "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 1 and out.stdout == ""
    assert out.stderr.startswith("dev: python3.11 not found on PATH") and out.stderr.count("\n") == 1


def externally_managed_python(root: Path, *, leave_out: tuple[str, ...] = ()) -> Path:
    """A copy of this test's base Python whose stdlib folder holds the PEP 668 marker.

    The executable is copied (Python finds its prefix from where the executable really is); the
    stdlib's entries are symlinks (less ``leave_out``); site-packages holds pip only. Returns the
    ``bin`` folder.
    """
    base_exe = Path(os.path.realpath(getattr(sys, "_base_executable", sys.executable)))
    stdlib = Path(
        sysconfig.get_paths(vars={"base": sys.base_prefix, "installed_base": sys.base_prefix})["stdlib"]
    )
    bin_dir, lib = root / "bin", root / "lib" / VERSION
    bin_dir.mkdir(parents=True)
    lib.mkdir(parents=True)
    shutil.copy2(base_exe, bin_dir / VERSION)
    for name in ("python3", "python"):
        (bin_dir / name).symlink_to(VERSION)
    for libpython in (Path(sys.base_prefix) / "lib").glob("libpython3*"):  # a $ORIGIN runpath
        (root / "lib" / libpython.name).symlink_to(libpython)
    for entry in stdlib.iterdir():
        if entry.name not in ("site-packages", "dist-packages", "EXTERNALLY-MANAGED", *leave_out):
            (lib / entry.name).symlink_to(entry)
    (lib / "EXTERNALLY-MANAGED").write_text(
        "[externally-managed]\nError=This Python is managed by the system (a test copy).\n"
    )
    site = lib / "site-packages"
    site.mkdir()
    pip = importlib.util.find_spec("pip")
    assert pip is not None and pip.origin is not None
    (site / "pip").symlink_to(Path(pip.origin).parent)
    return bin_dir


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="builds a Linux Python layout")
def test_dev_gets_nox_working_on_a_python_that_refuses_pip_install(tmp_path: Path) -> None:
    if importlib.util.find_spec("ensurepip") is None:
        pytest.skip("this Python has no ensurepip, so no venv with pip can be made from it")
    py_bin = externally_managed_python(tmp_path / "system-python")
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONHOME", "PYTHONPATH")}
    env.update(PATH=f"{py_bin}{os.pathsep}/usr/bin:/bin", LIVEKIT_BRIDGE_CACHE=str(tmp_path / "cache"))
    env.pop("NOX_CURRENT_SESSION", None)

    # The interpreter really is externally managed: pip refuses to install into it.
    refused = subprocess.run(
        [str(py_bin / VERSION), "-m", "pip", "install", "--dry-run", "nox"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert refused.returncode != 0 and "externally-managed-environment" in refused.stderr, refused
    prefix = subprocess.run(
        [str(py_bin / VERSION), "-c", "import sys; print(sys.prefix)"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert prefix.stdout.strip() == str(tmp_path / "system-python")

    # The README's way in, on that interpreter, with nothing cached: nox is installed and works.
    started = time.monotonic()
    listed = subprocess.run(
        [BASH, str(DEV), "nox", "-l"], env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path
    )
    first_run_s = time.monotonic() - started
    assert listed.returncode == 0, listed
    assert "installing nox" in listed.stderr
    for session in ("lint", "tests", "client_ts", "bridge"):
        assert re.search(rf"^[*-] {session} ->", listed.stdout, re.M), listed.stdout
    (venv_cfg,) = (tmp_path / "cache").glob("nox-*/pyvenv.cfg")
    assert f"home = {py_bin}" in venv_cfg.read_text()

    # nox runs a session on that interpreter (a session of this test's own, not the suite again).
    noxfile = tmp_path / "noxfile.py"
    probe_code = "import sys; print('probe', sys.version_info[:2], sys.base_prefix)"
    noxfile.write_text(
        "import nox\n\n\n@nox.session(python='3.11')\ndef probe(session):\n"
        f"    session.run('python', '-c', {probe_code!r})\n"
    )
    started = time.monotonic()
    probe = subprocess.run(
        [BASH, str(DEV), "nox", "--noxfile", str(noxfile), "--envdir", str(tmp_path / "envs"), "-s", "probe"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    second_run_s = time.monotonic() - started
    assert probe.returncode == 0, probe
    assert "installing nox" not in probe.stderr  # installed once, reused
    assert f"probe (3, 11) {tmp_path / 'system-python'}" in probe.stdout + probe.stderr, probe
    print(
        f"./dev first run (venv + nox from PyPI) {first_run_s:.1f}s; a session after it {second_run_s:.1f}s"
    )


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="builds a Linux Python layout")
def test_dev_says_what_to_install_when_python311_cannot_make_a_venv(tmp_path: Path) -> None:
    # Debian's python3.11 without the python3.11-venv package: no ensurepip, so no venv with pip.
    py_bin = externally_managed_python(tmp_path / "system-python", leave_out=("ensurepip",))
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONHOME", "PYTHONPATH")}
    env.update(PATH=f"{py_bin}{os.pathsep}/usr/bin:/bin", LIVEKIT_BRIDGE_CACHE=str(tmp_path / "cache"))
    out = subprocess.run([BASH, str(DEV), "nox", "-l"], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 1 and out.stdout == ""
    assert out.stderr.splitlines()[-1] == (
        "dev: 'python3.11 -m venv' failed: on Debian/Ubuntu install its venv module "
        "(apt-get install python3.11-venv) and retry."
    ), out.stderr
    # Nothing half-made is taken for a working install next time.
    assert not list((tmp_path / "cache").glob("nox-*/.complete"))
