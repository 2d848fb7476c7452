"""The fetch host policy: only public addresses unless listed; enforced before any connection."""

from __future__ import annotations

import ipaddress

import pytest
from trio_asyncio import aio_as_trio

from bridge.addresses import embedded_ipv4
from bridge.fetch import Fetcher, FetchLimits, HostNotAllowedError, HostPolicy


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


# Every IPv6 form that can reach an IPv4 host (see bridge/addresses.py for the decisions).
ADDRESS_TABLE = [
    # plain IPv4
    ("8.8.8.8", True),
    ("93.184.216.34", True),
    ("10.0.0.1", False),
    ("127.0.0.1", False),
    ("169.254.169.254", False),
    ("100.64.0.1", False),
    ("192.0.2.1", False),  # documentation
    ("198.18.0.1", False),  # benchmarking
    ("240.0.0.1", False),  # reserved
    ("255.255.255.255", False),
    ("0.0.0.0", False),
    ("224.0.0.1", False),
    # plain IPv6
    ("2606:4700::1111", True),
    ("::1", False),
    ("::", False),
    ("fd00::1", False),
    ("fe80::1", False),
    ("ff02::1", False),
    ("2001:db8::1", False),  # documentation
    # IPv4-mapped: the IPv4 decides
    ("::ffff:10.0.0.1", False),
    ("::ffff:127.0.0.1", False),
    ("::ffff:169.254.169.254", False),
    ("::ffff:8.8.8.8", True),
    # IPv4-compatible (deprecated): refused whatever it embeds
    ("::10.0.0.1", False),
    ("::127.0.0.1", False),
    ("::8.8.8.8", False),
    # NAT64 well-known prefix: the IPv4 decides (DNS64 networks reach public IPv4 this way)
    ("64:ff9b::10.0.0.1", False),
    ("64:ff9b::169.254.169.254", False),
    ("64:ff9b::127.0.0.1", False),
    ("64:ff9b::8.8.8.8", True),
    # NAT64 local-use prefix: refused (the IPv4's position depends on the operator)
    ("64:ff9b:1::10.0.0.1", False),
    ("64:ff9b:1::8.8.8.8", False),
    # 6to4: the IPv4 in bits 16-47 decides
    ("2002:0a00:0001::1", False),  # 10.0.0.1
    ("2002:a9fe:a9fe::1", False),  # 169.254.169.254
    ("2002:7f00:0001::", False),  # 127.0.0.1
    ("2002:0808:0808::1", True),  # 8.8.8.8
    # Teredo: refused; client 10.0.0.1 (stored inverted: f5ff:fffe), server 8.8.8.8
    ("2001:0:808:808:0:0:f5ff:fffe", False),
    ("2001:0:808:808:0:0:f7f7:f7f7", False),  # client 8.8.8.8: public, still refused
    # scoped
    ("fe80::1%1", False),
]


@pytest.mark.parametrize(("address", "allowed"), ADDRESS_TABLE)
def test_the_address_policy_sees_through_every_ipv6_form_of_ipv4(address: str, allowed: bool) -> None:
    assert HostPolicy().allows_address(ipaddress.ip_address(address)) is allowed


def test_teredo_and_6to4_embedded_addresses_are_decoded() -> None:
    teredo = ipaddress.IPv6Address("2001:0:808:808:0:0:f5ff:fffe")
    assert embedded_ipv4(teredo) == [ipaddress.IPv4Address("8.8.8.8"), ipaddress.IPv4Address("10.0.0.1")]
    assert embedded_ipv4(ipaddress.IPv6Address("2002:0a00:0001::1")) == [ipaddress.IPv4Address("10.0.0.1")]
    assert embedded_ipv4(ipaddress.IPv6Address("64:ff9b::a00:1")) == [ipaddress.IPv4Address("10.0.0.1")]


def test_a_listed_ipv4_also_allows_its_mapped_form_but_no_other_disguise() -> None:
    policy = HostPolicy.parse("10.8.0.0/16")
    assert policy.allows_address(ipaddress.ip_address("::ffff:10.8.0.1"))
    assert not policy.allows_address(ipaddress.ip_address("64:ff9b::10.8.0.1"))
    assert not policy.allows_address(ipaddress.ip_address("::ffff:10.9.0.1"))


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
    fetcher = Fetcher(HostPolicy(), FetchLimits(connect_timeout_s=1, read_timeout_s=1))
    async with fetcher.open(url, requester="user") as body:
        async for _ in body:
            pass


@pytest.mark.parametrize(
    "url", ["http://169.254.169.254/latest/meta-data/", "http://127.0.0.1:9/x.mp3", "http://[::1]:9/"]
)
async def test_a_refused_host_fails_before_any_connection_is_made(aio_loop: object, url: str) -> None:
    # Port 9 (discard) on loopback: if the policy let the request through, we would see a
    # connection error instead of HostNotAllowedError. Nothing leaves this machine either way.
    with pytest.raises(HostNotAllowedError):
        await aio_as_trio(_fetch)(url)
