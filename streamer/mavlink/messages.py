"""The fields of every message the component sends, as pure functions of the settings and of
what it observes (the recorder's progress, the disk, the image captures): no link, no clock,
no file system, so each is tested on its own.

A builder returns an ``Outgoing``: the message's name and its fields, encoded by pymavlink's
generated ``<name>_encode`` of the common dialect (MAVLink 2) when sent. Unknown optics are NaN,
as the camera protocol asks; text fields are cut to their size on a character boundary.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from pymavlink.dialects.v20 import common as mavlink

from streamer.config import Settings

NAN = float("nan")
MIB = 1024 * 1024
VENDOR = "streamer"
STREAM_ID = 1  # our one stream, and our one storage (ids count from 1)
STORAGE_ID = 1
STORAGE_NAME = "recordings"
UINT32 = 2**32
INT32_MAX = 2**31 - 1
# Field sizes of the text fields we fill (char[] and uint8_t[] of the common dialect).
NAME_BYTES = 32  # vendor_name, model_name, stream name, storage name
URI_BYTES = 160  # VIDEO_STREAM_INFORMATION.uri
FILE_URL_BYTES = 205  # CAMERA_IMAGE_CAPTURED.file_url

CAMERA_FLAGS = (
    mavlink.CAMERA_CAP_FLAGS_CAPTURE_VIDEO
    | mavlink.CAMERA_CAP_FLAGS_CAPTURE_IMAGE
    | mavlink.CAMERA_CAP_FLAGS_CAN_CAPTURE_IMAGE_IN_VIDEO_MODE
    | mavlink.CAMERA_CAP_FLAGS_CAN_CAPTURE_VIDEO_IN_IMAGE_MODE
)
# Image capture status (CAMERA_CAPTURE_STATUS.image_status).
IMAGES_IDLE = 0
IMAGE_IN_PROGRESS = 1
INTERVAL_IDLE = 2
INTERVAL_IN_PROGRESS = 3


@dataclass(frozen=True)
class Outgoing:
    """One message to send: ``name`` as in the MAVLink XML (``HEARTBEAT``) and its fields."""

    name: str
    fields: dict[str, Any] = field(default_factory=dict)

    def encode(self, mav: mavlink.MAVLink) -> mavlink.MAVLink_message:
        """The pymavlink message (``mav``'s ``<name>_encode``); packed when ``mav`` sends it."""
        encode = getattr(mav, f"{self.name.lower()}_encode")
        return encode(**self.fields)


@dataclass(frozen=True)
class RecorderView:
    """The recorder as it last reported (its progress in the controller's published state) or,
    just after a command, as it answered. ``state`` is None when no recorder is known."""

    state: str | None = None  # recording, off, disk-full, no-disk
    video: bool = False  # set to record video (``state`` says whether it is)
    recording_since: float | None = None  # wall-clock start of the video being recorded
    session: str | None = None
    reported_at: float | None = None  # wall clock of the report (None: an answer, or none)

    @classmethod
    def from_progress(cls, progress: dict[str, Any], reported_at: float | None = None) -> RecorderView:
        """From a progress report's (or a command answer's) fields; anything malformed counts
        as unknown."""
        state = progress.get("state")
        since = progress.get("recording_since")
        session = progress.get("session")
        return cls(
            state=state if isinstance(state, str) else None,
            video=progress.get("video") is True,
            recording_since=float(since) if _is_number(since) else None,
            session=session if isinstance(session, str) else None,
            reported_at=reported_at,
        )

    @property
    def recording_video(self) -> bool:
        return self.state == "recording" and self.video

    @property
    def no_disk(self) -> bool:
        return self.state == "no-disk"


@dataclass(frozen=True)
class Disk:
    """SSD_PATH's file system, from ``os.statvfs``."""

    total_bytes: int
    free_bytes: int  # available to the stack's user (f_bavail)

    @property
    def used_bytes(self) -> int:
        return max(0, self.total_bytes - self.free_bytes)


@dataclass(frozen=True)
class ImagesView:
    """The component's image captures: the status code, the interval of an interval capture
    (0 without one) and how many images it has captured."""

    status: int = IMAGES_IDLE
    interval_s: float = 0.0
    count: int = 0


@dataclass(frozen=True)
class Photo:
    """One photo's answer (CAMERA_IMAGE_CAPTURED). ``index`` is -1 for a failed capture (it has
    no image). Position fields are MAVLink's integers (degE7, mm), zero without a fix; ``q`` is
    the camera's orientation (w, x, y, z), NaN when unknown."""

    index: int
    ok: bool
    taken_at: float  # wall clock
    lat_e7: int = 0
    lon_e7: int = 0
    alt_mm: int = 0
    relative_alt_mm: int = 0
    q: tuple[float, float, float, float] = (NAN, NAN, NAN, NAN)
    file_url: str = ""


def text(value: str, size: int) -> bytes:
    """``value`` as UTF-8 in at most ``size`` bytes, cut on a character boundary."""
    encoded = value.encode()
    if len(encoded) <= size:
        return encoded
    return encoded[:size].decode(errors="ignore").encode()


def fits(value: str, size: int) -> bool:
    """Whether ``value`` fits a text field of ``size`` bytes whole (a cut URL is a wrong URL)."""
    return len(value.encode()) <= size


def byte_array(value: str, size: int) -> list[int]:
    """A uint8_t[size] field holding ``value`` (vendor and model names), zero-padded."""
    return list(text(value, size).ljust(size, b"\0"))


def boot_ms(elapsed_s: float) -> int:
    """time_boot_ms: milliseconds since the component started, wrapping as a uint32 does."""
    return int(elapsed_s * 1000) % UINT32


def firmware_version(version: str) -> int:
    """``major.minor.patch`` as CAMERA_INFORMATION packs it (major in the lowest byte); 0 when
    unknown or not numbers."""
    parts = [*version.split(".")[:3], "0", "0"]
    try:
        major, minor, patch = (int(p) & 0xFF for p in parts[:3])
    except ValueError:
        return 0
    return patch << 16 | minor << 8 | major


def heartbeat() -> Outgoing:
    return Outgoing(
        "HEARTBEAT",
        {
            "type": mavlink.MAV_TYPE_CAMERA,
            "autopilot": mavlink.MAV_AUTOPILOT_INVALID,
            "base_mode": 0,
            "custom_mode": 0,
            "system_status": mavlink.MAV_STATE_ACTIVE,
            "mavlink_version": 3,
        },
    )


def command_ack(command: int, result: int, target_system: int, target_component: int) -> Outgoing:
    return Outgoing(
        "COMMAND_ACK",
        {
            "command": command,
            "result": result,
            "progress": 0,
            "result_param2": 0,
            "target_system": target_system,
            "target_component": target_component,
        },
    )


def camera_flags(settings: Settings) -> int:
    """What the camera can do: video and images, both at once; a stream when RTSP is on."""
    return CAMERA_FLAGS | (mavlink.CAMERA_CAP_FLAGS_HAS_VIDEO_STREAM if settings.enable_rtsp else 0)


def camera_information(settings: Settings, time_ms: int, model: str, firmware: int) -> Outgoing:
    return Outgoing(
        "CAMERA_INFORMATION",
        {
            "time_boot_ms": time_ms,
            "vendor_name": byte_array(VENDOR, NAME_BYTES),
            "model_name": byte_array(model, NAME_BYTES),
            "firmware_version": firmware,
            "focal_length": NAN,
            "sensor_size_h": NAN,
            "sensor_size_v": NAN,
            "resolution_h": settings.video_width,
            "resolution_v": settings.video_height,
            "lens_id": 0,
            "flags": camera_flags(settings),
            "cam_definition_version": 0,
            "cam_definition_uri": b"",  # no definition file: QGroundControl shows the basic controls
            "gimbal_device_id": 0,
            "camera_device_id": 0,  # a MAVLink camera, known by its own component id
        },
    )


def stream_name(settings: Settings) -> str:
    """The stream's name for a ground station's list: RTSP_PATH's last part (``live``)."""
    return settings.rtsp_path.rstrip("/").rsplit("/", 1)[-1] or "stream"


def _stream_flags(running: bool) -> int:
    return mavlink.VIDEO_STREAM_STATUS_FLAGS_RUNNING if running else 0


def video_stream_information(settings: Settings, uri: str, running: bool) -> Outgoing:
    """Our one stream: RTSP (an RTSPS URI with TLS: MAVLink has no type of its own for it),
    H.264 at the configured size, rate and bitrate. ``uri`` must fit (``fits``): the caller
    checks and sends an empty one otherwise."""
    return Outgoing(
        "VIDEO_STREAM_INFORMATION",
        {
            "stream_id": STREAM_ID,
            "count": 1,
            "type": mavlink.VIDEO_STREAM_TYPE_RTSP,
            "flags": _stream_flags(running),
            "framerate": float(settings.video_fps),
            "resolution_h": settings.video_width,
            "resolution_v": settings.video_height,
            "bitrate": settings.video_bitrate,
            "rotation": 0,
            "hfov": 0,  # unknown
            "name": text(stream_name(settings), NAME_BYTES),
            "uri": uri.encode() if fits(uri, URI_BYTES) else b"",
            "encoding": mavlink.VIDEO_STREAM_ENCODING_H264,
            "camera_device_id": 0,
        },
    )


def video_stream_status(settings: Settings, running: bool) -> Outgoing:
    return Outgoing(
        "VIDEO_STREAM_STATUS",
        {
            "stream_id": STREAM_ID,
            "flags": _stream_flags(running),
            "framerate": float(settings.video_fps),
            "resolution_h": settings.video_width,
            "resolution_v": settings.video_height,
            "bitrate": settings.video_bitrate,
            "rotation": 0,
            "hfov": 0,
            "camera_device_id": 0,
        },
    )


def recording_time_ms(recorder: RecorderView, now: float) -> int:
    """How long the video being recorded has been recorded (0: none, or not known)."""
    if not recorder.recording_video or recorder.recording_since is None:
        return 0
    return min(UINT32 - 1, max(0, int((now - recorder.recording_since) * 1000)))


def available_mib(disk: Disk | None) -> float:
    return disk.free_bytes / MIB if disk is not None else 0.0


def camera_capture_status(
    time_ms: int, now: float, recorder: RecorderView, images: ImagesView, disk: Disk | None
) -> Outgoing:
    """``now``: the wall clock, as ``recording_since``."""
    return Outgoing(
        "CAMERA_CAPTURE_STATUS",
        {
            "time_boot_ms": time_ms,
            "image_status": images.status,
            "video_status": 1 if recorder.recording_video else 0,
            "image_interval": float(images.interval_s),
            "recording_time_ms": recording_time_ms(recorder, now),
            "available_capacity": available_mib(disk),
            "image_count": min(images.count, INT32_MAX),
            "camera_device_id": 0,
        },
    )


def storage_status(disk: Disk | None, recorder: RecorderView) -> int:
    """EMPTY ("missing") while the recorder waits for the SSD; NOT_SUPPORTED when SSD_PATH's
    file system cannot be looked at; READY otherwise."""
    if recorder.no_disk:
        return mavlink.STORAGE_STATUS_EMPTY
    if disk is None:
        return mavlink.STORAGE_STATUS_NOT_SUPPORTED
    return mavlink.STORAGE_STATUS_READY


def storage_information(time_ms: int, disk: Disk | None, recorder: RecorderView) -> Outgoing:
    status = storage_status(disk, recorder)
    ready = status == mavlink.STORAGE_STATUS_READY and disk is not None
    return Outgoing(
        "STORAGE_INFORMATION",
        {
            "time_boot_ms": time_ms,
            "storage_id": STORAGE_ID,
            "storage_count": 1,
            "status": status,
            "total_capacity": disk.total_bytes / MIB if ready and disk else 0.0,
            "used_capacity": disk.used_bytes / MIB if ready and disk else 0.0,
            "available_capacity": disk.free_bytes / MIB if ready and disk else 0.0,
            "read_speed": 0.0,  # not measured
            "write_speed": 0.0,
            "type": mavlink.STORAGE_TYPE_OTHER,
            "name": text(STORAGE_NAME, NAME_BYTES),
            # Photos and videos both go there: a ground station need not ask which.
            "storage_usage": (
                mavlink.STORAGE_USAGE_FLAG_SET
                | mavlink.STORAGE_USAGE_FLAG_PHOTO
                | mavlink.STORAGE_USAGE_FLAG_VIDEO
            ),
        },
    )


def camera_settings(time_ms: int) -> Outgoing:
    """Video mode always: photos are taken in it too (CAN_CAPTURE_IMAGE_IN_VIDEO_MODE)."""
    return Outgoing(
        "CAMERA_SETTINGS",
        {
            "time_boot_ms": time_ms,
            "mode_id": mavlink.CAMERA_MODE_VIDEO,
            "zoomLevel": NAN,
            "focusLevel": NAN,
            "camera_device_id": 0,
        },
    )


def camera_image_captured(time_ms: int, photo: Photo) -> Outgoing:
    return Outgoing(
        "CAMERA_IMAGE_CAPTURED",
        {
            "time_boot_ms": time_ms,
            "time_utc": max(0, int(photo.taken_at * 1_000_000)),
            "camera_id": 0,  # a MAVLink camera, known by its own component id
            "lat": photo.lat_e7,
            "lon": photo.lon_e7,
            "alt": photo.alt_mm,
            "relative_alt": photo.relative_alt_mm,
            "q": list(photo.q),
            "image_index": photo.index,
            "capture_result": mavlink.MAV_BOOL_TRUE if photo.ok else mavlink.MAV_BOOL_FALSE,
            "file_url": photo.file_url.encode() if fits(photo.file_url, FILE_URL_BYTES) else b"",
        },
    )


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
