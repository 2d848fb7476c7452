"""Fetching audio URLs: one fresh connection per fetch, a host policy checked per connection, and
every resource a server could make us hold bounded.

The policy is enforced where it cannot be bypassed: in the network backend, at connect time, on the
address actually connected to. A hostname that resolves to a private address, a redirect to
``http://169.254.169.254/``, or DNS rebinding between a check and the connect all meet the same
check. Proxies from the environment are ignored (a proxy would be the only address we check).
Default policy: only public addresses (``addresses.is_public``, which also decodes the IPv6 forms of
IPv4), unless listed in ``BRIDGE_FETCH_ALLOW_HOSTS`` (hostnames, IPs or CIDRs).

What one fetch may cost, whatever the server sends:

- **Memory**: the bridge asks for ``Accept-Encoding: identity``, reads the raw body and refuses any
  Content-Encoding (``UnsupportedEncodingError``) instead of decoding it. MP3 and WAV gain nothing
  from gzip, no compliant server compresses after being asked for identity, and every decoder we
  accept is one more way for a few KB to become GBs (``gzip, gzip`` did). Raw bytes are counted
  against ``max_bytes`` as they arrive; redirect bodies are never read.
- **Time**: connect and read timeouts, plus a total wait budget (``fetch_budget.ServerWaitBudget``)
  that a server dripping bytes exhausts but a long file played in real time does not.
- **Connections**: one per fetch (a fresh client, no pool, no keep-alive, no cookie jar shared with
  anyone), at most ``max_concurrent`` in the process and ``max_per_session`` per session
  (``fetch_slots.FetchSlots``); nothing a user's fetch sets or opens is seen by another user's.
- **Name lookups**: on dedicated threads with a share per session and the connect timeout
  (``resolver.ThreadedResolver``), so a DNS server that never answers cannot take the threads
  others need.
"""

from __future__ import annotations

import asyncio
import ipaddress
import ssl
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any

import httpcore
import httpx
import trio_asyncio  # noqa: F401  (patches asyncio.get_running_loop; see _bind_anyio_to_trio_asyncio)

from .addresses import IPAddress, IPNetwork, is_public
from .fetch_budget import ServerWaitBudget
from .fetch_errors import (
    BadStatusError,
    FetchFailedError,
    FetchTimeoutError,
    HostNotAllowedError,
    ResponseTooLargeError,
    UnsupportedEncodingError,
)
from .fetch_slots import FetchSlots
from .resolver import Resolver, ThreadedResolver
from .version import USER_AGENT

__all__ = ["FetchLimits", "Fetcher", "HostNotAllowedError", "HostPolicy"]

_RESOLVER_THREADS_PER_SESSION = 2
_HEADERS = {
    "user-agent": USER_AGENT,
    "accept": "audio/mpeg, audio/wav, audio/*;q=0.9",
    "accept-encoding": "identity",
}


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
    """Connect timeout, and the time a name lookup may take."""
    read_timeout_s: float = 10.0
    max_redirects: int = 3
    max_bytes: int = 50 * 1024 * 1024
    total_timeout_s: float = 30.0
    """Slack of the server wait budget (see ``fetch_budget``)."""
    max_concurrent: int = 256
    max_per_session: int = 4
    resolver_threads: int = 32


class _PolicyBackend(httpcore.AsyncNetworkBackend):
    """Resolves the host itself, checks every address, and connects to an allowed one only."""

    def __init__(
        self,
        inner: httpcore.AsyncNetworkBackend,
        policy: HostPolicy,
        resolver: Resolver,
        requester: object,
        resolve_timeout_s: float,
    ) -> None:
        self._inner = inner
        self._policy = policy
        self._resolver = resolver
        self._requester = requester
        self._resolve_timeout_s = resolve_timeout_s

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        by_name = self._policy.allows_name(host)
        for address in await self._resolve(host, port):
            if by_name or self._policy.allows_address(address):
                return await self._inner.connect_tcp(
                    str(address), port, timeout, local_address, socket_options
                )
        raise HostNotAllowedError(f"host {host} is not allowed by the fetch policy")

    async def _resolve(self, host: str, port: int) -> list[IPAddress]:
        try:
            return [ipaddress.ip_address(host)]
        except ValueError:
            pass
        try:
            async with asyncio.timeout(self._resolve_timeout_s):
                return await self._resolver.resolve(host, port, requester=self._requester)
        except TimeoutError:
            raise FetchTimeoutError(f"resolving {host} took over {self._resolve_timeout_s:g} s") from None

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise HostNotAllowedError("unix sockets are not allowed")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


@contextmanager
def _as_fetch_errors() -> Iterator[None]:
    """httpx's exceptions as ours (FetchError subclasses pass through)."""
    try:
        yield
    except httpx.TimeoutException as err:
        raise FetchTimeoutError(f"{type(err).__name__} fetching the audio") from None
    except (httpx.HTTPError, httpx.InvalidURL) as err:  # connect errors, a body cut short, protocol errors
        raise FetchFailedError(f"{type(err).__name__}: {err}") from None


class _RawBody:
    """The response body as it arrives, undecoded, counted against the byte limit and the budget."""

    def __init__(self, response: httpx.Response, budget: ServerWaitBudget, max_bytes: int) -> None:
        self._pieces = response.aiter_raw()
        self._budget = budget
        self._max_bytes = max_bytes
        self.received = 0

    def __aiter__(self) -> _RawBody:
        return self

    async def __anext__(self) -> bytes:
        with _as_fetch_errors():
            async with self._budget.waiting():
                piece = await anext(self._pieces)
        self.received += len(piece)
        if self.received > self._max_bytes:
            raise ResponseTooLargeError(f"more than {self._max_bytes} bytes")
        return piece


def _check_response(response: httpx.Response, max_bytes: int) -> None:
    if response.status_code >= 400:
        raise BadStatusError(f"{response.status_code} {response.reason_phrase}")
    encodings = [e.strip().lower() for e in response.headers.get_list("content-encoding", split_commas=True)]
    if any(encoding not in ("", "identity") for encoding in encodings):
        raise UnsupportedEncodingError(
            f"Content-Encoding {', '.join(encodings)!r} is not supported (the bridge asks for identity)"
        )
    try:
        declared = int(response.headers.get("content-length") or 0)
    except ValueError:
        declared = 0
    if declared > max_bytes:
        raise ResponseTooLargeError(f"{declared} bytes, limit {max_bytes}")


class Fetcher:
    """Opens audio URLs (asyncio side), each on its own connection within the process's limits."""

    def __init__(self, policy: HostPolicy, limits: FetchLimits, resolver: Resolver | None = None) -> None:
        self._policy = policy
        self._limits = limits
        self._slots = FetchSlots(limits.max_concurrent, limits.max_per_session)
        self._resolver = resolver or ThreadedResolver(
            limits.resolver_threads, min(_RESOLVER_THREADS_PER_SESSION, limits.resolver_threads)
        )
        # Loading the CA bundle takes milliseconds: once per process, not per fetch. Client-side TLS
        # sessions are not resumed across connections unless asked for, so nothing is shared by it.
        self._ssl_context: ssl.SSLContext = httpx.create_ssl_context(trust_env=False)

    @property
    def slots(self) -> FetchSlots:
        return self._slots

    @asynccontextmanager
    async def open(
        self, url: str, *, requester: object, audio_delivered_s: Callable[[], float] = lambda: 0.0
    ) -> AsyncIterator[AsyncIterator[bytes]]:
        """The body of ``url`` as raw pieces, for a fetch on behalf of ``requester`` (its session).

        ``audio_delivered_s`` says how much audio the body has yielded so far (for the wait budget).
        Raises FetchError subclasses, from here and from iterating the body.
        """
        with self._slots.hold(requester):
            budget = ServerWaitBudget(self._limits.total_timeout_s, audio_delivered_s)
            async with self._client(requester) as client:
                response = await self._get(client, url, budget)
                try:
                    _check_response(response, self._limits.max_bytes)
                    yield _RawBody(response, budget, self._limits.max_bytes)
                finally:
                    await response.aclose()

    async def aclose(self) -> None:
        """Nothing to close: fetches share no connections."""

    async def _get(self, client: httpx.AsyncClient, url: str, budget: ServerWaitBudget) -> httpx.Response:
        """GET ``url``, following redirects ourselves: httpx would read (and decode) redirect bodies."""
        with _as_fetch_errors():
            for _ in range(self._limits.max_redirects + 1):
                async with budget.waiting():
                    response = await client.send(client.build_request("GET", url), stream=True)
                if not response.has_redirect_location:
                    return response
                await response.aclose()  # its body is never read
                target = response.url.join(response.headers["location"])
                if target.scheme not in ("http", "https"):
                    raise FetchFailedError(f"redirect to a {target.scheme or 'relative'} URL")
                url = str(target.copy_with(fragment=None))
        raise FetchFailedError(f"more than {self._limits.max_redirects} redirects")

    def _client(self, requester: object) -> httpx.AsyncClient:
        """A client for one fetch: one connection at a time, never kept alive, its own cookie jar."""
        limits = self._limits
        transport = httpx.AsyncHTTPTransport(
            verify=self._ssl_context,
            retries=0,
            trust_env=False,
            limits=httpx.Limits(max_connections=1, max_keepalive_connections=0),
        )
        # httpx has no public hook for the network backend; its pool is an httpcore AsyncConnectionPool.
        pool = transport._pool
        if not isinstance(pool, httpcore.AsyncConnectionPool) or not hasattr(pool, "_network_backend"):
            raise RuntimeError("httpx/httpcore internals changed: cannot install the fetch host policy")
        pool._network_backend = _PolicyBackend(
            pool._network_backend, self._policy, self._resolver, requester, limits.connect_timeout_s
        )
        return httpx.AsyncClient(
            transport=transport,
            trust_env=False,
            follow_redirects=False,
            timeout=httpx.Timeout(limits.read_timeout_s, connect=limits.connect_timeout_s),
            headers=_HEADERS,
        )
