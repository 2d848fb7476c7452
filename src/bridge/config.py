"""Settings, read once from the environment at start-up.

Every setting has a default that works for local development; the README lists them all. Names kept
from the older Go bridge (``PORT``, ``LIVEKIT_GRPC_SOCKET``, ``LIVEKIT_URL``) are unprefixed; ours
start with ``BRIDGE_``.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path

__all__ = ["BridgeConfig", "ConfigError"]


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

    join_timeout_s: float = 10.0
    """How long JoinRoom may take before it answers ``success=false`` (``BRIDGE_JOIN_TIMEOUT_S``)."""

    session_idle_ttl_s: float = 120.0
    """A session with no cloud stream and no call for this long is closed (``BRIDGE_SESSION_IDLE_TTL_S``)."""

    shutdown_timeout_s: float = 10.0
    """On SIGTERM, sessions get this long to close before exit (``BRIDGE_SHUTDOWN_TIMEOUT_S``)."""

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

    fetch_max_per_session: int = 4
    """Audio fetches one session runs at once (``BRIDGE_FETCH_MAX_PER_SESSION``), so one user cannot take
    the process's share; beyond it PlayAudio fails with ``too_many_fetches``."""

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
        names = {
            "host": "BRIDGE_HOST",
            "port": "PORT",
            "grpc_socket": "LIVEKIT_GRPC_SOCKET",
            "livekit_url": "LIVEKIT_URL",
            "log_level": "BRIDGE_LOG_LEVEL",
            "log_format": "BRIDGE_LOG_FORMAT",
            "speaker_max_duration_ms": "SPEAKER_MAX_DURATION_MS",
        }
        values: dict[str, object] = {}
        for setting in fields(cls):
            var = names.get(setting.name, "BRIDGE_" + setting.name.upper())
            raw = env.get(var)
            if raw is None or raw == "":
                continue
            parse = _PARSERS[str(setting.type)]
            try:
                values[setting.name] = parse(raw)
            except ValueError:
                raise ConfigError(f"{var}={raw!r} is not a valid {setting.type}") from None
        token_file = env.get("BRIDGE_AUTH_TOKEN_FILE")
        if token_file and "auth_token" not in values:
            try:
                values["auth_token"] = Path(token_file).read_text().splitlines()[0].strip()
            except (OSError, IndexError):
                raise ConfigError(f"BRIDGE_AUTH_TOKEN_FILE={token_file} cannot be read") from None
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
        if not self.grpc_socket and not (self.tls_cert or self.auth_token) and not _is_loopback(self.host):
            raise ConfigError(
                f"BRIDGE_HOST={self.host} is not a loopback address: without TLS or a token anyone who can "
                "reach it could join rooms as your users. Set BRIDGE_AUTH_TOKEN and/or BRIDGE_TLS_CERT/KEY."
            )
        if self.log_format not in ("text", "json"):
            raise ConfigError("BRIDGE_LOG_FORMAT must be text or json")
        for name in (
            "join_timeout_s",
            "max_streams_per_connection",
            "stream_first_message_timeout_s",
            "session_idle_ttl_s",
            "shutdown_timeout_s",
            "fetch_connect_timeout_s",
            "fetch_read_timeout_s",
            "fetch_max_bytes",
            "speaker_max_duration_ms",
            "playback_progress_ms",
        ):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive")
        if not 0 <= self.fetch_max_redirects <= 20:
            raise ConfigError("BRIDGE_FETCH_MAX_REDIRECTS must be between 0 and 20")
        if self.cloud_queue_ms < 100:
            raise ConfigError("BRIDGE_CLOUD_QUEUE_MS must be at least 100")
        if self.track_chunk_ms < 10 or self.track_chunk_ms % 10:
            raise ConfigError("BRIDGE_TRACK_CHUNK_MS must be a positive multiple of 10")
        if self.publish_sample_rate not in (16000, 24000, 48000):
            raise ConfigError("BRIDGE_PUBLISH_SAMPLE_RATE must be 16000, 24000 or 48000")
        self._validate_fetch_limits()

    def _validate_fetch_limits(self) -> None:
        for name in (
            "fetch_total_timeout_s",
            "fetch_max_concurrent",
            "fetch_max_per_session",
            "fetch_resolver_threads",
        ):
            if getattr(self, name) <= 0:
                raise ConfigError(f"BRIDGE_{name.upper()} must be positive")
