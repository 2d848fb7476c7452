"""Fuzzed audio bytes and HTTP responses: a clean error or audio, and a memory bound per input.

The decoders get mutated MP3/WAV files and random bytes behind a real header, in the piece sizes
playback uses; the fetch layer gets raw HTTP responses (any status, Content-Encoding, length, chunking,
redirect) from a loopback socket. Each example's tracemalloc peak must stay under a fixed bound that
does not grow with what the input claims. Redirect targets are relative paths or fixed loopback and
private URLs, and names go to a resolver that refuses them all: nothing leaves 127.0.0.1, no DNS.
"""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable, Iterator
from typing import Any

import av  # noqa: F401  (imported before measuring: the MP3 decoder imports it on first use)
import hypothesis.strategies as st
import pytest
import trio
import trio_asyncio
from hypothesis import HealthCheck, event, given, settings, target
from trio_asyncio import aio_as_trio

from bridge.audio.decode import DecodeError, UnsupportedFormatError, open_decoder
from bridge.fetch import Fetcher, FetchLimits, HostPolicy
from bridge.fetch_errors import FetchError, FetchFailedError
from bridge.testing.synth import encode_mp3, encode_wav, tone
from support.hostile_server import RawServer, gzip_bomb

DECODE_FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
FETCH_FUZZ = settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
DECODE_BOUND = 2 << 20
"""Peak Python memory while decoding one input in pieces of at most 4 KiB: output blocks are dropped
as they come, so the bound holds for any input length (the largest MP3 piece decodes to < 0.5 MiB)."""
FETCH_MAX_BYTES = 64 << 10
FETCH_BOUND = 1 << 20
"""Peak Python memory of one fetch with a 64 KiB byte limit: client, headers, a few raw pieces."""

BASE_WAV = encode_wav(tone(440, 0.1, 16000, channels=2), 16000)
BASE_MP3 = encode_mp3(tone(440, 0.3, 44100), 44100)


def peak_of(action: Callable[[], Any]) -> tuple[int, Any]:
    tracemalloc.start()
    try:
        start, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        result = action()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak - start, result


# --- decoders ------------------------------------------------------------------------------------


@st.composite
def mutated(draw: st.DrawFn, base: bytes) -> bytes:
    data = bytearray(base)
    for _ in range(draw(st.integers(0, 8))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    for _ in range(draw(st.integers(0, 2))):  # a size field claiming anything up to 4 GiB
        at = draw(st.integers(0, len(data) - 4))
        data[at : at + 4] = draw(st.integers(0, 2**32 - 1)).to_bytes(4, "little")
    cut = draw(st.integers(1, len(data)))
    return bytes(data[:cut]) + draw(st.binary(max_size=2048))


AUDIO_INPUTS = st.one_of(
    mutated(BASE_WAV),
    mutated(BASE_MP3),
    st.tuples(
        st.sampled_from([b"RIFF\xff\xff\xff\xffWAVE", b"ID3\x04\x00\x00", b"\xff\xfb\x90\x00"]),
        st.binary(max_size=8192),
    ).map(b"".join),
)


def decode(data: bytes, piece: int) -> int:
    """Decode ``data`` in ``piece``-byte pieces as playback does; the number of frames decoded."""
    frames = 0
    try:
        decoder = open_decoder(data[:12])
        for start in range(0, len(data), piece):
            frames += sum(len(block.samples) for block in decoder.push(data[start : start + piece]))
        frames += sum(len(block.samples) for block in decoder.finish())
    except (DecodeError, UnsupportedFormatError):
        pass
    return frames


@DECODE_FUZZ
@given(
    data=AUDIO_INPUTS,
    piece=st.sampled_from([1, 7, 333, 4096]),
    tail=st.sampled_from([0, 0, 1 << 20, 4 << 20]),
    tail_byte=st.sampled_from([b"\x00", b"\xff", b"\x55"]),
)
def test_decoders_end_cleanly_within_a_memory_bound(
    data: bytes, piece: int, tail: int, tail_byte: bytes
) -> None:
    if (
        piece >= 333
    ):  # megabytes after the input: what a decoder must not keep (pieces big enough to be quick)
        data += tail_byte * tail
    peak, frames = peak_of(lambda: decode(data, piece))
    target(peak / 1024, label="decode peak KiB")
    assert peak < DECODE_BOUND, (peak, len(data), piece, frames)


# --- the fetch layer -----------------------------------------------------------------------------


class RefuseNames:
    async def resolve(self, host: str, port: int, *, requester: object) -> list[Any]:
        raise FetchFailedError(f"no names in this test ({host})")


@pytest.fixture(scope="module")
def raw_server() -> Iterator[RawServer]:
    server = RawServer()
    yield server
    server.close()


SAFE_PATH = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789/._-?=%", max_size=30).filter(
    lambda path: "//" not in path
)
LOCATIONS = st.one_of(
    st.sampled_from(
        ["/again", "http://10.0.0.1/x", "http://name.test/x", "ftp://127.0.0.1/", "", "http://[::1]:1/"]
    ),
    SAFE_PATH,
)
ENCODINGS = st.sampled_from(
    [None, "identity", "gzip", "gzip, gzip", "deflate", "br", "zstd", "GZIP", "identity, gzip", ""]
)
BODIES = st.one_of(st.binary(max_size=8192), st.just(gzip_bomb(64 << 20)), st.just(bytes(200_000)))


@st.composite
def responses(draw: st.DrawFn) -> bytes:
    status = draw(st.sampled_from([200, 200, 206, 301, 302, 303, 307, 404, 500, 999]))
    body = draw(BODIES)
    headers = [f"HTTP/1.1 {status} Whatever"]
    encoding = draw(ENCODINGS)
    if encoding is not None:
        headers.append(f"Content-Encoding: {encoding}")
    if status in (301, 302, 303, 307) and draw(st.booleans()):
        headers.append(f"Location: {draw(LOCATIONS)}")
    for _ in range(draw(st.integers(0, 3))):
        headers.append(
            draw(
                st.sampled_from(
                    [
                        "Set-Cookie: a=b",
                        "Connection: keep-alive",
                        "Transfer-Encoding: gzip",
                        "X-Junk: " + "x" * 9000,
                    ]
                )
            )
        )
    framing = draw(
        st.sampled_from(["exact", "none", "more", "less", "garbage", "huge", "chunked", "bad-chunked"])
    )
    if framing == "chunked" or framing == "bad-chunked":
        headers.append("Transfer-Encoding: chunked")
        size = f"{len(body):x}" if framing == "chunked" else "fffffffffffffff"
        body = size.encode() + b"\r\n" + body + b"\r\n0\r\n\r\n"
    elif framing != "none":
        lengths = {
            "exact": len(body),
            "more": len(body) + 100,
            "less": max(0, len(body) - 100),
            "huge": 2**62,
        }
        headers.append(f"Content-Length: {lengths.get(framing, '12abc')}")  # "garbage": not a number
    return ("\r\n".join(headers) + "\r\n\r\n").encode("latin-1") + body


async def fetch_all(fetcher: Fetcher, url: str) -> int | str:
    """Bytes received, or the FetchError's class name."""
    received = 0
    try:
        async with fetcher.open(url, requester="fuzz") as body:
            async for piece in body:
                received += len(piece)
    except FetchError as err:
        return type(err).__name__
    return received


@FETCH_FUZZ
@given(response=responses())
def test_fetches_end_cleanly_within_a_memory_bound(raw_server: RawServer, response: bytes) -> None:
    raw_server.response = response
    fetcher = Fetcher(
        HostPolicy.parse("127.0.0.1"),
        FetchLimits(connect_timeout_s=1, read_timeout_s=1, total_timeout_s=2, max_bytes=FETCH_MAX_BYTES),
        resolver=RefuseNames(),
    )

    async def main() -> int | str:
        async with trio_asyncio.open_loop():
            with trio.fail_after(10):
                return await aio_as_trio(fetch_all)(fetcher, raw_server.url)

    peak, outcome = peak_of(lambda: trio.run(main))
    target(peak / 1024, label="fetch peak KiB")
    event(f"outcome: {outcome if isinstance(outcome, str) else 'bytes'}")
    assert isinstance(outcome, str) or outcome <= FETCH_MAX_BYTES, outcome
    assert peak < FETCH_BOUND, (peak, outcome, response[:200])
