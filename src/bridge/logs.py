"""Logging set-up: one line per record, with the session's user id when a record carries one.

Records never carry tokens or secrets: JoinRequest hides its token from repr, and every record,
including the SDK's own (which can quote a rejected token), passes through ``RedactingFilter``.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

from .redact import RedactingFilter

__all__ = ["configure_logging"]


CONTEXT_FIELDS = ("user_id", "request_id", "track_id", "reason")
"""``extra=`` keys that records may carry; both formats print them."""


def _context(record: logging.LogRecord) -> dict[str, object]:
    return {
        key: getattr(record, key) for key in CONTEXT_FIELDS if getattr(record, key, None) not in (None, "")
    }


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        context = " ".join(f"{key}={value}" for key, value in _context(record).items())
        return f"{line} {context}" if context else line


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            # RFC 3339 in UTC with milliseconds: 2026-01-31T23:59:59.123Z
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")[:-6] + "Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **_context(record),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(level: str, fmt: str = "text") -> None:
    handler = logging.StreamHandler()
    if fmt == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(_TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
