"""The camera protocol: what the component does with each message it hears.

- ``target_of`` and ``decide`` are pure: whether a command is ours, and what to do with it
  (answer at once, act through the recorder, or stay silent). Table-tested.
- ``Identity``: our system id (MAVLINK_SYSTEM_ID, else learnt from the vehicle's heartbeat, 1
  until then) and who was heard last (the vehicle, a ground station).
- ``CameraComponent``: the state (image captures, commands in flight) and the actions. Every
  method runs on the worker loop's thread; what may block (the recorder's command channel, the
  file system) runs as ``Jobs`` in a thread of their own, and their answers come back to the
  loop's thread through ``Jobs.finish``. So the loop, and with it the heartbeats, never waits
  on the recorder.

Addressing: a command for our system and component is ours; one for our system (or all
systems) and component 0 is a broadcast, acted on when it is a command we know and answered
only when accepted (a broadcast is never told "unsupported"); anything else is not ours and
ignored. Every command we act on is answered with COMMAND_ACK to its sender.
"""

from __future__ import annotations

import collections
import functools
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any, Protocol

from pymavlink.dialects.v20 import common as mavlink

from streamer.config import Settings
from streamer.mavlink import messages
from streamer.mavlink.messages import Disk, ImagesView, Outgoing, Photo, RecorderView
from streamer.mavlink.position import Fix, Position
from streamer.runtime.commands import CommandError, Unavailable

ACCEPTED = mavlink.MAV_RESULT_ACCEPTED
TEMPORARILY_REJECTED = mavlink.MAV_RESULT_TEMPORARILY_REJECTED
DENIED = mavlink.MAV_RESULT_DENIED
UNSUPPORTED = mavlink.MAV_RESULT_UNSUPPORTED
FAILED = mavlink.MAV_RESULT_FAILED

DEFAULT_SYSTEM_ID = 1  # until the vehicle's heartbeat says otherwise
MAX_STATUS_HZ = 10.0  # VIDEO_START_CAPTURE's CAMERA_CAPTURE_STATUS rate, at most
MAX_QUEUED_PHOTOS = 4  # single captures waiting for the recorder; more are "temporarily rejected"
IMAGES_REMEMBERED = 64  # CAMERA_IMAGE_CAPTURED kept for a ground station's re-request
INT32_MAX = 2**31 - 1
# Heartbeats of these types come from equipment, not from a vehicle's autopilot.
NOT_VEHICLES = frozenset(
    {
        mavlink.MAV_TYPE_GCS,
        mavlink.MAV_TYPE_ANTENNA_TRACKER,
        mavlink.MAV_TYPE_ONBOARD_CONTROLLER,
        mavlink.MAV_TYPE_GIMBAL,
        mavlink.MAV_TYPE_ADSB,
        mavlink.MAV_TYPE_CAMERA,
        mavlink.MAV_TYPE_CHARGING_STATION,
        mavlink.MAV_TYPE_FLARM,
        mavlink.MAV_TYPE_SERVO,
        mavlink.MAV_TYPE_ODID,
        mavlink.MAV_TYPE_BATTERY,
        mavlink.MAV_TYPE_PARACHUTE,
        mavlink.MAV_TYPE_LOG,
        mavlink.MAV_TYPE_OSD,
        mavlink.MAV_TYPE_IMU,
        mavlink.MAV_TYPE_GPS,
        mavlink.MAV_TYPE_WINCH,
        mavlink.MAV_TYPE_ILLUMINATOR,
    }
)

# Messages a ground station may ask for (MAV_CMD_REQUEST_MESSAGE's param1).
HEARTBEAT = mavlink.MAVLINK_MSG_ID_HEARTBEAT
CAMERA_INFORMATION = mavlink.MAVLINK_MSG_ID_CAMERA_INFORMATION
CAMERA_SETTINGS = mavlink.MAVLINK_MSG_ID_CAMERA_SETTINGS
STORAGE_INFORMATION = mavlink.MAVLINK_MSG_ID_STORAGE_INFORMATION
CAMERA_CAPTURE_STATUS = mavlink.MAVLINK_MSG_ID_CAMERA_CAPTURE_STATUS
CAMERA_IMAGE_CAPTURED = mavlink.MAVLINK_MSG_ID_CAMERA_IMAGE_CAPTURED
VIDEO_STREAM_INFORMATION = mavlink.MAVLINK_MSG_ID_VIDEO_STREAM_INFORMATION
VIDEO_STREAM_STATUS = mavlink.MAVLINK_MSG_ID_VIDEO_STREAM_STATUS
STREAM_MESSAGES = (VIDEO_STREAM_INFORMATION, VIDEO_STREAM_STATUS)
# The older request commands QGroundControl still sends, and what each asks for.
LEGACY_REQUESTS = {
    mavlink.MAV_CMD_REQUEST_CAMERA_INFORMATION: CAMERA_INFORMATION,
    mavlink.MAV_CMD_REQUEST_CAMERA_SETTINGS: CAMERA_SETTINGS,
    mavlink.MAV_CMD_REQUEST_STORAGE_INFORMATION: STORAGE_INFORMATION,
    mavlink.MAV_CMD_REQUEST_CAMERA_CAPTURE_STATUS: CAMERA_CAPTURE_STATUS,
    mavlink.MAV_CMD_REQUEST_VIDEO_STREAM_INFORMATION: VIDEO_STREAM_INFORMATION,
    mavlink.MAV_CMD_REQUEST_VIDEO_STREAM_STATUS: VIDEO_STREAM_STATUS,
}


# --- decisions (pure)


class Target(Enum):
    US = "us"
    BROADCAST = "broadcast"
    OTHER = "other"


def target_of(target_system: int, target_component: int, system_id: int, component_id: int) -> Target:
    """Whether a command addressed to (``target_system``, ``target_component``) is ours."""
    if target_system not in (0, system_id):
        return Target.OTHER
    if target_component == component_id and target_system == system_id:
        return Target.US
    if target_component == 0:
        return Target.BROADCAST
    return Target.OTHER


@dataclass(frozen=True)
class Ignore:
    """Not for us, or a broadcast we have nothing to say to."""


@dataclass(frozen=True)
class Reply:
    """Answer at once: COMMAND_ACK with ``result``, then the messages ``sends`` (their ids)."""

    result: int
    sends: tuple[int, ...] = ()


@dataclass(frozen=True)
class SetVideo:
    """Start or stop recording video; answered once the recorder has done it."""

    on: bool
    status_hz: float = 0.0  # CAMERA_CAPTURE_STATUS while recording (0: only when asked)


@dataclass(frozen=True)
class StartImages:
    """Take ``count`` photos (0: until stopped) ``interval_s`` apart; one photo when count is 1."""

    interval_s: float
    count: int
    sequence: int  # single captures: a retransmission repeats it (0: not given)


@dataclass(frozen=True)
class StopImages:
    pass


@dataclass(frozen=True)
class ResendImage:
    """A CAMERA_IMAGE_CAPTURED again (a ground station missed it)."""

    index: int


Decision = Ignore | Reply | SetVideo | StartImages | StopImages | ResendImage


def whole(value: float) -> int | None:
    """``value`` as a whole number, or None when it is not one (NaN, infinite, fractional)."""
    if not math.isfinite(value) or value != int(value):
        return None
    return int(value)


def _ours(camera_id: float, component_id: int) -> bool:
    """A command's "target camera id" param: unset (NaN), 0 (all), 1 (our one sensor) or our
    component id."""
    return math.isnan(camera_id) or whole(camera_id) in (0, 1, component_id)


def _stream(stream_id: float) -> bool:
    return math.isnan(stream_id) or whole(stream_id) in (0, messages.STREAM_ID)


def decide(
    command: int, params: tuple[float, ...], *, broadcast: bool, component_id: int, has_stream: bool
) -> Decision:
    """What to do with ``command`` and its ``params`` (param1 first): see the module's
    docstring. A broadcast gets an answer only when it is accepted or acted on."""
    decision = _decide(command, (*params, *(math.nan,) * 7)[:7], component_id, has_stream)
    if broadcast and isinstance(decision, Reply) and decision.result != ACCEPTED:
        return Ignore()
    return decision


def _request(message_id: int | None, index: float, has_stream: bool) -> Decision:
    """MAV_CMD_REQUEST_MESSAGE (``index``: its param2, a stream, storage or image index)."""
    if message_id in (HEARTBEAT, CAMERA_INFORMATION, CAMERA_SETTINGS, CAMERA_CAPTURE_STATUS):
        return Reply(ACCEPTED, (message_id,))
    if message_id == STORAGE_INFORMATION:
        ours = math.isnan(index) or whole(index) in (0, messages.STORAGE_ID)
        return Reply(ACCEPTED, (message_id,)) if ours else Reply(DENIED)
    if message_id in STREAM_MESSAGES:
        return Reply(ACCEPTED, (message_id,)) if has_stream and _stream(index) else Reply(DENIED)
    if message_id == CAMERA_IMAGE_CAPTURED:
        wanted = whole(index)
        return ResendImage(wanted) if wanted is not None and wanted >= 0 else Reply(DENIED)
    return Reply(UNSUPPORTED)


def _decide(command: int, p: tuple[float, ...], component_id: int, has_stream: bool) -> Decision:
    if command == mavlink.MAV_CMD_REQUEST_MESSAGE:
        return _request(whole(p[0]), p[1], has_stream)
    if command in LEGACY_REQUESTS:
        wanted = LEGACY_REQUESTS[command]
        if command == mavlink.MAV_CMD_REQUEST_STORAGE_INFORMATION:  # param1 storage id, param2 "request"
            index, asked = p[0], p[1]
        elif wanted in STREAM_MESSAGES:  # param1 stream id
            index, asked = p[0], 1.0
        else:  # param1: 0 no action, 1 request
            index, asked = math.nan, p[0]
        if whole(asked) == 0:
            return Reply(ACCEPTED)
        return _request(wanted, index, has_stream)
    if command == mavlink.MAV_CMD_VIDEO_START_CAPTURE:
        if not _stream(p[0]) or not _ours(p[2], component_id):
            return Reply(DENIED)
        hz = p[1] if math.isfinite(p[1]) and p[1] > 0 else 0.0
        return SetVideo(True, min(hz, MAX_STATUS_HZ))
    if command == mavlink.MAV_CMD_VIDEO_STOP_CAPTURE:
        if not _stream(p[0]) or not _ours(p[1], component_id):
            return Reply(DENIED)
        return SetVideo(False)
    if command == mavlink.MAV_CMD_IMAGE_START_CAPTURE:
        count = whole(p[2])
        if not _ours(p[0], component_id) or count is None or not 0 <= count <= INT32_MAX:
            return Reply(DENIED)
        if count == 1:
            sequence = whole(p[3])
            return StartImages(0.0, 1, sequence if sequence is not None and sequence > 0 else 0)
        if not (math.isfinite(p[1]) and p[1] > 0):
            return Reply(DENIED)  # a series needs an interval
        return StartImages(p[1], count, 0)
    if command == mavlink.MAV_CMD_IMAGE_STOP_CAPTURE:
        return StopImages() if _ours(p[0], component_id) else Reply(DENIED)
    if command == mavlink.MAV_CMD_SET_CAMERA_MODE:
        # Photos and video at once, always: both modes are the one we are in.
        mode = whole(p[1])
        return (
            Reply(ACCEPTED)
            if mode in (mavlink.CAMERA_MODE_IMAGE, mavlink.CAMERA_MODE_VIDEO)
            else Reply(DENIED)
        )
    if command == mavlink.MAV_CMD_STORAGE_FORMAT:
        return Reply(DENIED)  # the recordings are never erased from the air
    return Reply(UNSUPPORTED)


def command_name(command: int) -> str:
    """``REQUEST_MESSAGE`` for MAV_CMD_REQUEST_MESSAGE; the number when unknown."""
    entry = mavlink.enums["MAV_CMD"].get(command)
    return entry.name.removeprefix("MAV_CMD_") if entry is not None else str(command)


# --- who is who


@dataclass(frozen=True)
class Heard:
    system_id: int
    component_id: int
    at: float  # monotonic


class Identity:
    """Our ids, and the vehicle and ground station heard last. The vehicle is the autopilot
    whose heartbeat carries our system id (MAVLINK_SYSTEM_ID), or, with none configured, the
    first autopilot heard: its system id becomes ours (a camera is a component of its vehicle)."""

    def __init__(self, configured_system_id: int | None, component_id: int) -> None:
        self.configured_system_id = configured_system_id
        self.component_id = component_id
        self.learnt_system_id: int | None = None
        self.vehicle: Heard | None = None
        self.gcs: Heard | None = None

    @property
    def system_id(self) -> int:
        return self.configured_system_id or self.learnt_system_id or DEFAULT_SYSTEM_ID

    def heartbeat(self, system_id: int, component_id: int, mav_type: int, autopilot: int, now: float) -> bool:
        """Note a heartbeat; True when it taught us our system id."""
        if mav_type == mavlink.MAV_TYPE_GCS:
            self.gcs = Heard(system_id, component_id, now)
            return False
        vehicle = (
            autopilot != mavlink.MAV_AUTOPILOT_INVALID
            and mav_type not in NOT_VEHICLES
            and component_id != mavlink.MAV_COMP_ID_GIMBAL
            and 0 < system_id < 255  # 255 is a ground station's by convention
        )
        if not vehicle:
            return False
        learnt = False
        if self.configured_system_id is None and self.learnt_system_id is None:
            self.learnt_system_id = system_id
            learnt = True
        if system_id == self.system_id:
            self.vehicle = Heard(system_id, component_id, now)
        return learnt

    @staticmethod
    def describe(heard: Heard | None, now: float) -> dict[str, Any] | None:
        """For the status report: its system id and how long ago it was heard."""
        if heard is None:
            return None
        return {"system_id": heard.system_id, "last_heartbeat_s_ago": round(max(0.0, now - heard.at), 1)}


# --- the component


class Recorder(Protocol):
    """The recorder's command channel (``streamer.runtime.commands``); calls block."""

    def recording(self, video: bool) -> dict[str, Any]: ...

    def snapshot(self, geotag: dict[str, Any] | None) -> dict[str, Any]: ...


class Surroundings(Protocol):
    """What the component observes around it. ``locate_photo`` and ``file_url`` run in the
    jobs' thread (they may touch the disk); the rest on the loop's thread, cheaply."""

    def recorder(self) -> RecorderView: ...

    def disk(self) -> Disk | None: ...

    def stream_running(self) -> bool: ...

    def stream_uri(self) -> str: ...

    def photo_url(self, path: str) -> str: ...


class Jobs(Protocol):
    """Runs ``work`` in a thread of its own and ``then(result or exception)`` on the loop's
    thread, at its next ``finish``."""

    def submit(self, work: Callable[[], Any], then: Callable[[Any], None]) -> None: ...

    def finish(self) -> None: ...


@dataclass(frozen=True)
class CommandMessage:
    """A COMMAND_LONG or COMMAND_INT, as far as we use it."""

    command: int
    params: tuple[float, ...]  # param1 first
    source_system: int
    source_component: int
    target_system: int
    target_component: int


@dataclass
class IntervalCapture:
    interval_s: float
    count: int  # 0: until stopped
    taken: int
    next_at: float  # monotonic


class CameraComponent:
    """The camera's protocol state; ``send`` puts a message on the link (never raises)."""

    def __init__(
        self,
        settings: Settings,
        identity: Identity,
        position: Position,
        surroundings: Surroundings,
        recorder: Recorder,
        jobs: Jobs,
        send: Callable[[Outgoing], None],
        log: logging.Logger,
        *,
        model: str,
        firmware: int = 0,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.identity = identity
        self.position = position
        self.surroundings = surroundings
        self.recorder = recorder
        self.jobs = jobs
        self.send = send
        self.log = log
        self.model = model
        self.firmware = firmware
        self.clock = clock
        self.wall = wall
        self.started_at = clock()
        self.commands: collections.Counter[str] = collections.Counter()  # handled, by name
        self.images_captured = 0
        self._captured: collections.OrderedDict[int, Photo] = collections.OrderedDict()
        self._interval: IntervalCapture | None = None
        self._photos_in_flight = 0
        self._last_sequence = 0  # of the latest single capture
        self._video_pending: set[bool] = set()
        self._answer: tuple[RecorderView, float] | None = None  # the recorder's last answer, and when
        self._status_hz = 0.0
        self._next_status_at = 0.0
        self._uri_warned = False

    # --- messages in

    def command(self, message: CommandMessage) -> None:
        target = target_of(
            message.target_system,
            message.target_component,
            self.identity.system_id,
            self.identity.component_id,
        )
        if target is Target.OTHER:
            return
        decision = decide(
            message.command,
            message.params,
            broadcast=target is Target.BROADCAST,
            component_id=self.identity.component_id,
            has_stream=self.settings.enable_rtsp,
        )
        if isinstance(decision, Ignore):
            return
        unsupported = isinstance(decision, Reply) and decision.result == UNSUPPORTED
        self.commands["unsupported" if unsupported else command_name(message.command)] += 1
        match decision:
            case Reply(result, sends):
                self._ack(message, result)
                for message_id in sends:
                    self.send_message(message_id)
            case SetVideo():
                self._set_video(message, decision)
            case StartImages():
                self._start_images(message, decision)
            case StopImages():
                self._stop_images(message)
            case ResendImage(index):
                photo = self._captured.get(index)
                self._ack(message, ACCEPTED if photo is not None else DENIED)
                if photo is not None:
                    self.send(messages.camera_image_captured(self._time_ms(), photo))

    def _ack(self, message: CommandMessage, result: int) -> None:
        self.send(
            messages.command_ack(message.command, result, message.source_system, message.source_component)
        )

    # --- what we say

    def _time_ms(self) -> int:
        return messages.boot_ms(self.clock() - self.started_at)

    def recorder_view(self) -> RecorderView:
        """The recorder as published, or as it answered our latest command when the published
        report is older than that answer (reports come about once a second)."""
        published = self.surroundings.recorder()
        if self._answer is None:
            return published
        answered, at = self._answer
        if published.reported_at is not None and published.reported_at >= at:
            self._answer = None
            return published
        since = published.recording_since if published.recording_video else at
        return RecorderView(
            state=answered.state,
            video=answered.video,
            recording_since=since if answered.recording_video else None,
            session=answered.session,
            reported_at=published.reported_at,
        )

    def images_view(self) -> ImagesView:
        busy = self._photos_in_flight > 0
        if self._interval is not None:
            status = messages.INTERVAL_IN_PROGRESS if busy else messages.INTERVAL_IDLE
            return ImagesView(status, self._interval.interval_s, self.images_captured)
        return ImagesView(
            messages.IMAGE_IN_PROGRESS if busy else messages.IMAGES_IDLE, 0.0, self.images_captured
        )

    def message(self, message_id: int) -> Outgoing:
        """The message ``message_id`` (one ``decide`` may ask for) as it is now."""
        settings, time_ms = self.settings, self._time_ms()
        if message_id == HEARTBEAT:
            return messages.heartbeat()
        if message_id == CAMERA_INFORMATION:
            return messages.camera_information(settings, time_ms, self.model, self.firmware)
        if message_id == CAMERA_SETTINGS:
            return messages.camera_settings(time_ms)
        if message_id == STORAGE_INFORMATION:
            return messages.storage_information(time_ms, self.surroundings.disk(), self.recorder_view())
        if message_id == CAMERA_CAPTURE_STATUS:
            return messages.camera_capture_status(
                time_ms, self.wall(), self.recorder_view(), self.images_view(), self.surroundings.disk()
            )
        if message_id == VIDEO_STREAM_INFORMATION:
            uri = self.surroundings.stream_uri()
            if not messages.fits(uri, messages.URI_BYTES) and not self._uri_warned:
                self.log.warning("the stream's URI %s is too long for MAVLink: sent empty", uri)
                self._uri_warned = True
            return messages.video_stream_information(settings, uri, self.surroundings.stream_running())
        if message_id == VIDEO_STREAM_STATUS:
            return messages.video_stream_status(settings, self.surroundings.stream_running())
        raise ValueError(f"no message {message_id} here")

    def send_message(self, message_id: int) -> None:
        self.send(self.message(message_id))

    # --- video

    def _set_video(self, message: CommandMessage, decision: SetVideo) -> None:
        if decision.on in self._video_pending:
            return  # a retransmission while the recorder works on it: its answer answers both
        self._video_pending.add(decision.on)
        self.log.info(
            "%s recording video, as asked by %d/%d",
            "starting" if decision.on else "stopping",
            message.source_system,
            message.source_component,
        )
        self.jobs.submit(
            functools.partial(self.recorder.recording, decision.on),
            functools.partial(self._video_done, message, decision),
        )

    def _video_done(self, message: CommandMessage, decision: SetVideo, outcome: Any) -> None:
        self._video_pending.discard(decision.on)
        what = "start" if decision.on else "stop"
        if isinstance(outcome, Unavailable):
            self.log.warning("cannot %s recording video: %s", what, outcome)
            self._ack(message, TEMPORARILY_REJECTED)
            return
        if isinstance(outcome, BaseException):
            if not isinstance(outcome, CommandError):
                self.log.error("cannot %s recording video", what, exc_info=outcome)
            else:
                self.log.warning("cannot %s recording video: %s", what, outcome)
            self._ack(message, FAILED)
            return
        answered = RecorderView.from_progress(outcome)
        self._answer = (answered, self.wall())
        self.log.info(
            "video recording %s (recorder: %s)", "on" if answered.recording_video else "off", answered.state
        )
        if decision.on:
            self._status_hz = decision.status_hz
            self._next_status_at = self.clock() + (1 / self._status_hz if self._status_hz else 0)
        else:
            self._status_hz = 0.0
        self._ack(message, ACCEPTED)
        self.send_message(CAMERA_CAPTURE_STATUS)

    # --- images

    def _start_images(self, message: CommandMessage, decision: StartImages) -> None:
        interval = self._interval
        if decision.count == 1:
            if interval is not None or self._photos_in_flight >= MAX_QUEUED_PHOTOS:
                self._ack(message, TEMPORARILY_REJECTED)
                return
            if decision.sequence and decision.sequence == self._last_sequence:
                self._ack(message, ACCEPTED)  # a retransmission: that photo is taken already
                return
            self._last_sequence = decision.sequence
            self._ack(message, ACCEPTED)
            self._take_photo()
            return
        if interval is not None:
            same = (interval.interval_s, interval.count) == (decision.interval_s, decision.count)
            self._ack(message, ACCEPTED if same else TEMPORARILY_REJECTED)  # same: a retransmission
            return
        self.log.info(
            "taking %s photos %g s apart, as asked by %d/%d",
            decision.count or "unlimited",
            decision.interval_s,
            message.source_system,
            message.source_component,
        )
        self._interval = IntervalCapture(decision.interval_s, decision.count, 0, self.clock())
        self._ack(message, ACCEPTED)
        self._next_interval_photo()

    def _stop_images(self, message: CommandMessage) -> None:
        if self._interval is not None:
            self.log.info("photo series stopped after %d photos, as asked", self._interval.taken)
            self._interval = None
        self._ack(message, ACCEPTED)

    def _next_interval_photo(self) -> None:
        interval = self._interval
        now = self.clock()
        if interval is None or self._photos_in_flight or now < interval.next_at:
            return
        self._take_photo()
        interval.taken += 1
        if interval.count and interval.taken >= interval.count:
            self._interval = None
        else:  # not sooner than one interval after this photo was asked for
            interval.next_at = max(interval.next_at + interval.interval_s, now)

    def _take_photo(self) -> None:
        now = self.clock()
        fix = self.position.fix(now)
        q = self.position.quaternion(now)
        if isinstance(fix, Fix):
            geotag: dict[str, Any] | None = fix.geotag.fields()
        else:
            geotag = None
            self.log.info("photo without GPS tags: %s", fix)
        taken_at = self.wall()
        self._photos_in_flight += 1

        def work() -> tuple[dict[str, Any], str]:
            answer = self.recorder.snapshot(geotag)
            path = answer.get("path")
            return answer, self.surroundings.photo_url(path) if isinstance(path, str) else ""

        self.jobs.submit(work, functools.partial(self._photo_done, fix, q, taken_at))

    def _photo_done(
        self, fix: Fix | str, q: tuple[float, float, float, float], taken_at: float, outcome: Any
    ) -> None:
        self._photos_in_flight -= 1
        if isinstance(outcome, BaseException):
            if isinstance(outcome, CommandError):
                self.log.warning("photo failed: %s", outcome)
            else:
                self.log.error("photo failed", exc_info=outcome)
            photo = Photo(index=-1, ok=False, taken_at=taken_at, q=q)
        else:
            _answer, url = outcome
            where = fix.position if isinstance(fix, Fix) else None
            photo = Photo(
                index=self.images_captured,
                ok=True,
                taken_at=taken_at,
                lat_e7=where.lat_e7 if where else 0,
                lon_e7=where.lon_e7 if where else 0,
                alt_mm=where.alt_mm if where else 0,
                relative_alt_mm=where.relative_alt_mm if where else 0,
                q=q,
                file_url=url,
            )
            self.images_captured += 1
            self._captured[photo.index] = photo
            while len(self._captured) > IMAGES_REMEMBERED:
                self._captured.popitem(last=False)
        self.send(messages.camera_image_captured(self._time_ms(), photo))

    # --- the loop's turn

    def tick(self) -> None:
        """Whatever is due: finished recorder commands, the next photo of a series, a capture
        status asked for with VIDEO_START_CAPTURE."""
        self.jobs.finish()
        self._next_interval_photo()
        if self._status_hz and self.clock() >= self._next_status_at:
            if self.recorder_view().recording_video:
                self.send_message(CAMERA_CAPTURE_STATUS)
                self._next_status_at = self.clock() + 1 / self._status_hz
            else:
                self._status_hz = 0.0  # stopped by someone else (the web page)
