"""JSON log lines carry RFC 3339 timestamps in UTC with milliseconds, whatever the local zone."""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Iterator
from datetime import datetime

import pytest

from bridge.logs import configure_logging


@pytest.fixture
def far_from_utc() -> Iterator[None]:
    saved = os.environ.get("TZ")
    os.environ["TZ"] = "Asia/Kolkata"  # UTC+05:30: a local time would show
    time.tzset()
    try:
        yield
    finally:
        if saved is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = saved
        time.tzset()


def test_json_log_time_is_rfc3339_utc_with_milliseconds(far_from_utc: None, capsys) -> None:  # type: ignore[no-untyped-def]
    configure_logging("INFO", "json")
    try:
        before = time.time()
        logging.getLogger("bridge").info("hello")
        after = time.time()
    finally:
        logging.getLogger().handlers.clear()
    ts = json.loads(capsys.readouterr().err.strip().splitlines()[-1])["ts"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", ts), ts
    logged = datetime.fromisoformat(ts).timestamp()  # "Z" parses as UTC on 3.11+
    assert before - 0.001 <= logged <= after + 0.001
