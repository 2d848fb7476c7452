"""The pool shape's session-routing proxy as the chart renders it (deploy/helm/ci/*.yaml with the proxy
on): its objects fit together, its configuration is deploy/haproxy/haproxy.cfg byte for byte plus
the rendered peers.cfg, the real HAProxy accepts that configuration as every replica reads it, and two
real HAProxy replicas started from it on loopback send each user's calls to the same real bridge.

HAProxy comes from the system (Debian: apt-get install haproxy); a missing one fails these tests."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from deploy_support import REPO, free_port
from test_deploy_chart import CI_VALUES, Manifest, is_proxy, rendered, rendered_all, values_of

SHIPPED_CONFIG = REPO / "deploy/haproxy/haproxy.cfg"
CONFIG_DIR = "/usr/local/etc/haproxy/"
PROXY_VALUES = [v for v in CI_VALUES if values_of(v)["shape"] == "pool" and values_of(v)["proxy"]["enabled"]]
METHOD = "/mentra.livekit.bridge.LiveKitBridge/"
ENTRYPOINT = REPO / "deploy/docker/entrypoint.sh"


def haproxy_binary() -> str:
    found = shutil.which("haproxy") or ("/usr/sbin/haproxy" if os.path.exists("/usr/sbin/haproxy") else None)
    if found is None:
        pytest.fail("haproxy is not installed: apt-get update && apt-get install -y haproxy")
    return found


def proxy_objects(values: str) -> dict[tuple[str, str], Manifest]:
    """(kind, name) -> manifest, for the objects labelled component: proxy."""
    return {(d["kind"], d["metadata"]["name"]): d for d in rendered_all(values) if is_proxy(d)}


def one(objects: dict[tuple[str, str], Manifest], kind: str) -> Manifest:
    (found,) = [m for (k, _), m in objects.items() if k == kind]
    return found


def container_env(container: Manifest) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container["env"] if "value" in e}


def peer_names(peers_cfg: str) -> list[str]:
    return re.findall(r'^\.if streq\("\$\{POD_NAME\}",([^)]+)\)$', peers_cfg, re.M)


def test_proxy_is_rendered_for_the_pool_shape_only() -> None:
    assert "pool.yaml" in PROXY_VALUES  # on by default
    for values in CI_VALUES:
        kinds = {k for k, _ in proxy_objects(values)}
        if values in PROXY_VALUES:
            assert {"StatefulSet", "ConfigMap", "Service", "PodDisruptionBudget"} <= kinds, values
        else:
            assert kinds == set(), values


@pytest.mark.parametrize("values", PROXY_VALUES)
def test_proxy_config_is_the_shipped_routing_plus_peers(values: str) -> None:
    """One source of truth: the ConfigMap carries deploy/haproxy/haproxy.cfg unchanged (what
    tests/pool runs), and peers.cfg adds no routing: only `peers` and the health frontend."""
    config = one(proxy_objects(values), "ConfigMap")["data"]
    assert config["haproxy.cfg"] == SHIPPED_CONFIG.read_text()
    sections = re.findall(r"^(\w+)\b", config["peers.cfg"], re.M)
    assert sections == ["peers", "frontend"], sections
    lines = [line for line in config["peers.cfg"].splitlines() if line.strip()[:1] not in ("", "#")]
    directives = [line.split()[0] for line in lines]
    assert set(directives) <= {"peers", "bind", "server", ".if", ".else", ".endif", "frontend", "monitor-uri"}


@pytest.mark.parametrize("values", PROXY_VALUES)
def test_proxy_objects_fit_together(values: str) -> None:
    objects, settings = proxy_objects(values), values_of(values)
    bridges = rendered(values)
    proxy = settings["proxy"]
    statefulset = one(objects, "StatefulSet")
    spec = statefulset["spec"]
    pod = spec["template"]["spec"]
    (haproxy,) = pod["containers"]
    env = container_env(haproxy)
    ports = {p["name"]: p["containerPort"] for p in haproxy["ports"]}
    config = one(objects, "ConfigMap")["data"]

    # Redundant, spread, and its pods are not the bridges' (their selector must not match them).
    assert spec["replicas"] == proxy["replicas"] >= 2
    assert spec["podManagementPolicy"] == "Parallel"
    pod_labels = spec["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= pod_labels.items()
    assert not bridges["Deployment"]["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert pod["topologySpreadConstraints"][0]["topologyKey"] == "kubernetes.io/hostname"
    anti = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0]
    assert anti["podAffinityTerm"]["labelSelector"]["matchLabels"] == spec["selector"]["matchLabels"]
    pdb = one(objects, "PodDisruptionBudget")["spec"]
    assert pdb["selector"]["matchLabels"] == spec["selector"]["matchLabels"]
    assert pdb["maxUnavailable"] == 1

    # The official image on an LTS (3.2), unprivileged, read-only root, sized.
    assert re.fullmatch(r"haproxy:3\.2\.\d+", haproxy["image"]), haproxy["image"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    assert haproxy["securityContext"]["readOnlyRootFilesystem"] is True
    assert haproxy["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert {"cpu", "memory"} <= haproxy["resources"]["requests"].keys()
    assert "cpu" not in haproxy["resources"].get("limits", {})
    mounts = {m["mountPath"]: m["name"] for m in haproxy["volumeMounts"]}
    assert os.path.dirname(env["BRIDGE_PROXY_STATS"]) in mounts  # the admin socket is writable

    # It runs both config files, as the replica the peers know it by.
    args = haproxy["args"]
    assert [args[i + 1] for i, a in enumerate(args) if a == "-f"] == [
        CONFIG_DIR + "haproxy.cfg",
        CONFIG_DIR + "peers.cfg",
    ]
    assert args[args.index("-L") + 1] == "$(POD_NAME)"
    (pod_name,) = [e for e in haproxy["env"] if e["name"] == "POD_NAME"]
    assert pod_name["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    names = peer_names(config["peers.cfg"])
    assert names == [f"{statefulset['metadata']['name']}-{i}" for i in range(proxy["replicas"])]
    assert f"peers {env['BRIDGE_PROXY_PEERS']}\n" in config["peers.cfg"]

    # Each peer's address is its own ClusterIP Service, selecting exactly that pod.
    for name in names:
        service = objects[("Service", name)]["spec"]
        assert service["selector"]["statefulset.kubernetes.io/pod-name"] == name
        assert service["ports"][0]["targetPort"] == "peers"
        address = f"{name}.default.svc.{proxy['clusterDomain']}:{service['ports'][0]['port']}"
        assert f"    server {name} {address}\n" in config["peers.cfg"]
    assert f"    bind :{ports['peers']}\n" in config["peers.cfg"]

    # The clouds' Service reaches the gRPC port HAProxy binds.
    cloud = objects[("Service", statefulset["metadata"]["name"])]["spec"]
    assert cloud["selector"] == spec["selector"]["matchLabels"]
    assert cloud["ports"][0]["targetPort"] == "grpc" and env["BRIDGE_PROXY_BIND"] == f":{ports['grpc']}"

    # The bridges come from SRV records of a headless Service that lists every bridge pod, ready or
    # not, on the port named grpc; the checks go to the bridges' metrics port (/readyz).
    srv = re.fullmatch(r"_grpc\._tcp\.([^.]+)\.default\.svc\.(.+)", env["BRIDGE_POOL_SRV"])
    assert srv is not None and srv.group(2) == proxy["clusterDomain"], env["BRIDGE_POOL_SRV"]
    pool = objects[("Service", srv.group(1))]["spec"]
    assert pool["clusterIP"] == "None" and pool["publishNotReadyAddresses"] is True
    assert pool["selector"] == bridges["Deployment"]["spec"]["selector"]["matchLabels"]
    assert "grpc" in {p["name"] for p in pool["ports"]}
    assert int(env["BRIDGE_POOL_CHECK_PORT"]) == settings["metrics"]["port"]

    # Probes ask the health frontend peers.cfg defines.
    health_re = r"^frontend health\n    bind :(\d+)\n    monitor-uri (\S+)$"
    health = re.search(health_re, config["peers.cfg"], re.M)
    assert health is not None
    for probe in ("livenessProbe", "readinessProbe"):
        get = haproxy[probe]["httpGet"]
        assert ports[get["port"]] == int(health.group(1)) and get["path"] == health.group(2)


# ------------------------------------------------------------------------------------------------
# The rendered configuration, run by the real HAProxy
# ------------------------------------------------------------------------------------------------


@dataclass
class Replica:
    """One proxy replica's files and environment, from the rendered StatefulSet and ConfigMap, with
    the cluster's addresses moved to loopback."""

    name: str
    argv: list[str]
    env: dict[str, str]
    stats: Path
    port: int


@pytest.fixture
def workdir() -> Iterator[Path]:
    """A short path: HAProxy refuses a unix socket path longer than 97 bytes (pytest's tmp_path is)."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="lkb-proxy-") as path:
        yield Path(path)


def localize(values: str, workdir: Path, servers: dict[str, list[str]] | None = None) -> list[Replica]:
    """Every replica of ``values`` as it would start, in ``workdir``: the rendered args with the
    ConfigMap's files, each peer's cluster address and the bind addresses on loopback, and, when
    ``servers`` maps a replica to `server` lines, those in place of the server-template (tests/pool
    does the same). Nothing else of either file is changed."""
    objects = proxy_objects(values)
    statefulset = one(objects, "StatefulSet")
    (container,) = statefulset["spec"]["template"]["spec"]["containers"]
    config = one(objects, "ConfigMap")["data"]
    names = peer_names(config["peers.cfg"])
    peer_ports = {name: free_port() for name in names}
    replicas = []
    for name in names:
        home = workdir / name
        home.mkdir()
        haproxy_cfg = config["haproxy.cfg"]
        if servers is not None:
            begin = haproxy_cfg.index("\n", haproxy_cfg.index("# servers:begin")) + 1
            end = haproxy_cfg.rindex("\n", 0, haproxy_cfg.index("# servers:end")) + 1
            haproxy_cfg = haproxy_cfg[:begin] + "".join(servers[name]) + haproxy_cfg[end:]
        peers_cfg = config["peers.cfg"]
        health = f"127.0.0.1:{free_port()}"
        peers_cfg = re.sub(r"^(frontend health\n    bind) :\d+$", rf"\1 {health}", peers_cfg, flags=re.M)
        peers_bind = f"    bind 127.0.0.1:{peer_ports[name]}"
        peers_cfg = re.sub(r"^    bind :\d+$", peers_bind, peers_cfg, flags=re.M)
        for peer, port in peer_ports.items():
            remote = rf"^(    server {peer}) \S+:\d+$"
            peers_cfg = re.sub(remote, rf"\1 127.0.0.1:{port}", peers_cfg, flags=re.M)
        (home / "haproxy.cfg").write_text(haproxy_cfg)
        (home / "peers.cfg").write_text(peers_cfg)
        port = free_port()
        env = {
            **os.environ,
            **container_env(container),
            "POD_NAME": name,
            "BRIDGE_PROXY_BIND": f"127.0.0.1:{port}",
            "BRIDGE_PROXY_STATS": str(home / "admin.sock"),
        }
        argv = [haproxy_binary()] + [
            a.replace("$(POD_NAME)", name).replace(CONFIG_DIR, f"{home}/") for a in container["args"]
        ]
        assert container["command"] == ["haproxy"]
        replicas.append(Replica(name, argv, env, home / "admin.sock", port))
    return replicas


@pytest.mark.parametrize("values", PROXY_VALUES)
def test_haproxy_accepts_the_rendered_config_on_every_replica(values: str, workdir: Path) -> None:
    """`haproxy -c` on the two files, with each replica's name and environment: its own peer line
    without an address, the others' with one (the .if branches of peers.cfg), the shipped rules."""
    for replica in localize(values, workdir):
        result = subprocess.run([*replica.argv, "-c"], env=replica.env, capture_output=True, text=True)
        assert result.returncode == 0, f"{replica.name}:\n{result.stdout}\n{result.stderr}"


# ------------------------------------------------------------------------------------------------
# Two replicas, three real bridges, on loopback
# ------------------------------------------------------------------------------------------------

USERS = 20


@dataclass
class LoopbackBridge:
    name: str
    port: int
    metrics_port: int
    proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def readyz(self) -> int | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/readyz", timeout=1) as r:
                return int(r.status)
        except urllib.error.HTTPError as err:
            return int(err.code)
        except OSError:
            return None

    def calls(self) -> int:
        """Every RPC this bridge has answered (livekit_bridge_rpcs, all methods and codes)."""
        if self.proc is None:
            return 0  # not started yet
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
        return int(sum(float(v) for v in re.findall(r"^livekit_bridge_rpcs_total\{.*\} (\S+)$", text, re.M)))


def wait_for(predicate: object, what: str, timeout_s: float = 30.0, *, fail: bool = True) -> bool:
    deadline = time.monotonic() + timeout_s
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            if fail:
                raise TimeoutError(f"timed out after {timeout_s:g} s waiting for {what}")
            return False
        time.sleep(0.1)
    return True


@contextmanager
def running(argv: list[str], env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


def admin(replica: Replica, command: str) -> str:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(5)
        sock.connect(str(replica.stats))
        sock.sendall(command.encode() + b"\n")
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).decode()


def servers_up(replica: Replica) -> set[str]:
    """Addresses of the bridges this replica's checks see UP (its JoinRoom ring)."""
    up = set()
    for line in admin(replica, "show servers state bridges").splitlines()[2:]:
        words = line.split()
        # be_id be_name srv_id srv_name srv_addr srv_op_state ... srv_port (19th)
        if len(words) > 18 and words[5] == "2":
            up.add(f"{words[4]}:{words[18]}")
    return up


def table_keys(replica: Replica) -> set[str]:
    return set(re.findall(r"key=(\S+)", admin(replica, "show table bridges")))


def call(replica: Replica, method: str, user: str, bridges: list[LoopbackBridge]) -> str:
    """One gRPC call (an empty request: the bridge answers INVALID_ARGUMENT, and counts it) through
    ``replica`` as user ``user``; returns the address of the bridge that answered it."""
    before = [b.calls() for b in bridges]
    result = subprocess.run(
        [
            "curl", "-sS", "--http2-prior-knowledge", "-o", "/dev/null", "-w", "%{http_code}",
            "-H", "content-type: application/grpc", "-H", "te: trailers", "-H", f"x-user-id: {user}",
            "--data-binary", "", f"http://127.0.0.1:{replica.port}{METHOD}{method}",
        ],
        capture_output=True, text=True, timeout=10,
    )  # fmt: skip
    assert result.stdout == "200", f"{method} via {replica.name}: {result.stdout} {result.stderr}"
    answered = [b.address for b, n in zip(bridges, before, strict=True) if b.calls() > n]
    assert len(answered) == 1, f"{method} of {user} via {replica.name} answered by {answered}"
    return answered[0]


def test_two_proxy_replicas_send_each_user_to_the_same_bridge(installed_venv: Path, workdir: Path) -> None:
    """pool.yaml's two replicas, from the rendered files, in front of three bridges started from the
    image's venv. The replicas list the bridges in different orders and under slot names that
    differ, as server-template fills its slots in the order DNS answers. Users join through one
    replica while two bridges run; a third bridge comes up (scale-up); then every user's calls go
    through the other replica: they must reach the bridge their JoinRoom went to, which only the
    shared stick table knows (the other replica's own hash would send some elsewhere, checked last)."""
    if shutil.which("curl") is None:
        pytest.fail("curl is not installed (the gRPC client of this test): apt-get install -y curl")
    bridges = [LoopbackBridge(f"b{i}", free_port(), free_port()) for i in range(3)]
    orders = {0: [0, 1, 2], 1: [2, 0, 1]}
    names = peer_names(one(proxy_objects("pool.yaml"), "ConfigMap")["data"]["peers.cfg"])
    assert len(names) == 2
    servers = {
        name: [
            f"    server bridge{slot + 1} {bridges[i].address} check port {bridges[i].metrics_port}\n"
            for slot, i in enumerate(orders[n])
        ]
        for n, name in enumerate(names)
    }
    first, second = localize("pool.yaml", workdir, servers)
    bridge_env = {k: v for k, v in os.environ.items() if not k.startswith(("BRIDGE_", "LIVEKIT_"))}
    bridge_env["PATH"] = f"{installed_venv / 'bin'}{os.pathsep}{bridge_env.get('PATH', '')}"
    users = [f"user-{i:02d}" for i in range(USERS)]
    started = time.monotonic()
    with ExitStack() as stack:

        def start(bridge: LoopbackBridge) -> None:
            env = {
                **bridge_env,
                "PORT": str(bridge.port),
                "BRIDGE_HOST": "127.0.0.1",
                "BRIDGE_METRICS_PORT": str(bridge.metrics_port),
                "LIVEKIT_URL": "ws://127.0.0.1:1",
                "BRIDGE_LOG_LEVEL": "WARNING",
            }
            bridge.proc = stack.enter_context(running(["sh", str(ENTRYPOINT)], env))
            wait_for(lambda: bridge.readyz() == 200, f"bridge {bridge.name} /readyz")

        start(bridges[0])
        start(bridges[1])
        for replica in (first, second):
            stack.enter_context(running(replica.argv, replica.env))
        two = {bridges[0].address, bridges[1].address}
        for replica in (first, second):
            wait_for(replica.stats.exists, f"{replica.name}'s admin socket", 10)
            wait_for(lambda r=replica: servers_up(r) == two, "two bridges up")

        joined = {user: call(first, "JoinRoom", user, bridges) for user in users}
        start(bridges[2])
        for replica in (first, second):
            wait_for(lambda r=replica: servers_up(r) == {b.address for b in bridges}, "three bridges up", 10)
        # The peers push each entry within milliseconds; the routing asserted below is what counts.
        learned = wait_for(lambda: table_keys(second) >= set(users), "the shared table", 5, fail=False)

        through_second = {user: call(second, "GetStatus", user, bridges) for user in users}
        through_first = {user: call(first, "GetStatus", user, bridges) for user in users}
        # JoinRoom goes by the hash alone: what the second replica would do without the table.
        hashed = {user: call(second, "JoinRoom", user, bridges) for user in users}
    spread = {b.address: sum(1 for a in joined.values() if a == b.address) for b in bridges}
    moved = sorted(u for u in users if hashed[u] != joined[u])
    print(
        f"{USERS} users joined through {first.name}: {spread}; their calls through {second.name} and "
        f"{first.name} after a third bridge came up reached the same bridge; by the hash alone "
        f"{second.name} would have sent {len(moved)} elsewhere ({time.monotonic() - started:.1f} s)"
    )
    assert set(joined.values()) == {bridges[0].address, bridges[1].address}
    wrong = {u: (joined[u], through_second[u]) for u in users if through_second[u] != joined[u]}
    assert not wrong, (
        f"{len(wrong)} users' calls through {second.name} missed their bridge (joined at, reached); "
        f"its table had every user: {learned}; {wrong}"
    )
    assert through_first == joined
    assert moved, "the scenario must be one the hash alone gets wrong, or it tests nothing"
