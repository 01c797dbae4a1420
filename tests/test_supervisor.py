"""Supervisor pieces without GStreamer: restart policy on a fake clock, process-group stops, the
published state."""

from __future__ import annotations

import logging
import os
import time

import pytest

from streamer.control.children import Child, ChildSet, WorkerSpec
from streamer.control.policies import ProgressWatch, RestartPolicy
from streamer.control.publisher import StatePublisher
from streamer.runtime import state
from tests.harness import wait_until


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def fail_after(policy: RestartPolicy, clock: FakeClock, up_s: float | None, start_s: float = 2.0) -> float:
    """One run: started, ready after ``start_s`` (unless ``up_s`` is None), failed ``up_s`` later."""
    policy.started()
    clock.now += start_s
    if up_s is not None:
        policy.ready()
        clock.now += up_s
    return policy.failed()


def test_lone_failures_of_a_settled_stack_restart_after_the_shortest_pause():
    """Kills 12-15 s apart of a healthy stack: each restarts after the minimum, not a growing pause."""
    clock = FakeClock()
    policy = RestartPolicy(1.0, 30.0, settle_s=10.0, clock=clock)
    delays = [fail_after(policy, clock, up_s) for up_s in (12.0, 10.0, 15.0, 13.0, 11.0)]
    assert delays == [1.0] * 5
    assert policy.failures == 1


def test_a_crash_loop_backs_off_to_the_cap_and_a_settled_run_clears_it():
    clock = FakeClock()
    policy = RestartPolicy(1.0, 8.0, settle_s=10.0, clock=clock)
    # never ready (a missing camera): the pause doubles up to the cap
    assert [fail_after(policy, clock, None) for _ in range(6)] == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    assert fail_after(policy, clock, 10.0) == 1.0  # ready and settled: the count is cleared
    assert fail_after(policy, clock, 10.0) == 1.0


def test_a_failure_within_the_settle_time_after_ready_counts_as_a_crash_loop():
    clock = FakeClock()
    policy = RestartPolicy(1.0, 30.0, settle_s=10.0, clock=clock)
    assert [fail_after(policy, clock, up_s) for up_s in (5.0, 9.9, 0.5, 9.0)] == [1.0, 2.0, 4.0, 8.0]
    assert fail_after(policy, clock, 10.0) == 1.0


def test_time_stalled_does_not_count_as_settled():
    """A stall is seen only after its limit: a run that stalled right after ready is not settled."""
    clock = FakeClock()
    policy = RestartPolicy(1.0, 30.0, settle_s=10.0, clock=clock)
    assert fail_after(policy, clock, None) == 1.0
    policy.started()
    policy.ready()
    clock.now += 21.0
    assert policy.failed(quiet_s=20.0) == 2.0  # progressed for 1 s only
    policy.started()
    policy.ready()
    clock.now += 31.0
    assert policy.failed(quiet_s=20.0) == 1.0  # progressed for 11 s, then stalled


def test_crash_loop_failures_leave_the_window():
    clock = FakeClock()
    policy = RestartPolicy(1.0, 100.0, window_s=60.0, settle_s=10.0, clock=clock)
    # a failure every 25 s, each before ready: never settled, but old ones leave the window
    assert [fail_after(policy, clock, None, start_s=25.0) for _ in range(4)] == [1.0, 2.0, 4.0, 4.0]
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
    assert watch.quiet_s() == 2.5  # not progressing, beyond the usual second between reports


def test_an_excused_worker_is_not_stalled_for_want_of_frames_but_still_for_want_of_reports():
    """A reader of the feeder while the feeder waits for its unplugged camera (the controller
    excuses it on every turn): no frames expected, but its reports must still come."""
    clock = FakeClock()
    watch = ProgressWatch(3.0, clock=clock)
    watch.observe({"event": "progress", "frames": 70})
    for _ in range(10):  # reporting, no new frames, excused on each turn
        clock.now += 1.0
        watch.observe({"event": "progress", "frames": 70})
        watch.excuse()
        assert watch.stalled() is None
    for step in (1.0, 1.0, 1.0, 0.5):  # no longer excused (the camera is back), no frames
        clock.now += step
        watch.observe({"event": "progress", "frames": 70})
    assert watch.stalled() == "no frames for 3.5 s"
    for _ in range(4):  # excused, but frozen: no report
        clock.now += 1.0
        watch.excuse()
    assert watch.stalled() == "no report for 4.0 s"


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


def test_the_state_is_published_on_changes_and_progress_at_most_once_a_second(tmp_path, caplog):
    clock = FakeClock()
    path = str(tmp_path / "rec.sock.state.json")
    published = StatePublisher(path, logging.getLogger("test"), clock=clock)
    published.worker_started("feeder", 123)
    assert state.read(path) is None  # not before the lock is ours
    published.start()
    assert state.read(path).workers["feeder"].state == state.STARTING

    published.worker_reported("feeder", {"event": "ready"})
    published.stack(state.UP)
    seen = state.read(path)
    assert (seen.state, seen.workers["feeder"].state, seen.workers["feeder"].pid) == ("up", "ready", 123)
    assert seen.up_since is not None and seen.workers["feeder"].ready_at is not None

    published.worker_reported("feeder", {"event": "progress", "frames": 30, "idle": False})
    published.tick()
    assert state.read(path).workers["feeder"].progress == {}  # too soon after the last write
    clock.now += 0.5
    published.tick()
    feeder = state.read(path).workers["feeder"]
    assert feeder.progress == {"frames": 30, "idle": False} and feeder.last_report_at is not None

    published.worker_started("recorder", 124)
    published.worker_failed("feeder", "killed by SIGKILL")
    published.stack(state.RESTARTING)
    published.worker_stopped("feeder")
    published.worker_stopped("recorder")
    published.restarted("stack", "feeder killed by SIGKILL", 1.0, state.KILLED)
    published.stack(state.STARTING)
    published.worker_started("feeder", 456)
    published.worker_started("recorder", 457)
    seen = state.read(path)
    feeder, recorder = seen.workers["feeder"], seen.workers["recorder"]
    assert (feeder.pid, feeder.restarts, feeder.last_problem, feeder.progress) == (
        456,
        1,
        "killed by SIGKILL",
        {},
    )
    # The failed worker is counted under its own cause, the others under the stack's restart.
    assert feeder.restarts_by_cause == {state.KILLED: 1} and recorder.restarts_by_cause == {state.STACK: 1}
    assert [(r.scope, r.reason, r.delay_s, r.cause) for r in seen.restarts] == [
        ("stack", "feeder killed by SIGKILL", 1.0, state.KILLED)
    ]
    assert seen.up_since is None

    published.finish()
    assert not os.path.exists(path) and os.listdir(tmp_path) == []


def test_publishing_errors_are_logged_once_and_a_refused_stack_removes_nothing(tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    published = StatePublisher(str(tmp_path / "missing" / "x.state.json"), logging.getLogger("test"))
    published.start()
    published.worker_started("feeder", 1)
    published.stack(state.UP)
    assert caplog.text.count("cannot publish the stack's state") == 1
    published.finish()

    other = tmp_path / "rec.sock.state.json"
    other.write_text("{}")  # another stack's
    StatePublisher(str(other), logging.getLogger("test")).finish()  # never started: not ours
    assert other.exists()


@pytest.mark.parametrize(
    ("problem", "cause"),
    [
        ("exited with status 1", state.EXITED),
        ("killed by SIGKILL", state.KILLED),
        ("stalled (no report for 20.1 s)", state.STALLED),
        ("was not ready within 15 s", state.NOT_READY),
    ],
)
def test_every_problem_the_controller_words_has_a_fixed_cause(problem, cause):
    assert state.cause_of(problem) == cause
