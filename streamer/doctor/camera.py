"""The camera: for a V4L2 device, that it exists, is a video capture device, and offers MJPEG or
raw YUYV (as CAMERA_FORMAT allows) at exactly VIDEO_WIDTH x VIDEO_HEIGHT @ VIDEO_FPS, and which
one the feeder will take; otherwise the modes it does offer, closest first. The synthetic camera
needs nothing of the machine.

Whether it is a capture device is asked of the driver directly (VIDIOC_QUERYCAP): a UVC camera
has a second /dev/video node for metadata, which GStreamer cannot capture from. Its modes are
what GStreamer's v4l2src reads from it (``streamer.media.gst.source_caps``).
"""

from __future__ import annotations

import errno
import fcntl
import math
import os
import struct

from streamer.config import Settings
from streamer.doctor.report import Check
from streamer.media import camera as cameras
from streamer.media.modes import (
    CAMERA_FORMATS,
    Mode,
    choose_format,
    closest_first,
    formats_tried,
    parse_modes,
)

# struct v4l2_capability: driver[16], card[32], bus_info[32], version, capabilities, device_caps,
# reserved[3]; VIDIOC_QUERYCAP = _IOR('V', 0, struct v4l2_capability).
_CAPABILITY = struct.Struct("16s32s32sIII12x")
VIDIOC_QUERYCAP = (2 << 30) | (_CAPABILITY.size << 16) | (ord("V") << 8)
V4L2_CAP_VIDEO_CAPTURE = 0x1
V4L2_CAP_VIDEO_CAPTURE_MPLANE = 0x1000
V4L2_CAP_DEVICE_CAPS = 0x80000000
CHECK_CABLE = "check the camera and its cable (dmesg tells what the kernel saw)"
SHOWN_MODES = 8


def capabilities(device: str) -> tuple[str, int]:
    """The device's name (``card``) and capabilities, from the driver; raises OSError (ENOTTY:
    not a V4L2 device)."""
    fd = os.open(device, os.O_RDWR | os.O_NONBLOCK)
    try:
        answer = fcntl.ioctl(fd, VIDIOC_QUERYCAP, bytes(_CAPABILITY.size))
    finally:
        os.close(fd)
    _driver, card, _bus, _version, caps, device_caps = _CAPABILITY.unpack(answer)
    if caps & V4L2_CAP_DEVICE_CAPS:
        caps = device_caps  # what this node can do (caps is the whole physical device's)
    return card.split(b"\0", 1)[0].decode(errors="replace"), caps


def check(settings: Settings, gstreamer_usable: bool) -> Check:
    camera = cameras.camera_for(settings)
    if not isinstance(camera, cameras.V4l2Camera):
        problem = camera.check()
        if problem:
            return Check.failed("camera", problem, "remove CAMERA_UNPLUG_FILE or fix the settings it names")
        return Check.passed("camera", f"{camera.label} (CAMERA={settings.camera})")
    return _v4l2(settings, gstreamer_usable)


def _v4l2(s: Settings, gstreamer_usable: bool) -> Check:
    device = s.camera
    mode_name = f"{s.video_width}x{s.video_height}@{s.video_fps}"
    wanted = " or ".join(choice.upper() for choice in formats_tried(s.camera_format)) + f" {mode_name}"
    if not os.path.exists(device):
        return Check.failed(
            "camera",
            f"{device} does not exist",
            "plug the camera in; `ls -l /dev/v4l/by-id/` lists cameras by a name that does not "
            "change (set CAMERA to it)",
        )
    try:
        card, caps = capabilities(device)
    except OSError as err:
        if err.errno in (errno.EACCES, errno.EPERM):
            return Check.failed(
                "camera", f"{device} cannot be opened: permission denied", "add the user to group video"
            )
        if err.errno in (errno.ENOTTY, errno.EINVAL):
            return Check.failed(
                "camera", f"{device} is not a V4L2 device", "set CAMERA to a /dev/video* camera"
            )
        return Check.failed(
            "camera", f"{device} cannot be opened: {err.strerror}", "check the camera and its cable"
        )
    if not caps & (V4L2_CAP_VIDEO_CAPTURE | V4L2_CAP_VIDEO_CAPTURE_MPLANE):
        return Check.failed(
            "camera",
            f"{device} ({card}) is not a video capture device (a camera's metadata node?)",
            "set CAMERA to its capture node: often the other /dev/video* of the same camera "
            "(`v4l2-ctl --list-devices`)",
        )
    if not gstreamer_usable:
        return Check.failed(
            "camera", f"{device} ({card}): its modes cannot be read without GStreamer", "see above"
        )
    from streamer.media import gst

    try:
        offered = gst.source_caps("v4l2src", device=device)
    except gst.DeviceError as err:
        return Check.failed(
            "camera", f"{device} ({card}) cannot be opened: {err}", "check the camera and its cable"
        )
    modes = parse_modes(gst.describe_caps(offered))
    chosen = choose_format(modes, s.video_width, s.video_height, s.video_fps, s.camera_format)
    if chosen is not None:
        why = ""
        if s.camera_format == "auto":
            why = " (CAMERA_FORMAT=auto" + (")" if chosen == "mjpeg" else ": no MJPEG at this mode)")
        return Check.passed("camera", f"{device} ({card}): {chosen.upper()} {mode_name}{why}")
    ranked = closest_first(modes, s.video_width, s.video_height, s.video_fps, s.camera_format)
    shown = "; ".join(mode.describe() for mode in ranked[:SHOWN_MODES]) or "nothing"
    more = f" (and {len(ranked) - SHOWN_MODES} more)" if len(ranked) > SHOWN_MODES else ""
    return Check.failed(
        "camera",
        f"{device} ({card}) does not offer {wanted}; it offers, closest first: {shown}{more}",
        _mode_fix(s, ranked),
    )


def _mode_fix(s: Settings, ranked: list[Mode]) -> str:
    allowed = {CAMERA_FORMATS[choice] for choice in formats_tried(s.camera_format)}
    usable = [mode for mode in ranked if mode.format in allowed]
    if not usable:
        if s.camera_format != "auto" and any(mode.format in CAMERA_FORMATS.values() for mode in ranked):
            return f"set CAMERA_FORMAT=auto: the camera sends no {s.camera_format.upper()}"
        return "the feeder needs a camera that sends MJPEG or YUYV (UVC cameras do): use another camera"
    width, height, rate = usable[0].nearest(s.video_width, s.video_height, s.video_fps)
    return (
        f"set VIDEO_WIDTH, VIDEO_HEIGHT and VIDEO_FPS to a mode it offers, the closest: "
        f"VIDEO_WIDTH={width} VIDEO_HEIGHT={height} VIDEO_FPS={math.floor(rate)}"
    )
