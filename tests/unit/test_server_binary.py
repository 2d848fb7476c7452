"""Which livekit-server the dev server runs: one named or on PATH at the pinned version, else a build
that shows progress, and clear errors when Go is missing or too old.

Fake ``go`` and ``livekit-server`` scripts stand in for the real ones (the real build takes minutes);
tests/integration/test_devserver.py runs the real binary.
"""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import pytest

from bridge.testing import devserver
from bridge.testing.devserver import (
    LIVEKIT_SERVER_VERSION,
    DevServerError,
    ensure_server_binary,
    find_server_binary,
    server_binary_path,
)

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="shell scripts stand in for binaries")


def script(path: Path, body: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def fake_server(path: Path, version: str) -> Path:
    return script(path, f'[ "$1" = --version ] && echo "livekit-server version {version}"\n')


# A `go` that reports its version and, for `install -v`, talks like the real one: downloads, a silent
# stretch (the real link step), packages, then the binary in $GOBIN.
FAKE_GO = """
case "$1" in
  env) echo "${FAKE_GOVERSION:-go1.26.1}"; echo "${FAKE_GOTOOLCHAIN:-auto}";;
  install)
    [ "$2" = -v ] || exit 9
    echo "go: downloading github.com/livekit/protocol v1.0.0"
    echo "go: downloading github.com/pion/webrtc/v4 v4.0.0"
    sleep 0.6
    echo "internal/abi"; echo "github.com/livekit/livekit-server/pkg/service"
    echo "go: some note worth showing"
    sleep 0.6
    [ -n "$FAKE_GO_FAIL" ] && { echo "pkg/x.go:1: undefined: y"; exit 1; }
    printf '#!/bin/sh\\necho "livekit-server version 1.13.5"\\n' > "$GOBIN/server"; chmod +x "$GOBIN/server";;
  *) exit 9;;
esac
"""


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty cache, and a PATH with only the system's tools and tmp_path/bin (first)."""
    monkeypatch.setenv("LIVEKIT_BRIDGE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(devserver.SERVER_BIN_ENV, raising=False)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:/usr/bin:/bin")
    monkeypatch.setattr(devserver, "_PROGRESS_EVERY_S", 0.25)
    monkeypatch.setattr(devserver, "_skipped", set())
    (tmp_path / "bin").mkdir()
    assert find_server_binary() is None, "a livekit-server is already on the system PATH"
    return tmp_path / "bin"


def test_a_livekit_server_on_path_at_the_pinned_version_is_used_without_building(env: Path) -> None:
    script(env / "go", "exit 9\n")  # building would fail
    binary = fake_server(env / "livekit-server", LIVEKIT_SERVER_VERSION.removeprefix("v"))
    assert ensure_server_binary() == binary
    assert not server_binary_path().exists()


def test_one_on_path_at_another_version_is_skipped_with_a_note_and_the_pinned_one_built(env: Path) -> None:
    fake_server(env / "livekit-server", "1.9.0")
    script(env / "go", FAKE_GO)
    said: list[str] = []
    assert ensure_server_binary(said.append) == server_binary_path()
    assert any("not using" in line and "1.9.0" in line for line in said), said


def test_the_env_var_names_the_binary_and_a_wrong_one_is_an_error_not_a_build(
    env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script(env / "go", FAKE_GO)
    good = fake_server(tmp_path / "elsewhere" / "lk", "1.13.5")
    monkeypatch.setenv(devserver.SERVER_BIN_ENV, str(good))
    assert ensure_server_binary() == good
    monkeypatch.setenv(devserver.SERVER_BIN_ENV, str(fake_server(tmp_path / "old" / "lk", "1.12.0")))
    with pytest.raises(DevServerError, match=r"LIVEKIT_SERVER_BIN=.* is livekit-server v1\.12\.0.*v1\.13\.5"):
        ensure_server_binary()
    monkeypatch.setenv(devserver.SERVER_BIN_ENV, str(tmp_path / "missing"))
    with pytest.raises(DevServerError, match="does not run"):
        ensure_server_binary()
    assert not server_binary_path().exists()


def test_the_first_build_prints_progress_while_go_is_silent(env: Path) -> None:
    script(env / "go", FAKE_GO)
    said: list[str] = []
    assert ensure_server_binary(said.append) == server_binary_path()
    assert os.access(server_binary_path(), os.X_OK)
    progress = [line for line in said if "packages compiled" in line]
    # ~1.2 s of build at one line per 0.25 s: several lines, counts rising to what go printed.
    assert len(progress) >= 3, said
    assert "2 modules downloaded, 2 packages compiled" in progress[-1]
    assert "  go: some note worth showing" in said  # go's own messages are passed on
    assert said[0].startswith("building livekit-server") and said[-1].startswith("built livekit-server")
    # Built once: the next call finds it.
    script(env / "go", "exit 9\n")
    assert ensure_server_binary() == server_binary_path()


def test_a_failed_build_says_what_go_said_and_leaves_no_binary(
    env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script(env / "go", FAKE_GO)
    monkeypatch.setenv("FAKE_GO_FAIL", "1")
    with pytest.raises(DevServerError, match=r"(?s)exit code 1.*undefined: y"):
        ensure_server_binary(lambda line: None)
    assert not server_binary_path().exists()


def test_missing_go_is_a_clear_error(env: Path) -> None:
    with pytest.raises(DevServerError, match=r"'go' tool was not found on PATH\. Install Go >= 1\.26"):
        ensure_server_binary()


@pytest.mark.parametrize(
    ("goversion", "toolchain", "error"),
    [
        ("go1.19.8", "", r"is go1\.19\.8: livekit-server v1\.13\.5 needs Go >= 1\.26"),
        ("go1.24.2", "local", r"GOTOOLCHAIN=local.*Set GOTOOLCHAIN=auto"),
        ("go1.24.2", "auto", None),  # go switches to the toolchain go.mod asks for by itself
        ("go1.26.0", "local", None),
    ],
)
def test_go_too_old_to_build_is_a_clear_error(
    env: Path, monkeypatch: pytest.MonkeyPatch, goversion: str, toolchain: str, error: str | None
) -> None:
    script(env / "go", FAKE_GO)
    monkeypatch.setenv("FAKE_GOVERSION", goversion)
    monkeypatch.setenv("FAKE_GOTOOLCHAIN", toolchain)
    if error is None:
        assert ensure_server_binary(lambda line: None) == server_binary_path()
    else:
        with pytest.raises(DevServerError, match=error):
            ensure_server_binary()
        assert not server_binary_path().exists()


def test_the_cli_reports_a_missing_go_in_one_error_line(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert devserver.main(["build"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: livekit-server v1.13.5 is not built yet") and err.count("\n") == 1


def test_notes_and_progress_go_to_stderr_so_stdout_holds_only_the_path(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_server(env / "livekit-server", "1.9.0")
    script(env / "go", FAKE_GO)
    assert devserver.main(["build"]) == 0
    out, err = capsys.readouterr()
    assert out == f"{server_binary_path()}\n"
    assert "not using" in err and "packages compiled" in err and "built livekit-server" in err
