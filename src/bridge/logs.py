"""Logging set-up: one line per record, with the session's user id when a record carries one.

Records never carry tokens or secrets: JoinRequest hides its token from repr, and every formatted
record (message, ``extra=`` fields and exception tracebacks alike, the SDK's own records included,
which can quote a rejected token) passes through ``redact`` on its way out.

In text format a record is one line whatever its fields hold: newlines in the message and in
context fields (user ids, reasons: text a caller chose) are escaped, and traceback lines are
indented, so a caller cannot forge a record by putting a newline in a field.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

from .redact import RedactingFilter, redact

__all__ = ["configure_logging"]


CONTEXT_FIELDS = ("user_id", "request_id", "track_id", "reason")
"""``extra=`` keys that records may carry; both formats print them."""

_TRACEBACK_INDENT = "    | "


def _context(record: logging.LogRecord) -> dict[str, object]:
    return {
        key: getattr(record, key) for key in CONTEXT_FIELDS if getattr(record, key, None) not in (None, "")
    }


def _one_line(text: str) -> str:
    return redact(text).replace("\\", "\\\\").replace("\r", "\\r").replace("\n", "\\n")


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        head = f"{self.formatTime(record)} {record.levelname} {record.name}: {_one_line(record.getMessage())}"
        context = " ".join(f"{key}={_one_line(str(value))}" for key, value in _context(record).items())
        line = f"{head} {context}" if context else head
        if record.exc_info:
            trace = redact(self.formatException(record.exc_info))
            line += "\n" + "\n".join(_TRACEBACK_INDENT + part for part in trace.splitlines())
        return line


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            # RFC 3339 in UTC with milliseconds: 2026-01-31T23:59:59.123Z
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")[:-6] + "Z",
            "level": record.levelname,
            "logger": record.name,
            "message": redact(record.getMessage()),
            **{key: redact(str(value)) for key, value in _context(record).items()},
        }
        if record.exc_info:
            entry["exception"] = redact(self.formatException(record.exc_info))
        return json.dumps(entry, default=str)


def configure_logging(level: str, fmt: str = "text") -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(_JsonFormatter() if fmt == "json" else _TextFormatter())
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # hpack logs every decoded header at DEBUG, `authorization: Bearer …` included: our handler would
    # redact it, but any other handler an embedding program adds would not. Keep it out at the source.
    logging.getLogger("hpack").setLevel(max(logging.INFO, root.level))
