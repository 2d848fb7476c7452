"""The command line: --help lists every setting, --version, --print-config, and start-up failures
that end as one readable line with exit status 2."""

from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge import cli
from bridge.config import BridgeConfig, ConfigError, env_name
from bridge.settings_table import HELP, markdown_table, settings
from bridge.version import __version__

REPO = Path(__file__).resolve().parents[2]


def test_every_setting_has_a_row_and_help_lists_each_with_its_default(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert {f.name for f in dataclasses.fields(BridgeConfig)} == set(HELP)
    with pytest.raises(SystemExit) as exited:
        cli.main(["--help"])
    assert exited.value.code == 0
    text = capsys.readouterr().out
    for row in settings():
        assert f"{row.variable} (default: {row.default})" in text, row.variable
    assert "BRIDGE_FETCH_MAX_BYTES (default: 52428800)" in text and "--print-config" in text


def test_the_readme_shows_the_same_table() -> None:
    readme = (REPO / "README.md").read_text()
    assert markdown_table() in readme
    check = subprocess.run(
        [sys.executable, str(REPO / "tools" / "gen_settings_table.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, check.stderr


def test_version_comes_from_the_package_metadata(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["--version"])
    assert capsys.readouterr().out.strip() == f"livekit-bridge {__version__}"
    assert __version__ not in ("", "0+unknown")


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    for name in list(os.environ):
        if name.startswith(("BRIDGE_", "LIVEKIT_")) or name in (
            "PORT",
            "LOG_LEVEL",
            "SPEAKER_MAX_DURATION_MS",
        ):
            monkeypatch.delenv(name)
    yield monkeypatch


def test_print_config_shows_the_effective_settings_with_secrets_redacted(
    environment: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    environment.setenv("BRIDGE_AUTH_TOKEN", "print-config-secret-0123456789")
    environment.setenv("PORT", "9191")
    assert cli.main(["--print-config"]) == 0
    out = capsys.readouterr().out
    assert "PORT=9191" in out and "BRIDGE_AUTH_TOKEN=<redacted>" in out
    assert "print-config-secret" not in out
    assert len(out.strip().splitlines()) == len(dataclasses.fields(BridgeConfig))


def test_log_level_is_an_alias_and_a_bad_level_is_refused() -> None:
    assert BridgeConfig.from_env({"LOG_LEVEL": "debug"}).log_level == "debug"
    assert BridgeConfig.from_env({"LOG_LEVEL": "debug", "BRIDGE_LOG_LEVEL": "ERROR"}).log_level == "ERROR"
    with pytest.raises(ConfigError, match="BRIDGE_LOG_LEVEL \\(or LOG_LEVEL\\)='loud' must be one of"):
        BridgeConfig.from_env({"LOG_LEVEL": "loud"})
    assert env_name("log_level") == "BRIDGE_LOG_LEVEL"


def _run_bridge(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("BRIDGE_", "LIVEKIT_")) and k != "PORT"}
    return subprocess.run(
        [sys.executable, "-m", "bridge", *args],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def _assert_one_line_failure(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    failure = [line for line in result.stderr.splitlines() if line.startswith("livekit-bridge: ")]
    assert len(failure) == 1, result.stderr
    for fragment in fragments:
        assert fragment in failure[0], failure[0]


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        yield taken.getsockname()[1]


def test_a_port_in_use_is_one_line_naming_the_setting(busy_port: int) -> None:
    result = _run_bridge({"PORT": str(busy_port)})
    _assert_one_line_failure(result, f"cannot listen on 127.0.0.1:{busy_port}", "PORT", "in use")


def test_a_metrics_port_in_use_is_one_line_naming_the_setting(busy_port: int) -> None:
    result = _run_bridge({"PORT": "0", "BRIDGE_METRICS_PORT": str(busy_port)})
    _assert_one_line_failure(result, "BRIDGE_METRICS_PORT", "in use")


def test_a_certificate_that_does_not_load_is_one_line_naming_the_setting(tmp_path: Path) -> None:
    result = _run_bridge(
        {"PORT": "0", "BRIDGE_TLS_CERT": str(tmp_path / "missing.pem"), "BRIDGE_TLS_KEY": str(tmp_path / "k")}
    )
    _assert_one_line_failure(result, "BRIDGE_TLS_CERT=", "No such file")


def test_a_bad_setting_is_one_line_naming_the_variable() -> None:
    _assert_one_line_failure(_run_bridge({"BRIDGE_JOIN_TIMEOUT_S": "soon"}), "BRIDGE_JOIN_TIMEOUT_S='soon'")


def test_a_dev_server_that_cannot_start_is_one_line(tmp_path: Path) -> None:
    fake = tmp_path / "livekit-server"
    fake.write_text("#!/bin/sh\necho 'livekit-server version 0.0.1'\n")
    fake.chmod(0o755)
    result = _run_bridge({"LIVEKIT_SERVER_BIN": str(fake), "PORT": "0"}, "--dev-server")
    _assert_one_line_failure(result, "local LiveKit server", "0.0.1")
