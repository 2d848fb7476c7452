"""Making and choosing the quiet copy of the SDK's native library (livekit_io/native_library.py),
on the wheel's real library file."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from bridge.livekit_io import native_library
from bridge.livekit_io.native_library import (
    SDK_LIBRARY_SHA256,
    SINK_CALL_OFFSET,
    SINK_PATCHED,
    choose_native_library,
    quiet_library,
    shipped_library,
)


def test_the_installed_wheel_is_the_one_the_patch_is_for() -> None:
    """If this fails after an SDK upgrade, the bridge runs on the wheel's library as it is (and says
    so at start-up): find the new library's ``LogSink::LogSink`` call and update the constants, or
    drop the patch if the SDK now adds its sink at LS_WARNING."""
    assert hashlib.sha256(shipped_library().read_bytes()).hexdigest() == SDK_LIBRARY_SHA256


def test_the_copy_differs_from_the_wheels_library_in_the_six_patched_bytes_only(tmp_path: Path) -> None:
    copy = quiet_library(tmp_path)
    assert copy is not None and copy.parent == tmp_path
    shipped, patched = shipped_library().read_bytes(), copy.read_bytes()
    assert len(patched) == len(shipped)
    differ = [i for i in range(SINK_CALL_OFFSET - 64, SINK_CALL_OFFSET + 64) if shipped[i] != patched[i]]
    assert differ and min(differ) >= SINK_CALL_OFFSET and max(differ) < SINK_CALL_OFFSET + len(SINK_PATCHED)
    assert patched[:SINK_CALL_OFFSET] == shipped[:SINK_CALL_OFFSET]
    assert patched[SINK_CALL_OFFSET + len(SINK_PATCHED) :] == shipped[SINK_CALL_OFFSET + len(SINK_PATCHED) :]


def test_a_good_copy_is_reused_a_damaged_one_is_replaced_and_an_unwritable_folder_gives_none(
    tmp_path: Path,
) -> None:
    installed = quiet_library(tmp_path / "venv")
    assert installed is not None and installed.parent == tmp_path / "venv"
    found = quiet_library(tmp_path / "cache", look_in=[tmp_path / "venv"])  # not written again
    assert found == installed and not (tmp_path / "cache").exists()

    damaged = bytearray(installed.read_bytes())
    damaged[SINK_CALL_OFFSET] ^= 0xFF
    installed.write_bytes(bytes(damaged))
    fresh = quiet_library(tmp_path / "cache", look_in=[tmp_path / "venv"])  # never the damaged one
    assert fresh is not None and fresh.parent == tmp_path / "cache"

    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    assert quiet_library(blocked / "cache") is None  # nowhere to write it


def test_no_copy_of_a_library_the_patch_is_not_for(tmp_path: Path) -> None:
    other = tmp_path / "liblivekit_ffi.so"
    data = bytearray(shipped_library().read_bytes())
    data[-1] ^= 0xFF  # one byte off
    other.write_bytes(bytes(data))
    assert quiet_library(tmp_path / "out", source=other) is None
    assert not (tmp_path / "out").exists()


def test_choosing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(native_library, "_sdk_loaded", lambda: False)

    env: dict[str, str] = {}
    chosen = choose_native_library("warning", env, tmp_path)
    assert chosen.quiet and env == {"LIVEKIT_LIB_PATH": chosen.path}
    assert Path(chosen.path).parent == tmp_path

    env = {}
    assert not choose_native_library("verbose", env, tmp_path).quiet and env == {}

    env = {"LIVEKIT_LIB_PATH": "/opt/own/liblivekit_ffi.so"}  # the operator's own choice stands
    named = choose_native_library("warning", env, tmp_path)
    assert named.path == "/opt/own/liblivekit_ffi.so" and not named.quiet
    assert env == {"LIVEKIT_LIB_PATH": "/opt/own/liblivekit_ffi.so"}

    monkeypatch.setattr(native_library, "_sdk_loaded", lambda: True)
    env = {}
    late = choose_native_library("warning", env, tmp_path)
    assert not late.quiet and env == {} and "loaded" in late.reason

    with pytest.raises(ValueError):
        choose_native_library("loud", {}, tmp_path)
