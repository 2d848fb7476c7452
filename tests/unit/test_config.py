from __future__ import annotations

import re
from pathlib import Path

import pytest

from bridge.config import BridgeConfig, ConfigError


def test_defaults_listen_on_loopback_port_9090() -> None:
    config = BridgeConfig.from_env({})
    assert (config.host, config.port, config.grpc_socket) == ("127.0.0.1", 9090, "")


def test_variables_are_parsed_by_type() -> None:
    config = BridgeConfig.from_env(
        {
            "PORT": "7000",
            "LIVEKIT_GRPC_SOCKET": "/tmp/b.sock",
            "BRIDGE_JOIN_TIMEOUT_S": "2.5",
            "BRIDGE_CLOUD_QUEUE_MS": "500",
        }
    )
    assert config.port == 7000 and config.grpc_socket == "/tmp/b.sock"
    assert config.join_timeout_s == 2.5 and config.cloud_queue_ms == 500


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"PORT": "x"}, "PORT='x' is not a valid int"),
        ({"PORT": "70000"}, "out of range"),
        ({"BRIDGE_TRACK_CHUNK_MS": "15"}, "multiple of 10"),
        ({"BRIDGE_PUBLISH_SAMPLE_RATE": "44100"}, "16000, 24000 or 48000"),
        ({"BRIDGE_SESSION_IDLE_TTL_S": "0"}, "positive"),
    ],
)
def test_bad_values_are_refused_with_the_variable_named(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        BridgeConfig.from_env(env)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"BRIDGE_JOIN_TIMEOUT_S": "nan"}, "BRIDGE_JOIN_TIMEOUT_S='nan' must be a finite number"),
        ({"BRIDGE_SESSION_IDLE_TTL_S": "inf"}, "BRIDGE_SESSION_IDLE_TTL_S='inf' must be a finite number"),
        ({"BRIDGE_FETCH_READ_TIMEOUT_S": "-inf"}, "BRIDGE_FETCH_READ_TIMEOUT_S='-inf' must be a finite"),
        ({"BRIDGE_SHUTDOWN_TIMEOUT_S": "-1"}, "BRIDGE_SHUTDOWN_TIMEOUT_S=-1.0 must be a positive number"),
        ({"BRIDGE_MAX_MESSAGE_BYTES": "100"}, "BRIDGE_MAX_MESSAGE_BYTES must be between"),
        ({"BRIDGE_MAX_HEALTH_WATCHES": "0"}, "BRIDGE_MAX_HEALTH_WATCHES=0 must be a positive number"),
        ({"BRIDGE_MAX_PLAYBACKS_PER_SESSION": "1000"}, "BRIDGE_MAX_PLAYBACKS_PER_SESSION must be at most"),
        ({"BRIDGE_CLOUD_QUEUE_MS": "99999999"}, "BRIDGE_CLOUD_QUEUE_MS must be between 100 and 60000"),
        (
            {"BRIDGE_MAX_STREAMS_PER_CONNECTION": "0"},
            "BRIDGE_MAX_STREAMS_PER_CONNECTION=0 must be a positive",
        ),
        ({"BRIDGE_PUBLISH_QUEUE_MS": "0"}, "BRIDGE_PUBLISH_QUEUE_MS must be between 1 and 10000"),
        ({"BRIDGE_JOIN_TIMEOUT_S": "1e9"}, "BRIDGE_JOIN_TIMEOUT_S must be at most 86400"),
        ({"BRIDGE_TRACK_PUBLISH_TIMEOUT_S": "0"}, "BRIDGE_TRACK_PUBLISH_TIMEOUT_S=0.0 must be a positive"),
        ({"BRIDGE_LIVEKIT_URL_ALLOW": "ftp://x"}, "BRIDGE_LIVEKIT_URL_ALLOW: 'ftp://x' is not a ws://"),
        ({"BRIDGE_LIVEKIT_URL_ALLOW": "a/b"}, "BRIDGE_LIVEKIT_URL_ALLOW: 'a/b' is not a host"),
    ],
)
def test_non_finite_and_out_of_range_values_are_refused_naming_the_variable(
    env: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        BridgeConfig.from_env(env)


@pytest.mark.parametrize(
    ("token", "message"),
    [
        ("", "BRIDGE_AUTH_TOKEN is set but empty"),
        ("   \t", "BRIDGE_AUTH_TOKEN is set but empty"),
        ("short-token", "at least 16 characters"),
        ("a token with spaces in it", "printable ASCII without spaces"),
        ("tøken-with-non-ascii-0123456789", "printable ASCII without spaces"),
    ],
)
def test_empty_blank_short_or_unsendable_tokens_are_refused(token: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        BridgeConfig.from_env({"BRIDGE_AUTH_TOKEN": token})


def test_an_empty_token_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("  \n")
    with pytest.raises(ConfigError, match="BRIDGE_AUTH_TOKEN_FILE is set but empty"):
        BridgeConfig.from_env({"BRIDGE_AUTH_TOKEN_FILE": str(path)})


def test_a_public_bind_needs_a_token_or_mutual_tls_server_only_tls_is_not_enough() -> None:
    tls = {"BRIDGE_TLS_CERT": "/c.pem", "BRIDGE_TLS_KEY": "/k.pem"}
    with pytest.raises(ConfigError, match="TLS alone encrypts but lets anyone call"):
        BridgeConfig.from_env({"BRIDGE_HOST": "0.0.0.0", **tls})
    mutual = BridgeConfig.from_env({"BRIDGE_HOST": "0.0.0.0", **tls, "BRIDGE_TLS_CLIENT_CA": "/ca.pem"})
    assert mutual.tls_client_ca == "/ca.pem"
    token = "a-token-of-enough-length-0123"
    assert BridgeConfig.from_env({"BRIDGE_HOST": "0.0.0.0", **tls, "BRIDGE_AUTH_TOKEN": token}).tls_cert
    assert BridgeConfig.from_env({"BRIDGE_HOST": "127.0.0.1", **tls}).tls_cert  # loopback: TLS is a bonus


def test_the_fetch_limits_are_read_and_must_be_positive() -> None:
    config = BridgeConfig.from_env(
        {
            "BRIDGE_FETCH_TOTAL_TIMEOUT_S": "12.5",
            "BRIDGE_FETCH_MAX_CONCURRENT": "64",
            "BRIDGE_FETCH_RESOLVER_THREADS": "4",
        }
    )
    assert (config.fetch_total_timeout_s, config.fetch_max_concurrent) == (12.5, 64)
    assert config.fetch_resolver_threads == 4
    with pytest.raises(ConfigError, match="BRIDGE_FETCH_MAX_CONCURRENT=0 must be a positive number"):
        BridgeConfig.from_env({"BRIDGE_FETCH_MAX_CONCURRENT": "0"})
