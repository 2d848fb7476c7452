"""BRIDGE_LIVEKIT_URL_ALLOW: which room servers a JoinRoom's own livekit_url may name."""

from __future__ import annotations

import pytest

from bridge.room_url_policy import RoomUrlPolicy

SPEC = "lk.example.com, media.example.org:7880, *.rooms.example.net, wss://edge.example.io/lk/, [::1]:7880"


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("wss://lk.example.com", True),
        ("https://LK.Example.com:8443/", True),  # a bare host: any port, any of the four schemes
        ("wss://lk.example.com.evil.test/", False),
        ("wss://evil.test/?lk.example.com", False),
        ("wss://lk.example.com@evil.test/", False),  # userinfo is not the host
        ("ws://media.example.org:7880", True),
        ("ws://media.example.org", False),  # the entry names a port
        ("wss://a.rooms.example.net/", True),
        ("wss://rooms.example.net/", False),  # *.domain means subdomains only
        ("wss://edge.example.io/lk/rtc", True),
        ("wss://edge.example.io/other", False),
        ("wss://edge.example.io.evil.test/lk/", False),
        ("ws://[::1]:7880", True),
        ("ws://127.0.0.1:7880", False),
        ("ws://bridge-default.test:7880", True),  # LIVEKIT_URL is always allowed
        ("wss://lk.example.com:notaport/", False),
    ],
)
def test_a_list_allows_only_what_it_names(url: str, allowed: bool) -> None:
    policy = RoomUrlPolicy.parse(SPEC, always=("ws://bridge-default.test:7880",))
    assert policy.allows(url) is allowed


def test_an_empty_list_allows_any_url_as_the_older_bridge_did() -> None:
    policy = RoomUrlPolicy.parse("")
    assert policy.allows_any and policy.allows("wss://anything.test/") and policy.allows("ws://10.0.0.1:7880")
