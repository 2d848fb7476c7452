from __future__ import annotations

import json
import logging

from bridge.devserver import dev_token
from bridge.logs import configure_logging


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
