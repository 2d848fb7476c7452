#!/bin/sh
# Install livekit-bridge into a new virtual environment from the hash-locked dependency set.
#
#   deploy/docker/install.sh VENV [SOURCE_DIR]
#
# This is the Dockerfile's install step (its build stage runs it into /opt/livekit-bridge), and
# `nox -s deploy` runs the same script into a temporary directory, then starts the bridge from there
# (tests/deploy/test_install.py): images cannot be built on the project's machines, so this is how
# the image's install path is tested.
#
# - every third-party package comes from deploy/requirements.lock, checked against its sha256
#   (--require-hashes: a missing pin or a changed file fails the install), wheels only (no compiler
#   is needed or used, at build time or at run time);
# - the bridge's own wheel is built in a throwaway venv with the build backend locked the same way
#   (deploy/requirements-build.lock) and installed without dependencies;
# - `pip check` then proves the locked set satisfies what the bridge declares in pyproject.toml;
# - the quiet copy of the SDK's native library is written into the venv (step 3).
#
# PYTHON selects the interpreter (default: python3; it must be 3.11, like the lock).
set -eu

if [ $# -lt 1 ] || [ $# -gt 2 ]; then
    echo "usage: $0 VENV [SOURCE_DIR]" >&2
    exit 2
fi
venv=$1
src=${2:-$(cd "$(dirname "$0")/../.." && pwd)}
python=${PYTHON:-python3}

if [ -e "$venv" ]; then
    echo "$0: $venv exists; install into a new directory" >&2
    exit 2
fi
"$python" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' || {
    echo "$0: $python is not Python 3.11 (deploy/requirements.lock is locked for 3.11)" >&2
    exit 2
}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
trap 'exit 130' INT TERM

pip_install() {
    # $1 = venv; the rest: pip install arguments
    target=$1
    shift
    PIP_DISABLE_PIP_VERSION_CHECK=1 "$target/bin/python" -m pip install --quiet --no-cache-dir \
        --no-input "$@"
}

# 1. The bridge's wheel, built by the locked build backend (no build isolation: nothing unpinned).
"$python" -m venv "$work/build"
pip_install "$work/build" --require-hashes --only-binary :all: -r "$src/deploy/requirements-build.lock"
PIP_DISABLE_PIP_VERSION_CHECK=1 "$work/build/bin/python" -m pip wheel --quiet --no-cache-dir \
    --no-deps --no-build-isolation --wheel-dir "$work/wheel" "$src"

# 2. The runtime venv: the locked dependencies (hash-checked, wheels only), then the bridge alone.
"$python" -m venv "$venv"
pip_install "$venv" --require-hashes --only-binary :all: -r "$src/deploy/requirements.lock"
pip_install "$venv" --no-deps --no-index "$work"/wheel/livekit_bridge-*.whl
PIP_DISABLE_PIP_VERSION_CHECK=1 "$venv/bin/python" -m pip check
"$venv/bin/livekit-bridge" --version

# 3. The SDK's native library with libwebrtc's log sink at LS_WARNING, written into the venv now, so
#    a read-only container finds it (bridge/livekit_io/native_library.py; it is made only from the
#    exact library it was written for, and BRIDGE_WEBRTC_LOG_SINK=verbose keeps the shipped one).
#    (Not `-m`: the bridge package imports the module before runpy would run it, and Python warns.)
"$venv/bin/python" -c 'from bridge.livekit_io.native_library import main; raise SystemExit(main())'
