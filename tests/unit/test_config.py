from __future__ import annotations

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


def test_the_fetch_limits_are_read_and_must_be_positive() -> None:
    config = BridgeConfig.from_env(
        {
            "BRIDGE_FETCH_TOTAL_TIMEOUT_S": "12.5",
            "BRIDGE_FETCH_MAX_CONCURRENT": "64",
            "BRIDGE_FETCH_MAX_PER_SESSION": "2",
            "BRIDGE_FETCH_RESOLVER_THREADS": "4",
        }
    )
    assert (config.fetch_total_timeout_s, config.fetch_max_concurrent) == (12.5, 64)
    assert (config.fetch_max_per_session, config.fetch_resolver_threads) == (2, 4)
    with pytest.raises(ConfigError, match="BRIDGE_FETCH_MAX_PER_SESSION must be positive"):
        BridgeConfig.from_env({"BRIDGE_FETCH_MAX_PER_SESSION": "0"})
