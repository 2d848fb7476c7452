"""The one table of settings: every environment variable, its default and what it means.

``livekit-bridge --help`` prints it and the README shows it (tools/gen_settings_table.py writes it
between markers; ``nox -s lint`` fails when they differ), so the two cannot drift from each other or
from ``BridgeConfig``: a field without a row here fails tests/unit/test_cli.py.
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, fields

from .config import BridgeConfig, env_name

__all__ = ["Setting", "markdown_table", "plain_table", "settings"]


@dataclass(frozen=True)
class Setting:
    variable: str
    default: str
    meaning: str


HELP: dict[str, str] = {
    "host": (
        "TCP bind address. A non-loopback address needs a bearer token or mutual TLS (see Access control)"
    ),
    "port": "TCP port for gRPC (0 = any free port)",
    "grpc_socket": "listen on this unix socket instead of TCP (a stale socket is replaced; mode 0600)",
    "max_streams_per_connection": (
        "HTTP/2 streams per client connection (h2's default of 100 would stall the 101st user)"
    ),
    "stream_first_message_timeout_s": (
        "a StreamAudio call that sends no first message by then ends with INVALID_ARGUMENT"
    ),
    "livekit_url": "room server for JoinRoom requests without `livekit_url`",
    "livekit_url_allow": (
        "room servers a JoinRoom's own `livekit_url` may name: hosts, `host:port`, `*.domain` or URL "
        "prefixes (comma-separated); others get PERMISSION_DENIED. Empty allows any URL, as the older "
        "bridge did (its clouds send their own); `LIVEKIT_URL` is always allowed"
    ),
    "max_sessions": (
        "sessions this bridge holds at most; a JoinRoom beyond it answers RESOURCE_EXHAUSTED and "
        "`/readyz` turns 503. 0 = 25 per CPU core, within the open-file limit (16 descriptors per session)"
    ),
    "max_message_bytes": (
        "largest gRPC message a client may send; a larger one ends its call with RESOURCE_EXHAUSTED "
        "before it is read"
    ),
    "max_health_watches": (
        "`grpc.health.v1.Health/Watch` streams open at once (health needs no token); more get "
        "RESOURCE_EXHAUSTED"
    ),
    "max_playbacks_per_session": (
        "PlayAudio calls in flight per session, which is also its share of the process's fetches; more "
        "fail with `too_many_playbacks`"
    ),
    "track_publish_timeout_s": (
        "a track not published by then fails the playback (`publish_failed`) or StreamAudio call "
        "(FAILED_PRECONDITION) that needed it; the session goes on"
    ),
    "join_timeout_s": "JoinRoom answers `success=false` when the room is not joined by then",
    "session_idle_ttl_s": (
        "a session with no StreamAudio, no playback playing and no call for this long is closed"
    ),
    "drain_timeout_s": (
        "on SIGTERM/SIGINT: no new sessions; each session is handed over (queued audio flushed, stream "
        'ends UNAVAILABLE "draining" so the client re-joins elsewhere) once its playbacks have '
        "finished, or at this deadline. A second signal skips the rest"
    ),
    "shutdown_timeout_s": "after draining, how long sessions get to close",
    "cloud_queue_ms": "room → cloud audio buffered per session; beyond it the oldest is dropped (counted)",
    "native_memory_headroom_mib": (
        "room connects wait (at most 2 s) while the C heap in use is this far above its low point plus "
        "2 MiB per room: under fast churn the SDK's teardown of left rooms falls behind. 0 = never wait"
    ),
    "webrtc_log_sink": (
        "`warning`: load a copy of the SDK's library with libwebrtc's log sink at LS_WARNING (~40 % less "
        "native CPU per received packet; only from the exact library it is made for, else the shipped "
        "one); `verbose`: the library as shipped"
    ),
    "asyncio_batch": (
        "asyncio callbacks run per pass of trio-asyncio's loop before Trio's own tasks get a turn "
        "(less scheduling per packet); 1 = trio-asyncio's one per pass"
    ),
    "track_chunk_ms": "remote audio tracks are forwarded in chunks of this length",
    "publish_sample_rate": (
        "rate of the tracks the bridge publishes (cloud PCM is resampled): 16000, 24000 or 48000"
    ),
    "prepublish_tracks": (
        "track ids to publish at join (e.g. `0,2`) instead of on first use, so phones subscribe before "
        "the first audio"
    ),
    "publish_queue_ms": "audio the SDK may queue per published track before the bridge waits for real time",
    "fetch_allow_hosts": (
        "hosts PlayAudio may fetch from although not public: hostnames, IPs, CIDRs (comma-separated)"
    ),
    "fetch_connect_timeout_s": "connect timeout of audio fetches, and the time a name lookup may take",
    "fetch_read_timeout_s": "a fetch that receives nothing for this long fails with `timeout`",
    "fetch_max_redirects": "redirects followed per fetch",
    "fetch_max_bytes": (
        "larger files fail with `too_large` (counted as received; any Content-Encoding fails "
        "`unsupported_format`)"
    ),
    "fetch_total_timeout_s": (
        "a fetch whose waits for the server exceed this plus the length of the audio it has delivered "
        "fails with `timeout` (real-time playout does not count)"
    ),
    "fetch_max_concurrent": (
        "audio fetches in the process at once (each holds one connection while it plays); beyond it "
        "`too_many_fetches`"
    ),
    "fetch_resolver_threads": (
        "threads for fetch name lookups (2 per session, so 16 sessions with hung lookups are needed to "
        "delay everyone's), apart from the rest of the bridge's; a lookup may take "
        "`BRIDGE_FETCH_CONNECT_TIMEOUT_S`"
    ),
    "speaker_max_duration_ms": "playback stops there and fails with `too_long`",
    "playback_progress_ms": "interval of PROGRESS events",
    "auth_token": (
        "shared secret every call must send as `authorization: Bearer <token>`: printable ASCII, no "
        "spaces, at least 16 characters; set-but-empty is refused"
    ),
    "tls_cert": "serve gRPC over TLS with this PEM chain (with `BRIDGE_TLS_KEY`)",
    "tls_key": "the PEM private key of `BRIDGE_TLS_CERT`",
    "tls_client_ca": "require client certificates signed by this CA (mutual TLS)",
    "metrics_port": "Prometheus endpoint `http://BRIDGE_METRICS_HOST:PORT/metrics`; 0 = off",
    "metrics_host": "address of the metrics endpoint",
    "log_level": (
        "log level (`LOG_LEVEL` is read too, when this is unset). Tokens and secrets are never logged "
        "(also redacted from the SDK's own logs)"
    ),
    "log_format": (
        "`text` (key=value context) or `json` (one object per line); records carry `user_id`, `request_id`"
    ),
}
"""Short meanings by BridgeConfig field (the fields' docstrings say more, for developers)."""

UNSET = "\u2013"  # an en dash: "no default"

_EXTRA_AFTER: dict[str, Setting] = {
    "auth_token": Setting(
        "BRIDGE_AUTH_TOKEN_FILE", UNSET, "read the token from the first line of this file instead"
    ),
    "log_format": Setting(
        "BRIDGE_DEV_LIVEKIT_PORT",
        "7880",
        "port of the local LiveKit server `--dev-server` (`nox -s bridge`) starts",
    ),
}
"""Variables read outside BridgeConfig: by ``from_env`` (the token file) and by the CLI (dev server)."""


def _default_text(value: object) -> str:
    if value in ("", None):
        return UNSET
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def settings() -> list[Setting]:
    rows = []
    for setting in fields(BridgeConfig):
        default = setting.default if setting.default is not MISSING else None
        rows.append(Setting(env_name(setting.name), _default_text(default), HELP[setting.name]))
        if setting.name in _EXTRA_AFTER:
            rows.append(_EXTRA_AFTER[setting.name])
    return rows


def markdown_table() -> str:
    lines = ["| variable | default | meaning |", "|---|---|---|"]
    for row in settings():
        default = UNSET if row.default == UNSET else f"`{row.default}`"
        lines.append(f"| `{row.variable}` | {default} | {row.meaning} |")
    return "\n".join(lines) + "\n"


def plain_table() -> str:
    """For ``--help``: one setting per paragraph, the meaning without Markdown's backticks."""
    return "\n".join(
        f"  {s.variable} (default: {s.default})\n      {s.meaning.replace('`', '')}" for s in settings()
    )
