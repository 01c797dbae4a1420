"""Supervisor pieces without GStreamer: restart policy on a fake clock, process-group stops."""

from __future__ import annotations

import logging
import os
import time

from streamer.control.children import Child, ChildSet, WorkerSpec
from streamer.control.policies import ProgressWatch, RestartPolicy
from tests.harness import wait_until


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_pauses_grow_then_cap_then_reset_after_a_healthy_run():
    clock = FakeClock()
    policy = RestartPolicy(1.0, 8.0, healthy_after_s=30.0, clock=clock)
    delays = []
    for _ in range(6):
        policy.started()
        clock.now += 0.5  # fails quickly
        delays.append(policy.failed())
    assert delays == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    policy.started()
    clock.now += 31.0  # a healthy run
    assert policy.failed() == 1.0


def test_failures_are_counted_in_a_sliding_window():
    clock = FakeClock()
    policy = RestartPolicy(1.0, 100.0, window_s=60.0, healthy_after_s=1000.0, clock=clock)
    delays = []
    for _ in range(4):  # a failure every 25 s: never healthy, but old ones leave the window
        policy.started()
        clock.now += 25.0
        delays.append(policy.failed())
    assert delays == [1.0, 2.0, 4.0, 4.0]
    assert policy.failures == 3


def test_progress_watch_tells_frozen_from_stuck_from_idle():
    clock = FakeClock()
    watch = ProgressWatch(3.0, clock=clock)
    watch.observe({"event": "ready"})
    for frames in (10, 40, 70):  # healthy: frames grow with every report
        clock.now += 1.0
        watch.observe({"event": "progress", "frames": frames})
        assert watch.stalled() is None
    for _ in range(3):  # alive, reporting, but no new frames
        clock.now += 1.0
        watch.observe({"event": "progress", "frames": 70})
    clock.now += 0.5
    assert watch.stalled() == "no frames for 3.5 s"

    watch.restart()
    for _ in range(10):  # idle (no viewers, disk full): no frames expected
        clock.now += 1.0
        watch.observe({"event": "progress", "frames": 0, "idle": True, "state": "disk-full"})
    assert watch.stalled() is None and watch.state == "disk-full"

    clock.now += 3.5  # frozen: no reports at all (e.g. SIGSTOP)
    assert watch.stalled() == "no report for 3.5 s"


def test_stop_reaches_the_whole_group_and_kills_what_ignores_sigterm(tmp_path, caplog, monkeypatch):
    """A worker that ignores SIGTERM and has a child of its own: both are gone after stop."""
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "stubborn_worker.py").write_text(
        "import signal, subprocess, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "child = subprocess.Popen(['sleep', '600'])\n"
        "print('INFO grandchild', child.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    children = ChildSet()
    caplog.set_level(logging.INFO)
    child = Child.spawn(WorkerSpec("stubborn", "stubborn_worker"))
    children.add(child)
    wait_until(lambda: (children.pump(0.05), "grandchild" in caplog.text)[1], 10, "the worker's log line")
    grandchild = int(caplog.text.split("grandchild ")[1].split()[0])

    started = time.monotonic()
    ((stopped, ending),) = children.stop([[child]], grace_s=0.5)
    assert stopped is child and ending == "killed by SIGKILL"
    assert time.monotonic() - started < 10
    assert "did not stop within 0.5 s of SIGTERM, sending SIGKILL" in caplog.text
    wait_until(lambda: not os.path.exists(f"/proc/{grandchild}"), 5, "the grandchild to be gone")


def test_unknown_worker_output_is_relayed_as_warning(caplog):
    children = ChildSet()
    caplog.set_level(logging.INFO)
    child = Child.spawn(WorkerSpec("nonexistent", "streamer.no_such_module"))
    children.add(child)
    wait_until(lambda: (children.pump(0.05), child.has_exited())[1], 10, "the child to exit")
    ((_child, ending),) = children.stop([[child]], grace_s=1)
    assert ending == "exited with status 1"
    relayed = [r for r in caplog.records if r.name == "nonexistent"]
    assert any("No module named streamer.no_such_module" in r.getMessage() for r in relayed)
    assert all(r.levelno == logging.WARNING for r in relayed)
