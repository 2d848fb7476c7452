"""Which copy of the SDK's native library the process loads: the wheel's, or one with libwebrtc's
log sink at LS_WARNING.

The livekit wheel (1.2.1) adds libwebrtc's log sink at LS_VERBOSE (webrtc-sys ``LogSink::LogSink``).
At that level libwebrtc's SCTP transport hex-dumps every data-channel packet it sends or receives,
one ``vsnprintf`` per byte, on the network thread; the SDK then forwards each line to Python, which
parses and drops it. That is ~40 % of a received packet's native CPU (docs/design/lessons.md, "The
native floor"; ``python -m bench.native_floor``: 0.52-0.63 of the shipped library's cost per packet).
The fix belongs in the SDK; until it ships, the bridge loads a copy of the wheel's own library with
that one call changed to LS_WARNING (6 bytes), through the SDK's own ``LIVEKIT_LIB_PATH``. Warnings
and errors still reach the bridge's log.

The copy is made only from the exact library it was written for (its sha256) and is itself checked
before it is loaded; anything else (another SDK version, another platform, nowhere to write it)
leaves the wheel's library in place, and the start-up log says why. ``install.sh`` (the image)
writes the copy into the venv at install time, so a read-only container needs nothing at run time.
``BRIDGE_WEBRTC_LOG_SINK=verbose`` keeps the wheel's library.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.resources
import os
import sys
from collections.abc import MutableMapping, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "SINK_LEVELS",
    "NativeLibrary",
    "cache_directory",
    "choose_native_library",
    "installed_directory",
    "quiet_library",
    "shipped_library",
]

SINK_LEVELS = ("warning", "verbose")
"""``BRIDGE_WEBRTC_LOG_SINK``: libwebrtc's log sink at LS_WARNING (the patched copy) or as shipped."""

SDK_LIBRARY_SHA256 = "b0e3b91dcf42b486045b6acca4863b132e3c4d114d5701b5759c7661c04ea1eb"
"""liblivekit_ffi.so of the livekit 1.2.1 wheel (manylinux x86_64; its native core says v0.13.2)."""
SINK_CALL_OFFSET = 0x1142345
"""File offset of the end of webrtc-sys's ``LogSink::LogSink``: ``mov %rbx,%rdi; xor %esi,%esi;
pop %rbx`` then a tail call of ``webrtc::LogMessage::AddLogToStream(this, LS_VERBOSE)``."""
SINK_ORIGINAL = bytes.fromhex("4889df31f65b")
SINK_PATCHED = bytes.fromhex("535f6a025e5b")
"""``push %rbx; pop %rdi; push $2; pop %rsi; pop %rbx``: the same call with LS_WARNING (2)."""

_LIBRARY_ENV = "LIVEKIT_LIB_PATH"  # the SDK's own override, read when it first loads its library
_COPY_NAME = f"liblivekit_ffi-{SDK_LIBRARY_SHA256[:12]}-sink-warning.so"


@dataclass(frozen=True)
class NativeLibrary:
    path: str
    """What the SDK loads: the copy's path, or ``""`` for the wheel's own library."""
    quiet: bool
    """libwebrtc's log sink is at LS_WARNING."""
    reason: str
    """Why this one, for the start-up log."""


def shipped_library() -> Path:
    return Path(str(importlib.resources.files("livekit.rtc.resources") / "liblivekit_ffi.so"))


def installed_directory() -> Path:
    """Where ``install.sh`` writes the copy: inside the venv, read-only at run time."""
    return Path(sys.prefix) / "lib" / "livekit-bridge"


def cache_directory() -> Path:
    """Where the bridge writes the copy itself when the install did not: the user's cache folder."""
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "livekit-bridge" / "native"


def _patched(source: Path) -> bytes | None:
    """The patched bytes of ``source``, or None if it is not the library the patch is for."""
    try:
        data = bytearray(source.read_bytes())
    except OSError:
        return None
    if hashlib.sha256(data).hexdigest() != SDK_LIBRARY_SHA256:
        return None
    if data[SINK_CALL_OFFSET : SINK_CALL_OFFSET + len(SINK_ORIGINAL)] != SINK_ORIGINAL:
        return None
    data[SINK_CALL_OFFSET : SINK_CALL_OFFSET + len(SINK_PATCHED)] = SINK_PATCHED
    return bytes(data)


def quiet_library(write_to: Path, look_in: Sequence[Path] = (), source: Path | None = None) -> Path | None:
    """A copy of ``source`` (the wheel's library) with the sink at LS_WARNING: one already in
    ``look_in`` or ``write_to`` if it has exactly the patched bytes, else a new one written to
    ``write_to``. None if ``source`` is not the library the patch is for, or it cannot be written."""
    data = _patched(source or shipped_library())
    if data is None:
        return None
    for directory in (*look_in, write_to):
        candidate = directory / _COPY_NAME
        try:
            if candidate.read_bytes() == data:
                return candidate
        except OSError:
            continue
    target = write_to / _COPY_NAME
    partial = target.with_name(f"{target.name}.{os.getpid()}.partial")
    try:
        write_to.mkdir(parents=True, exist_ok=True)
        partial.write_bytes(data)
        partial.replace(target)  # atomic: a process loading it never sees half a file
    except OSError:
        with contextlib.suppress(OSError):
            partial.unlink(missing_ok=True)
        return None
    return target


def _sdk_loaded() -> bool:
    try:
        from livekit.rtc._ffi_client import FfiClient
    except ImportError:
        return False
    return getattr(FfiClient, "_instance", None) is not None


def choose_native_library(
    sink: str, env: MutableMapping[str, str] | None = None, cache: Path | None = None
) -> NativeLibrary:
    """Call before anything uses the SDK (it loads its library once, on first use). With
    ``sink="warning"`` points ``LIVEKIT_LIB_PATH`` at the quiet copy when it can: the install's,
    else one in ``cache`` (default: the user's cache folder), written there if need be."""
    env = os.environ if env is None else env
    if sink not in SINK_LEVELS:
        raise ValueError(f"sink must be one of {SINK_LEVELS}, not {sink!r}")
    named = env.get(_LIBRARY_ENV, "").strip()
    if named:
        quiet = Path(named).name == _COPY_NAME
        return NativeLibrary(named, quiet, f"{_LIBRARY_ENV} names it")
    if _sdk_loaded():
        return NativeLibrary("", False, "the SDK had loaded its library already")
    if sink == "verbose":
        return NativeLibrary("", False, "BRIDGE_WEBRTC_LOG_SINK=verbose")
    copy = quiet_library(cache or cache_directory(), look_in=[installed_directory()])
    if copy is None:
        return NativeLibrary(
            "", False, "the installed SDK library is not the one the patch is for, or no folder is writable"
        )
    env[_LIBRARY_ENV] = str(copy)
    return NativeLibrary(str(copy), True, "libwebrtc's log sink at LS_WARNING")


def main(argv: Sequence[str] | None = None) -> int:
    """Write the quiet copy into ``argv[0]`` (default: the venv's folder, where the bridge looks
    first), as ``install.sh`` does at install time."""
    args = list(sys.argv[1:] if argv is None else argv)
    target = Path(args[0]) if args else installed_directory()
    copy = quiet_library(target)
    if copy is None:
        print(
            "livekit-bridge: no quiet copy of the SDK's library: the installed one is not the one the "
            f"patch is for, or {target} is not writable"
        )
    else:
        print(f"livekit-bridge: {copy} (libwebrtc's log sink at LS_WARNING)")
    return 0  # not an error: the bridge then runs on the wheel's library
