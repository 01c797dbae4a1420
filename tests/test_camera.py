"""The camera module: which kind CAMERA names, its source description, its checks.

Strings and logic, in this process: no feeder is started. The V4L2 checks use paths every
machine has (/dev/null exists but is no V4L2 device); a camera that exists but offers other
modes is played by a stand-in for ``gst.source_caps``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from streamer import config
from streamer.media import camera, gst, modes, pipelines
from tests.harness import ROOT

MJPEG_720P25 = "image/jpeg,width=1280,height=720,framerate=25/1"


def settings_with(tmp_path: Path, camera_setting: str, **extra: str) -> config.Settings:
    return config.load({"HOME": str(tmp_path), "CAMERA": camera_setting, "VIDEO_FPS": "25", **extra})


# --- dispatch


@pytest.mark.parametrize(
    ("setting", "kind", "stamped", "label"),
    [
        ("/dev/video2", camera.V4l2Camera, False, "/dev/video2"),
        ("/dev/v4l/by-id/usb-cam-index0", camera.V4l2Camera, False, "/dev/v4l/by-id/usb-cam-index0"),
        ("test", camera.SyntheticCamera, False, "synthetic camera"),
        ("test-stamped", camera.SyntheticCamera, True, "synthetic camera"),
    ],
)
def test_camera_for_picks_the_kind_the_setting_names(tmp_path, setting, kind, stamped, label):
    cam = camera.camera_for(settings_with(tmp_path, setting))
    assert type(cam) is kind
    assert (cam.stamped, cam.label, cam.name) == (stamped, label, setting)


# --- source descriptions


def test_a_v4l2_camera_is_asked_for_the_exact_mjpeg_mode(tmp_path):
    assert camera.camera_for(settings_with(tmp_path, "/dev/video2")).source() == (
        f'v4l2src name=camera device="/dev/video2" ! {MJPEG_720P25}'
    )


def test_the_synthetic_camera_is_a_live_paced_moving_mjpeg_source(tmp_path):
    assert camera.camera_for(settings_with(tmp_path, "test")).source() == (
        "videotestsrc name=camera is-live=true pattern=smpte horizontal-speed=4 "
        "! video/x-raw,format=I420,width=1280,height=720,framerate=25/1 "
        f"! jpegenc quality=85 ! {MJPEG_720P25}"
    )


def test_the_stamped_camera_passes_raw_frames_through_the_stamp_element(tmp_path):
    assert camera.camera_for(settings_with(tmp_path, "test-stamped")).source() == (
        "videotestsrc name=camera is-live=true pattern=smpte horizontal-speed=4 "
        "! video/x-raw,format=I420,width=1280,height=720,framerate=25/1 "
        f"! identity name=stamp ! jpegenc quality=85 ! {MJPEG_720P25}"
    )


def test_the_synthetic_camera_sends_raw_yuyv_when_asked(tmp_path):
    s = settings_with(tmp_path, "test-stamped", CAMERA_FORMAT="yuyv")
    assert camera.camera_for(s).source() == (
        "videotestsrc name=camera is-live=true pattern=smpte horizontal-speed=4 "
        "! video/x-raw,format=I420,width=1280,height=720,framerate=25/1 "
        "! identity name=stamp ! videoconvert ! video/x-raw,format=YUY2,width=1280,height=720,framerate=25/1"
    )
    assert "jpegdec" not in pipelines.feeder(s)
    assert "jpegdec" in pipelines.feeder(settings_with(tmp_path, "test-stamped"))  # auto: MJPEG


def test_camera_format_is_chosen_from_the_modes_mjpeg_first_with_auto():
    offered = modes.parse_modes(
        gst.describe_caps(
            gst.Gst.Caps.from_string(
                "image/jpeg,width=1280,height=720,framerate={ (fraction)30/1, (fraction)15/1 }; "
                "video/x-raw,format=YUY2,width=640,height=480,framerate=30/1; "
                "video/x-raw,format=YUY2,width=1280,height=720,framerate=10/1"
            )
        )
    )
    assert modes.choose_format(offered, 1280, 720, 30, "auto") == "mjpeg"
    assert modes.choose_format(offered, 1280, 720, 10, "auto") == "yuyv"
    assert modes.choose_format(offered, 640, 480, 30, "auto") == "yuyv"
    assert modes.choose_format(offered, 640, 480, 30, "mjpeg") is None
    assert modes.choose_format(offered, 1280, 720, 30, "yuyv") is None
    assert modes.choose_format(offered, 1920, 1080, 30, "auto") is None


def test_importing_the_camera_module_loads_no_gstreamer():
    """streamer.media.pipelines builds the source from it and must stay free of gi."""
    code = "import sys, streamer.media.camera; print([m for m in sys.modules if m.partition('.')[0] == 'gi'])"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


# --- V4L2: start-up and running checks


def test_a_missing_device_does_not_exist_and_is_lost(tmp_path):
    cam = camera.camera_for(settings_with(tmp_path, "/dev/nonexistent"))
    assert cam.check() == "camera /dev/nonexistent does not exist (is it plugged in?)"
    assert cam.lost() == "camera /dev/nonexistent disappeared (unplugged?)"


def test_a_device_that_is_no_v4l2_device_cannot_be_opened(tmp_path):
    cam = camera.camera_for(settings_with(tmp_path, "/dev/null"))
    problem = cam.check()
    assert problem is not None
    assert problem.startswith("camera /dev/null cannot be opened: "), problem
    assert "isn't a v4l2 driver" in problem
    assert cam.lost() is None  # the node is still there


def offering(monkeypatch: pytest.MonkeyPatch, caps: str) -> list[tuple[str, dict[str, object]]]:
    """Make ``gst.source_caps`` answer ``caps`` for any device; returns the calls made."""
    calls: list[tuple[str, dict[str, object]]] = []

    def source_caps(factory: str, **properties: object) -> gst.Gst.Caps:
        calls.append((factory, properties))
        return gst.Gst.Caps.from_string(caps)

    monkeypatch.setattr(gst, "source_caps", source_caps)
    return calls


def test_a_device_offering_the_mode_passes(tmp_path, monkeypatch):
    calls = offering(
        monkeypatch,
        "image/jpeg,width=1280,height=720,framerate={ (fraction)30/1, (fraction)25/1 }; "
        "video/x-raw,format=YUY2,width=640,height=480,framerate=30/1",
    )
    assert camera.camera_for(settings_with(tmp_path, "/dev/null")).check() is None
    assert calls == [("v4l2src", {"device": "/dev/null"})]


MJPEG_AT_30_RAW_AT_25 = (
    "image/jpeg,width=1280,height=720,framerate=30/1; "
    "video/x-raw,format=YUY2,width=1280,height=720,framerate={ (fraction)25/1, (fraction)10/1 }"
)


def test_auto_takes_mjpeg_where_offered_at_the_mode(tmp_path, monkeypatch):
    offering(monkeypatch, MJPEG_AT_30_RAW_AT_25)
    cam = camera.camera_for(settings_with(tmp_path, "/dev/null", VIDEO_FPS="30"))
    assert cam.check() is None
    assert (cam.format, cam.guarded, cam.decoder()) == ("mjpeg", True, "jpegdec ! ")
    assert cam.describe_format() == "MJPEG (CAMERA_FORMAT=auto: offered at this mode)"


def test_auto_takes_raw_yuyv_where_the_mode_has_no_mjpeg(tmp_path, monkeypatch):
    offering(monkeypatch, MJPEG_AT_30_RAW_AT_25)
    s = settings_with(tmp_path, "/dev/null")
    cam = camera.camera_for(s)
    assert cam.check() is None
    assert (cam.format, cam.guarded, cam.decoder()) == ("yuyv", False, "")  # no JPEG to check or decode
    assert cam.describe_format() == "YUYV (CAMERA_FORMAT=auto: no MJPEG at this mode)"
    raw_720p25 = "video/x-raw,format=YUY2,width=1280,height=720,framerate=25/1"
    assert cam.source() == f'v4l2src name=camera device="/dev/null" ! {raw_720p25}'
    frames = pipelines.camera_frames(s, cam.format)
    assert frames.startswith(cam.source() + " ! videoconvert ! videorate drop-only=true ! ")
    assert "jpegdec" not in pipelines.feeder(s, cam.format)


def test_a_device_without_the_mode_in_the_format_asked_names_the_modes_it_offers(tmp_path, monkeypatch):
    offering(monkeypatch, MJPEG_AT_30_RAW_AT_25)
    problem = camera.camera_for(settings_with(tmp_path, "/dev/null", CAMERA_FORMAT="mjpeg")).check()
    assert isinstance(problem, camera.SettingsProblem)  # the feeder exits 2: no retry can fix it
    assert problem == (
        "camera /dev/null cannot deliver MJPEG 1280x720@25 (VIDEO_WIDTH, VIDEO_HEIGHT, VIDEO_FPS, "
        "CAMERA_FORMAT); it offers, closest first: MJPEG 1280x720 at 30 fps; YUY2 1280x720 at 25, 10 fps"
    )
    problem = camera.camera_for(settings_with(tmp_path, "/dev/null", VIDEO_FPS="60")).check()
    assert problem == (
        "camera /dev/null cannot deliver MJPEG or YUYV 1280x720@60 (VIDEO_WIDTH, VIDEO_HEIGHT, VIDEO_FPS); "
        "it offers, closest first: MJPEG 1280x720 at 30 fps; YUY2 1280x720 at 25, 10 fps"
    )


def test_a_device_offering_nothing_says_so(tmp_path, monkeypatch):
    offering(monkeypatch, "EMPTY")
    problem = camera.camera_for(settings_with(tmp_path, "/dev/null")).check()
    assert problem is not None and problem.endswith("; it offers, closest first: nothing")


# --- synthetic: the unplug file, the stamp


@pytest.mark.parametrize("setting", ["test", "test-stamped"])
def test_the_unplug_file_unplugs_the_synthetic_camera(tmp_path, setting):
    plug = tmp_path / "unplugged"
    cam = camera.camera_for(settings_with(tmp_path, setting, CAMERA_UNPLUG_FILE=str(plug)))
    assert (cam.check(), cam.lost()) == (None, None)
    plug.touch()
    assert cam.check() == f"camera {setting} is unplugged ({plug} exists)"
    assert cam.lost() == f"camera {setting} was unplugged"
    plug.unlink()
    assert (cam.check(), cam.lost()) == (None, None)


def test_without_an_unplug_file_the_synthetic_camera_is_never_lost(tmp_path):
    cam = camera.camera_for(settings_with(tmp_path, "test"))
    assert (cam.check(), cam.lost()) == (None, None)


def test_the_stamped_camera_refuses_a_frame_too_small_for_the_stamp(tmp_path):
    small = {"VIDEO_WIDTH": "64", "VIDEO_HEIGHT": "64"}
    assert camera.camera_for(settings_with(tmp_path, "test-stamped", **small)).check() == (
        "CAMERA=test-stamped: a 64x64 frame is too small for the stamp (needs blocks of at least "
        "6 px: 144x36 or more)"
    )
    assert camera.camera_for(settings_with(tmp_path, "test", **small)).check() is None  # no stamp


def test_the_stamp_is_checked_before_the_unplug_file(tmp_path):
    plug = tmp_path / "unplugged"
    plug.touch()
    small = {"VIDEO_WIDTH": "64", "VIDEO_HEIGHT": "64", "CAMERA_UNPLUG_FILE": str(plug)}
    cam = camera.camera_for(settings_with(tmp_path, "test-stamped", **small))
    assert cam.check().startswith("CAMERA=test-stamped: a 64x64 frame is too small")
