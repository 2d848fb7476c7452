"""bridge.threads splits CPU time by thread group and keeps the time of threads that have exited."""

from __future__ import annotations

import os
import sys
import threading
import time

import pytest

from bridge import threads
from bridge.threads import GROUPS, ThreadCpu, group_of

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/task")


def test_groups_follow_the_kernel_thread_names_seen_in_a_bridge() -> None:
    def group(tid: int, name: str) -> str:
        return group_of(tid, name, pid=100, main_name="livekit-bridge")

    assert group(100, "livekit-bridge") == "python_main"
    assert group(101, "livekit-bridge") == "python_other"
    assert group(102, "Trio thread 3") == "python_other"
    assert group(103, "tokio-rt-worker") == "tokio"
    assert group(104, "network_thread") == "webrtc_network"
    assert group(105, "worker_thread 0") == "webrtc_worker"
    assert group(106, "signaling_threa") == "webrtc_signaling"
    assert group(107, "AudioEncoderQue") == "other"


def _burn(seconds: float) -> None:
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def test_cpu_of_a_named_thread_is_counted_in_its_group_and_kept_after_it_exits(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The SDK's own tokio threads (earlier tests started some) come and go on their own: this test's
    # thread is the only one in the "tokio" group here, so the counts are exact.
    def only_ours(tid: int, name: str, *, pid: int, main_name: str) -> str:
        if name == "lkb-test-burn":
            return "tokio"
        group = group_of(tid, name, pid=pid, main_name=main_name)
        return "other" if group == "tokio" else group

    monkeypatch.setattr(threads, "group_of", only_ours)
    cpu = ThreadCpu()
    before_s, before_n = cpu.read()
    assert set(before_s) == set(GROUPS) and before_n["python_main"] == 1 and before_n["tokio"] == 0
    burnt, release = threading.Event(), threading.Event()
    native_ids: list[int] = []

    def worker() -> None:
        native_ids.append(threading.get_native_id())
        # Name this OS thread (its kernel "comm", what /proc shows), as native runtimes do.
        with open(f"/proc/self/task/{threading.get_native_id()}/comm", "w") as f:
            f.write("lkb-test-burn")
        _burn(0.3)
        burnt.set()
        release.wait()

    thread = threading.Thread(target=worker)
    thread.start()
    try:
        assert burnt.wait(10)
        during_s, during_n = cpu.read()
    finally:
        release.set()
        thread.join()
    # join() returns when Python's side is done; the OS thread leaves /proc a moment later.
    task = f"/proc/self/task/{native_ids[0]}"
    deadline = time.monotonic() + 5
    while os.path.exists(task) and time.monotonic() < deadline:
        time.sleep(0.01)
    after_s, after_n = cpu.read()
    assert during_n["tokio"] == 1 and during_s["tokio"] >= 0.25
    assert after_n["tokio"] == 0
    # The exited thread's time stays: the counter never goes backwards.
    assert after_s["tokio"] == during_s["tokio"]
    for group in GROUPS:
        assert after_s[group] >= before_s[group]


def test_main_thread_cpu_is_python_main() -> None:
    cpu = ThreadCpu()
    before, _ = cpu.read()
    _burn(0.2)
    after, _ = cpu.read()
    assert after["python_main"] - before["python_main"] >= 0.15
    assert os.getpid() == threading.get_native_id()
