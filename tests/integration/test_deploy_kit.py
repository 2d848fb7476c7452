"""The operations kit under deploy/ matches what the bridge exports.

- every metric named by the Grafana dashboard or the Prometheus rules is exported by a running
  bridge (a family counts once its HELP/TYPE lines are there; labelled counters with no event yet
  have no sample), and every label value they match on literally is one the bridge really writes;
- the rules pass ``promtool check rules`` and their unit tests (``promtool test rules``);
- every alert has a one-line runbook entry in docs/operations/runbook.md, and the panels the
  runbook names are on the dashboard.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import yaml
from trio_asyncio import aio_as_trio

from bridge._gen.mentra.livekit.bridge import JoinRoomRequest, LeaveRoomRequest
from bridge.testing.ports import free_port
from conftest import running_bridge
from support import participants
from support.flows import join, new_room

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "deploy" / "grafana" / "livekit-bridge.json"
RULES = REPO / "deploy" / "prometheus" / "livekit-bridge-alerts.yml"
RULE_TESTS = REPO / "deploy" / "prometheus" / "livekit-bridge-alerts.test.yml"
RUNBOOK = REPO / "docs" / "operations" / "runbook.md"

# Written by Prometheus itself for every scrape target, never by the bridge.
PROMETHEUS_SERIES = {"up"}
# Labels Prometheus attaches to every series from its scrape config.
TARGET_LABELS = {"job", "instance"}

_KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "bool"}
_KEYWORDS |= {"offset", "inf", "nan", "Inf", "NaN"}
_STRING = r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\''


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression (or a Grafana ``label_values(...)`` query) reads."""
    label_values = re.fullmatch(r"\s*label_values\((.*),\s*\w+\s*\)\s*", expr, re.S)
    if label_values:
        return metric_names(label_values.group(1))
    expr = re.sub(_STRING, '""', expr)
    expr = re.sub(r"\{[^{}]*\}", " ", expr)  # label matchers
    expr = re.sub(r"\[[^\[\]]*\]", " ", expr)  # ranges and subqueries
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", " ", expr)
    names = set()
    for match in re.finditer(r"(?<![\w.$])[A-Za-z_:][\w:]*", expr):
        if expr[match.end() :].lstrip().startswith("("):
            continue  # a function or an aggregation
        if match.group() not in _KEYWORDS:
            names.add(match.group())
    return names


def label_matchers(expr: str) -> Iterator[tuple[str, str, list[str]]]:
    """(metric, label, values) for each literal ``=`` or ``=~"a|b"`` matcher on a named metric."""
    for selector in re.finditer(r"([A-Za-z_:][\w:]*)\s*\{([^{}]*)\}", expr):
        for matcher in re.finditer(r'(\w+)\s*(=~|=|!=|!~)\s*"([^"]*)"', selector.group(2)):
            label, op, value = matcher.groups()
            if op in ("=", "=~") and "$" not in value and label not in TARGET_LABELS:
                values = value.split("|") if op == "=~" else [value]
                if all(re.fullmatch(r"\w+", v) for v in values):
                    yield selector.group(1), label, values


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return data


def panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in board["panels"]:
        yield panel
        yield from panel.get("panels", [])  # collapsed rows keep theirs inside


def dashboard_exprs() -> list[str]:
    board = dashboard()
    exprs = [t["expr"] for p in panels(board) for t in p.get("targets", [])]
    for variable in board["templating"]["list"]:
        query = variable.get("query")
        if variable["type"] == "query":
            exprs.append(query["query"] if isinstance(query, dict) else query)
    return exprs


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text(encoding="utf-8"))["groups"]
    return [rule for group in groups for rule in group["rules"]]


def exported(text: str) -> tuple[set[str], dict[tuple[str, str], set[str]]]:
    """Sample names a scrape can hold (from its TYPE lines and samples), and label values seen."""
    names: set[str] = set()
    for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M):
        if kind == "counter":
            base = name.removesuffix("_total")
            names |= {base + "_total", base + "_created"}
        elif kind in ("histogram", "summary"):
            names |= {name + s for s in ("_bucket", "_sum", "_count", "_created")}
            names.add(name)
        else:
            names.add(name)
    values: dict[tuple[str, str], set[str]] = {}
    for sample in re.finditer(r"^([A-Za-z_:][\w:]*)(?:\{([^}]*)\})? ", text, re.M):
        names.add(sample.group(1))
        for label, value in re.findall(r'(\w+)="([^"]*)"', sample.group(2) or ""):
            values.setdefault((sample.group(1), label), set()).add(value)
    return names, values


def test_metric_names_are_read_from_promql_as_prometheus_would() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (le, method) (rate(a_bucket{job="x", method=~"Join|Leave"}[5m])))'
        " / on (instance) group_left (version) b_info offset 1h > 2e6 * 100"
        ' and min_over_time(c[5m:30s]) unless sum(d) without (queue) or e_total{code="ok"} > bool 1'
    )
    assert metric_names(expr) == {"a_bucket", "b_info", "c", "d", "e_total"}
    assert metric_names('label_values(livekit_bridge_build_info{job="$job"}, instance)') == {
        "livekit_bridge_build_info"
    }
    assert list(label_matchers(expr)) == [
        ("a_bucket", "method", ["Join", "Leave"]),
        ("e_total", "code", ["ok"]),
    ]


def test_the_dashboard_shows_what_operators_need_and_every_alert_has_a_one_line_runbook() -> None:
    board = dashboard()
    assert board["uid"] and board["title"] and board["schemaVersion"] >= 36
    ids = [p["id"] for p in panels(board)]
    assert len(ids) == len(set(ids))
    names = set().union(*map(metric_names, dashboard_exprs()))
    for panel in panels(board):
        if panel["type"] != "row":
            assert panel["targets"] and all(t["expr"].strip() for t in panel["targets"]), panel["title"]
    wanted = {
        "sessions and streams": {"livekit_bridge_sessions", "livekit_bridge_streams"},
        "drops": {"livekit_bridge_cloud_queue_dropped_chunks_total"},
        "lost packets": {"livekit_bridge_data_packets_sequence_total"},
        "RPC latency": {"livekit_bridge_rpc_duration_seconds_bucket"},
        "playback outcomes": {"server_playback_completed_total", "server_playback_failed_total"},
        "first-frame latency": {"server_playback_first_frame_latency_ms_bucket"},
        "memory split": {
            "process_resident_memory_bytes",
            "livekit_bridge_c_heap_bytes",
            "livekit_bridge_python_allocated_blocks",
        },
        "callback backlog": {"livekit_bridge_callback_backlog"},
    }
    for topic, metrics in wanted.items():
        assert metrics <= names, f"the dashboard lacks {topic}: {metrics - names}"

    runbook = RUNBOOK.read_text(encoding="utf-8")
    entries = dict(re.findall(r"^## (\w+)\n(.*?)\n*(?=^## |\Z)", runbook, re.M | re.S))
    alerts = {rule["alert"]: rule for rule in alert_rules()}
    assert set(entries) == set(alerts)
    for alert, rule in alerts.items():
        assert rule["annotations"]["runbook_url"] == f"docs/operations/runbook.md#{alert.lower()}"
        assert rule["annotations"]["summary"] and rule["labels"]["severity"] in ("warning", "critical")
        assert "\n" not in entries[alert].strip() and len(entries[alert]) > 40, f"{alert}: one line"
    titles = {p["title"] for p in panels(board)}
    for named in re.findall(r"\*([^*]+)\*", runbook):
        assert named in titles, f"the runbook names a panel the dashboard lacks: {named}"
    for alert in alerts:
        assert re.search(rf"\b{alert}\b", runbook)


def test_the_rules_pass_promtool_and_fire_only_where_they_should() -> None:
    if shutil.which("promtool") is None:
        if os.environ.get("CI"):  # .ci/run installs it: missing there is a failure, never a skip
            pytest.fail("promtool is not installed (Debian: prometheus)")
        pytest.skip("promtool not installed (Debian: prometheus); CI runs this test")
    checked = subprocess.run(["promtool", "check", "rules", str(RULES)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in checked.stdout + checked.stderr
    tested = subprocess.run(
        ["promtool", "test", "rules", RULE_TESTS.name], cwd=RULE_TESTS.parent, capture_output=True, text=True
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr
    # Every alert has a unit test.
    cases = yaml.safe_load(RULE_TESTS.read_text(encoding="utf-8"))["tests"]
    tested_alerts = {t["alertname"] for case in cases for t in case["alert_rule_test"]}
    assert tested_alerts == {rule["alert"] for rule in alert_rules()}


@pytest.mark.livekit
async def test_every_metric_the_dashboard_and_rules_name_is_exported_by_a_running_bridge(  # type: ignore[no-untyped-def]
    aio_loop, livekit_server
) -> None:
    port = free_port()
    with trio.fail_after(30):
        async with running_bridge(livekit_server, metrics_port=port) as bridge:
            # Enough traffic for the label values the rules match on (a failed and a good join).
            user, room = "ops-user", new_room()
            phone = await aio_as_trio(participants.connect)(
                livekit_server.url, livekit_server.token(user, room)
            )
            assert (await join(bridge, user, room)).success
            bad = await aio_as_trio(bridge.stub.join_room)(
                JoinRoomRequest(user_id="x", token="bad", room_name=room)
            )
            assert not bad.success
            async with httpx.AsyncClient() as client:
                text = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
            await aio_as_trio(bridge.stub.leave_room)(LeaveRoomRequest(user_id=user))
            await aio_as_trio(participants.disconnect)(phone)

    names, values = exported(text)
    sources = {"dashboard": dashboard_exprs(), "rules": [rule["expr"] for rule in alert_rules()]}
    for source, exprs in sources.items():
        assert exprs
        for expr in exprs:
            missing = metric_names(expr) - names - PROMETHEUS_SERIES
            assert not missing, f"{source}: {expr!r} reads {missing}, which the bridge does not export"
            for metric, label, wanted in label_matchers(expr):
                seen = values.get((metric, label), set())
                assert set(wanted) <= seen, f"{source}: {metric}{{{label}}} is never {set(wanted) - seen}"
