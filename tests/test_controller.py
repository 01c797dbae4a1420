"""The controller with real workers: start order, watchdog restarts, clean shutdown, backoff."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

from streamer.control.policies import SETTLE_S
from streamer.testing import alive, stack_state, wait_until
from tests.harness import ShmReader, settings_for


def test_killed_feeder_restarts_the_stack_and_sigterm_leaves_nothing(env, start, workdir: Path):
    drone = start("streamer.drone", env)
    up = drone.wait_up()
    first = up.workers["feeder"].pid
    assert first is not None

    os.kill(first, signal.SIGKILL)
    drone.wait_for(r"feeder killed by SIGKILL: stopping the stack")
    drone.wait_for(rf"removed leaked shared memory .*shmpipe\.\s*{first}\.")
    drone.wait_for("restarting the stack in")
    up = drone.wait_up(after=up)
    second = up.workers["feeder"].pid
    assert second not in (None, first)
    assert up.workers["feeder"].restarts == 1
    (restart,) = up.restarts
    assert (restart.scope, restart.reason) == ("stack", "feeder killed by SIGKILL"), restart

    # The restarted feeder serves frames on the configured paths again.
    reader = ShmReader(settings_for(env), env["SHM_STREAM_SOCKET"]).start()
    try:
        wait_until(lambda: len(reader.arrivals) >= 5, 10, "frames after the restart")
    finally:
        reader.stop()

    drone.signal(signal.SIGTERM)
    assert drone.wait() == 0
    assert not alive(second)
    assert "feeder stopped (exited with status 0)" in drone.output
    assert not list(workdir.glob("*.sock*"))
    # every line the feeder logged was relayed under its name
    assert re.search(r"INFO +feeder: camera is delivering frames", drone.output)


def test_sigint_stops_cleanly(env, start):
    drone = start("streamer.drone", env)
    feeder = drone.wait_up().workers["feeder"].pid
    drone.signal(signal.SIGINT)
    assert drone.wait() == 0
    assert feeder is not None and not alive(feeder)
    assert stack_state(env) is None  # the published state goes with the controller


def test_missing_camera_retries_with_growing_pauses(env, start):
    env.update(CAMERA="/dev/video77", RESTART_DELAY_MIN_S="0.1", RESTART_DELAY_MAX_S="0.8")
    drone = start("streamer.drone", env)
    delays = [
        float(m.group(1)) for m in drone.wait_for(r"restarting the stack in ([\d.]+) s", count=6, timeout=30)
    ]
    assert "feeder: camera /dev/video77 does not exist" in drone.output
    assert delays[:5] == [0.1, 0.2, 0.4, 0.8, 0.8]
    drone.signal(signal.SIGTERM)
    assert drone.wait() == 0


def test_refuses_to_start_over_a_running_stack(env, start):
    first = start("streamer.drone", env)
    first.wait_up()
    second = start("streamer.drone", env)
    assert second.wait() == 1
    first_pid = first.popen.pid
    assert re.search(rf"cannot start: another stack \(pid {first_pid}\) holds .*rec.sock.lock", second.output)
    # ...and the running stack is untouched, its published state too
    assert first.popen.poll() is None
    published = stack_state(env)
    assert published is not None and published.controller_pid == first_pid
    first.signal(signal.SIGTERM)
    assert first.wait() == 0


def test_refuses_a_socket_or_port_held_by_a_foreign_process(env, start, workdir: Path):
    import socket

    with socket.socket(socket.AF_UNIX) as foreign:
        foreign.bind(env["SHM_STREAM_SOCKET"])
        foreign.listen()
        drone = start("streamer.drone", env)
        assert drone.wait() == 1
        assert re.search(r"cannot start: .*str.sock is being served by another process", drone.output)
    os.unlink(env["SHM_STREAM_SOCKET"])
    with socket.socket() as foreign:
        foreign.bind(("127.0.0.1", int(env["RTSP_PORT"])))
        foreign.listen()
        drone = start("streamer.drone", env)
        assert drone.wait() == 1
        assert f"cannot start: RTSP port {env['RTSP_PORT']} is in use by another process" in drone.output
    assert not list(workdir.glob("*.lock"))
    assert stack_state(env) is None


def test_a_worker_rejecting_its_configuration_stops_the_controller(env, start, workdir: Path):
    """Settings are checked once at start, but a file they name can change under a running
    stack. A worker that then exits 2 (configuration error) stops the controller with 2:
    restarting could only loop."""
    passwords = workdir / "passwords"
    passwords.write_text("pilot:secret\n")
    passwords.chmod(0o600)
    env.update(RTSP_PASSWORD_FILE=str(passwords))
    drone = start("streamer.drone", env)
    drone.wait_up()
    passwords.unlink()
    os.kill(drone.worker_pid("rtsp"), signal.SIGKILL)
    assert drone.wait(30) == 2
    assert re.search(r"feeder rejected the configuration \(exit status 2\): not restarting", drone.output)
    assert "RTSP_PASSWORD_FILE" in drone.output  # the worker's own one-line reason is relayed


def test_a_python_without_gstreamer_stops_at_once_with_the_way_out(env, start, workdir: Path):
    """``python3 -m streamer.drone`` with an interpreter lacking GStreamer's bindings (pyenv's, or
    a venv made without --system-site-packages) must not start workers that die on import and
    restart forever: one line, exit status 2."""
    bare = workdir / "bare-venv"
    subprocess.run(["/usr/bin/python3", "-m", "venv", "--without-pip", str(bare)], check=True)
    drone = start("streamer.drone", env, python=str(bare / "bin" / "python"))
    assert drone.wait() == 2
    assert re.fullmatch(
        r"drone: .*bare-venv/bin/python cannot run the workers: GStreamer's Python bindings are not "
        r"usable \(ModuleNotFoundError: No module named 'gi'\); start the stack with scripts/run, or "
        r"with \.venv/bin/python -m streamer\.drone",
        drone.output.strip(),
    ), drone.output
    assert stack_state(env) is None  # nothing was started


def test_lone_failures_restart_after_the_shortest_pause_a_crash_loop_backs_off(env, start):
    """Failures of a stack that had settled are each restarted after RESTART_DELAY_MIN_S; failures
    right after the stack came up are a crash loop and back off."""
    env.update(RESTART_DELAY_MIN_S="0.2", RESTART_DELAY_MAX_S="5")
    drone = start("streamer.drone", env)
    up = drone.wait_up()

    def kill_rtsp(settled: bool) -> None:
        nonlocal up
        if settled:  # up and progressing for the settle time
            settled_at = up.up_since + SETTLE_S + 0.5
            wait_until(lambda: time.time() >= settled_at, SETTLE_S + 5, "the stack to settle")
        os.kill(up.workers["rtsp"].pid, signal.SIGKILL)
        up = drone.wait_up(after=up)

    for settled in (True, True, False, False):
        kill_rtsp(settled)
    assert [(r.reason, r.delay_s) for r in up.restarts] == [
        ("rtsp killed by SIGKILL", 0.2),  # lone
        ("rtsp killed by SIGKILL", 0.2),  # lone again: the first is not held against it
        ("rtsp killed by SIGKILL", 0.4),  # within the settle time after that restart: a loop
        ("rtsp killed by SIGKILL", 0.8),  # and it goes on
    ], up.restarts
    drone.signal(signal.SIGTERM)
    assert drone.wait() == 0
