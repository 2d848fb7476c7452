"""The fetch host policy: only public addresses unless listed; enforced before any connection."""

from __future__ import annotations

import ipaddress

import pytest
from trio_asyncio import aio_as_trio

from bridge.fetch import FetchLimits, HostNotAllowedError, HostPolicy, make_fetch_client


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "::1",
        "fd00::1",
        "fe80::1",
        "::ffff:10.0.0.1",
        "0.0.0.0",
        "224.0.0.1",
    ],
)
def test_non_public_addresses_are_refused_by_default(address: str) -> None:
    assert not HostPolicy().allows_address(ipaddress.ip_address(address))


def test_public_addresses_are_allowed() -> None:
    assert HostPolicy().allows_address(ipaddress.ip_address("93.184.216.34"))
    assert HostPolicy().allows_address(ipaddress.ip_address("2606:4700::1111"))


def test_listed_hosts_and_networks_are_allowed() -> None:
    policy = HostPolicy.parse(" 127.0.0.1 , tts.internal., 10.8.0.0/16,")
    assert policy.allows_address(ipaddress.ip_address("127.0.0.1"))
    assert policy.allows_address(ipaddress.ip_address("10.8.3.4"))
    assert not policy.allows_address(ipaddress.ip_address("10.9.0.1"))
    assert policy.allows_name("TTS.internal") and not policy.allows_name("other.internal")


async def _fetch(url: str) -> None:
    client = make_fetch_client(HostPolicy(), FetchLimits(connect_timeout_s=1, read_timeout_s=1))
    try:
        await client.get(url)
    finally:
        await client.aclose()


@pytest.mark.parametrize(
    "url", ["http://169.254.169.254/latest/meta-data/", "http://127.0.0.1:9/x.mp3", "http://[::1]:9/"]
)
async def test_a_refused_host_fails_before_any_connection_is_made(aio_loop: object, url: str) -> None:
    # Port 9 (discard) on loopback: if the policy let the request through, we would see a
    # connection error instead of HostNotAllowedError. Nothing leaves this machine either way.
    with pytest.raises(HostNotAllowedError):
        await aio_as_trio(_fetch)(url)
