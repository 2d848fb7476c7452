"""Name resolution for audio fetches on a few dedicated threads, shared fairly between sessions.

``getaddrinfo`` blocks, so it runs on a thread. Under trio-asyncio ``loop.getaddrinfo`` would take one
of Trio's default worker threads (40 for the whole process) and, without ``abandon_on_cancel``, keep
its caller waiting until the lookup returns however long a DNS server takes to not answer: a few
hung names could stall every other fetch and every other ``to_thread`` user of the bridge. Here a
lookup takes one of ``threads`` dedicated threads and one of its session's ``per_requester`` share;
the caller's timeout abandons a hung lookup at once (its thread keeps its place until the system
resolver gives up), and a session whose share is still busy is refused at once (``FetchBusyError``).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from typing import Any, Protocol, cast

import trio
from trio_asyncio import trio_as_aio

from .addresses import IPAddress
from .fetch_errors import FetchBusyError, FetchFailedError

__all__ = ["GetAddrInfo", "Resolver", "ThreadedResolver"]

GetAddrInfo = Callable[[str, int], list[tuple[Any, ...]]]
"""Blocking lookup with ``socket.getaddrinfo``'s result shape (injectable for tests)."""


class Resolver(Protocol):
    async def resolve(self, host: str, port: int, *, requester: object) -> list[IPAddress]:
        """The addresses of ``host`` (asyncio side); raises FetchError subclasses."""
        ...


def _system_getaddrinfo(host: str, port: int) -> list[tuple[Any, ...]]:
    return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)


class _ThreadShare:
    """A ``CapacityLimiter``-like pair for ``trio.to_thread``: one of the requester's threads, then
    one of the process's. Trio releases both only when the thread has really finished."""

    def __init__(self, process: trio.CapacityLimiter, own: trio.CapacityLimiter, on_idle: Callable[[], None]):
        self._process = process
        self._own = own
        self._on_idle = on_idle

    async def acquire_on_behalf_of(self, borrower: object) -> None:
        self._own.acquire_on_behalf_of_nowait(borrower)  # trio.WouldBlock: the session's share is busy
        try:
            await self._process.acquire_on_behalf_of(borrower)
        except BaseException:
            self._own.release_on_behalf_of(borrower)
            raise

    def release_on_behalf_of(self, borrower: object) -> None:
        self._process.release_on_behalf_of(borrower)
        self._own.release_on_behalf_of(borrower)
        if not self._own.borrowed_tokens:
            self._on_idle()


class ThreadedResolver:
    """``getaddrinfo`` on at most ``threads`` threads, at most ``per_requester`` of them per session.

    The caller bounds the time (``_PolicyBackend`` cancels after the connect timeout); cancelling
    abandons the thread instead of waiting for it.
    """

    def __init__(self, threads: int, per_requester: int, getaddrinfo: GetAddrInfo | None = None) -> None:
        self._process = trio.CapacityLimiter(threads)
        self._per_requester = per_requester
        self._shares: dict[object, trio.CapacityLimiter] = {}
        self._getaddrinfo = getaddrinfo or _system_getaddrinfo

    @property
    def threads_busy(self) -> int:
        """Lookup threads running now, abandoned ones included."""
        return int(self._process.borrowed_tokens)

    async def resolve(self, host: str, port: int, *, requester: object) -> list[IPAddress]:
        infos = await trio_as_aio(self._lookup)(host, port, requester)
        return list(dict.fromkeys(ipaddress.ip_address(info[4][0]) for info in infos))

    async def _lookup(self, host: str, port: int, requester: object) -> list[tuple[Any, ...]]:
        own = self._shares.get(requester)
        if own is None:
            own = self._shares[requester] = trio.CapacityLimiter(self._per_requester)
        share = _ThreadShare(self._process, own, lambda: self._forget(requester, own))
        try:
            return await trio.to_thread.run_sync(
                self._getaddrinfo,
                host,
                port,
                abandon_on_cancel=True,
                limiter=cast(trio.CapacityLimiter, share),
            )
        except trio.WouldBlock:
            raise FetchBusyError(
                f"{self._per_requester} name lookups of this session are still running (resolving {host})"
            ) from None
        except OSError as err:
            raise FetchFailedError(f"cannot resolve {host}: {err}") from None
        finally:
            if not own.borrowed_tokens:
                self._forget(requester, own)

    def _forget(self, requester: object, own: trio.CapacityLimiter) -> None:
        if self._shares.get(requester) is own:
            del self._shares[requester]
