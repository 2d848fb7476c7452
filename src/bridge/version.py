"""The bridge's version: one source, the installed package's metadata (pyproject.toml)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

__all__ = ["USER_AGENT", "VERSION", "__version__"]

try:
    __version__ = version("livekit-bridge")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

VERSION = f"livekit-bridge/{__version__}"
"""What GetStatus and HealthCheck report as the server version."""

USER_AGENT = f"livekit-bridge/{__version__} (audio fetch)"
"""What audio fetches send."""
