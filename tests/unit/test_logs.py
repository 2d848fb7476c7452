from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from bridge.logs import configure_logging
from bridge.redact import forget_secret, remember_secret
from bridge.testing.devserver import dev_token


@pytest.fixture
def log_output(request: pytest.FixtureRequest) -> Iterator[io.StringIO]:
    """The bridge's own log set-up (format = the test's parameter), writing into a buffer."""
    configure_logging("DEBUG", request.param)
    output = io.StringIO()
    handler = logging.getLogger().handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(output)
    try:
        yield output
    finally:
        logging.getLogger().handlers.clear()
        logging.getLogger().setLevel(logging.WARNING)


def test_json_logs_carry_session_and_request_ids_and_no_token(capsys) -> None:  # type: ignore[no-untyped-def]
    configure_logging("INFO", "json")
    try:
        token = dev_token("who", "where")
        logging.getLogger("livekit").error("rejected %s", token, extra={"user_id": "u1", "request_id": "r1"})
        entry = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
        assert entry["user_id"] == "u1" and entry["request_id"] == "r1" and entry["level"] == "ERROR"
        assert token not in entry["message"] and "<redacted>" in entry["message"]
    finally:
        logging.getLogger().handlers.clear()


@pytest.mark.parametrize("log_output", ["text", "json"], indirect=True)
def test_secrets_are_redacted_from_tracebacks_and_extra_fields_at_every_level(
    log_output: io.StringIO,
) -> None:
    jwt = dev_token("who", "where")
    own_token = "process-own-bearer-secret-0123"
    remember_secret(own_token)
    try:
        try:
            raise RuntimeError(f"connect failed: 401 invalid token: {jwt}")
        except RuntimeError:
            logging.getLogger("bridge.session").exception(
                "session failed", extra={"user_id": "u1", "reason": f"kicked, Bearer {own_token}"}
            )
        logging.getLogger("livekit").debug("url ws://h/rtc?access_token=%s&auto=1", jwt)
        logging.getLogger("bridge.app").info("token %s in a plain message", own_token)
        out = log_output.getvalue()
    finally:
        forget_secret(own_token)
    assert "RuntimeError" in out and "session failed" in out and "in a plain message" in out
    assert jwt not in out and own_token not in out
    assert out.count("<redacted>") >= 4


@pytest.mark.parametrize("log_output", ["text"], indirect=True)
def test_a_newline_in_a_user_supplied_field_cannot_forge_a_text_log_line(log_output: io.StringIO) -> None:
    forged_user = "u1\n2026-01-01 00:00:00,000 INFO bridge.app: admin logged in"
    logging.getLogger("bridge.registry").info(
        "join failed: %s", "bad\r\nthing", extra={"user_id": forged_user, "reason": "a\nb"}
    )
    try:
        raise ValueError("detail\nINFO forged from an exception message")
    except ValueError:
        logging.getLogger("bridge.session").exception("failed")
    lines = log_output.getvalue().splitlines()
    records = [line for line in lines if not line.startswith("    | ")]
    assert len(records) == 2, lines
    assert "user_id=u1\\n2026-01-01" in records[0] and "bad\\r\\nthing" in records[0]
    assert all(line.startswith("    | ") for line in lines if "forged" in line or "admin" in line[:40])


def test_hpack_never_logs_decoded_headers_whatever_the_level() -> None:
    # hpack logs each decoded header (authorization included) at DEBUG.
    configure_logging("DEBUG", "text")
    try:
        assert not logging.getLogger("hpack").isEnabledFor(logging.DEBUG)
        assert logging.getLogger("bridge").isEnabledFor(logging.DEBUG)
    finally:
        logging.getLogger().handlers.clear()
        logging.getLogger().setLevel(logging.WARNING)
