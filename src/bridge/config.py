"""Settings, read once from the environment at start-up.

Every setting has a default that works for local development; the README lists them all. Names kept
from the older Go bridge (``PORT``, ``LIVEKIT_GRPC_SOCKET``, ``LIVEKIT_URL``) are unprefixed; ours
start with ``BRIDGE_``.
"""

from __future__ import annotations

import ipaddress
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path

from .livekit_io.native_library import SINK_LEVELS
from .room_url_policy import parse_url_allow_list

__all__ = ["BridgeConfig", "ConfigError", "env_name"]


_PARSERS: dict[str, type[int | float | str]] = {"int": int, "float": float, "str": str}


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class ConfigError(ValueError):
    """A setting in the environment cannot be used (expected: the operator fixes the variable)."""


_MIN_TOKEN_CHARS = 16

_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

_ENV_NAMES = {
    "host": "BRIDGE_HOST",
    "port": "PORT",
    "grpc_socket": "LIVEKIT_GRPC_SOCKET",
    "livekit_url": "LIVEKIT_URL",
    "log_level": "BRIDGE_LOG_LEVEL",
    "log_format": "BRIDGE_LOG_FORMAT",
    "speaker_max_duration_ms": "SPEAKER_MAX_DURATION_MS",
}
"""Names kept from the older Go bridge and its playback spec; every other setting is BRIDGE_<NAME>."""


def env_name(setting: str) -> str:
    """The environment variable of the BridgeConfig field ``setting``."""
    return _ENV_NAMES.get(setting, "BRIDGE_" + setting.upper())


def _parse(var: str, raw: str, kind: str) -> int | float | str:
    try:
        value = _PARSERS[kind](raw.strip() if kind != "str" else raw)
    except ValueError:
        raise ConfigError(f"{var}={raw!r} is not a valid {kind}") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{var}={raw!r} must be a finite number")
    return value


def _checked_token(var: str, token: str) -> str:
    """A bearer token that can be sent as gRPC metadata and is not trivially guessable.

    An empty or blank value is refused rather than read as "no token": a secret that failed to
    render into the environment must not quietly turn access control off.
    """
    if not token.strip():
        raise ConfigError(f"{var} is set but empty: give a token or unset it")
    if any(not 0x21 <= ord(char) <= 0x7E for char in token):
        raise ConfigError(f"{var} must be printable ASCII without spaces (it is sent as a gRPC header)")
    if len(token) < _MIN_TOKEN_CHARS:
        raise ConfigError(f"{var} must be at least {_MIN_TOKEN_CHARS} characters long")
    return token


@dataclass(frozen=True)
class BridgeConfig:
    host: str = "127.0.0.1"
    """TCP address to bind (``BRIDGE_HOST``). Loopback by default: TCP has no access control yet."""

    port: int = 9090
    """TCP port (``PORT``); 0 picks a free one."""

    grpc_socket: str = ""
    """Unix socket path (``LIVEKIT_GRPC_SOCKET``). When set, the bridge listens there instead of TCP."""

    max_streams_per_connection: int = 10_000
    """HTTP/2 streams a client may keep open on one connection (``BRIDGE_MAX_STREAMS_PER_CONNECTION``):
    a cloud keeps one StreamAudio per user, usually all on one connection."""

    stream_first_message_timeout_s: float = 10.0
    """A StreamAudio call must send its first message (with ``user_id``) within this time
    (``BRIDGE_STREAM_FIRST_MESSAGE_TIMEOUT_S``); silent calls would hold a stream slot forever."""

    livekit_url: str = ""
    """Room server for JoinRoom requests that carry no ``livekit_url`` (``LIVEKIT_URL``)."""

    livekit_url_allow: str = ""
    """Room servers a JoinRoom's own ``livekit_url`` may name (``BRIDGE_LIVEKIT_URL_ALLOW``):
    comma-separated hosts (``lk.example.com``, ``lk.example.com:7880``, ``*.example.com``) or URL
    prefixes (``wss://lk.example.com/``). Empty (the default) allows any URL, as the older bridge did:
    its clouds send their own. ``LIVEKIT_URL`` is always allowed."""

    max_sessions: int = 0
    """Sessions this bridge holds at most (``BRIDGE_MAX_SESSIONS``); a JoinRoom beyond it answers
    RESOURCE_EXHAUSTED. 0 = sized from the machine (capacity.py: 25 per core, within the open-file
    limit)."""

    max_message_bytes: int = 1024 * 1024
    """Largest gRPC message a client may send (``BRIDGE_MAX_MESSAGE_BYTES``); beyond it the call ends
    with RESOURCE_EXHAUSTED before the message is read. A 100 ms audio chunk is 3.2 KB."""

    max_health_watches: int = 64
    """``grpc.health.v1.Health/Watch`` streams open at once (``BRIDGE_MAX_HEALTH_WATCHES``): health
    needs no token, so this bounds what an unauthenticated caller can hold open."""

    max_playbacks_per_session: int = 4
    """PlayAudio calls in flight per session (``BRIDGE_MAX_PLAYBACKS_PER_SESSION``); more fail with
    ``too_many_playbacks``. Each holds one audio fetch while it plays, so this is also the session's
    share of ``BRIDGE_FETCH_MAX_CONCURRENT``: one user cannot take every fetch of the process."""

    track_publish_timeout_s: float = 10.0
    """A track that is not published within this time (``BRIDGE_TRACK_PUBLISH_TIMEOUT_S``) fails the
    playback or stream that needed it; the session and its microphone path go on."""

    join_timeout_s: float = 10.0
    """How long JoinRoom may take before it answers ``success=false`` (``BRIDGE_JOIN_TIMEOUT_S``)."""

    session_idle_ttl_s: float = 120.0
    """A session with no cloud stream and no call for this long is closed (``BRIDGE_SESSION_IDLE_TTL_S``)."""

    drain_timeout_s: float = 30.0
    """On SIGTERM the bridge drains (``BRIDGE_DRAIN_TIMEOUT_S``): it takes no new sessions, lets each
    session's playbacks finish, then hands the session over (its queued room audio flushed to its
    stream, which ends with UNAVAILABLE "draining": the client re-joins elsewhere). Sessions still
    playing at this deadline are handed over anyway. A second signal skips what is left."""

    shutdown_timeout_s: float = 10.0
    """After draining, sessions get this long to close before exit (``BRIDGE_SHUTDOWN_TIMEOUT_S``)."""

    native_memory_headroom_mib: int = 64
    """Room connects wait (at most 2 s) while the C heap in use is more than this above its lowest
    level plus 2 MiB per connected room: under fast churn the SDK's teardown of rooms already left
    falls behind, and this gives it time (``BRIDGE_NATIVE_MEMORY_HEADROOM_MIB``; 0 = never wait;
    livekit_io/pacing.py)."""

    webrtc_log_sink: str = "warning"
    """Level of libwebrtc's log sink (``BRIDGE_WEBRTC_LOG_SINK``): ``warning`` loads a copy of the
    SDK's library with its sink at LS_WARNING (~40 % less native CPU per received packet), when
    the installed library is the one that copy is made for; ``verbose`` keeps the library as
    shipped (livekit_io/native_library.py)."""

    asyncio_batch: int = 64
    """asyncio callbacks trio-asyncio runs per pass of its Trio task before it yields; 1 = one per
    pass, trio-asyncio's own behaviour (``BRIDGE_ASYNCIO_BATCH``; aio_batching.py)."""

    cloud_queue_ms: int = 2000
    """Room -> cloud audio a session buffers for its stream before dropping the oldest
    (``BRIDGE_CLOUD_QUEUE_MS``)."""

    track_chunk_ms: int = 100
    """Remote audio tracks are forwarded to the cloud in chunks of this length (``BRIDGE_TRACK_CHUNK_MS``)."""

    publish_sample_rate: int = 48000
    """Sample rate of the tracks the bridge publishes (``BRIDGE_PUBLISH_SAMPLE_RATE``); cloud PCM is
    resampled to it."""

    prepublish_tracks: str = ""
    """Tracks to publish as soon as a session joins (``BRIDGE_PREPUBLISH_TRACKS``, comma-separated ids,
    e.g. ``0,2``), so phones subscribe before the first audio instead of missing its start. By
    default every track is published on first use; cloud PCM keeps real time across that (the
    audio of the publication's duration is skipped, counted, rather than delaying the track)."""

    publish_queue_ms: int = 200
    """Audio the SDK's AudioSource may hold before ``capture_frame`` waits for real time
    (``BRIDGE_PUBLISH_QUEUE_MS``): the latency/jitter trade-off of cloud -> room audio."""

    fetch_allow_hosts: str = ""
    """Hosts PlayAudio may fetch from although they are not public (``BRIDGE_FETCH_ALLOW_HOSTS``):
    comma-separated hostnames, IPs or CIDRs. Loopback, private and link-local addresses (cloud
    metadata endpoints) are refused unless listed here."""

    fetch_connect_timeout_s: float = 5.0
    """Connect timeout of audio fetches, and the time a name lookup may take
    (``BRIDGE_FETCH_CONNECT_TIMEOUT_S``)."""

    fetch_read_timeout_s: float = 10.0
    """A fetch that gets no byte for this long fails with ``timeout`` (``BRIDGE_FETCH_READ_TIMEOUT_S``)."""

    fetch_max_redirects: int = 3
    """``BRIDGE_FETCH_MAX_REDIRECTS``."""

    fetch_max_bytes: int = 50 * 1024 * 1024
    """Larger audio files fail with ``too_large`` (``BRIDGE_FETCH_MAX_BYTES``). Counted on the bytes as
    received: the bridge asks for ``identity`` and refuses any Content-Encoding (``unsupported_format``)."""

    fetch_total_timeout_s: float = 30.0
    """Total time a fetch may wait for its server beyond the audio it has delivered
    (``BRIDGE_FETCH_TOTAL_TIMEOUT_S``); then it fails with ``timeout``. Waits for the server are summed
    (name lookup, connect, response headers, every body read); time the download is paused because
    playback waits for real time is not. A server at least as fast as real time never reaches it, so
    a 5-minute file may take 5 minutes; one that drips a byte every few seconds is cut after this long.
    A fetch's waits are thus at most this plus ``SPEAKER_MAX_DURATION_MS``."""

    fetch_max_concurrent: int = 256
    """Audio fetches the process runs at once (``BRIDGE_FETCH_MAX_CONCURRENT``); beyond it PlayAudio fails
    with ``too_many_fetches``. Each fetch holds one connection while its audio plays."""

    fetch_resolver_threads: int = 32
    """Threads for fetch name lookups (``BRIDGE_FETCH_RESOLVER_THREADS``), apart from Trio's default
    thread pool; a session may use 2 of them, a lookup may take ``BRIDGE_FETCH_CONNECT_TIMEOUT_S``. A
    lookup that hangs keeps its thread until the system resolver gives up (seconds), so it takes
    this / 2 sessions with hung lookups to delay everyone else's lookups (IP-literal URLs need none)."""

    speaker_max_duration_ms: int = 300_000
    """Playback stops after this much audio and fails with ``too_long`` (``SPEAKER_MAX_DURATION_MS``)."""

    playback_progress_ms: int = 250
    """Interval of PROGRESS events (``BRIDGE_PLAYBACK_PROGRESS_MS``)."""

    auth_token: str = field(default="", repr=False)
    """Shared secret every call must present as ``authorization: Bearer <token>`` (``BRIDGE_AUTH_TOKEN``,
    or the first line of the file in ``BRIDGE_AUTH_TOKEN_FILE``)."""

    tls_cert: str = ""
    """PEM certificate chain: serve gRPC over TLS (``BRIDGE_TLS_CERT``, with ``BRIDGE_TLS_KEY``)."""

    tls_key: str = ""
    """PEM private key of ``tls_cert`` (``BRIDGE_TLS_KEY``)."""

    tls_client_ca: str = ""
    """PEM CA bundle: require client certificates signed by it, i.e. mutual TLS (``BRIDGE_TLS_CLIENT_CA``)."""

    metrics_port: int = 0
    """Port of the Prometheus endpoint ``/metrics`` (``BRIDGE_METRICS_PORT``); 0 = off."""

    metrics_host: str = "127.0.0.1"
    """Address of the Prometheus endpoint (``BRIDGE_METRICS_HOST``)."""

    log_level: str = "INFO"
    """``BRIDGE_LOG_LEVEL``."""

    log_format: str = "text"
    """``text`` (one line, key=value context) or ``json`` (one object per line) (``BRIDGE_LOG_FORMAT``)."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> BridgeConfig:
        env = os.environ if env is None else env
        values: dict[str, object] = {}
        for setting in fields(cls):
            var = env_name(setting.name)
            raw = env.get(var)
            if setting.name == "auth_token" and raw is not None:
                values[setting.name] = _checked_token(var, raw)
                continue
            if raw is None or raw == "":
                continue
            values[setting.name] = _parse(var, raw, str(setting.type))
        if "log_level" not in values and env.get("LOG_LEVEL"):
            values["log_level"] = env["LOG_LEVEL"]  # the playback spec's name for it
        token_file = env.get("BRIDGE_AUTH_TOKEN_FILE")
        if token_file and "auth_token" not in values:
            try:
                first_line = Path(token_file).read_text().splitlines()[0]
            except (OSError, IndexError, UnicodeDecodeError):
                raise ConfigError(f"BRIDGE_AUTH_TOKEN_FILE={token_file} cannot be read") from None
            values["auth_token"] = _checked_token("BRIDGE_AUTH_TOKEN_FILE", first_line.strip())
        config = cls(**values)  # type: ignore[arg-type]
        config.validate()
        return config

    @property
    def prepublished_track_ids(self) -> tuple[int, ...]:
        return tuple(int(part) for part in self.prepublish_tracks.split(",") if part.strip())

    def validate(self) -> None:
        try:
            ids = self.prepublished_track_ids
        except ValueError:
            raise ConfigError("BRIDGE_PREPUBLISH_TRACKS must be comma-separated track ids") from None
        if any(not 0 <= track_id <= 15 for track_id in ids):
            raise ConfigError("BRIDGE_PREPUBLISH_TRACKS ids must be 0..15")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"PORT={self.port} is out of range")
        if not 0 <= self.metrics_port <= 65535:
            raise ConfigError(f"BRIDGE_METRICS_PORT={self.metrics_port} is out of range")
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ConfigError("BRIDGE_TLS_CERT and BRIDGE_TLS_KEY go together")
        if self.tls_client_ca and not self.tls_cert:
            raise ConfigError("BRIDGE_TLS_CLIENT_CA (mutual TLS) needs BRIDGE_TLS_CERT and BRIDGE_TLS_KEY")
        callers_identified = bool(self.auth_token or self.tls_client_ca)
        if not self.grpc_socket and not callers_identified and not _is_loopback(self.host):
            encrypted_only = " TLS alone encrypts but lets anyone call." if self.tls_cert else ""
            raise ConfigError(
                f"BRIDGE_HOST={self.host} is not a loopback address: without a bearer token or mutual TLS "
                f"anyone who can reach it could join rooms as your users.{encrypted_only} Set "
                "BRIDGE_AUTH_TOKEN and/or BRIDGE_TLS_CLIENT_CA (with BRIDGE_TLS_CERT/KEY)."
            )
        if self.log_level.upper() not in _LOG_LEVELS:
            raise ConfigError(
                f"BRIDGE_LOG_LEVEL (or LOG_LEVEL)={self.log_level!r} must be one of {', '.join(_LOG_LEVELS)}"
            )
        if self.log_format not in ("text", "json"):
            raise ConfigError("BRIDGE_LOG_FORMAT must be text or json")
        if self.webrtc_log_sink not in SINK_LEVELS:
            raise ConfigError(f"BRIDGE_WEBRTC_LOG_SINK must be {' or '.join(SINK_LEVELS)}")
        for name in (
            "join_timeout_s",
            "max_streams_per_connection",
            "stream_first_message_timeout_s",
            "session_idle_ttl_s",
            "shutdown_timeout_s",
            "drain_timeout_s",
            "fetch_connect_timeout_s",
            "fetch_read_timeout_s",
            "fetch_max_bytes",
            "speaker_max_duration_ms",
            "playback_progress_ms",
            "max_message_bytes",
            "max_health_watches",
            "max_playbacks_per_session",
            "track_publish_timeout_s",
            "fetch_total_timeout_s",
            "fetch_max_concurrent",
            "fetch_resolver_threads",
        ):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"{env_name(name)}={value} must be a positive number")
        if not 0 <= self.max_sessions <= 100_000:
            raise ConfigError("BRIDGE_MAX_SESSIONS must be between 0 (sized from the machine) and 100000")
        if not 4096 <= self.max_message_bytes <= 64 * 1024 * 1024:
            raise ConfigError("BRIDGE_MAX_MESSAGE_BYTES must be between 4096 and 67108864")
        if not 0 <= self.native_memory_headroom_mib <= 65_536:
            raise ConfigError("BRIDGE_NATIVE_MEMORY_HEADROOM_MIB must be between 0 (off) and 65536")
        if not 1 <= self.asyncio_batch <= 4096:
            raise ConfigError("BRIDGE_ASYNCIO_BATCH must be between 1 and 4096")
        if not 100 <= self.cloud_queue_ms <= 60_000:
            raise ConfigError("BRIDGE_CLOUD_QUEUE_MS must be between 100 and 60000")
        if not 1 <= self.max_streams_per_connection <= 100_000:
            raise ConfigError("BRIDGE_MAX_STREAMS_PER_CONNECTION must be between 1 and 100000")
        if self.max_playbacks_per_session > 16 * 4:
            raise ConfigError("BRIDGE_MAX_PLAYBACKS_PER_SESSION must be at most 64")
        if not 0 < self.publish_queue_ms <= 10_000:
            raise ConfigError("BRIDGE_PUBLISH_QUEUE_MS must be between 1 and 10000")
        if self.fetch_max_bytes > 1024 * 1024 * 1024:
            raise ConfigError("BRIDGE_FETCH_MAX_BYTES must be at most 1 GiB")
        for name in (
            "join_timeout_s",
            "session_idle_ttl_s",
            "shutdown_timeout_s",
            "drain_timeout_s",
            "fetch_read_timeout_s",
            "fetch_total_timeout_s",
        ):
            if getattr(self, name) > 86_400:
                raise ConfigError(f"{env_name(name)} must be at most 86400 (a day)")
        if not 0 <= self.fetch_max_redirects <= 20:
            raise ConfigError("BRIDGE_FETCH_MAX_REDIRECTS must be between 0 and 20")
        if self.track_chunk_ms < 10 or self.track_chunk_ms % 10:
            raise ConfigError("BRIDGE_TRACK_CHUNK_MS must be a positive multiple of 10")
        if self.publish_sample_rate not in (16000, 24000, 48000):
            raise ConfigError("BRIDGE_PUBLISH_SAMPLE_RATE must be 16000, 24000 or 48000")
        try:
            parse_url_allow_list(self.livekit_url_allow)
        except ValueError as err:
            raise ConfigError(f"BRIDGE_LIVEKIT_URL_ALLOW: {err}") from None
        if self.fetch_max_concurrent > 100_000 or self.fetch_resolver_threads > 1024:
            raise ConfigError(
                "BRIDGE_FETCH_MAX_CONCURRENT must be at most 100000, "
                "BRIDGE_FETCH_RESOLVER_THREADS at most 1024"
            )
