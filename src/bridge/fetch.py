"""Fetching audio URLs: httpx with timeouts, bounded redirects, and a host policy checked per connection.

The policy is enforced where it cannot be bypassed: in the network backend, at connect time, on the
address actually connected to. A hostname that resolves to a private address, a redirect to
``http://169.254.169.254/``, or DNS rebinding between a check and the connect all meet the same
check. Proxies from the environment are ignored (a proxy would be the only address we check).

Default policy: only globally routable addresses (``addresses.is_public``, which also sees through the
IPv6 forms of IPv4). Loopback, private (RFC 1918, ULA), link-local (including cloud metadata
endpoints), CGNAT, multicast and reserved ranges are refused unless listed in
``BRIDGE_FETCH_ALLOW_HOSTS`` (hostnames, IPs or CIDRs).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import httpcore
import httpx
import trio_asyncio  # noqa: F401  (patches asyncio.get_running_loop; see _bind_anyio_to_trio_asyncio)

from .addresses import IPAddress, IPNetwork, is_public

__all__ = ["FetchLimits", "HostNotAllowedError", "HostPolicy", "make_fetch_client"]



def _bind_anyio_to_trio_asyncio() -> None:
    """Make anyio (httpcore's asyncio backend) find trio-asyncio's loop.

    anyio binds ``asyncio.get_running_loop`` when it is first imported; trio-asyncio replaces that
    function when *it* is imported. If anyio came first (a pytest plugin, another library), anyio
    keeps the original, which sees no loop under trio-asyncio: every fetch would fail with
    "no running event loop". Rebind it to the (patched) public function.
    """
    import anyio._backends._asyncio as anyio_asyncio

    if getattr(anyio_asyncio, "get_running_loop", None) is not asyncio.get_running_loop:
        anyio_asyncio.get_running_loop = asyncio.get_running_loop  # type: ignore[attr-defined]


_bind_anyio_to_trio_asyncio()


class HostNotAllowedError(Exception):
    """The URL's host (or an address it resolves to) is refused by the fetch policy."""


@dataclass(frozen=True)
class HostPolicy:
    allowed_names: frozenset[str] = frozenset()
    allowed_networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def parse(cls, spec: str) -> HostPolicy:
        """From ``BRIDGE_FETCH_ALLOW_HOSTS``: comma-separated hostnames, IPs and CIDRs."""
        names: set[str] = set()
        networks: list[IPNetwork] = []
        for item in (part.strip() for part in spec.split(",")):
            if not item:
                continue
            try:
                networks.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                names.add(item.lower().rstrip("."))
        return cls(frozenset(names), tuple(networks))

    def allows_name(self, host: str) -> bool:
        return host.lower().rstrip(".") in self.allowed_names

    def allows_address(self, address: IPAddress) -> bool:
        mapped = getattr(address, "ipv4_mapped", None)  # a listed IPv4 also allows ::ffff:<it>
        candidates = [address] if mapped is None else [address, mapped]
        if any(candidate in network for candidate in candidates for network in self.allowed_networks):
            return True
        return is_public(address)


@dataclass(frozen=True)
class FetchLimits:
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 10.0
    max_redirects: int = 3
    max_bytes: int = 50 * 1024 * 1024


class _PolicyBackend(httpcore.AsyncNetworkBackend):
    """Resolves the host itself, checks every address, and connects to an allowed one only."""

    def __init__(self, inner: httpcore.AsyncNetworkBackend, policy: HostPolicy) -> None:
        self._inner = inner
        self._policy = policy

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        by_name = self._policy.allows_name(host)
        for address in await self._resolve(host, port, timeout):
            if by_name or self._policy.allows_address(address):
                return await self._inner.connect_tcp(
                    str(address), port, timeout, local_address, socket_options
                )
        raise HostNotAllowedError(f"host {host} is not allowed by the fetch policy")

    async def _resolve(self, host: str, port: int, timeout: float | None) -> list[IPAddress]:  # noqa: ASYNC109
        try:
            return [ipaddress.ip_address(host)]
        except ValueError:
            pass
        loop = asyncio.get_running_loop()
        try:
            infos = await asyncio.wait_for(loop.getaddrinfo(host, port, type=socket.SOCK_STREAM), timeout)
        except TimeoutError:
            raise httpcore.ConnectTimeout(f"resolving {host} timed out") from None
        except OSError as err:
            raise httpcore.ConnectError(f"cannot resolve {host}: {err}") from None
        return list(dict.fromkeys(ipaddress.ip_address(info[4][0]) for info in infos))

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise HostNotAllowedError("unix sockets are not allowed")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def make_fetch_client(policy: HostPolicy, limits: FetchLimits) -> httpx.AsyncClient:
    """An AsyncClient for audio URLs (create it on the asyncio side; ``aclose()`` it there too)."""
    transport = httpx.AsyncHTTPTransport(retries=0, trust_env=False)
    # httpx has no public hook for the network backend; its pool is an httpcore AsyncConnectionPool.
    pool = transport._pool
    if not isinstance(pool, httpcore.AsyncConnectionPool) or not hasattr(pool, "_network_backend"):
        raise RuntimeError("httpx/httpcore internals changed: cannot install the fetch host policy")
    pool._network_backend = _PolicyBackend(pool._network_backend, policy)
    return httpx.AsyncClient(
        transport=transport,
        trust_env=False,
        follow_redirects=True,
        max_redirects=limits.max_redirects,
        timeout=httpx.Timeout(limits.read_timeout_s, connect=limits.connect_timeout_s),
        headers={
            "user-agent": "livekit-bridge/0.1 (audio fetch)",
            "accept": "audio/mpeg, audio/wav, audio/*;q=0.9",
        },
    )
