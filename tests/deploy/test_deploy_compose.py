"""deploy/compose: loaded by compose-go (the loader `docker compose config` uses; no Docker engine
runs here), and its LiveKit config started with the real livekit-server on loopback."""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from deploy_support import REPO, deploy_env, free_port

COMPOSE = REPO / "deploy/compose/docker-compose.yml"


def load(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [deploy_env("COMPOSE_CHECK"), str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env={"PATH": "/usr/bin:/bin"},  # no BRIDGE_AUTH_TOKEN / CLOUD_IMAGE from the caller
    )


@pytest.fixture(scope="module")
def project() -> dict[str, Any]:
    result = load(COMPOSE)
    assert result.returncode == 0, result.stderr
    loaded: dict[str, Any] = yaml.safe_load(result.stdout)
    return loaded


def test_services_and_images(project: dict[str, Any]) -> None:
    services = project["services"]
    assert set(services) == {"cloud", "bridge", "livekit-server"}
    assert services["livekit-server"]["image"] == "livekit/livekit-server:v1.13.5"
    build = services["bridge"]["build"]
    assert Path(build["context"]) == REPO and build["dockerfile"] == "Dockerfile"
    assert services["cloud"]["depends_on"]["bridge"]["condition"] == "service_healthy"


def test_everything_is_published_on_loopback_only(project: dict[str, Any]) -> None:
    published = [p for s in project["services"].values() for p in s.get("ports", [])]
    assert published
    assert {p["host_ip"] for p in published} == {"127.0.0.1"}
    udp = [p for p in project["services"]["livekit-server"]["ports"] if p["protocol"] == "udp"]
    assert udp, "WebRTC media needs a UDP port"


def test_the_bridge_is_wired_to_the_server_and_the_cloud(project: dict[str, Any]) -> None:
    bridge = project["services"]["bridge"]
    env = bridge["environment"]
    # A non-loopback bind needs a token (the bridge refuses to start otherwise); the cloud has it.
    assert env["BRIDGE_HOST"] == "0.0.0.0"
    assert len(env["BRIDGE_AUTH_TOKEN"]) >= 16
    cloud = project["services"]["cloud"]["environment"]
    assert cloud["BRIDGE_AUTH_TOKEN"] == env["BRIDGE_AUTH_TOKEN"]
    assert cloud["LIVEKIT_GRPC_BRIDGE_URL"] == f"bridge:{env['PORT']}"
    assert env["LIVEKIT_URL"] == "ws://livekit-server:7880"
    assert bridge["ulimits"]["nofile"]["soft"] >= 16 * 1000  # 1000 sessions at 16 descriptors each
    # The livekit config's keys are the ones the cloud mints tokens with.
    config = yaml.safe_load((REPO / "deploy/compose/livekit.yaml").read_text())
    assert config["keys"] == {cloud["LIVEKIT_API_KEY"]: cloud["LIVEKIT_API_SECRET"]}
    (mount,) = project["services"]["livekit-server"]["volumes"]
    assert Path(mount["source"]) == REPO / "deploy/compose/livekit.yaml" and mount["read_only"]


def test_the_checker_really_validates(tmp_path: Path) -> None:
    bad = tmp_path / "compose.yml"
    bad.write_text("services:\n  bridge:\n    imagee: livekit-bridge\n")
    result = load(bad)
    assert result.returncode == 1
    assert "imagee" in result.stderr


def test_livekit_config_starts_the_real_server(installed_venv: Path, tmp_path: Path) -> None:
    """The compose file's livekit.yaml, with its ports moved to free ones and bound to loopback."""
    binary = (
        subprocess.run(
            [
                str(installed_venv / "bin/python"),
                "-c",
                "from bridge.testing.devserver import *; print(ensure_server_binary())",
            ],
            capture_output=True,
            text=True,
            timeout=900,
            check=True,
        )
        .stdout.strip()
        .splitlines()[-1]
    )
    config = yaml.safe_load((REPO / "deploy/compose/livekit.yaml").read_text())
    port = free_port(socket.SOCK_STREAM)
    config["port"] = port
    config["bind_addresses"] = ["127.0.0.1"]
    config["rtc"].update(
        tcp_port=free_port(socket.SOCK_STREAM),
        udp_port=free_port(socket.SOCK_DGRAM),
        node_ip="127.0.0.1",
        ips={"includes": ["127.0.0.0/8"]},
    )
    path = tmp_path / "livekit.yaml"
    path.write_text(yaml.safe_dump(config))
    server = subprocess.Popen(
        [binary, "--config", str(path)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    no_proxy = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        deadline = time.monotonic() + 30
        while True:
            assert server.poll() is None, server.communicate()[0]
            try:
                with no_proxy.open(f"http://127.0.0.1:{port}/", timeout=2) as reply:
                    assert reply.status == 200
                    break
            except OSError:
                assert time.monotonic() < deadline, "livekit-server did not answer"
                time.sleep(0.3)
    finally:
        server.terminate()
        server.wait(10)
