"""The fake webcam (tests/fakecam) against the real v4l2src: it must behave like a UVC webcam,
and each of its faults must do what it says, before the stack's tests can rely on it.

Every check runs GStreamer in a child process that has the fake camera preloaded
(``tests/fakecam/probe.py``); this process never is. The children stream small modes for a few
seconds at nice 19.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

import pytest

from streamer.testing import wait_until
from tests import fakecam
from tests.fakecam import Faults

DEVICE = fakecam.DEFAULT_DEVICE
BY_ID = "/dev/v4l/by-id/usb-Fakecam_Fakecam_Webcam_0001-video-index0"
SMALL = "image/jpeg,width=320,height=240,framerate=30/1"


@pytest.fixture(scope="session", autouse=True)
def library() -> Path:
    """Built once per session; without a compiler or the libjpeg headers these tests skip, saying
    what to install."""
    try:
        return fakecam.library()
    except fakecam.FakecamUnavailable as err:
        pytest.skip(str(err))


def probe(*args: str, timeout: float = 60, **camera) -> dict:
    """Runs ``probe.py ARGS`` with the fake camera preloaded; its JSON answer."""
    env = fakecam.fake_camera_env(**camera)
    result = subprocess.run(
        [sys.executable, str(fakecam.PROBE), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    lines = result.stdout.strip().splitlines()
    assert result.returncode == 0 and lines, f"probe {args} failed:\n{result.stdout}\n{result.stderr}"
    return json.loads(lines[-1])


def stream(device: str = DEVICE, caps: str = SMALL, seconds: float = 3, *more: str, **camera) -> list[dict]:
    return probe("stream", device, caps, str(seconds), *more, **camera)["phases"]


def frames(phase: dict) -> list[int]:
    return [buffer["frame"] for buffer in phase["buffers"]]


def camera_rate(buffers: Sequence[dict]) -> float:
    """Frames per second the camera produced over ``buffers``: frame numbers over buffer times
    (PTS from the driver's timestamps), so a frame this loaded machine dropped does not count
    against the camera."""
    return (buffers[-1]["frame"] - buffers[0]["frame"]) / (buffers[-1]["pts"] - buffers[0]["pts"])


def not_negotiated(phase: dict) -> bool:
    return any("not-negotiated" in error["debug"] for error in phase["errors"])


# -- Building and the environment ------------------------------------------------------------


def test_the_library_compiles_without_warnings() -> None:
    assert fakecam.compiler_warnings() == ""


def test_the_environment_preloads_the_camera_and_never_libv4l2(library: Path) -> None:
    base = {"PATH": "/usr/bin", "GST_V4L2_USE_LIBV4L2": "1", "LD_PRELOAD": "/usr/lib/other.so"}
    env = fakecam.fake_camera_env(
        "/dev/video7", ["mjpeg:640x480@30/15", "yuyv:320x240@30"], Faults(truncate_every=30), base=base
    )
    assert env["LD_PRELOAD"] == f"{library}:/usr/lib/other.so"
    assert "GST_V4L2_USE_LIBV4L2" not in env
    assert env["FAKECAM_DEVICE"] == "/dev/video7"
    assert env["FAKECAM_MODES"] == "mjpeg:640x480@30/15,yuyv:320x240@30"
    assert env["FAKECAM_FAULTS"] == "truncate=30"
    assert env["FAKECAM_STAMP"] == "0" and fakecam.fake_camera_env(stamp=True)["FAKECAM_STAMP"] == "1"
    assert "libfakecam" not in os.environ.get("LD_PRELOAD", ""), "the test process must not be preloaded"


def test_faults_are_spelled_as_the_library_reads_them() -> None:
    faults = Faults(
        corrupt_every=10,
        slow_rate=15,
        slow_after=90,
        unplug_after=60,
        replug_after_s=1.5,
        replug_node="/dev/video43",
        dead=("1280x720@15",),
        error_flag=True,
    )
    assert (
        str(faults) == "corrupt=10,slow=15@90,unplug=60,replug=1.5@/dev/video43,dead=1280x720@15,errorflag=1"
    )
    assert str(Faults(stall_after=0)) == "stall=0"


def test_a_wrong_setting_stops_the_preloaded_program_with_its_name() -> None:
    env = fakecam.fake_camera_env(faults="truncate=often")
    result = subprocess.run(["true"], env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "FAKECAM_FAULTS" in result.stderr and "often" in result.stderr


# -- A webcam as programs see it ---------------------------------------------------------------


def test_the_device_path_is_a_character_device_and_by_id_names_link_to_it() -> None:
    seen = probe("exists", BY_ID, links=[BY_ID])
    assert seen == {
        "exists": True,
        "is_char_device": True,
        "is_link": True,
        "realpath": DEVICE,
        "access": True,
    }
    assert probe("exists", "/dev/video43") == {"exists": False, "is_char_device": False, "access": False}


def test_it_answers_like_a_uvc_driver() -> None:
    answers = probe("ioctls", DEVICE)
    assert answers["driver"] == "uvcvideo"
    assert answers["device_caps"] & 0x1 and answers["device_caps"] & 0x04000000  # capture, streaming
    assert answers["g_ctrl"] == answers["queryctrl"] == "EINVAL"  # a control it does not have
    assert answers["g_std"] == "ENOTTY"  # an ioctl it does not know
    assert answers["read"] == "EINVAL"  # no read() I/O, as uvcvideo


def test_v4l2src_lists_the_modes_as_caps() -> None:
    offered = probe("caps", DEVICE, modes="mjpeg:640x480@30/15,mjpeg:1280x720@30,yuyv:320x240@30/15")["caps"]
    described = sorted(re.sub(r"\(\w+\)", "", caps).replace(" ", "").rstrip(";") for caps in offered)
    assert described == [
        "image/jpeg,width=1280,height=720,framerate=30/1",
        "image/jpeg,width=640,height=480,framerate={30/1,15/1}",
        "video/x-raw,format=YUY2,width=320,height=240,framerate={30/1,15/1}",
    ], offered


def test_mjpeg_at_320x240_streams_30_fps_of_distinct_frames() -> None:
    (phase,) = stream(seconds=3)
    assert not phase["errors"], phase["errors"]
    buffers = phase["buffers"]
    assert len(buffers) >= 75, f"{len(buffers)} frames in 3 s"
    assert camera_rate(buffers) == pytest.approx(30, rel=0.02)
    decoded = [frame["frame"] for frame in phase["decoded"]]
    assert len(decoded) == len(set(decoded)) >= 75, (
        "decoded frames must differ (their number is drawn in them)"
    )
    assert decoded == frames(phase)[: len(decoded)], "the number drawn is the number in the JPEG comment"
    assert all(buffer["complete"] and buffer["fault"] is None for buffer in buffers)


def test_a_raw_yuyv_mode_streams() -> None:
    (phase,) = stream(
        DEVICE, "video/x-raw,format=YUY2,width=320,height=240,framerate=15/1", 2, modes="yuyv:320x240@30/15"
    )
    assert not phase["errors"], phase["errors"]
    decoded = [frame["frame"] for frame in phase["decoded"]]
    assert len(decoded) >= 20 and decoded == sorted(set(decoded)), decoded
    assert {buffer["size"] for buffer in phase["buffers"]} == {320 * 240 * 2}


def test_a_stamped_frame_carries_its_capture_time_for_the_stacks_reader() -> None:
    """With ``stamp=True`` every frame carries the capture-time stamp ``streamer.media.stamp``
    reads (probe.py reads it with that module as each frame is decoded): a stamp within ~100 ms
    of the wall clock, never in the future, and the frame number still readable below it."""
    (phase,) = stream(DEVICE, SMALL, 2, "--stamped", stamp=True)
    assert not phase["errors"], phase["errors"]
    decoded = phase["decoded"]
    ages = [frame["stamp_age_ms"] for frame in decoded if frame["stamp_age_ms"] is not None]
    assert len(decoded) >= 40 and len(ages) == len(decoded), f"{len(ages)} of {len(decoded)} stamps read"
    assert min(ages) >= -2, "a stamp in the future: not the capture time on the wall clock"
    assert sorted(ages)[len(ages) // 2] < 100, ages
    numbers = [frame["frame"] for frame in decoded]
    assert numbers == sorted(set(numbers)) and numbers == frames(phase)[: len(numbers)]


@pytest.mark.parametrize(
    "caps",
    ["image/jpeg,width=800,height=600,framerate=30/1", "image/jpeg,width=1280,height=720,framerate=25/1"],
    ids=["size", "rate"],
)
def test_a_mode_the_camera_lacks_is_not_negotiated(caps: str) -> None:
    (phase,) = stream(DEVICE, caps, 10, modes="mjpeg:1280x720@30/15,mjpeg:640x480@30")
    assert not phase["buffers"]
    assert not_negotiated(phase), phase["errors"]


# -- Faults ----------------------------------------------------------------------------------


def test_every_nth_frame_truncated_lacks_its_end_marker() -> None:
    (phase,) = stream(seconds=2, faults=Faults(truncate_every=10))
    assert not phase["errors"], phase["errors"]
    broken = [b["frame"] for b in phase["buffers"] if not b["complete"]]
    assert broken and all(frame % 10 == 0 for frame in broken)
    assert broken == [frame for frame in frames(phase) if frame % 10 == 0]
    sizes = {b["frame"]: b["size"] for b in phase["buffers"]}
    for frame in broken:  # about half of what the frames beside it take
        neighbours = [sizes[n] for n in (frame - 1, frame + 1) if n in sizes]
        assert sizes[frame] < 0.7 * min(neighbours), (frame, sizes[frame], neighbours)
    # What the stack has to cope with: jpegdec decodes them silently (half grey), no message.
    assert phase["drained"], "every frame handed over reached the decoder's output before counting"
    assert len(phase["decoded"]) == len(phase["buffers"]) and not phase["warnings"]


@pytest.mark.parametrize("error_flag", [False, True], ids=["unflagged", "flagged"])
def test_every_nth_frame_corrupt_loses_data_and_is_flagged_if_asked(error_flag: bool) -> None:
    (phase,) = stream(seconds=2, faults=Faults(corrupt_every=10, error_flag=error_flag))
    assert not phase["errors"], phase["errors"]
    buffers = phase["buffers"]
    corrupt = [b for b in buffers if b["fault"] == "corrupt"]
    assert [b["frame"] for b in corrupt] == [frame for frame in frames(phase) if frame % 10 == 0] != []
    assert all(b["complete"] for b in buffers), "a corrupt frame keeps its end-of-image marker"
    flagged = [b["frame"] for b in buffers if b["corrupted"]]  # V4L2_BUF_FLAG_ERROR -> CORRUPTED
    assert flagged == ([b["frame"] for b in corrupt] if error_flag else [])
    assert phase["drained"] and len(phase["decoded"]) == len(buffers), "jpegdec passes them on either way"


def test_the_rate_drops_after_frame_k() -> None:
    (phase,) = stream(seconds=4, faults=Faults(slow_rate=15, slow_after=30))
    assert not phase["errors"], phase["errors"]
    before = [b for b in phase["buffers"] if b["frame"] <= 30]
    after = [b for b in phase["buffers"] if b["frame"] > 30]
    assert camera_rate(before) == pytest.approx(30, rel=0.05)
    assert camera_rate(after) == pytest.approx(15, rel=0.05)
    # Frames in the 4 s asked for (the drain at the end lets a few more through).
    in_time = [b for b in phase["buffers"] if b["t"] <= phase["ended_at"]]
    assert 30 + 2.5 * 15 * 0.8 <= len(in_time) <= 30 + 2.5 * 15 * 1.2, len(in_time)


def test_a_stalled_camera_delivers_nothing_more_and_reports_nothing() -> None:
    (phase,) = stream(seconds=2, faults=Faults(stall_after=15))
    # A loaded machine may miss a frame before the stall (the camera drops it while all its
    # buffers are held); none may come after it.
    numbers = frames(phase)
    assert numbers == sorted(set(numbers)) and len(numbers) >= 12 and numbers[-1] <= 15, numbers
    assert not phase["errors"] and not phase["eos"]


def test_a_dead_mode_is_listed_but_never_delivers() -> None:
    camera = {"modes": "mjpeg:320x240@30/15", "faults": Faults(dead=("320x240@15",))}
    assert any("15/1" in caps for caps in probe("caps", DEVICE, **camera)["caps"])
    (dead,) = stream(DEVICE, "image/jpeg,width=320,height=240,framerate=15/1", 2, **camera)
    assert dead["playing"] and not dead["buffers"] and not dead["errors"]
    (alive,) = stream(DEVICE, SMALL, 1, **camera)
    assert len(alive["buffers"]) >= 20


def test_unplug_fails_the_stream_and_a_replug_streams_again() -> None:
    unplugged, replugged = stream(
        DEVICE, SMALL, 2, "--reopen-within", "10", faults=Faults(unplug_after=20, replug_after_s=1)
    )
    assert frames(unplugged) == list(range(1, 21))
    # What v4l2src 1.22 says when a real camera's node polls POLLERR|POLLHUP after an unplug.
    (error,) = unplugged["errors"]
    assert error["source"] == "src" and error["message"] == "Could not read from resource."
    assert "poll error" in error["debug"], error
    # The node was gone, then came back about a second after the unplug, and a new open streams.
    assert replugged["back_after_s"] is not None and 0.3 <= replugged["back_after_s"] <= 3
    assert not replugged["errors"] and len(replugged["buffers"]) >= 40
    assert frames(replugged)[0] == 1, "a new stream counts from frame 1"


def test_an_unplug_is_seen_by_every_process_through_the_unplug_file(tmp_path: Path) -> None:
    unplug_file = tmp_path / "unplugged"
    (phase,) = stream(seconds=2, faults=Faults(unplug_after=15), unplug_file=unplug_file)
    assert frames(phase) == list(range(1, 16)) and phase["errors"]
    assert unplug_file.exists()
    # Another process (a restarted feeder, a controller checking the path) finds no camera ...
    assert probe("exists", DEVICE, unplug_file=unplug_file)["exists"] is False
    assert "error" in probe("caps", DEVICE, unplug_file=unplug_file)
    # ... and the unplug= fault does not fire again in it: once per unplug file.
    unplug_file.unlink()  # plugged in again
    (again,) = stream(seconds=1, faults=Faults(unplug_after=1000), unplug_file=unplug_file)
    assert not again["errors"] and len(again["buffers"]) >= 20


class Child:
    """A probe running in the background; its output lines collected as they come."""

    def __init__(self, *args: str, **camera) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(fakecam.PROBE), *args],
            env=fakecam.fake_camera_env(**camera),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    def result(self, timeout: float) -> dict:
        self.process.wait(timeout)
        self.reader.join(timeout)
        return json.loads(self.lines[-1])

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self.process.stderr.close()


def test_a_test_unplugs_the_camera_by_creating_the_unplug_file(tmp_path: Path) -> None:
    unplug_file = tmp_path / "unplugged"
    child = Child("stream", DEVICE, SMALL, "30", unplug_file=unplug_file)
    try:
        wait_until(lambda: "streaming" in child.lines, 30, "the camera to stream")
        unplug_file.touch()
        (phase,) = child.result(timeout=10)["phases"]  # long before its 30 s are up
    finally:
        child.stop()
    # What v4l2src says when its device goes depends on where the loss meets it: reading a frame,
    # or its buffer pool failing to get one (gstv4l2src.c, gst_v4l2src_create).
    assert phase["errors"], phase
    assert (phase["errors"][0]["source"], phase["errors"][0]["domain"]) == ("src", "gst-resource-error-quark")
    assert phase["errors"][0]["message"] in ("Could not read from resource.", "Failed to allocate a buffer")
    assert phase["errors"][0]["t"] < 20


def test_a_camera_replugged_at_another_node_is_found_by_its_by_id_name(tmp_path: Path) -> None:
    unplug_file = tmp_path / "unplugged"
    camera = {"links": [BY_ID], "unplug_file": unplug_file}
    faults = Faults(unplug_after=10, replug_after_s=0, replug_node="/dev/video43")
    (phase,) = stream(BY_ID, SMALL, 2, faults=faults, **camera)
    assert frames(phase) == list(range(1, 11)) and phase["errors"]
    assert probe("exists", DEVICE, **camera)["exists"] is False
    assert probe("exists", BY_ID, **camera)["realpath"] == "/dev/video43"
    (again,) = stream(BY_ID, SMALL, 1, faults=faults, **camera)
    assert not again["errors"] and len(again["buffers"]) >= 20
