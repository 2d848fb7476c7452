from __future__ import annotations

import logging

from bridge.redact import REDACTED, RedactingFilter, redact
from bridge.testing.devserver import dev_token

TOKEN = dev_token("someone", "some-room")


def test_jwts_token_parameters_and_given_secrets_are_redacted() -> None:
    text = f"401 Unauthorized - invalid token: {TOKEN}, error: signature is invalid"
    assert TOKEN not in redact(text) and REDACTED in redact(text)
    assert redact("ws://h/rtc?access_token=abc.def&x=1") == f"ws://h/rtc?access_token={REDACTED}&x=1"
    assert redact("Authorization: Bearer s3cr3t") == f"Authorization: Bearer {REDACTED}"
    assert redact("the token was not-a-jwt", "not-a-jwt") == f"the token was {REDACTED}"
    assert redact("nothing secret here") == "nothing secret here"


def test_the_log_filter_redacts_records_from_any_logger_arguments_included() -> None:
    record = logging.LogRecord("livekit", logging.ERROR, __file__, 1, "invalid token: %s", (TOKEN,), None)
    assert RedactingFilter().filter(record)
    assert TOKEN not in record.getMessage() and REDACTED in record.getMessage()
