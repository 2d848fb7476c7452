"""PlayAudio against hostile audio servers, through the real bridge (gRPC, sessions, LiveKit).

Each test starts a loopback server that misbehaves on purpose (compression bombs, drips, cookies,
redirects, a DNS that never answers) and asserts the FAILED code and, where memory is the attack,
the growth of the process's peak RSS as a number. Nothing leaves 127.0.0.1: host names are resolved
by a fake ``getaddrinfo`` that answers from a table and never asks a DNS server.
"""

from __future__ import annotations

import dataclasses
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
from trio_asyncio import aio_as_trio

from bridge import BridgeConfig
from bridge._gen.mentra.livekit.bridge import PlayAudioRequest
from bridge.testing.synth import encode_wav, tone
from conftest import RunningBridge, running_bridge
from support.flows import join, new_room
from support.hostile_server import HostileServer, gzip_bomb, peak_rss_probe
from support.playback import EventType, PlaybackCall

pytestmark = pytest.mark.livekit

BOMB_EXPANDED = 1 << 30
"""1 GiB of zeros gzipped twice: 1.8 KB on the wire, the incident's file."""
MEMORY_BOUND = 64 << 20


@pytest.fixture(scope="module")
def hostile() -> Iterator[HostileServer]:
    server = HostileServer()
    yield server
    server.close()


def wav(seconds: float, rate: int = 16000) -> bytes:
    return encode_wav(tone(440, seconds, rate), rate)


def wav_rate_bytes_per_s(rate: int = 16000) -> int:
    return rate * 2


def settings(**overrides: object) -> dict[str, object]:
    """Bridge settings for these tests; ones the bridge does not know are left out, so this file
    also runs against a bridge from before they existed (to see the tests fail there)."""
    known = {f.name for f in dataclasses.fields(BridgeConfig)}
    base: dict[str, object] = {"fetch_allow_hosts": "127.0.0.1", "fetch_read_timeout_s": 2.0}
    base.update(overrides)
    return {name: value for name, value in base.items() if name in known}


@dataclasses.dataclass(eq=False)
class Users:
    bridge: RunningBridge
    nursery: trio.Nursery

    def play(self, user: str, url: str, request_id: str, track_id: int = 0) -> PlaybackCall:
        call = PlaybackCall(
            self.bridge.stub,
            PlayAudioRequest(user_id=user, request_id=request_id, audio_url=url, track_id=track_id),
        )
        self.nursery.start_soon(aio_as_trio(call.run))
        return call


@asynccontextmanager
async def bridge_with_users(livekit: Any, users: list[str], **overrides: object) -> AsyncIterator[Users]:
    async with running_bridge(livekit, **settings(**overrides)) as bridge:
        room = new_room()
        for user in users:
            assert (await join(bridge, user, room)).success
        async with trio.open_nursery() as nursery:
            yield Users(bridge, nursery)
            nursery.cancel_scope.cancel()


async def test_a_stacked_gzip_bomb_is_refused_without_decoding_it(
    aio_loop: object, livekit_server: Any, hostile: HostileServer
) -> None:
    bomb = gzip_bomb(BOMB_EXPANDED)
    url = hostile.route("/bomb.wav", bomb, ("Content-Type", "audio/wav"), ("Content-Encoding", "gzip, gzip"))
    with trio.fail_after(60):
        async with bridge_with_users(livekit_server, ["bomb-user"], fetch_max_bytes=600_000) as users:
            growth = peak_rss_probe()
            call = users.play("bomb-user", url, "bomb")
            await call.done.wait()
            grown = growth()
    print(
        f"{len(bomb)} B bomb ({BOMB_EXPANDED >> 20} MiB expanded): {call.terminal.error!r}, "
        f"peak RSS +{grown >> 20} MiB"
    )
    assert call.code == "unsupported_format" and "gzip, gzip" in call.terminal.error, call.terminal
    assert grown < MEMORY_BOUND, grown
    assert hostile.requests_for("/bomb.wav")  # it was fetched, and refused from its headers


async def test_a_redirect_whose_body_is_a_gzip_bomb_is_followed_without_reading_it(
    aio_loop: object, livekit_server: Any, hostile: HostileServer
) -> None:
    target = hostile.route("/after-bomb.wav", wav(0.3))
    url = hostile.redirect(
        "/bomb-redirect.wav", target, gzip_bomb(BOMB_EXPANDED), ("Content-Encoding", "gzip, gzip")
    )
    with trio.fail_after(60):
        async with bridge_with_users(livekit_server, ["redirect-user"]) as users:
            growth = peak_rss_probe()
            call = users.play("redirect-user", url, "bomb-redirect")
            await call.done.wait()
            grown = growth()
    print(f"redirect with a bomb body: {call.terminal.type.name}, peak RSS +{grown >> 20} MiB")
    assert call.terminal.type is EventType.COMPLETED, call.terminal
    assert grown < MEMORY_BOUND, grown


async def test_redirect_loops_and_non_http_redirects_fail_fetch_failed(
    aio_loop: object, livekit_server: Any, hostile: HostileServer
) -> None:
    loop_url = hostile.redirect("/loop-a", hostile.base_url + "/loop-b")
    hostile.redirect("/loop-b", hostile.base_url + "/loop-a")
    file_url = hostile.redirect("/to-file", "file:///etc/passwd")
    with trio.fail_after(30):
        async with bridge_with_users(livekit_server, ["loop-user"], fetch_max_redirects=3) as users:
            looping = users.play("loop-user", loop_url, "loop", track_id=0)
            to_file = users.play("loop-user", file_url, "to-file", track_id=1)
            await looping.done.wait()
            await to_file.done.wait()
    assert looping.code == "fetch_failed" and "redirects" in looping.terminal.error, looping.terminal
    assert len(hostile.requests_for("/loop-a")) + len(hostile.requests_for("/loop-b")) == 4
    assert to_file.code == "fetch_failed", to_file.terminal


@pytest.mark.parametrize("drip_head", [False, True], ids=["body", "headers"])
async def test_a_server_dripping_bytes_is_cut_off_by_the_total_timeout(
    aio_loop: object, livekit_server: Any, hostile: HostileServer, drip_head: bool
) -> None:
    # One byte every 0.5 s: each read comes well within the 2 s read timeout, forever.
    url = hostile.route(f"/drip-{drip_head}.wav", wav(2.0), drip_interval_s=0.5, drip_head=drip_head)
    with trio.fail_after(30):
        async with bridge_with_users(livekit_server, ["drip-user"], fetch_total_timeout_s=2.0) as users:
            sent = time.monotonic()
            call = users.play("drip-user", url, "drip")
            await call.done.wait()
            took = time.monotonic() - sent
    print(
        f"dripping server ({'headers' if drip_head else 'body'}): {call.terminal.error!r} after {took:.2f} s"
    )
    assert call.code == "timeout" and "BRIDGE_FETCH_TOTAL_TIMEOUT_S" in call.terminal.error, call.terminal
    assert 2.0 <= took < 4.0, took


async def test_a_long_file_served_in_real_time_is_not_cut_by_the_total_timeout(
    aio_loop: object, livekit_server: Any, hostile: HostileServer
) -> None:
    # Served at 1.25x real time: the fetch waits for the server most of the time, yet never more than
    # the audio it has received, so a total timeout far shorter than the file does not apply.
    url = hostile.route("/live.wav", wav(4.0), rate_bytes_per_s=wav_rate_bytes_per_s() * 5 // 4)
    with trio.fail_after(30):
        async with bridge_with_users(livekit_server, ["live-user"], fetch_total_timeout_s=1.0) as users:
            call = users.play("live-user", url, "live")
            await call.done.wait()
    assert call.terminal.type is EventType.COMPLETED, call.terminal
    assert abs(call.terminal.duration_ms - 4000) <= 20


async def test_cookies_and_connections_of_one_user_never_reach_another(
    aio_loop: object, livekit_server: Any, hostile: HostileServer
) -> None:
    url_a = hostile.route("/cookie-a.wav", wav(0.2), ("Set-Cookie", "token=secret-of-a; Path=/"))
    url_b = hostile.route("/cookie-b.wav", wav(0.2))
    with trio.fail_after(30):
        async with bridge_with_users(livekit_server, ["cookie-a", "cookie-b"]) as users:
            first = users.play("cookie-a", url_a, "a")
            await first.done.wait()
            second = users.play("cookie-b", url_b, "b")
            await second.done.wait()
            again = users.play("cookie-a", url_b, "a-again")  # not even the same user's next fetch
            await again.done.wait()
    assert [c.terminal.type for c in (first, second, again)] == [EventType.COMPLETED] * 3
    seen_a, seen_b, seen_again = (
        *hostile.requests_for("/cookie-a.wav"),
        *hostile.requests_for("/cookie-b.wav"),
    )
    assert seen_b.cookie is None and seen_again.cookie is None, (seen_b, seen_again)
    assert len({seen_a.client_port, seen_b.client_port, seen_again.client_port}) == 3  # no connection reused


async def test_one_session_cannot_take_every_fetch_of_the_process(
    aio_loop: object, livekit_server: Any, hostile: HostileServer
) -> None:
    long_url = hostile.route("/long-fair.wav", wav(3.0))
    short_url = hostile.route("/short-fair.wav", wav(0.3))
    caps = {"fetch_max_concurrent": 3, "max_playbacks_per_session": 2}
    with trio.fail_after(30):
        async with bridge_with_users(livekit_server, ["greedy", "fair", "late"], **caps) as users:
            greedy = [users.play("greedy", long_url, f"greedy-{t}", track_id=t) for t in range(2)]
            for call in greedy:
                await call.started.wait()
            greedy.append(users.play("greedy", long_url, "greedy-2", track_id=2))
            await greedy[2].done.wait()
            assert (
                greedy[2].code == "too_many_playbacks"
                and "BRIDGE_MAX_PLAYBACKS_PER_SESSION" in greedy[2].terminal.error
            )
            fair = users.play("fair", long_url, "fair")  # the third and last slot of the process
            await fair.started.wait()
            late = users.play("late", short_url, "late")
            await late.done.wait()
            assert late.code == "too_many_fetches" and "BRIDGE_FETCH_MAX_CONCURRENT" in late.terminal.error
            for call in (*greedy[:2], fair):
                await call.done.wait()
                assert call.terminal.type is EventType.COMPLETED, call.terminal
            after = users.play("late", short_url, "late-after")  # slots are given back
            await after.done.wait()
            assert after.terminal.type is EventType.COMPLETED, after.terminal


@pytest.fixture
def fake_dns(monkeypatch: pytest.MonkeyPatch) -> Iterator[threading.Event]:
    """``*.hang.test`` never answers (until the test ends); ``*.ok.test`` is 127.0.0.1; nothing is
    ever asked of a real DNS server. Patched where every resolver of the bridge looks it up."""
    release = threading.Event()

    def getaddrinfo(host: str, port: Any, *args: Any, **kwargs: Any) -> list[tuple[Any, ...]]:
        if host.endswith(".hang.test"):
            release.wait(30)
            raise socket.gaierror(socket.EAI_AGAIN, "no answer")
        if host.endswith(".ok.test"):
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", int(port or 0)))]
        raise socket.gaierror(socket.EAI_NONAME, "not in the test's table")

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    yield release
    release.set()


async def test_a_dns_server_that_never_answers_fails_fast_and_starves_nobody(
    aio_loop: object, livekit_server: Any, hostile: HostileServer, fake_dns: threading.Event
) -> None:
    port = hostile.base_url.rsplit(":", 1)[1]
    hostile.route("/dns-ok.wav", wav(0.3))
    overrides = {"fetch_connect_timeout_s": 1.0}
    with trio.fail_after(30):
        async with bridge_with_users(livekit_server, ["dns-hang", "dns-ok"], **overrides) as users:
            default_threads = trio.to_thread.current_default_thread_limiter()
            sent = time.monotonic()
            hung = [
                users.play("dns-hang", f"http://a{t}.hang.test:{port}/x.wav", f"hang-{t}", track_id=t)
                for t in range(4)
            ]
            for call in hung:
                await call.done.wait()
            took = time.monotonic() - sent
            codes = sorted(call.code for call in hung)
            print(
                f"4 hung lookups: {codes} within {took:.2f} s; "
                f"default thread limiter {default_threads.statistics()}"
            )
            assert took < 2.5, took
            assert set(codes) <= {"timeout", "too_many_fetches"} and "timeout" in codes, codes
            assert default_threads.borrowed_tokens == 0  # the hung lookups hold none of Trio's threads
            with trio.fail_after(1):
                await trio.to_thread.run_sync(lambda: None)
            # Another session resolves names and plays while the first one's lookups still hang.
            other = users.play("dns-ok", f"http://audio.ok.test:{port}/dns-ok.wav", "dns-ok")
            await other.done.wait()
            assert other.terminal.type is EventType.COMPLETED, other.terminal
