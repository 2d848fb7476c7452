"""The Helm chart as rendered by `helm template` in `nox -s deploy` (deploy/helm/ci/*.yaml, both
shapes), checked for what docs/design/deploy.md promises, plus the settings it must refuse."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from deploy_support import REPO, deploy_env

CHART = REPO / "deploy/helm/livekit-bridge"
CI_VALUES = sorted(p.name for p in (REPO / "deploy/helm/ci").glob("*.yaml"))
HEALTHCHECK = ["/opt/livekit-bridge/bin/python", "/opt/livekit-bridge/healthcheck.py"]
Manifest = dict[str, Any]


def rendered_all(values: str) -> list[Manifest]:
    text = (Path(deploy_env("RENDERED")) / values).read_text()
    return [d for d in yaml.safe_load_all(text) if d]


def is_proxy(manifest: Manifest) -> bool:
    return bool(manifest["metadata"]["labels"].get("app.kubernetes.io/component") == "proxy")


def rendered(values: str) -> dict[str, Manifest]:
    """kind -> manifest of the bridges' objects (at most one of each kind); the proxy's objects
    (component: proxy) are test_deploy_proxy.py's."""
    docs = [d for d in rendered_all(values) if not is_proxy(d)]
    kinds = [d["kind"] for d in docs]
    assert len(kinds) == len(set(kinds)), kinds
    return {d["kind"]: d for d in docs}


def values_of(name: str) -> dict[str, Any]:
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    override = yaml.safe_load((REPO / "deploy/helm/ci" / name).read_text())

    def merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
        out = dict(a)
        for k, v in b.items():
            out[k] = merge(a[k], v) if isinstance(v, dict) and isinstance(a.get(k), dict) else v
        return out

    return merge(defaults, override)


def pod(manifests: dict[str, Manifest]) -> Manifest:
    spec: Manifest = manifests["Deployment"]["spec"]["template"]["spec"]
    return spec


def bridge_container(spec: Manifest) -> Manifest:
    containers = spec.get("initContainers", []) + spec["containers"]
    (bridge,) = [c for c in containers if c["name"] == "bridge"]
    return bridge


def env(container: Manifest) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}


def port_names(container: Manifest) -> dict[str, int]:
    return {p["name"]: p["containerPort"] for p in container.get("ports", [])}


def dockerfile_uid() -> int:
    match = re.search(r"^USER (\d+):(\d+)", (REPO / "Dockerfile").read_text(), re.M)
    assert match is not None
    return int(match.group(1))


def test_every_ci_values_file_was_rendered() -> None:
    assert {"pool.yaml", "sidecar.yaml"} <= set(CI_VALUES)
    for name in CI_VALUES:
        assert "Deployment" in rendered(name), name


@pytest.mark.parametrize("values", CI_VALUES)
def test_common_to_every_shape(values: str) -> None:
    manifests, settings = rendered(values), values_of(values)
    spec = pod(manifests)
    bridge = bridge_container(spec)
    bridge_env = env(bridge)

    # Selector labels select the pods, and every other selector uses them too.
    pod_labels = manifests["Deployment"]["spec"]["template"]["metadata"]["labels"]
    selector = manifests["Deployment"]["spec"]["selector"]["matchLabels"]
    assert selector.items() <= pod_labels.items()
    for kind in ("PodDisruptionBudget", "PodMonitor"):
        if kind in manifests:
            assert manifests[kind]["spec"]["selector"]["matchLabels"] == selector

    # Unprivileged, as the image's uid; read-only root with a writable /tmp.
    security = spec["securityContext"]
    assert security["runAsNonRoot"] is True
    assert security["runAsUser"] == dockerfile_uid()
    assert bridge["securityContext"]["readOnlyRootFilesystem"] is True
    assert bridge["securityContext"]["allowPrivilegeEscalation"] is False
    assert {"name": "tmp", "mountPath": "/tmp"} in bridge["volumeMounts"]

    # Probes: all three, of one mechanism, pointing at something that exists.
    probes = [bridge[k] for k in ("startupProbe", "livenessProbe", "readinessProbe")]
    for probe in probes:
        if "grpc" in probe:
            assert probe["grpc"]["port"] == int(bridge_env["PORT"])
        elif "exec" in probe:
            assert probe["exec"]["command"] == HEALTHCHECK
        else:
            assert probe["httpGet"]["port"] == "metrics" and "metrics" in port_names(bridge)

    # The kubelet waits for the drain and the shutdown before it kills.
    drain = settings["bridge"]["drainTimeoutSeconds"] or 0
    shutdown = settings["bridge"]["shutdownTimeoutSeconds"]
    assert int(bridge_env["BRIDGE_SHUTDOWN_TIMEOUT_S"]) == shutdown
    if settings["bridge"]["drainTimeoutSeconds"] is None:
        assert "BRIDGE_DRAIN_TIMEOUT_S" not in bridge_env
    else:
        assert int(bridge_env["BRIDGE_DRAIN_TIMEOUT_S"]) == drain
    assert spec["terminationGracePeriodSeconds"] >= drain + shutdown + 5

    # Raised fd limit, metrics reachable by Prometheus, sized from the benchmark.
    assert int(bridge_env["BRIDGE_NOFILE"]) >= 16 * 1000  # 1000 sessions at 16 descriptors each
    assert bridge_env["BRIDGE_METRICS_HOST"] == "0.0.0.0"
    metrics_port = int(bridge_env["BRIDGE_METRICS_PORT"])
    assert port_names(bridge)["metrics"] == metrics_port
    annotations = manifests["Deployment"]["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(metrics_port)
    requests = bridge["resources"]["requests"]
    assert requests["cpu"] == "1000m" and "cpu" not in bridge["resources"].get("limits", {})
    assert manifests["PodDisruptionBudget"]["spec"]["maxUnavailable"] == 1


@pytest.mark.parametrize("values", [v for v in CI_VALUES if v.startswith("pool")])
def test_pool_shape(values: str) -> None:
    manifests, settings = rendered(values), values_of(values)
    spec = pod(manifests)
    bridge = bridge_container(spec)
    bridge_env = env(bridge)
    assert [c["name"] for c in spec["containers"]] == ["bridge"]
    assert "initContainers" not in spec

    # Reachable from other pods, and never without a token or mutual TLS.
    assert bridge_env["BRIDGE_HOST"] == settings["bridge"]["bindHost"] == "0.0.0.0"
    assert "BRIDGE_AUTH_TOKEN_FILE" in bridge_env or "BRIDGE_TLS_CLIENT_CA" in bridge_env
    if "BRIDGE_AUTH_TOKEN_FILE" in bridge_env:
        (auth,) = [m for m in bridge["volumeMounts"] if m["name"] == "auth"]
        (volume,) = [v for v in spec["volumes"] if v["name"] == "auth"]
        key = volume["secret"]["items"][0]["path"]
        assert bridge_env["BRIDGE_AUTH_TOKEN_FILE"] == f"{auth['mountPath']}/{key}"
    if "BRIDGE_METRICS_PORT" in bridge_env:
        # readiness that knows "full" and "draining", whatever TLS the gRPC port has
        assert bridge["readinessProbe"]["httpGet"]["path"] == "/readyz"
    elif "BRIDGE_TLS_CERT" in bridge_env:
        # the kubelet's gRPC probe cannot speak TLS
        assert "grpc" not in bridge["readinessProbe"]
    else:
        assert "grpc" in bridge["readinessProbe"]

    # The headless Service the proxy finds ready pods through.
    service = manifests["Service"]
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["publishNotReadyAddresses"] is False
    assert service["spec"]["selector"] == manifests["Deployment"]["spec"]["selector"]["matchLabels"]
    grpc = next(p for p in service["spec"]["ports"] if p["name"] == "grpc")
    assert port_names(bridge)[grpc["targetPort"]] == int(bridge_env["PORT"])

    # The HPA owns the replica count and scales this Deployment.
    hpa = manifests["HorizontalPodAutoscaler"]["spec"]
    assert "replicas" not in manifests["Deployment"]["spec"]
    assert hpa["scaleTargetRef"]["name"] == manifests["Deployment"]["metadata"]["name"]
    (metric,) = hpa["metrics"]
    if settings["autoscaling"]["metric"] == "cpu":
        assert metric["resource"]["name"] == "cpu"
    else:
        assert metric["pods"]["metric"]["name"] == "livekit_bridge_sessions"
    assert hpa["behavior"]["scaleDown"]["stabilizationWindowSeconds"] >= 300

    for setting, variable in (("maxSessions", "BRIDGE_MAX_SESSIONS"), ("livekitUrl", "LIVEKIT_URL")):
        if settings["bridge"][setting]:
            assert bridge_env[variable] == str(settings["bridge"][setting])
        else:
            assert variable not in bridge_env


@pytest.mark.parametrize("values", [v for v in CI_VALUES if v.startswith("sidecar")])
def test_sidecar_shape(values: str) -> None:
    manifests, settings = rendered(values), values_of(values)
    spec = pod(manifests)
    bridge = bridge_container(spec)
    (cloud,) = [c for c in spec["containers"] if c["name"] == "cloud"]
    socket = env(bridge)["LIVEKIT_GRPC_SOCKET"]

    # One socket path for both, on one shared emptyDir mounted where the socket lives.
    assert env(cloud)["LIVEKIT_GRPC_SOCKET"] == socket
    for container in (bridge, cloud):
        (mount,) = [m for m in container["volumeMounts"] if m["name"] == "bridge-socket"]
        assert socket == f"{mount['mountPath']}/bridge.sock"
    (volume,) = [v for v in spec["volumes"] if v["name"] == "bridge-socket"]
    assert "emptyDir" in volume

    # No TCP listener, no token (the socket is owner-only): probes go through the socket.
    assert "BRIDGE_HOST" not in env(bridge) and "BRIDGE_AUTH_TOKEN_FILE" not in env(bridge)
    assert "grpc" not in port_names(bridge)
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert bridge[probe]["exec"]["command"] == HEALTHCHECK

    if settings["sidecar"]["native"]:
        assert spec["initContainers"] == [bridge] and bridge["restartPolicy"] == "Always"
        assert (
            spec["terminationGracePeriodSeconds"] >= settings["sidecar"]["cloud"]["terminationSeconds"] + 10
        )
    else:
        assert "initContainers" not in spec and bridge in spec["containers"]
    assert {"Service", "HorizontalPodAutoscaler"}.isdisjoint(manifests)
    assert manifests["Deployment"]["spec"]["replicas"] == settings["replicaCount"]


REFUSED = {
    "unknown shape": (["--set", "shape=daemonset"], "shape must be pool or sidecar"),
    "pool without token or mTLS": (["--set", "auth.tokenSecret.name="], "needs auth.tokenSecret.name"),
    "gRPC probe on TLS": (
        ["--set", "tls.secretName=t", "--set", "probes.type=grpc"],
        "cannot check a TLS listener",
    ),
    "gRPC probe on a socket": (["--set", "shape=sidecar", "--set", "probes.type=grpc"], "unix socket"),
    "client CA without cert": (["--set", "tls.clientCA=true"], "tls.clientCA needs tls.secretName"),
    "unknown HPA metric": (["--set", "autoscaling.metric=memory"], "autoscaling.metric must be"),
    "HTTP probe without metrics port": (
        ["--set", "probes.type=http", "--set", "metrics.port=0"],
        "probes the metrics port",
    ),
    "proxy in front of TLS bridges": (["--set", "tls.secretName=t"], "proxy speaks h2c"),
    "proxy without the bridges' /readyz": (
        ["--set", "metrics.port=0", "--set", "probes.type=grpc"],
        "checks each bridge's /readyz",
    ),
    "no proxy replica": (["--set", "proxy.replicas=0"], "proxy.replicas must be at least 1"),
    "native sidecar before 1.29": (
        ["--set", "shape=sidecar", "--kube-version", "1.28.0"],
        "sidecar.native needs Kubernetes >= 1.29",
    ),
}


def helm_template(*args: str) -> subprocess.CompletedProcess[str]:
    """`helm template` of the chart; a later --kube-version overrides the default one."""
    return subprocess.run(
        [
            deploy_env("HELM"),
            "template",
            "x",
            str(CHART),
            "--kube-version",
            deploy_env("KUBE_VERSION"),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_chart_refuses_settings_the_bridge_would_refuse(case: str) -> None:
    args, message = REFUSED[case]
    result = helm_template(*args)
    assert result.returncode != 0
    assert message in result.stderr


def test_sidecar_without_native_renders_on_older_clusters() -> None:
    result = helm_template(
        "--set", "shape=sidecar", "--set", "sidecar.native=false", "--kube-version", "1.28.0"
    )
    assert result.returncode == 0, result.stderr


def test_values_name_every_bridge_setting_they_render() -> None:
    """Every BRIDGE_* variable the chart sets is one the bridge reads, or one issue #13 adds."""
    upcoming = {"BRIDGE_NOFILE"}  # read by the image's entrypoint, not the bridge
    readme = (REPO / "README.md").read_text()
    template = (CHART / "templates/_helpers.tpl").read_text()
    for variable in set(re.findall(r"name: ((?:BRIDGE|LIVEKIT)_[A-Z_]+|PORT)\b", template)):
        assert variable in upcoming or f"`{variable}`" in readme, variable


@pytest.mark.parametrize(
    ("values", "good", "bad"),
    [
        ("pool.yaml", "terminationGracePeriodSeconds:", "terminationGracePeriodSecond:"),
        ("sidecar.yaml", "emptyDir:", "emptyDirectory:"),
    ],
)
def test_manifest_checker_refuses_what_the_api_would(
    values: str, good: str, bad: str, tmp_path: Path
) -> None:
    """`nox -s deploy` decodes every rendered manifest with deploy/helm/check: it must be strict."""
    text = (Path(deploy_env("RENDERED")) / values).read_text()
    assert good in text
    broken = tmp_path / values
    broken.write_text(text.replace(good, bad))
    for path, code in ((Path(deploy_env("RENDERED")) / values, 0), (broken, 1)):
        result = subprocess.run([deploy_env("MANIFEST_CHECK"), str(path)], capture_output=True, text=True)
        assert result.returncode == code, result.stderr
