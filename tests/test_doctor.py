"""``python -m streamer.doctor`` on this machine: all ✓ with the synthetic camera; a missing
camera, a read-only SSD_PATH and a busy port each a ✗ with its fix (exit status 1); a running
stack's own ports are no problem, and its state and /health are shown."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from streamer import config
from streamer.doctor import camera, machine, stack
from streamer.media import gst
from streamer.testing import free_port, wait_until
from tests.harness import ROOT, settings_for, tmpfs

PYTHON = (sys.executable,)
# Runs a program with ``$0`` (SSD_PATH) read-only, in a mount namespace of its own: root writes
# everywhere a permission allows, but not on a read-only mount; nothing outlives the program.
READ_ONLY = (
    "unshare",
    "--mount",
    "sh",
    "-c",
    'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" && exec "$@"',
)


@dataclass
class Row:
    ok: bool
    detail: str
    fix: str | None = None


@dataclass
class Report:
    status: int
    output: str
    rows: dict[str, Row]

    def failed(self) -> list[str]:
        return [name for name, row in self.rows.items() if not row.ok]


def doctor(
    env: dict[str, str], prefix: Sequence[str] = (), python: Sequence[str] = (sys.executable,)
) -> Report:
    result = subprocess.run(
        [*prefix, *python, "-m", "streamer.doctor"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    rows: dict[str, Row] = {}
    last = None
    for line in result.stdout.splitlines():
        if row := re.match(r"([✓✗]) (\S.*?)  +(.*)$", line):
            last = rows[row.group(2)] = Row(row.group(1) == "✓", row.group(3))
        elif (fix := re.match(r" +fix: (.*)$", line)) and last is not None:
            last.fix = fix.group(1)
    return Report(result.returncode, result.stdout + result.stderr, rows)


def test_all_is_well_with_the_synthetic_camera(env):
    report = doctor(env)
    assert report.status == 0, report.output
    assert report.failed() == []
    for name in ("Python bindings", "GStreamer", "GStreamer elements", "camera", "SSD_PATH", "symlinks"):
        assert name in report.rows, report.output
    for name in ("disk space", "RTSP_PORT", "clock", "sockets", "video group", "stack"):
        assert name in report.rows, report.output
    assert "HTTP_PORT" not in report.rows  # ENABLE_HTTP=0
    assert report.rows["stack"].detail == "not running"
    assert re.search(r"all \d+ checks passed", report.output)


def test_a_missing_camera_a_read_only_ssd_and_a_busy_port_are_each_named_with_their_fix(env, workdir: Path):
    ssd = workdir / "ssd"
    ssd.mkdir()
    env.update(CAMERA="/dev/video9", RTSP_BIND="127.0.0.1")
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", int(env["RTSP_PORT"])))
        squatter.listen()
        report = doctor(env, prefix=(*READ_ONLY, str(ssd)))
    assert report.status == 1, report.output
    assert report.failed() == ["camera", "SSD_PATH", "RTSP_PORT"], report.output
    camera_row, ssd_row, port_row = (report.rows[name] for name in report.failed())
    assert camera_row.detail == "/dev/video9 does not exist"
    assert "plug the camera in" in camera_row.fix
    assert "Read-only file system" in ssd_row.detail
    assert "mount it read-write" in ssd_row.fix
    assert re.search(rf"port {env['RTSP_PORT']} is in use by pid \d+", port_row.detail)
    assert "set RTSP_PORT to a free port" in port_row.fix
    assert "3 of" in report.output and "checks failed: camera, SSD_PATH, RTSP_PORT" in report.output


def test_a_disk_too_small_for_an_hour_of_recording(env, workdir: Path):
    with tmpfs(workdir, "64M"):
        report = doctor(env)
    assert report.status == 1
    assert report.failed() == ["disk space"], report.output
    assert "room for 0.0 h" in report.rows["disk space"].detail
    assert "RECORD_BITRATE" in report.rows["disk space"].fix


def test_the_mavlink_link_a_missing_port_a_busy_udp_port_and_a_tcp_peer_that_is_not_there(env):
    env["MAVLINK_URL"] = "/dev/ttyNOTHERE0:921600"
    report = doctor(env)
    assert report.failed() == ["MAVLINK_URL"], report.output
    assert report.rows["MAVLINK_URL"].detail == "/dev/ttyNOTHERE0 does not exist"
    assert "plug the flight controller in" in report.rows["MAVLINK_URL"].fix
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as squatter:
        squatter.bind(("127.0.0.1", 0))
        env["MAVLINK_URL"] = f"udpin:127.0.0.1:{squatter.getsockname()[1]}"
        report = doctor(env)
    assert report.failed() == ["MAVLINK_URL"], report.output
    assert "cannot listen on UDP" in report.rows["MAVLINK_URL"].detail
    env["MAVLINK_URL"] = f"tcp:127.0.0.1:{free_port()}"
    report = doctor(env)
    assert report.failed() == ["MAVLINK_URL"], report.output
    assert "Connection refused" in report.rows["MAVLINK_URL"].detail
    env["MAVLINK_URL"] = "udpout:127.0.0.1:14550"
    report = doctor(env)
    assert report.status == 0 and report.rows["MAVLINK_URL"].ok, report.output


def test_a_device_that_is_not_a_camera(env):
    env.update(CAMERA="/dev/null")
    report = doctor(env)
    assert report.failed() == ["camera"], report.output
    assert report.rows["camera"].detail == "/dev/null is not a V4L2 device"


def test_a_python_without_gstreamers_bindings(env):
    """-S: no site-packages, so no PyGObject (as with a venv made without the system's)."""
    report = doctor(env, python=(sys.executable, "-S"))
    assert report.status == 1
    assert report.failed() == ["Python bindings"], report.output
    assert "No module named 'gi'" in report.rows["Python bindings"].detail
    assert "scripts/setup" in report.rows["Python bindings"].fix
    assert report.rows["camera"].ok  # what needs no GStreamer is still checked


def test_bad_settings_stop_it_as_they_stop_the_stack(env):
    env.update(VIDEO_FPS="fast")
    report = doctor(env)
    assert report.status == config.EXIT_CONFIG
    assert "doctor: configuration error: VIDEO_FPS='fast'" in report.output


def test_the_running_stacks_own_ports_and_state(env, start):
    drone = start("streamer.drone", env)
    current = drone.wait_up()
    report = doctor(env)
    assert report.status == 0, report.output
    rtsp_pid = current.workers["rtsp"].pid
    assert (
        report.rows["RTSP_PORT"].detail
        == f"port {env['RTSP_PORT']} is held by the running stack: rtsp (pid {rtsp_pid})"
    )
    assert report.rows["stack"].detail.startswith("up for ")
    assert f"(pid {drone.pid})" in report.rows["stack"].detail


def test_the_running_stacks_health(env, start):
    """With the HTTP API on, the doctor shows /health (once the stack is up, 200)."""
    env.update(ENABLE_HTTP="1")
    drone = start("streamer.drone", env)
    drone.wait_up()

    def healthy() -> Report | None:
        report = doctor(env)
        return report if report.status == 0 else None

    report = wait_until(healthy, 30, "the doctor to find the stack healthy")
    assert report.rows["HTTP_PORT"].detail.startswith(
        f"port {env['HTTP_PORT']} is held by the running stack: web"
    )
    assert report.rows["health"].detail.startswith(f"http://127.0.0.1:{env['HTTP_PORT']}/health: 200")


def test_no_answer_from_health_is_a_failure_not_a_crash(env):
    env.update(ENABLE_HTTP="1", HTTP_PORT=str(free_port()))
    row = stack.health(settings_for(env))
    assert not row.ok
    assert "no answer (Connection refused)" in row.detail


def test_a_clock_that_was_never_set():
    row = machine.clock(now=time.mktime((2000, 1, 1, 0, 0, 0, 0, 0, 0)))
    assert not row.ok
    assert "2000-01-01" in row.detail and "timedatectl set-ntp true" in row.fix


# --- camera modes, as GStreamer's v4l2src describes them


CAMERA_CAPS = (
    "image/jpeg, width=(int)1920, height=(int)1080, framerate=(fraction){ 30/1, 15/1 }; "
    "image/jpeg, width=(int)1280, height=(int)720, framerate=(fraction){ 60/1, 30/1, 15/1 }; "
    "image/jpeg, width=(int)640, height=(int)480, framerate=(fraction)30/1; "
    "video/x-raw, format=(string)YUY2, width=(int)1280, height=(int)720, framerate=(fraction)10/1; "
    "video/x-raw, format=(string)NV12, width=(int)[ 16, 4096 ], height=(int)[ 16, 2160 ], "
    "framerate=(fraction)[ 1/1, 30/1 ]"
)


def modes() -> list[camera.Mode]:
    return camera.parse_modes(gst.describe_caps(gst.Gst.Caps.from_string(CAMERA_CAPS)))


def test_camera_modes_are_read_from_gstreamers_description():
    assert [mode.describe() for mode in modes()] == [
        "MJPEG 1920x1080 at 30, 15 fps",
        "MJPEG 1280x720 at 60, 30, 15 fps",
        "MJPEG 640x480 at 30 fps",
        "YUY2 1280x720 at 10 fps",
        "NV12 16-4096x16-2160 at 1-30 fps",
    ]
    assert modes()[1].offers(1280, 720, 30)
    assert not modes()[1].offers(1280, 720, 25)
    assert not modes()[4].offers(1280, 720, 30)  # not MJPEG: the feeder cannot take it


@pytest.mark.parametrize(
    ("width", "height", "fps", "first"),
    [
        (1280, 720, 25, "MJPEG 1280x720 at 60, 30, 15 fps"),  # same size, another rate
        (1920, 1080, 60, "MJPEG 1920x1080 at 30, 15 fps"),
        (800, 600, 30, "MJPEG 640x480 at 30 fps"),  # nearest in size and shape
    ],
)
def test_the_offered_modes_come_closest_first_mjpeg_before_raw(width, height, fps, first):
    ranked = [mode.describe() for mode in camera.closest_first(modes(), width, height, fps)]
    assert ranked[0] == first
    assert ranked[-2:] == ["NV12 16-4096x16-2160 at 1-30 fps", "YUY2 1280x720 at 10 fps"]  # raw: last
