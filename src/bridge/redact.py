"""Keep tokens out of messages and logs.

LiveKit echoes a token whose signature it rejects ("401 Unauthorized - invalid token: eyJ..."), and
the SDK's native core logs that text through Python's ``livekit`` logger. Anything that may carry
such text passes through ``redact`` before the cloud or a log sees it; ``RedactingFilter`` does the
same for every log record, whoever logged it.
"""

from __future__ import annotations

import logging
import re

__all__ = ["REDACTED", "RedactingFilter", "forget_secret", "redact", "remember_secret"]

REDACTED = "<redacted>"

# A JWT: three base64url parts, the first two JSON objects (so they start with "eyJ").
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]*\.eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*")
# Token-bearing URL parameters and headers, whatever the token looks like.
_TOKEN_PARAM = re.compile(r"(access_token=|[Bb]earer\s+)[^\s&\"',]+")


_known_secrets: set[str] = set()
"""Secrets of this process (its own bearer token) that look like nothing in particular."""


def remember_secret(secret: str) -> None:
    """Redact ``secret`` wherever it appears from now on, whatever it looks like."""
    if secret:
        _known_secrets.add(secret)


def forget_secret(secret: str) -> None:
    _known_secrets.discard(secret)


def redact(text: str, *secrets: str) -> str:
    """``text`` with JWTs, token parameters, remembered secrets and each of ``secrets`` replaced by
    ``<redacted>``."""
    for secret in (*secrets, *_known_secrets):
        if secret:
            text = text.replace(secret, REDACTED)
    text = _JWT.sub(REDACTED, text)
    return _TOKEN_PARAM.sub(lambda m: m.group(1) + REDACTED, text)


class RedactingFilter(logging.Filter):
    """A handler filter that redacts every record's message (arguments included)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True
