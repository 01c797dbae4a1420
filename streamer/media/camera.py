"""The camera: which kind ``CAMERA`` names, decided once, and everything that depends on it.

Three kinds: a V4L2 device (``/dev/...``), the synthetic camera (``CAMERA=test``) and the
synthetic camera with each frame's capture time in its pixels (``CAMERA=test-stamped``).
``camera_for(settings)`` picks one; the rest of the stack asks the camera, never the setting:
its label for logs, its launch description, whether it is stamped, the check before start-up
(``check``, which also settles ``CAMERA_FORMAT=auto`` against what a V4L2 camera offers) and the
check while running (``lost``). ``CaptureStamper`` writes the capture time into the stamped
camera's frames.

Importing this module loads no GStreamer (launch descriptions are built from it by the pure
``streamer.media.pipelines``): what needs GStreamer imports ``streamer.media.gst`` when called.
"""

from __future__ import annotations

import logging
import os
import time
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING

from streamer.config import STAMPED_SYNTHETIC_CAMERA, SYNTHETIC_CAMERA, Settings
from streamer.media import modes, stamp

if TYPE_CHECKING:
    from streamer.media.gst import Gst

# How often a missing V4L2 camera is looked for, and how long after its node appears it is opened.
CAMERA_POLL_S = 0.1
CAMERA_SETTLE_S = 0.2

# Element names the workers look up by name.
CAMERA_ELEMENT = "camera"
STAMP_ELEMENT = "stamp"  # the stamped synthetic camera: where capture times are written


# CAMERA_FORMAT's choices besides auto (streamer.config).
MJPEG, YUYV = "mjpeg", "yuyv"


def jpeg_caps(s: Settings) -> str:
    """The camera mode the feeder asks for: MJPEG at exactly the configured size and rate."""
    return f"image/jpeg,width={s.video_width},height={s.video_height},framerate={s.video_fps}/1"


def camera_caps(s: Settings, camera_format: str) -> str:
    """The camera mode the feeder asks for in ``camera_format``: MJPEG, or raw YUYV (GStreamer's
    YUY2), at exactly the configured size and rate."""
    if camera_format == YUYV:
        return (
            f"video/x-raw,format=YUY2,width={s.video_width},height={s.video_height},framerate={s.video_fps}/1"
        )
    return jpeg_caps(s)


def raw_caps(s: Settings) -> str:
    """Raw I420 frames at the configured size and rate: what the synthetic camera draws (the
    layout the stamp is written into) and what the feeder writes into shared memory."""
    return f"video/x-raw,format=I420,width={s.video_width},height={s.video_height},framerate={s.video_fps}/1"


class SettingsProblem(str):
    """A camera problem no retry can fix: the settings ask for a mode the camera lacks. The
    feeder stops with exit status 2 (EXIT_CONFIG), so the controller does not restart it; a
    different camera plugged in later is found by the next start."""


class Camera(ABC):
    """What every kind of camera answers. ``name`` (the CAMERA setting) names it in messages."""

    stamped = False  # frames carry their capture time: a CaptureStamper goes on STAMP_ELEMENT

    def __init__(self, settings: Settings, label: str) -> None:
        self.settings = settings
        self.name = settings.camera
        self.label = label  # how the feeder's start-up line names the source
        # MJPEG or YUYV: CAMERA_FORMAT, with auto as MJPEG until ``check`` has seen the camera.
        self.format = YUYV if settings.camera_format == YUYV else MJPEG

    @property
    def guarded(self) -> bool:
        """Frames may arrive broken: a CorruptFrameGuard goes on CAMERA_ELEMENT."""
        return False

    @abstractmethod
    def source(self) -> str:
        """A live source of ``format`` at exactly the configured mode, named CAMERA_ELEMENT."""

    def decoder(self) -> str:
        """What turns the source's frames into raw ones: ``jpegdec``, or nothing for raw frames."""
        return "jpegdec ! " if self.format == MJPEG else ""

    @abstractmethod
    def check(self) -> str | None:
        """Why the camera cannot deliver the configured mode (checked before start-up), or None;
        a ``SettingsProblem`` when only other settings can fix it."""

    @abstractmethod
    def lost(self) -> str | None:
        """Why a running camera has gone, if it has (checked every half second)."""

    def wait_until_present(self, timeout_s: float, log: logging.Logger) -> bool:
        """Wait up to ``timeout_s`` for a camera that is not there (unplugged) to come back:
        True when it is there (at once, usually). Only a device node can come back by itself."""
        return True

    @property
    def can_come_back(self) -> bool:
        """A camera that went (unplugged) may come back by itself: the feeder may wait for it
        (``present``) instead of exiting. Only a device node can."""
        return False

    def present(self) -> bool:
        """Whether the camera is there now (a cheap look, every CAMERA_POLL_S while it is away)."""
        return True

    def describe_format(self) -> str:
        """The format in use, for the feeder's start-up line."""
        return self.format.upper()


class V4l2Camera(Camera):
    """A V4L2 device asked for MJPEG or raw YUYV (CAMERA_FORMAT) at exactly VIDEO_WIDTH x
    VIDEO_HEIGHT @ VIDEO_FPS."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings, label=settings.camera)

    @property
    def guarded(self) -> bool:
        return self.format == MJPEG  # the guard looks for a JPEG's end; raw frames have none

    def source(self) -> str:
        return (
            f'v4l2src name={CAMERA_ELEMENT} device="{self.name}" ! {camera_caps(self.settings, self.format)}'
        )

    def check(self) -> str | None:
        """Missing, cannot be opened, or does not offer the mode in a format CAMERA_FORMAT allows
        (then: which modes it offers). Otherwise sets ``format``: with auto, MJPEG where offered."""
        from streamer.media import gst

        device, s = self.name, self.settings
        if not os.path.exists(device):
            return f"camera {device} does not exist (is it plugged in?)"
        try:
            offered = gst.source_caps("v4l2src", device=device)
        except gst.DeviceError as err:
            return f"camera {device} cannot be opened: {err}"
        for choice in modes.formats_tried(s.camera_format):
            if offered.can_intersect(gst.Gst.Caps.from_string(camera_caps(s, choice))):
                self.format = choice
                return None
        offers = modes.readable(
            gst.describe_caps(offered), s.video_width, s.video_height, s.video_fps, s.camera_format
        )
        wanted = " or ".join(choice.upper() for choice in modes.formats_tried(s.camera_format))
        named = "VIDEO_WIDTH, VIDEO_HEIGHT, VIDEO_FPS" + (
            ", CAMERA_FORMAT" if s.camera_format != "auto" else ""
        )
        return SettingsProblem(
            f"camera {device} cannot deliver {wanted} {s.video_width}x{s.video_height}"
            f"@{s.video_fps} ({named}); it offers, closest first: {offers}"
        )

    def describe_format(self) -> str:
        """The format in use and why, for the feeder's start-up line."""
        if self.settings.camera_format != "auto":
            return f"{self.format.upper()} (CAMERA_FORMAT={self.format})"
        why = "offered at this mode" if self.format == MJPEG else "no MJPEG at this mode"
        return f"{self.format.upper()} (CAMERA_FORMAT=auto: {why})"

    def lost(self) -> str | None:
        if not os.path.exists(self.name):
            return f"camera {self.name} disappeared (unplugged?)"
        return None

    @property
    def can_come_back(self) -> bool:
        return True

    def present(self) -> bool:
        return os.path.exists(self.name)

    def wait_until_present(self, timeout_s: float, log: logging.Logger) -> bool:
        """Poll for the node (or the ``/dev/v4l/by-id/...`` link CAMERA names, which follows
        the camera to a new node number) every CAMERA_POLL_S: a replugged camera is opened
        within that of its node appearing, not after the controller's growing restart pauses."""
        if os.path.exists(self.name) or timeout_s <= 0:
            return os.path.exists(self.name)
        log.warning("camera %s is not there (unplugged?): waiting up to %.0f s for it", self.name, timeout_s)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            time.sleep(CAMERA_POLL_S)
            if os.path.exists(self.name):
                log.info("camera %s is back", self.name)
                time.sleep(CAMERA_SETTLE_S)  # udev sets the node's permissions just after it appears
                return True
        return False


class SyntheticCamera(Camera):
    """A live ``videotestsrc`` with moving bars, paced at the frame rate and JPEG-encoded, so
    everything after it runs exactly as with a USB camera's MJPEG. Stamped, each raw frame passes
    a named identity where a CaptureStamper writes its capture time into it before encoding.

    While ``CAMERA_UNPLUG_FILE`` exists it behaves as unplugged (fault-injection tests).
    """

    def __init__(self, settings: Settings, *, stamped: bool) -> None:
        super().__init__(settings, label="synthetic camera")
        self.stamped = stamped

    def source(self) -> str:
        s = self.settings
        stamp_element = f"! identity name={STAMP_ELEMENT} " if self.stamped else ""
        encode = "jpegenc quality=85" if self.format == MJPEG else "videoconvert"
        return (
            f"videotestsrc name={CAMERA_ELEMENT} is-live=true pattern=smpte horizontal-speed=4 "
            f"! {raw_caps(s)} {stamp_element}! {encode} ! {camera_caps(s, self.format)}"
        )

    def check(self) -> str | None:
        """A frame too small to carry the stamp (stamped only), or unplugged."""
        s = self.settings
        if self.stamped:
            try:
                stamp.block_size(s.video_width, s.video_height)
            except stamp.StampError as err:
                return f"CAMERA={self.name}: {err}"
        if self._unplugged():
            return f"camera {self.name} is unplugged ({s.camera_unplug_file} exists)"
        return None

    def lost(self) -> str | None:
        return f"camera {self.name} was unplugged" if self._unplugged() else None

    def _unplugged(self) -> bool:
        unplug_file = self.settings.camera_unplug_file
        return unplug_file is not None and unplug_file.exists()


def camera_for(settings: Settings) -> Camera:
    """The camera ``CAMERA`` names (validated by streamer.config: a /dev path or a synthetic kind)."""
    if settings.camera in (SYNTHETIC_CAMERA, STAMPED_SYNTHETIC_CAMERA):
        return SyntheticCamera(settings, stamped=settings.camera == STAMPED_SYNTHETIC_CAMERA)
    return V4l2Camera(settings)


# A JPEG ends with its end-of-image marker; a camera may pad the payload after it, never by much.
JPEG_END = b"\xff\xd9"
JPEG_END_SEARCH_BYTES = 32
CORRUPT_LOG_INTERVAL_S = 10.0


class CorruptFrameGuard:
    """Drops broken JPEG frames from a V4L2 camera before ``jpegdec``, which would decode them
    silently (the missing part grey), and counts them (``frames_corrupt``).

    Broken: no end-of-image marker near the end (a truncated frame: lost USB packets at its
    end), or flagged CORRUPTED (``v4l2src`` sets it when the driver dequeues the frame with
    V4L2_BUF_FLAG_ERROR). The marker cannot occur by chance inside the scan data (a 0xFF byte
    there is always followed by 0x00 or a restart marker). A corrupt frame that carries its
    marker and no flag is not detectable here. Logged at the first one, then at most once per
    CORRUPT_LOG_INTERVAL_S with the count since. A run of nothing but broken frames leaves the
    feeder without frames: its stall watchdog treats that as a camera problem.
    """

    def __init__(self, log: logging.Logger) -> None:
        from streamer.media.gst import Gst

        self.corrupt = 0
        self._log = log
        self._logged_at: float | None = None
        self._logged_count = 0
        self._corrupted = Gst.BufferFlags.CORRUPTED
        self._ok, self._drop = Gst.PadProbeReturn.OK, Gst.PadProbeReturn.DROP

    @classmethod
    def attach(cls, element: Gst.Element, log: logging.Logger) -> CorruptFrameGuard:
        """Guard the frames leaving ``element`` (the camera's CAMERA_ELEMENT)."""
        guard = cls(log)
        guard.watch(element)
        return guard

    def watch(self, element: Gst.Element) -> None:
        """Guard the frames leaving ``element`` too: a camera opened again keeps the count."""
        from streamer.media.gst import Gst

        element.get_static_pad("src").add_probe(Gst.PadProbeType.BUFFER, self.on_frame)

    def broken(self, buffer: Gst.Buffer) -> str | None:
        """Why this frame is broken, or None."""
        if buffer.has_flags(self._corrupted):
            return "flagged corrupt by the camera"
        size = buffer.get_size()
        tail = buffer.extract_dup(max(0, size - JPEG_END_SEARCH_BYTES), min(size, JPEG_END_SEARCH_BYTES))
        if JPEG_END not in tail:
            return f"no end-of-image marker ({size} bytes: truncated)"
        return None

    def on_frame(self, _pad: Gst.Pad, info: Gst.PadProbeInfo) -> Gst.PadProbeReturn:
        why = self.broken(info.get_buffer())
        if why is None:
            return self._ok
        self.corrupt += 1
        now = time.monotonic()
        if self._logged_at is None:
            self._log.warning("dropped a corrupt frame from the camera (%s)", why)
            self._logged_at, self._logged_count = now, self.corrupt
        elif now - self._logged_at >= CORRUPT_LOG_INTERVAL_S:
            self._log.warning(
                "dropped %d corrupt frames from the camera in the last %.0f s (%d in all; latest: %s)",
                self.corrupt - self._logged_count,
                now - self._logged_at,
                self.corrupt,
                why,
            )
            self._logged_at, self._logged_count = now, self.corrupt
        return self._drop


class CaptureStamper:
    """Writes each frame's capture wall-clock time into its pixels (the stamped camera).

    Runs on the raw frame between the synthetic camera and its JPEG encoder, the moment the live
    source releases the frame, so a client that decodes the stream can tell how old each
    picture is (``streamer.probe``). The frame is written in place through its memory: with
    Debian's PyGObject, mapping the buffer itself for writing fails ("non-writable buffer")
    while mapping its one memory works (see the field notes).
    """

    def __init__(self, log: logging.Logger) -> None:
        from streamer.media.gst import Gst, GstVideo

        self._log = log
        self._layout: stamp.FrameLayout | None = None
        self._warned = False
        self._ok = Gst.PadProbeReturn.OK
        self._read_write = Gst.MapFlags.READ | Gst.MapFlags.WRITE
        self._video_info = GstVideo.VideoInfo.new_from_caps

    @classmethod
    def attach(cls, element: Gst.Element, log: logging.Logger) -> CaptureStamper:
        """Stamp every frame entering ``element`` (the camera's STAMP_ELEMENT identity)."""
        from streamer.media.gst import Gst

        stamper = cls(log)
        element.get_static_pad("sink").add_probe(Gst.PadProbeType.BUFFER, stamper.on_frame)
        return stamper

    def on_frame(self, pad: Gst.Pad, info: Gst.PadProbeInfo) -> Gst.PadProbeReturn:
        captured = time.time()  # wall clock: a client on another machine compares with its own
        buffer = info.get_buffer()
        if self._layout is None:
            video = self._video_info(pad.get_current_caps())
            self._layout = stamp.FrameLayout.from_planes(
                video.width, video.height, video.offset, video.stride
            )
        if buffer.n_memory() != 1:
            self._warn(f"frame in {buffer.n_memory()} memories, not stamped")
            return self._ok
        memory = buffer.peek_memory(0)
        ok, mapped = memory.map(self._read_write)
        if not ok:
            self._warn("frame cannot be mapped for writing, not stamped")
            return self._ok
        try:
            stamp.write(mapped.data, self._layout, stamp.ms_value(captured))
        finally:
            memory.unmap(mapped)
        return self._ok

    def _warn(self, message: str) -> None:
        if not self._warned:
            self._log.warning("%s", message)
            self._warned = True
