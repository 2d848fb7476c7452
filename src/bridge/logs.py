"""Logging set-up: one line per record, with the session's user id when a record carries one.

Records never carry tokens or secrets: JoinRequest hides its token from repr, and every record,
including the SDK's own (which can quote a rejected token), passes through ``RedactingFilter``.
"""

from __future__ import annotations

import logging

from .redact import RedactingFilter

__all__ = ["configure_logging"]


class _ContextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        user_id = getattr(record, "user_id", None)
        return f"{line} user_id={user_id}" if user_id else line


def configure_logging(level: str) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(_ContextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
