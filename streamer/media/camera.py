"""The camera: which kind ``CAMERA`` names, decided once, and everything that depends on it.

Three kinds: a V4L2 device (``/dev/...``), the synthetic camera (``CAMERA=test``) and the
synthetic camera with each frame's capture time in its pixels (``CAMERA=test-stamped``).
``camera_for(settings)`` picks one; the rest of the stack asks the camera, never the setting:
its label for logs, its launch description, whether it is stamped, the check before start-up
(``check``) and the check while running (``lost``). ``CaptureStamper`` writes the capture time
into the stamped camera's frames.

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
from streamer.media import stamp

if TYPE_CHECKING:
    from streamer.media.gst import Gst

# Element names the workers look up by name.
CAMERA_ELEMENT = "camera"
STAMP_ELEMENT = "stamp"  # the stamped synthetic camera: where capture times are written


def jpeg_caps(s: Settings) -> str:
    """The camera mode the feeder asks for: MJPEG at exactly the configured size and rate."""
    return f"image/jpeg,width={s.video_width},height={s.video_height},framerate={s.video_fps}/1"


def raw_caps(s: Settings) -> str:
    """Raw I420 frames at the configured size and rate: what the synthetic camera draws (the
    layout the stamp is written into) and what the feeder writes into shared memory."""
    return f"video/x-raw,format=I420,width={s.video_width},height={s.video_height},framerate={s.video_fps}/1"


class Camera(ABC):
    """What every kind of camera answers. ``name`` (the CAMERA setting) names it in messages."""

    stamped = False  # frames carry their capture time: a CaptureStamper goes on STAMP_ELEMENT

    def __init__(self, settings: Settings, label: str) -> None:
        self.settings = settings
        self.name = settings.camera
        self.label = label  # how the feeder's start-up line names the source

    @abstractmethod
    def source(self) -> str:
        """A live MJPEG source at exactly the configured mode, named CAMERA_ELEMENT."""

    @abstractmethod
    def check(self) -> str | None:
        """Why the camera cannot deliver the configured mode (checked before start-up), or None."""

    @abstractmethod
    def lost(self) -> str | None:
        """Why a running camera has gone, if it has (checked every half second)."""


class V4l2Camera(Camera):
    """A V4L2 device asked for MJPEG at exactly VIDEO_WIDTH x VIDEO_HEIGHT @ VIDEO_FPS."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings, label=settings.camera)

    def source(self) -> str:
        return f'v4l2src name={CAMERA_ELEMENT} device="{self.name}" ! {jpeg_caps(self.settings)}'

    def check(self) -> str | None:
        """Missing, cannot be opened, or does not offer the mode (then: which modes it offers)."""
        from streamer.media import gst

        device, s = self.name, self.settings
        if not os.path.exists(device):
            return f"camera {device} does not exist (is it plugged in?)"
        try:
            offered = gst.source_caps("v4l2src", device=device)
        except gst.DeviceError as err:
            return f"camera {device} cannot be opened: {err}"
        if offered.can_intersect(gst.Gst.Caps.from_string(jpeg_caps(s))):
            return None
        modes = "; ".join(gst.describe_caps(offered)) or "nothing"
        return (
            f"camera {device} cannot deliver MJPEG {s.video_width}x{s.video_height}"
            f"@{s.video_fps} (VIDEO_WIDTH, VIDEO_HEIGHT, VIDEO_FPS); it offers: {modes}"
        )

    def lost(self) -> str | None:
        if not os.path.exists(self.name):
            return f"camera {self.name} disappeared (unplugged?)"
        return None


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
        return (
            f"videotestsrc name={CAMERA_ELEMENT} is-live=true pattern=smpte horizontal-speed=4 "
            f"! {raw_caps(s)} {stamp_element}! jpegenc quality=85 ! {jpeg_caps(s)}"
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
