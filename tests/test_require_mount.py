"""RECORD_REQUIRE_MOUNT: while SSD_PATH is not on a mounted disk the recorder creates nothing
and waits (idle, not stalled, the stream going on), records once a disk is mounted there, and
stops promptly while waiting."""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path

import pytest

from streamer.testing import wait_state
from tests.harness import tmpfs, wait_until
from tests.media import decodes_cleanly, wait_for_chunks

NOT_MOUNTED = (
    r"SSD_PATH (\S+) is on the root file system, not a mounted disk \(RECORD_REQUIRE_MOUNT=1\): "
    r"not recording until it is mounted; the stream goes on"
)


def require_root_file_system(workdir: Path) -> None:
    """SSD_PATH is ``workdir/ssd`` (``tmpfs`` mounts the "SSD" there), with ``workdir`` under
    /tmp. These tests need it to lie on the root file system until the tmpfs is mounted, as an
    SSD's mount point does while the SSD is missing: true where /tmp is a folder of / (checked
    with stat on the machines the suite runs on), not where /tmp is a tmpfs of its own."""
    if os.stat(workdir).st_dev != os.stat("/").st_dev:
        pytest.skip(f"{workdir.parent} is not on the root file system here")


def test_require_mount_waits_without_creating_anything_then_records_once_mounted(workdir, env, start):
    require_root_file_system(workdir)
    env["RECORD_REQUIRE_MOUNT"] = "1"
    ssd = Path(env["SSD_PATH"])
    assert ssd == workdir / "ssd"
    feeder = start("streamer.feeder", env)
    feeder.wait_for("camera is delivering frames")
    recorder = start("streamer.recorder", env)
    (error,) = recorder.wait_for(NOT_MOUNTED)
    assert error.group(1) == str(ssd)
    assert "ERROR" in error.string, error.string
    recorder.check_running("the SSD to be mounted")
    assert not ssd.exists(), list(ssd.rglob("*"))
    assert not recorder.matches("receiving frames")

    with tmpfs(workdir, "64M") as mounted:
        recorder.wait_for(
            rf"SSD_PATH {re.escape(str(ssd))} is on a mounted file system now: recording starts"
        )
        recorder.wait_for("receiving frames")
        wait_until(lambda: list(mounted.glob("0*/image_*.jpg")), 20, "a snapshot on the mounted disk")
        session = wait_for_chunks(mounted, 1)
        assert session.parent == mounted
        assert len(recorder.matches(NOT_MOUNTED)) == 1  # logged once, not at every check
        for proc in (recorder, feeder):
            proc.signal(signal.SIGTERM)
            assert proc.wait() == 0, proc.output
        assert decodes_cleanly(sorted(session.glob("video_*.mp4"))[0]) == ""
    assert not ssd.exists() or not any(ssd.iterdir())  # unmounted: nothing was ever written below it


def test_require_mount_under_the_controller_is_ready_idle_and_stops_promptly(workdir, env, start):
    """Waiting for the disk is the recorder's job then: the stack comes up (stream running),
    the watchdog leaves it alone well past its stall limit, and SIGTERM ends it at once."""
    require_root_file_system(workdir)
    env.update(RECORD_REQUIRE_MOUNT="1", STALL_RECORDER_S="2")
    drone = start("streamer.drone", env)
    up = drone.wait_up(timeout=30)
    assert up.workers["recorder"].ready_at is not None
    drone.wait_for(r"recorder: " + NOT_MOUNTED)

    def idle_past_stall_limit(current) -> bool:
        recorder = current.workers["recorder"]
        return (
            recorder.progress.get("state") == "no-disk"
            and recorder.progress.get("idle") is True
            and recorder.last_report_at is not None
            and recorder.ready_at is not None
            and recorder.last_report_at - recorder.ready_at > 6  # three times STALL_RECORDER_S
        )

    state = wait_state(env, idle_past_stall_limit, 20, "the waiting recorder's reports", drone)
    assert state.restarts == [] and state.workers["recorder"].restarts == 0, state
    assert state.workers["rtsp"].state == "ready"
    assert not Path(env["SSD_PATH"]).exists()

    drone.signal(signal.SIGTERM)
    assert drone.wait(10) == 0, drone.output
    assert "recorder stopped (exited with status 0)" in drone.output
    assert "recorder: stopped while waiting for SSD_PATH" in drone.output
