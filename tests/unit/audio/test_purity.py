"""``bridge.audio`` stays pure (no event loop, no network) and its public surface is what it says.

Purity is what lets every audio function be tested without a room or a server and called from either
side of the Trio/asyncio bridge; it erodes one convenient import at a time, so a test guards it.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import textwrap

import bridge.audio

FORBIDDEN = ("trio", "trio_asyncio", "asyncio", "livekit", "httpx")

# Runs in a fresh interpreter so modules imported by pytest, its plugins (pytest-trio imports trio) or
# other tests cannot hide or fake an import. `bridge/__init__.py` is NOT executed: the parent package may
# legitimately pull in the app, and the claim under test is about `bridge.audio` alone.
_PROBE = textwrap.dedent(
    """
    import importlib, importlib.util, json, pkgutil, sys, types

    spec = importlib.util.find_spec("bridge")
    parent = types.ModuleType("bridge")
    parent.__path__ = list(spec.submodule_search_locations)
    sys.modules["bridge"] = parent

    audio = importlib.import_module("bridge.audio")
    names = ["bridge.audio"] + [info.name for info in pkgutil.walk_packages(audio.__path__, "bridge.audio.")]
    for name in names:
        importlib.import_module(name)
    print(json.dumps({"imported": names, "loaded": sorted(sys.modules)}))
    """
)


def test_audio_modules_import_no_event_loop_or_network_library() -> None:
    result = subprocess.run(
        [sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=60, check=True
    )
    report = json.loads(result.stdout)

    # Guard against a vacuous pass: the probe must really have imported the modules.
    assert {
        "bridge.audio.frames",
        "bridge.audio.pcm",
        "bridge.audio.resample",
        "bridge.audio.sequence",
    } <= set(report["imported"])
    offenders = [
        name for name in report["loaded"] if any(name == f or name.startswith(f + ".") for f in FORBIDDEN)
    ]
    assert offenders == []


def test_all_is_sorted_and_names_exactly_the_submodules_public_names() -> None:
    exported = bridge.audio.__all__
    assert exported == sorted(exported)
    submodule_names: list[str] = []
    for module in ("frames", "pcm", "resample", "sequence"):
        submodule_names += importlib.import_module(f"bridge.audio.{module}").__all__
    assert sorted(submodule_names) == exported  # each name exactly once
    for name in exported:
        assert getattr(bridge.audio, name) is not None
