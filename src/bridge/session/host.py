"""What a session's parts need from the session that holds them: its nursery, its settings, its
user, and a way to say "this session is in use" (the idle TTL)."""

from __future__ import annotations

from typing import Protocol

import trio

from ..config import BridgeConfig

__all__ = ["SessionHost"]


class SessionHost(Protocol):
    user_id: str
    config: BridgeConfig

    @property
    def nursery(self) -> trio.Nursery:
        """The running session's nursery; SessionNotFoundError once it has ended."""
        ...

    def touch(self) -> None: ...
