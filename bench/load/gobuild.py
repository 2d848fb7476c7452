"""The Go workers of bench.load (bench/go: ``receiver``, ``phones``), built on first use into
~/.cache/livekit-bridge/bench-go/ with ``go build`` (binaries never go into the checkout)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from bench.lib import REPO_ROOT

GO_MODULE = REPO_ROOT / "bench" / "go"
CACHE = Path.home() / ".cache" / "livekit-bridge" / "bench-go"
COMMANDS = ("receiver", "phones")


def go_binary() -> str:
    found = shutil.which("go") or (
        "/usr/local/go/bin/go" if os.access("/usr/local/go/bin/go", os.X_OK) else None
    )
    if found is None:
        raise SystemExit(
            "bench.load: the Go workers (bench/go) need Go >= 1.26 (`go` not on PATH nor /usr/local/go/bin)"
        )
    return found


def ensure_built() -> dict[str, Path]:
    """Paths of the Go workers; ``go build`` when one is missing or older than a source file."""
    binaries = {name: CACHE / name for name in COMMANDS}
    newest = max(p.stat().st_mtime for p in GO_MODULE.rglob("*") if p.suffix in (".go", ".mod", ".sum"))
    if all(b.exists() and b.stat().st_mtime >= newest for b in binaries.values()):
        return binaries
    CACHE.mkdir(parents=True, exist_ok=True)
    # Bounded: a cold module cache downloads server-sdk-go and pion through the Go proxy.
    subprocess.run(
        [go_binary(), "build", "-o", str(CACHE) + "/", "./cmd/..."], cwd=GO_MODULE, check=True, timeout=900
    )
    return binaries
