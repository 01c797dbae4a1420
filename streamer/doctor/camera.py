"""The camera: for a V4L2 device, that it exists, is a video capture device, and offers MJPEG
at exactly VIDEO_WIDTH x VIDEO_HEIGHT @ VIDEO_FPS; otherwise the modes it does offer, closest
first. The synthetic camera needs nothing of the machine.

Whether it is a capture device is asked of the driver directly (VIDIOC_QUERYCAP): a UVC camera
has a second /dev/video node for metadata, which GStreamer cannot capture from. Its modes are
what GStreamer's v4l2src reads from it (``streamer.media.gst.source_caps``).
"""

from __future__ import annotations

import errno
import fcntl
import math
import os
import re
import struct
from dataclasses import dataclass
from fractions import Fraction

from streamer.config import Settings
from streamer.doctor.report import Check
from streamer.media import camera as cameras

# struct v4l2_capability: driver[16], card[32], bus_info[32], version, capabilities, device_caps,
# reserved[3]; VIDIOC_QUERYCAP = _IOR('V', 0, struct v4l2_capability).
_CAPABILITY = struct.Struct("16s32s32sIII12x")
VIDIOC_QUERYCAP = (2 << 30) | (_CAPABILITY.size << 16) | (ord("V") << 8)
V4L2_CAP_VIDEO_CAPTURE = 0x1
V4L2_CAP_VIDEO_CAPTURE_MPLANE = 0x1000
V4L2_CAP_DEVICE_CAPS = 0x80000000
MJPEG = "MJPEG"
CHECK_CABLE = "check the camera and its cable (dmesg tells what the kernel saw)"
SHOWN_MODES = 8


@dataclass(frozen=True)
class Mode:
    """A camera mode as GStreamer describes it: a format, sizes and frame rates (single values,
    or ranges for stepwise devices)."""

    format: str  # MJPEG, or the raw format (YUY2, NV12, ...)
    widths: tuple[int, int]  # (lowest, highest)
    heights: tuple[int, int]
    rates: tuple[Fraction, ...]  # each rate offered; with ``rate_range``, (lowest, highest)
    rate_range: bool = False

    def nearest(self, width: int, height: int, fps: int) -> tuple[int, int, Fraction]:
        """The offered size and rate nearest the configured ones."""
        w = min(max(width, self.widths[0]), self.widths[1])
        h = min(max(height, self.heights[0]), self.heights[1])
        if self.rate_range:
            rate = min(max(Fraction(fps), self.rates[0]), self.rates[1])
        else:
            rate = min(self.rates, key=lambda r: abs(r - fps))
        return w, h, rate

    def offers(self, width: int, height: int, fps: int) -> bool:
        return self.format == MJPEG and self.nearest(width, height, fps) == (width, height, fps)

    def distance(self, width: int, height: int, fps: int) -> tuple[bool, float, float]:
        """How far from the configured mode: not MJPEG first, then the size (area and aspect,
        relative), then the rate."""
        w, h, rate = self.nearest(width, height, fps)
        size = abs(math.log((w * h) / (width * height))) + abs(math.log((w / h) / (width / height)))
        return (self.format != MJPEG, round(size, 6), abs(float(rate) - fps))

    def describe(self) -> str:
        def span(low_high: tuple[int, int]) -> str:
            low, high = low_high
            return str(low) if low == high else f"{low}-{high}"

        if self.rate_range:
            rates = f"{_rate(self.rates[0])}-{_rate(self.rates[1])}"
        else:
            rates = ", ".join(_rate(r) for r in self.rates)
        return f"{self.format} {span(self.widths)}x{span(self.heights)} at {rates} fps"


def _rate(rate: Fraction) -> str:
    return str(rate.numerator) if rate.denominator == 1 else f"{float(rate):.3g}"


_MEDIA = re.compile(r"^([\w-]+/[\w.+-]+)")
_FORMAT = re.compile(r"format=([\w-]+)")
_INTS = r"(\d+)|\[ *(\d+), *(\d+) *\]"
_WIDTH = re.compile(r"width=(?:" + _INTS + ")")
_HEIGHT = re.compile(r"height=(?:" + _INTS + ")")
_RATE = re.compile(r"framerate=(?:(\d+/\d+)|\{([^}]*)\}|\[ *(\d+/\d+), *(\d+/\d+) *\])")


def parse_modes(described: list[str]) -> list[Mode]:
    """Modes from ``streamer.media.gst.describe_caps`` lines (e.g. ``image/jpeg, width=1280,
    height=720, framerate={ 30/1, 15/1 }``); lines without a size or rate are left out."""
    modes = []
    for line in described:
        media, width, height, rate = (
            _MEDIA.match(line),
            _WIDTH.search(line),
            _HEIGHT.search(line),
            _RATE.search(line),
        )
        if not (media and width and height and rate):
            continue
        if media.group(1) == "image/jpeg":
            kind = MJPEG
        else:
            raw = _FORMAT.search(line)
            kind = raw.group(1) if raw else media.group(1)
        single, listed, low, high = rate.groups()
        if low:
            rates, is_range = (Fraction(low), Fraction(high)), True
        else:
            values = [single] if single else [v.strip() for v in listed.split(",")]
            rates, is_range = tuple(sorted({Fraction(v) for v in values if v}, reverse=True)), False
        if not rates:
            continue
        modes.append(Mode(kind, _span(width), _span(height), rates, is_range))
    return list(dict.fromkeys(modes))


def _span(match: re.Match[str]) -> tuple[int, int]:
    single, low, high = match.groups()
    return (int(single), int(single)) if single else (int(low), int(high))


def closest_first(modes: list[Mode], width: int, height: int, fps: int) -> list[Mode]:
    return sorted(modes, key=lambda mode: mode.distance(width, height, fps))


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
    wanted = f"MJPEG {s.video_width}x{s.video_height}@{s.video_fps}"
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
    if any(mode.offers(s.video_width, s.video_height, s.video_fps) for mode in modes):
        return Check.passed("camera", f"{device} ({card}): {wanted}")
    ranked = closest_first(modes, s.video_width, s.video_height, s.video_fps)
    shown = "; ".join(mode.describe() for mode in ranked[:SHOWN_MODES]) or "nothing"
    more = f" (and {len(ranked) - SHOWN_MODES} more)" if len(ranked) > SHOWN_MODES else ""
    return Check.failed(
        "camera",
        f"{device} ({card}) does not offer {wanted}; it offers, closest first: {shown}{more}",
        _mode_fix(s, ranked),
    )


def _mode_fix(s: Settings, ranked: list[Mode]) -> str:
    mjpeg = [mode for mode in ranked if mode.format == MJPEG]
    if not mjpeg:
        return "the feeder needs a camera that sends MJPEG (most UVC cameras do): use another camera"
    width, height, rate = mjpeg[0].nearest(s.video_width, s.video_height, s.video_fps)
    return (
        f"set VIDEO_WIDTH, VIDEO_HEIGHT and VIDEO_FPS to an MJPEG mode it offers, the closest: "
        f"VIDEO_WIDTH={width} VIDEO_HEIGHT={height} VIDEO_FPS={math.floor(rate)}"
    )
