"""What one fetch, one session and the process may hold: wait budget, slots, lookup threads, connections."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import trio
from trio_asyncio import aio_as_trio

from bridge.fetch import Fetcher, FetchLimits, HostPolicy
from bridge.fetch_budget import ServerWaitBudget
from bridge.fetch_errors import FetchBusyError, FetchTimeoutError, UnsupportedEncodingError
from bridge.fetch_slots import FetchSlots
from bridge.resolver import ThreadedResolver
from bridge.testing.synth import encode_wav, tone
from support.hostile_server import HostileServer

LOOPBACK = HostPolicy.parse("127.0.0.1")


@pytest.fixture(scope="module")
def hostile() -> Iterator[HostileServer]:
    server = HostileServer()
    yield server
    server.close()


# --- the total wait budget -----------------------------------------------------------------------


async def test_the_wait_budget_cuts_a_wait_once_its_slack_is_used_up(aio_loop: object) -> None:
    async def wait_forever() -> float:
        budget = ServerWaitBudget(0.2)
        started = time.monotonic()
        with pytest.raises(FetchTimeoutError, match="BRIDGE_FETCH_TOTAL_TIMEOUT_S"):
            async with budget.waiting():
                await asyncio.sleep(5)
        return time.monotonic() - started

    took = await aio_as_trio(wait_forever)()
    assert 0.2 <= took < 0.4, took


async def test_audio_delivered_extends_the_budget_and_time_outside_waits_is_free(aio_loop: object) -> None:
    async def run() -> None:
        delivered = [0.0]
        budget = ServerWaitBudget(0.1, lambda: delivered[0])
        async with budget.waiting():
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)  # playout: not the server's time
        delivered[0] = 0.3
        async with budget.waiting():
            await asyncio.sleep(0.25)
        assert 0.29 <= budget.waited_s < 0.4
        with pytest.raises(FetchTimeoutError):
            async with budget.waiting():
                await asyncio.sleep(1)

    await aio_as_trio(run)()


# --- fetch slots ---------------------------------------------------------------------------------


def test_fetch_slots_give_each_session_its_share_and_the_process_its_cap() -> None:
    slots = FetchSlots(max_concurrent=3, max_per_requester=2)
    with slots.hold("a"), slots.hold("a"):
        with pytest.raises(FetchBusyError, match="BRIDGE_MAX_PLAYBACKS_PER_SESSION"), slots.hold("a"):
            pass
        with slots.hold("b"):
            with pytest.raises(FetchBusyError, match="BRIDGE_FETCH_MAX_CONCURRENT"), slots.hold("c"):
                pass
            assert slots.active == 3
    assert slots.active == 0 and slots.held_by("a") == 0
    with slots.hold("c"):  # given back
        pass


# --- name lookups --------------------------------------------------------------------------------


def hanging_getaddrinfo(release: threading.Event) -> Any:
    def getaddrinfo(host: str, port: int) -> list[tuple[Any, ...]]:
        if host.endswith(".hang.test"):
            release.wait(20)
            raise socket.gaierror(socket.EAI_AGAIN, "no answer")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]

    return getaddrinfo


async def test_hung_lookups_take_only_the_resolver_threads_and_each_session_only_its_share(
    aio_loop: object,
) -> None:
    release = threading.Event()
    resolver = ThreadedResolver(threads=4, per_requester=2, getaddrinfo=hanging_getaddrinfo(release))
    outcomes: list[str] = []

    async def lookup(host: str, requester: str) -> None:
        try:
            async with asyncio.timeout(0.3):
                await resolver.resolve(host, 80, requester=requester)
            outcomes.append("ok")
        except TimeoutError:
            outcomes.append("timeout")
        except FetchBusyError:
            outcomes.append("busy")

    try:
        started = time.monotonic()
        async with trio.open_nursery() as nursery:  # one session, three names that never answer
            for index in range(3):
                nursery.start_soon(aio_as_trio(lookup), f"g{index}.hang.test", "greedy")
        assert sorted(outcomes) == ["busy", "timeout", "timeout"], outcomes
        assert resolver.threads_busy == 2  # abandoned and still hung: the session's share, no more
        outcomes.clear()
        async with trio.open_nursery() as nursery:  # 48 more from 24 other sessions
            for index in range(48):
                nursery.start_soon(aio_as_trio(lookup), f"n{index}.hang.test", f"user-{index % 24}")
        took = time.monotonic() - started
        print(
            f"51 hung lookups: {outcomes.count('timeout')} timed out, "
            f"{outcomes.count('busy')} busy, {took:.2f} s"
        )
        assert took < 1.0 and set(outcomes) == {"timeout"}, outcomes
        assert resolver.threads_busy == 4  # only the resolver's 4 threads hang
        assert trio.to_thread.current_default_thread_limiter().borrowed_tokens == 0
        with trio.fail_after(1):
            await trio.to_thread.run_sync(lambda: None)  # the rest of the bridge still gets threads
        outcomes.clear()
        await aio_as_trio(lookup)("again.hang.test", "greedy")
        assert outcomes == ["busy"]  # at once, while its earlier lookups still hang
    finally:
        release.set()
    with trio.fail_after(5):
        while resolver.threads_busy:
            await trio.sleep(0.01)
    await aio_as_trio(lookup)("fine.ok.test", "user-99")  # threads given back when the lookups end
    assert outcomes[-1] == "ok"


async def test_a_resolver_that_never_answers_fails_the_fetch_with_timeout(aio_loop: object) -> None:
    class NeverAnswers:
        async def resolve(self, host: str, port: int, *, requester: object) -> list[Any]:
            await asyncio.get_running_loop().create_future()
            raise AssertionError("unreachable")

    async def fetch() -> float:
        fetcher = Fetcher(LOOPBACK, FetchLimits(connect_timeout_s=0.3), resolver=NeverAnswers())
        started = time.monotonic()
        with pytest.raises(FetchTimeoutError, match=r"resolving audio\.example"):
            async with fetcher.open("http://audio.example/a.wav", requester="u"):
                pass
        return time.monotonic() - started

    took = await aio_as_trio(fetch)()
    assert took < 0.6, took


# --- connections ---------------------------------------------------------------------------------


async def test_more_than_a_hundred_fetches_hold_their_connections_at_once(
    aio_loop: object, hostile: HostileServer
) -> None:
    # A 2 s body at a slow rate: every fetch holds its connection meanwhile, as real-time playback does.
    url = hostile.route("/held.wav", bytes(8000), rate_bytes_per_s=4000)
    fetcher = Fetcher(LOOPBACK, FetchLimits(max_concurrent=150, max_per_session=1, read_timeout_s=5))
    first_pieces: list[float] = []

    async def hold(index: int) -> None:
        async with fetcher.open(url, requester=f"user-{index}") as body:
            async for _ in body:
                first_pieces.append(time.monotonic())
                await asyncio.sleep(1.0)  # the track is full: hold the connection
                break

    started = time.monotonic()
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            for index in range(120):
                nursery.start_soon(aio_as_trio(hold), index)
    print(f"120 concurrent fetches: all had data within {max(first_pieces) - started:.2f} s")
    assert len(first_pieces) == 120 and max(first_pieces) - started < 5.0
    assert fetcher.slots.active == 0


async def test_only_identity_is_asked_for_and_any_content_encoding_is_refused(
    aio_loop: object, hostile: HostileServer
) -> None:
    wav = encode_wav(tone(440, 0.1, 8000), 8000)
    plain = hostile.route("/plain.wav", wav)
    gzipped = hostile.route("/gz.wav", wav, ("Content-Encoding", "gzip"))
    fetcher = Fetcher(LOOPBACK, FetchLimits())

    async def read(url: str) -> bytes:
        async with fetcher.open(url, requester="u") as body:
            return b"".join([piece async for piece in body])

    assert await aio_as_trio(read)(plain) == wav
    assert hostile.requests_for("/plain.wav")[-1].accept_encoding == "identity"
    with pytest.raises(UnsupportedEncodingError, match="'gzip'"):
        await aio_as_trio(read)(gzipped)
