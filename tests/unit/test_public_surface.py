"""What each package exports, pinned: a change here is a change for everyone who imports the bridge."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

SURFACE = {
    "bridge": {"BridgeConfig", "BridgeState", "serve"},
    "bridge.session": {
        "ActivePlayback",
        "BridgeSession",
        "COUNTER_FIELDS",
        "CloseReason",
        "CloudLink",
        "ConnectionStatus",
        "JoinRequest",
        "RoomFactory",
        "SessionSnapshot",
        "StreamCounters",
        "StreamEnd",
        "StreamEndReason",
    },
    "bridge.audio": {
        "FrameChunker",
        "PcmFormatError",
        "SequenceTracker",
        "StreamResampler",
        "apply_gain",
        "s16le_from_samples",
        "samples_from_s16le",
        "split_sequence_byte",
    },
    "bridge.rpc.requests": {"RequestTranslator", "StopRequest", "play_audio_event"},
    "bridge.errors": {
        "AudioFormatError",
        "BridgeError",
        "CapacityError",
        "InvalidRequestError",
        "NotAllowedError",
        "RoomConnectError",
        "SessionNotFoundError",
        "ShuttingDownError",
        "StartupError",
        "TransportRefusedError",
    },
}


@pytest.mark.parametrize("package", sorted(SURFACE))
def test_each_package_exports_exactly_its_surface_and_every_name_exists(package: str) -> None:
    module = importlib.import_module(package)
    assert set(module.__all__) == SURFACE[package]
    for name in module.__all__:
        assert hasattr(module, name), f"{package}.{name}"


def test_the_service_never_imports_test_tooling() -> None:
    # A fresh interpreter: this test process has imported bridge.testing for other tests.
    probe = (
        "import sys, bridge.cli, bridge.app; "
        "print(sorted(m for m in sys.modules if m.startswith('bridge.testing')))"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
