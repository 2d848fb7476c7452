"""Developer and CI tasks. `nox -s lint tests client_ts` is what CI runs (see README and .ci/run)."""

from __future__ import annotations

import os

import nox

nox.options.sessions = ["lint", "tests", "client_ts"]
nox.options.reuse_existing_virtualenvs = True
nox.options.error_on_external_run = True
# A missing python3.11 fails the session instead of skipping it with a warning (./dev checks first).
nox.options.error_on_missing_interpreters = True

PYTHON = "3.11"
# The proto generators are pinned: their output is committed and checked for staleness.
PROTO_TOOLS = ["grpcio-tools==1.85.1", "betterproto2-compiler==0.10.1"]
LINT_TOOLS = ["ruff==0.17.6", "mypy==2.4.1", "types-protobuf"]


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff (format + rules), mypy strict on src/, and checks that src/bridge/_gen matches proto/ and the
    README's settings table matches the code."""
    session.install("-e", ".[test]", *LINT_TOOLS, *PROTO_TOOLS)
    session.run("ruff", "format", "--check", "src", "tests", "tools", "bench", "noxfile.py")
    session.run("ruff", "check", "src", "tests", "tools", "bench", "noxfile.py")
    session.run("mypy")
    session.run("python", "tools/gen_proto.py", "--check")
    session.run("python", "tools/gen_settings_table.py", "--check")


@nox.session(python=PYTHON)
def proto(session: nox.Session) -> None:
    """Regenerate src/bridge/_gen from proto/livekit_bridge.proto."""
    session.install(*PROTO_TOOLS)
    session.run("python", "tools/gen_proto.py")


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """Unit and integration tests; integration tests build (once) and start a real LiveKit server."""
    session.install("-e", ".[test]")
    session.run("python", "-m", "bridge.devserver", "build")
    session.run("pytest", *session.posargs)


# Bun, which the cloud runs on: the npm package `bun` ships its binary (an optional dependency per platform).
BUN_VERSION = "1.4.4"


def _bun(session: nox.Session) -> str:
    """Bun from the npm registry, installed once into the bridge's cache folder; its directory."""
    cache = session.run(
        "python", "-c", "from bridge.devserver import cache_dir; print(cache_dir())", silent=True
    )
    prefix = os.path.join(str(cache).strip(), f"bun-{BUN_VERSION}")
    bin_dir = os.path.join(prefix, "node_modules", ".bin")
    if not os.path.exists(os.path.join(bin_dir, "bun")):  # a broken link (interrupted install) reinstalls
        args = ["install", "--prefix", prefix, "--no-audit", "--no-fund", "--no-save", f"bun@{BUN_VERSION}"]
        session.run("npm", *args, external=True)
    session.run(os.path.join(bin_dir, "bun"), "--version", external=True)
    return bin_dir


@nox.session(python=PYTHON)
def client_ts(session: nox.Session) -> None:
    """The TypeScript client (clients/typescript): build, unit, integration and package tests against
    this bridge, under Node and again under Bun."""
    session.install("-e", ".")
    session.run("python", "-m", "bridge.devserver", "build")
    bridge_python = os.path.join(session.bin, "python")
    bun_dir = _bun(session)
    with session.chdir("clients/typescript"):
        session.run("npm", "ci", "--no-audit", "--no-fund", external=True)
        session.run("npm", "test", env={"BRIDGE_PYTHON": bridge_python}, external=True)
        path = os.pathsep.join([bun_dir, session.bin, os.environ.get("PATH", "")])
        bun_env = {"BRIDGE_PYTHON": bridge_python, "PATH": path}
        session.run("npm", "run", "test:bun", env=bun_env, external=True)


@nox.session(python=PYTHON)
def bridge(session: nox.Session) -> None:
    """Run the bridge; without LIVEKIT_URL it starts a local LiveKit server for you."""
    session.install("-e", ".")
    args = [] if os.environ.get("LIVEKIT_URL") else ["--dev-server"]
    if args:  # find or build livekit-server first: build progress, and a missing Go as a one-line error
        session.run("python", "-m", "bridge.devserver", "build")
    session.run("livekit-bridge", *args, *session.posargs)
