"""GStreamer glue, in one place: initialisation, running a pipeline, probing a camera.

Workers import this; the controller never does, so nothing it supervises can wedge it.
"""

from __future__ import annotations

import fcntl
import logging
import re
import signal
import sys
import termios
import time
from collections.abc import Callable

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstVideo", "1.0")
gi.require_version("GstRtp", "1.0")
gi.require_version("GstRtsp", "1.0")
gi.require_version("GstRtspServer", "1.0")
gi.require_version("GstPbutils", "1.0")
from gi.repository import (  # noqa: E402
    Gio,
    GLib,
    GObject,
    Gst,
    GstPbutils,
    GstRtp,
    GstRtsp,
    GstRtspServer,
    GstVideo,
)

from streamer.media import capture_time, encoders  # noqa: E402
from streamer.runtime.geotag import Geotag  # noqa: E402
from streamer.runtime.worker import EXIT_FAILURE, EXIT_OK  # noqa: E402

__all__ = [
    "GLib",
    "Gio",
    "Gst",
    "GstPbutils",
    "GstRtsp",
    "GstRtspServer",
    "GstVideo",
]  # the one place gi is imported

Gst.init(None)

_TYPE_ANNOTATION = re.compile(r"\(\w+\)")
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class PipelineRunner:
    """Run one pipeline on a GLib main loop until it ends, fails, or the process is told to stop.

    On SIGTERM/SIGINT the runner either sends EOS and waits (up to ``eos_timeout_s``) for it to
    reach the sinks, so muxers can finalise their files, or stops at once (``send_eos=False``).
    A worker that runs several pipelines in turn handles the signals itself for its whole life
    (``stop_on_signals=False``) and calls ``stop``: a signal between two runs is not lost then.
    Once ``run`` returns, the runner holds on to nothing in the main loop (bus handler, timers),
    so the pipeline is freed with the runner: a frame one of its elements still holds keeps a
    shared-memory reader connected, which fills the feeder's area.
    """

    def __init__(
        self,
        description: str,
        log: logging.Logger,
        *,
        send_eos: bool = False,
        eos_timeout_s: float = 5.0,
        stop_on_signals: bool = True,
    ) -> None:
        self.log = log
        self.pipeline: Gst.Pipeline = Gst.parse_launch(description)
        self.loop = GLib.MainLoop()
        self.exit_code = EXIT_OK
        self._send_eos = send_eos
        self._eos_timeout_s = eos_timeout_s
        self._stop_on_signals = stop_on_signals
        self._stopping = False
        self._eos_timer: int | None = None
        # Stopped without the end-of-stream reaching the sinks: a muxer's file may be unfinished.
        self.ended_without_eos = False
        self.on_element_message: Callable[[Gst.Message], None] | None = None
        # Returns True if it handled the error (the pipeline goes on, e.g. to finish with EOS).
        self.on_error: Callable[[Gst.Message], bool] | None = None

    def element(self, name: str) -> Gst.Element:
        element = self.pipeline.get_by_name(name)
        if element is None:
            raise LookupError(f"pipeline has no element named {name!r}")
        return element

    def run(self) -> int:
        bus = self.pipeline.get_bus()
        bus.add_signal_watch()
        handler = bus.connect("message", self._on_message)
        sources = on_stop_signals(self.stop, self.log) if self._stop_on_signals else []
        try:
            if self.pipeline.set_state(Gst.State.PLAYING) == Gst.StateChangeReturn.FAILURE:
                # The error message with the reason is already on the bus.
                self.exit_code = EXIT_FAILURE
                self._drain_errors(bus)
                return self.exit_code
            self.loop.run()
        finally:
            self.pipeline.set_state(Gst.State.NULL)
            bus.disconnect(handler)  # it refers to the runner: a cycle through C, never collected
            bus.remove_signal_watch()
            if self._eos_timer is not None:
                remove_sources([self._eos_timer])
                self._eos_timer = None
            remove_sources(sources)
        return self.exit_code

    def stop(self) -> None:
        """Stop from the main loop: with EOS first if configured, else at once."""
        if self._stopping:
            return
        self._stopping = True
        if not self._send_eos:
            self.loop.quit()
            return
        self.log.info("finishing: sending end-of-stream")
        self.pipeline.send_event(Gst.Event.new_eos())
        self._expect_eos()

    @property
    def finishing(self) -> bool:
        """Whether the pipeline is on its way out (told to stop, or finishing after a failure)."""
        return self._stopping

    def finish_after(self, element: Gst.Element) -> None:
        """Finish with EOS when ``element``, a source, has failed and can no longer send it:
        EOS is pushed into whatever follows it, so muxers downstream still finalise."""
        self.finish_into(element.get_static_pad("src").get_peer(), after=element.get_name())

    def finish_into(self, *pads: Gst.Pad, after: str) -> None:
        """Finish with EOS pushed into ``pads`` (the sink pads behind sources that failed or
        ended, ``after`` names them for the log), so muxers downstream still finalise."""
        if self._stopping:
            return
        self._stopping = True
        self.log.info("finishing: sending end-of-stream after %s", after)
        for pad in pads:
            pad.send_event(Gst.Event.new_eos())
        self._expect_eos()

    def _expect_eos(self) -> None:
        self._eos_timer = GLib.timeout_add(int(self._eos_timeout_s * 1000), self._on_eos_timeout)

    def _on_eos_timeout(self) -> bool:
        self._eos_timer = None
        self.ended_without_eos = True
        self.log.warning("end-of-stream did not arrive within %.1f s, stopping anyway", self._eos_timeout_s)
        self.loop.quit()
        return GLib.SOURCE_REMOVE

    def _drain_errors(self, bus: Gst.Bus) -> None:
        while (message := bus.pop_filtered(Gst.MessageType.ERROR)) is not None:
            log_error(self.log, message)

    def _on_message(self, _bus: Gst.Bus, message: Gst.Message) -> None:
        kind = message.type
        if kind == Gst.MessageType.ERROR:
            log_error(self.log, message)
            self.exit_code = EXIT_FAILURE
            if self.on_error is None or not self.on_error(message):
                self.loop.quit()
        elif kind == Gst.MessageType.EOS:
            self.log.info("end of stream")
            self.loop.quit()
        elif kind == Gst.MessageType.WARNING:
            log_warning(self.log, message)
        elif kind == Gst.MessageType.ELEMENT and self.on_element_message is not None:
            self.on_element_message(message)


def log_error(log: logging.Logger, message: Gst.Message) -> None:
    """An ERROR message from a pipeline's bus, as its element said it (the details at DEBUG)."""
    error, debug = message.parse_error()
    log.error("%s: %s", message.src.get_name(), error.message)
    if debug:
        log.debug("%s", debug)


def log_warning(log: logging.Logger, message: Gst.Message) -> None:
    warning, _debug = message.parse_warning()
    log.warning("%s: %s", message.src.get_name(), warning.message)


def on_stop_signals(callback: Callable[[], None], log: logging.Logger) -> list[int]:
    """Call ``callback`` from the main loop on SIGTERM or SIGINT; returns the GLib source ids."""

    def handler(signum: int) -> bool:
        log.info("received %s, stopping", signal.Signals(signum).name)
        callback()
        return GLib.SOURCE_CONTINUE

    return [GLib.unix_signal_add(GLib.PRIORITY_HIGH, signum, handler, signum) for signum in STOP_SIGNALS]


def remove_sources(source_ids: list[int]) -> None:
    for source_id in source_ids:
        GLib.source_remove(source_id)


def add_buffer_probe(element: Gst.Element, pad_name: str, callback: Callable[[Gst.Buffer], None]) -> None:
    """Call ``callback`` for every buffer through a pad (from a streaming thread)."""

    def probe(_pad: Gst.Pad, info: Gst.PadProbeInfo) -> Gst.PadProbeReturn:
        callback(info.get_buffer())
        return Gst.PadProbeReturn.OK

    pad = element.get_static_pad(pad_name)
    pad.add_probe(Gst.PadProbeType.BUFFER, probe)


def hand_over_with_capture_time(appsink: Gst.Element, appsrc: Gst.Element) -> None:
    """Pass every frame from ``appsink`` to ``appsrc`` with its capture time appended
    (``streamer.media.capture_time``): the frame's running time plus its pipeline's base time,
    on that pipeline's clock (the monotonic system clock). The frame's pixels are not copied:
    the trailer is a second memory of the buffer.

    The two may be in different pipelines (the feeder's camera side, which can be closed and
    opened again, and its output side): the frame enters ``appsrc``'s pipeline at its capture
    time in that pipeline's running time, so its times keep growing across a new camera
    pipeline, whose running time starts again from zero. End of stream is not passed on: a
    camera that ends is its own pipeline's business (its bus says so)."""

    def on_sample(sink: Gst.Element) -> Gst.FlowReturn:
        sample = sink.emit("pull-sample")
        if sample is None:
            return Gst.FlowReturn.EOS
        frame = sample.get_buffer()
        if frame.pts == Gst.CLOCK_TIME_NONE:
            return Gst.FlowReturn.OK
        captured = frame.pts + sink.get_base_time()
        stamped = Gst.Buffer.append(frame, Gst.Buffer.new_wrapped(capture_time.trailer(captured)))
        stamped.pts = max(0, captured - appsrc.get_base_time())
        stamped.dts = Gst.CLOCK_TIME_NONE
        return appsrc.emit("push-buffer", stamped)

    appsink.connect("new-sample", on_sample)


class SidePipeline:
    """A pipeline beside a ``PipelineRunner``'s, on the same main loop, started and thrown away on
    its own (the feeder's camera side): its errors and its end of stream go to ``on_error`` and
    ``on_eos`` (in the main loop) instead of ending the loop. ``close`` stops it and lets go of
    everything that refers to it, so a camera's device is released with it."""

    def __init__(
        self,
        description: str,
        log: logging.Logger,
        on_error: Callable[[Gst.Message], None],
        on_eos: Callable[[], None],
    ) -> None:
        self.log = log
        self.pipeline: Gst.Pipeline = Gst.parse_launch(description)
        self._on_error = on_error
        self._on_eos = on_eos
        self._bus = self.pipeline.get_bus()
        self._bus.add_signal_watch()
        self._handler: int | None = self._bus.connect("message", self._on_message)

    def element(self, name: str) -> Gst.Element:
        element = self.pipeline.get_by_name(name)
        if element is None:
            raise LookupError(f"pipeline has no element named {name!r}")
        return element

    def start(self) -> bool:
        """To PLAYING; False when that failed (the reason comes to ``on_error`` too)."""
        return self.pipeline.set_state(Gst.State.PLAYING) != Gst.StateChangeReturn.FAILURE

    def close(self) -> None:
        if self._handler is None:
            return
        self.pipeline.set_state(Gst.State.NULL)
        self._bus.disconnect(self._handler)  # it refers to us: a cycle through C, never collected
        self._bus.remove_signal_watch()
        self._handler = None

    def _on_message(self, _bus: Gst.Bus, message: Gst.Message) -> None:
        if self._handler is None:
            return
        if message.type == Gst.MessageType.ERROR:
            log_error(self.log, message)
            self._on_error(message)
        elif message.type == Gst.MessageType.EOS:
            self._on_eos()
        elif message.type == Gst.MessageType.WARNING:
            log_warning(self.log, message)


def time_by_capture(source: Gst.Element, frame_bytes: int, log: logging.Logger) -> None:
    """Time the frames a shared-memory reader (``source``, a ``shmsrc``) receives by their
    capture time, from the trailer the feeder appends (``hand_over_with_capture_time``), instead
    of their arrival. ``frame_bytes``: a frame's size in shared memory, trailer included; a
    buffer of another size is dropped (with one warning). The buffer leaves shmsrc unshared,
    so its times are set in place."""
    clock = capture_time.ReaderClock()
    warned = [False]

    def probe(_pad: Gst.Pad, info: Gst.PadProbeInfo) -> Gst.PadProbeReturn:
        buffer = info.get_buffer()
        size = buffer.get_size()
        if size != frame_bytes:
            if not warned[0]:
                warned[0] = True
                log.warning("dropping frames of %d bytes from shared memory (expected %d)", size, frame_bytes)
            return Gst.PadProbeReturn.DROP
        captured = capture_time.read_trailer(
            buffer.extract_dup(size - capture_time.TRAILER_BYTES, capture_time.TRAILER_BYTES)
        )
        running = clock.time_of(captured, source.get_base_time())
        if running is None:
            return Gst.PadProbeReturn.DROP
        buffer.pts = buffer.dts = running  # as do-timestamp set both
        return Gst.PadProbeReturn.OK

    source.get_static_pad("src").add_probe(Gst.PadProbeType.BUFFER, probe)


def version() -> tuple[int, int]:
    """The GStreamer this process runs, (major, minor): what some encoders' handling of forced
    keyframes depends on (``encoders.honours_forced_keyframes``)."""
    major, minor, _micro, _nano = Gst.version()
    return major, minor


# How ``force_keyframe`` asked for a keyframe.
BY_EVENT, BY_SIGNAL = "event", "signal"


def force_keyframe(encoder: Gst.Element, kind: str, frame: tuple[int, int, int, int] | None = None) -> str:
    """Ask ``encoder``, an element of encoder kind ``kind`` (``encoders.EncoderKind``), for a
    keyframe: the one place that knows the encoders differ here, used by the RTSP worker (a new
    viewer) and the recorder (``force_keyframes``).

    - Most encoders (GstVideoEncoder subclasses) take a GstForceKeyUnit event, with SPS/PPS.
      ``frame`` None: "as soon as possible", an upstream event into the encoder's source pad
      (the RTSP worker's, for a new viewer). ``frame`` = (pts, stream time, running time,
      count): a downstream event into its sink pad for that frame, sent from a probe there
      ahead of it (the recorder's timed GOPs; a request naming its frame is not merged into a
      keyframe still being worked on).
    - nvv4l2h264enc ignores the event; its action signal ``force-IDR`` makes the next frame it
      takes an IDR (``encoders.keyframe_signal``).

    Returns ``BY_EVENT`` or ``BY_SIGNAL``. (Whether the keyframe comes out as an IDR frame also
    depends on the GStreamer version for some kinds, see ``encoders.honours_forced_keyframes``;
    asking is harmless where it is ignored.)"""
    signal_name = encoders.keyframe_signal(kind)
    if signal_name is not None:
        encoder.emit(signal_name)
        return BY_SIGNAL
    if frame is None:
        event = GstVideo.video_event_new_upstream_force_key_unit(Gst.CLOCK_TIME_NONE, True, 0)
        encoder.get_static_pad("src").send_event(event)
    else:
        pts, stream_time, running_time, count = frame
        event = GstVideo.video_event_new_downstream_force_key_unit(
            pts, stream_time, running_time, True, count
        )
        encoder.get_static_pad("sink").send_event(event)
    return BY_EVENT


def set_bitrate(encoder: Gst.Element, kind: str, bitrate_bps: int) -> bool:
    """Give ``encoder`` (of kind ``kind``) a new bitrate while it plays, without restarting it:
    x264enc reconfigures itself, openh264enc passes it to OpenH264 with the next frame, the
    hardware encoders' ``bitrate`` properties are mutable while playing. False where it cannot
    be changed so (``encoders.runtime_bitrate``, or a property not marked mutable in PLAYING)."""
    change = encoders.runtime_bitrate(kind, bitrate_bps)
    if change is None:
        return False
    name, value = change
    spec = encoder.find_property(name)
    if spec is None or not spec.flags & Gst.PARAM_MUTABLE_PLAYING:
        return False
    encoder.set_property(name, value)
    return True


RECEIVER_REPORT_FIELDS = (
    "have-rb",
    "rb-fractionlost",
    "rb-packetslost",
    "rb-jitter",
    "rb-exthighestseq",
    "rb-lsr",
    "rb-dlsr",
)


def receiver_reports(media: GstRtspServer.RTSPMedia) -> dict[str, dict[str, int]]:
    """The newest RTCP receiver report about ``media``'s first stream from each viewer, by the
    address it sends its RTCP from (``"ip:port"``): rtpsession keeps one source per receiver,
    whose ``rb-*`` stats are the report block it last sent about our stream."""
    stream = media.get_stream(0)
    session = stream.get_rtpsession() if stream is not None else None
    if session is None:
        return {}
    reports: dict[str, dict[str, int]] = {}
    for source in session.get_property("sources"):
        stats = source.get_property("stats")
        if stats is None or stats.get_value("internal") or not stats.has_field("rtcp-from"):
            continue
        reports[stats.get_value("rtcp-from")] = {
            field: stats.get_value(field) for field in RECEIVER_REPORT_FIELDS if stats.has_field(field)
        }
    return reports


def unsent_bytes(connection: GstRtsp.RTSPConnection) -> int | None:
    """Bytes written to an RTSP connection's socket that the peer has not yet taken (TIOCOUTQ):
    a TCP viewer's video stuck on the way. None when it cannot be read."""
    try:
        fd = connection.get_write_socket().get_fd()
        queued = fcntl.ioctl(fd, termios.TIOCOUTQ, b"\0\0\0\0")
    except (AttributeError, OSError, TypeError):
        return None
    return int.from_bytes(queued, sys.byteorder, signed=True)


def force_keyframes(
    encoder: Gst.Element, gop_index: Callable[[int], int], kind: str = encoders.EncoderKind.X264
) -> None:
    """Make the first frame of each GOP a keyframe, GOPs numbered by time: ``gop_index`` maps a
    frame's PTS less the first frame's PTS (ns) to the number of its GOP. When it grows, the
    encoder (of kind ``kind``) is asked for a keyframe ahead of that frame
    (``force_keyframe``: a downstream force-key-unit event with SPS/PPS, or the encoder's own
    signal), and it makes that frame an IDR frame. (A keyframe interval in frames drifts from
    the intended times whenever frames are dropped in front of the encoder.)

    The probe sits on the encoder's sink pad, so it sees only frames that are encoded. Each
    event names its frame's running time: the encoder merges requests without one ("as soon
    as possible") into the keyframe it is still working on, which loses a keyframe when two
    come a few frames apart (after a gap in the frames).
    """
    first = [-1]
    current = [0]

    def probe(pad: Gst.Pad, info: Gst.PadProbeInfo) -> Gst.PadProbeReturn:
        pts = info.get_buffer().pts
        if pts == Gst.CLOCK_TIME_NONE:
            return Gst.PadProbeReturn.OK
        if first[0] < 0:
            first[0] = pts  # the encoder makes the very first frame a keyframe by itself
            return Gst.PadProbeReturn.OK
        index = gop_index(pts - first[0])
        if index > current[0]:
            current[0] = index
            segment = pad.get_sticky_event(Gst.EventType.SEGMENT, 0).parse_segment()
            stream_time = segment.to_stream_time(Gst.Format.TIME, pts)
            running_time = segment.to_running_time(Gst.Format.TIME, pts)
            force_keyframe(encoder, kind, (pts, stream_time, running_time, index))
        return Gst.PadProbeReturn.OK

    encoder.get_static_pad("sink").add_probe(Gst.PadProbeType.BUFFER, probe)


def pull_sample(appsink: Gst.Element, timeout_s: float) -> Gst.Sample | None:
    """The frame an ``appsink`` holds, or the next one within ``timeout_s``; None if none came,
    or the sink is stopping (end-of-stream, or its pipeline is being taken down). Safe from any
    thread. The appsink keeps the last sample it handed out until it is freed itself."""
    return appsink.emit("try-pull-sample", int(timeout_s * Gst.SECOND))


class JpegError(RuntimeError):
    """A frame could not be encoded as a JPEG; the message says why."""


# The pipeline that encodes one frame: jifmux writes the EXIF segment from the tags merged into
# it (GstTagSetter), GPS tags included.
JPEG_ENCODER = (
    "appsrc name=frame format=time ! videoconvert ! jpegenc ! jifmux name=exif "
    "! appsink name=jpeg sync=false wait-on-eos=false"
)


def encode_jpeg(
    sample: Gst.Sample,
    timeout_s: float = 5.0,
    *,
    taken_at: float | None = None,
    geotag: Geotag | None = None,
) -> tuple[bytes, int, int]:
    """A raw video frame as a JPEG of its own size: (the JPEG's bytes, width, height).

    Its EXIF holds the capture date and time ``taken_at`` (Unix time; the local time of this
    computer, as EXIF has it, to the second) and, with a ``geotag``, the GPS latitude,
    longitude, altitude and, when known, the direction the camera looked. Without a geotag it
    has no GPS tags at all.

    The frame is encoded in a pipeline of its own (videoconvert, jpegenc, jifmux) that the
    calling thread waits for, at most ``timeout_s``: no main loop is involved. Raises JpegError
    if it cannot (an element missing, a frame it cannot convert, the deadline).
    """
    try:
        pipeline = Gst.parse_launch(JPEG_ENCODER)
    except GLib.Error as err:
        raise JpegError(f"cannot make a JPEG encoder: {err.message}") from None
    pipeline.get_by_name("exif").merge_tags(
        _photo_tags(time.time() if taken_at is None else taken_at, geotag), Gst.TagMergeMode.REPLACE
    )
    source, sink, bus = pipeline.get_by_name("frame"), pipeline.get_by_name("jpeg"), pipeline.get_bus()
    try:
        if pipeline.set_state(Gst.State.PLAYING) == Gst.StateChangeReturn.FAILURE:
            raise JpegError(_bus_error(bus) or "the JPEG encoder does not start")
        source.emit("push-sample", sample)
        source.emit("end-of-stream")
        # All of it has reached the sink at end-of-stream; an error ends the wait sooner.
        ended = bus.timed_pop_filtered(
            int(timeout_s * Gst.SECOND), Gst.MessageType.EOS | Gst.MessageType.ERROR
        )
        if ended is None:
            raise JpegError(f"the JPEG encoder did not finish within {timeout_s:g} s")
        if ended.type == Gst.MessageType.ERROR:
            raise JpegError(f"{ended.src.get_name()}: {ended.parse_error()[0].message}")
        jpeg = sink.emit("try-pull-sample", 0)
        if jpeg is None:
            raise JpegError("the JPEG encoder produced nothing")
    finally:
        pipeline.set_state(Gst.State.NULL)
    size = jpeg.get_caps().get_structure(0)
    buffer = jpeg.get_buffer()
    return buffer.extract_dup(0, buffer.get_size()), size.get_int("width")[1], size.get_int("height")[1]


def _photo_tags(taken_at: float, geotag: Geotag | None) -> Gst.TagList:
    """The tags jifmux writes as EXIF: DateTime and DateTimeOriginal, and the GPS IFD."""
    tags = Gst.TagList.new_empty()
    local = GLib.DateTime.new_from_unix_local(int(taken_at))
    tags.add_value(Gst.TagMergeMode.REPLACE, Gst.TAG_DATE_TIME, Gst.DateTime.new_from_g_date_time(local))
    if geotag is not None:
        # GStreamer writes each as EXIF rationals: latitude and longitude as degrees, minutes and
        # seconds to 1e-7 s of arc; altitude with a reference of above or below sea level.
        located = [
            (Gst.TAG_GEO_LOCATION_LATITUDE, geotag.latitude),
            (Gst.TAG_GEO_LOCATION_LONGITUDE, geotag.longitude),
            (Gst.TAG_GEO_LOCATION_ELEVATION, geotag.altitude),
        ]
        if geotag.direction is not None:
            located.append((Gst.TAG_GEO_LOCATION_CAPTURE_DIRECTION, geotag.direction))
        for tag, value in located:
            tags.add_value(Gst.TagMergeMode.REPLACE, tag, float(value))
    return tags


def _bus_error(bus: Gst.Bus) -> str | None:
    message = bus.pop_filtered(Gst.MessageType.ERROR)
    return message.parse_error()[0].message if message is not None else None


class DeviceError(RuntimeError):
    pass


def source_caps(factory: str, **properties: object) -> Gst.Caps:
    """Open a source element just far enough (READY) to ask what it can produce."""
    element = Gst.ElementFactory.make(factory, None)
    for name, value in properties.items():
        element.set_property(name, value)
    bus = Gst.Bus.new()
    element.set_bus(bus)
    try:
        if element.set_state(Gst.State.READY) == Gst.StateChangeReturn.FAILURE:
            message = bus.pop_filtered(Gst.MessageType.ERROR)
            reason = message.parse_error()[0].message if message else "cannot be opened"
            raise DeviceError(reason)
        return element.get_static_pad("src").query_caps(None)
    finally:
        element.set_state(Gst.State.NULL)


def describe_caps(caps: Gst.Caps) -> list[str]:
    """Each structure of ``caps`` as a readable line without GStreamer's type annotations (nor
    the ``;`` that ends each one)."""
    return [
        _TYPE_ANNOTATION.sub("", caps.get_structure(i).to_string()).rstrip(";")
        for i in range(caps.get_size())
    ]


def unreadable(path: str, timeout_s: float = 5.0) -> str | None:
    """Why GStreamer cannot read the media file at ``path``, or None if it can."""
    discoverer = GstPbutils.Discoverer.new(int(timeout_s * Gst.SECOND))
    try:
        info = discoverer.discover_uri(Gst.filename_to_uri(path))
    except GLib.Error as err:
        return err.message
    if info.get_result() != GstPbutils.DiscovererResult.OK or not info.get_video_streams():
        return f"no readable video ({info.get_result().value_nick})"
    return None


def rtp_packet(buffer: Gst.Buffer) -> tuple[int, bytes] | None:
    """An RTP packet's timestamp and payload, or None if the buffer is not one."""
    ok, rtp = GstRtp.RTPBuffer.map(buffer, Gst.MapFlags.READ)
    if not ok:
        return None
    try:
        return rtp.get_timestamp(), bytes(rtp.get_payload().get_data() or b"")
    finally:
        rtp.unmap()


def element_by_factory(container: Gst.Bin, factory: str) -> Gst.Element:
    """The first element made by ``factory`` (e.g. ``"videorate"``) anywhere in ``container``:
    for elements a launch description leaves unnamed."""
    for element in container.iterate_recurse():
        made_by = element.get_factory()
        if made_by is not None and made_by.get_name() == factory:
            return element
    raise LookupError(f"pipeline has no {factory} element")


# --- WebRTC (the live worker): webrtcbin's asynchronous API, brought back to the main loop.
# GStreamer's WebRTC bindings (GstWebRTC) come from a package the other workers do not need
# (gir1.2-gst-plugins-bad-1.0): they are loaded on first use, so a machine without them runs
# everything but live view.

# Elements a live session needs, and the Debian package each comes in.
WEBRTC_ELEMENTS = {
    "rtspsrc": "gstreamer1.0-plugins-good",
    "rtph264depay": "gstreamer1.0-plugins-good",
    "rtph264pay": "gstreamer1.0-plugins-good",
    "h264parse": "gstreamer1.0-plugins-bad",
    "webrtcbin": "gstreamer1.0-plugins-bad",
    "dtlssrtpenc": "gstreamer1.0-plugins-bad",
    "srtpenc": "gstreamer1.0-plugins-bad",
    "nicesrc": "gstreamer1.0-nice",
    "nicesink": "gstreamer1.0-nice",
}
WEBRTC_BINDINGS_PACKAGE = "gir1.2-gst-plugins-bad-1.0"


def _webrtc_bindings():  # -> (GstSdp, GstWebRTC) modules
    gi.require_version("GstSdp", "1.0")
    gi.require_version("GstWebRTC", "1.0")
    from gi.repository import GstSdp, GstWebRTC

    return GstSdp, GstWebRTC


def webrtc_missing() -> str | None:
    """What live view lacks on this machine (elements, GStreamer's WebRTC bindings) with the
    packages that bring it, or None when nothing is missing."""
    missing = [
        f"{name} ({package})"
        for name, package in WEBRTC_ELEMENTS.items()
        if Gst.ElementFactory.find(name) is None
    ]
    try:
        _webrtc_bindings()
    except (ValueError, ImportError):
        missing.append(f"GStreamer's WebRTC bindings ({WEBRTC_BINDINGS_PACKAGE})")
    return ", ".join(missing) or None


def in_main_loop(callback: Callable[..., object], *args: object) -> None:
    """Run ``callback(*args)`` once from the main loop, handed over from another thread (a
    streaming thread, webrtcbin's, a socket's). At the default priority, that of the timers that
    guard such hand-overs with a deadline: at idle priority a busy loop on a loaded machine runs
    every timer first, and a deadline fired with its answer still waiting in the queue."""

    def once() -> bool:
        callback(*args)
        return GLib.SOURCE_REMOVE

    GLib.idle_add(once, priority=GLib.PRIORITY_DEFAULT)


def _promise_error(reply: Gst.Structure | None) -> str | None:
    """The error a webrtcbin promise was answered with, or None (setting a description
    succeeds with no reply at all)."""
    if reply is None or not reply.has_field("error"):
        return None
    try:
        return str(reply.get_value("error").message)
    except (AttributeError, TypeError):
        return reply.to_string()


def _promise(callback: Callable[[Gst.Structure | None], None]) -> Gst.Promise:
    """A promise whose reply goes to ``callback`` in the main loop. (The reply belongs to the
    promise, which the main loop holds until then; reading a reply's session description in
    webrtcbin's thread crashes PyGObject.)"""

    def changed(promise: Gst.Promise) -> None:
        in_main_loop(lambda: callback(promise.get_reply()))

    return Gst.Promise.new_with_change_func(changed)


def answer_offer(
    webrtc: Gst.Element,
    offer_sdp: str,
    gather_timeout_s: float,
    done: Callable[[str | None, str | None], None],
) -> Callable[[], None]:
    """Answer the SDP offer ``offer_sdp`` with ``webrtc`` (a webrtcbin), without trickle ICE:
    set it as the remote description, create the answer, set that as the local description,
    and wait until ICE gathering is complete, at most ``gather_timeout_s`` (then the answer
    holds the candidates gathered so far).

    Call from the main loop. ``done(answer_sdp, None)``, or ``done(None, error)`` with what went
    wrong, is called once, from the main loop. Returns a function that cancels the answer
    (``done`` is then not called). Raises ValueError when ``offer_sdp`` is not SDP at all.
    """
    GstSdp, GstWebRTC = _webrtc_bindings()
    result, message = GstSdp.SDPMessage.new_from_text(offer_sdp)
    if result != GstSdp.SDPResult.OK:
        raise ValueError("not an SDP message")
    offer = GstWebRTC.WebRTCSessionDescription.new(GstWebRTC.WebRTCSDPType.OFFER, message)
    pending = {"finished": False, "timer": None, "watch": None}

    def finish(answer: str | None, error: str | None) -> None:
        if pending["finished"]:
            return
        pending["finished"] = True
        if pending["timer"] is not None:
            GLib.source_remove(pending["timer"])
        if pending["watch"] is not None:
            webrtc.disconnect(pending["watch"])
        if answer is not None or error is not None:
            done(answer, error)

    def local_sdp() -> str | None:
        description = webrtc.get_property("local-description")
        return None if description is None else description.sdp.as_text()

    def gathered(*_args: object) -> None:
        state = webrtc.get_property("ice-gathering-state")
        if state == GstWebRTC.WebRTCICEGatheringState.COMPLETE:
            finish(local_sdp(), None)

    def gathering_too_long() -> bool:
        pending["timer"] = None
        answer = local_sdp()
        finish(answer, None if answer else "no answer")
        return GLib.SOURCE_REMOVE

    def after_local(reply: Gst.Structure | None) -> None:
        error = _promise_error(reply)
        if pending["finished"]:
            return
        if error:
            finish(None, f"cannot set the answer: {error}")
            return
        pending["watch"] = webrtc.connect(
            "notify::ice-gathering-state", lambda *_: in_main_loop(lambda: pending["finished"] or gathered())
        )
        pending["timer"] = GLib.timeout_add(max(1, round(gather_timeout_s * 1000)), gathering_too_long)
        gathered()

    def after_answer(reply: Gst.Structure | None) -> None:
        error = _promise_error(reply)
        if pending["finished"]:
            return
        answer = reply.get_value("answer") if reply is not None and reply.has_field("answer") else None
        if answer is None:
            finish(None, f"cannot answer the offer: {error or 'no answer'}")
            return
        webrtc.emit("set-local-description", answer, _promise(after_local))

    def after_remote(reply: Gst.Structure | None) -> None:
        error = _promise_error(reply)
        if pending["finished"]:
            return
        if error:
            finish(None, f"the offer was refused: {error}")
            return
        _no_upnp(webrtc)  # before the answer is set, which gathers the candidates
        webrtc.emit("create-answer", None, _promise(after_answer))

    webrtc.emit("set-remote-description", offer, _promise(after_remote))
    return lambda: finish(None, None)


def _ice_sources(webrtc: Gst.Element) -> list[Gst.Element]:
    """The ``nicesrc`` of each of ``webrtc``'s ICE transports (they exist once a description
    is set)."""
    return [
        element
        for element in webrtc.iterate_recurse()
        if (factory := element.get_factory()) is not None and factory.get_name() == "nicesrc"
    ]


def _no_upnp(webrtc: Gst.Element) -> None:
    """Keep libnice from asking the network's router, over UPnP, to open a port to us (its
    default): only host candidates are wanted, and a vehicle must not change its network's
    router. The ICE agent is reached through a transport's ``nicesrc``: webrtcbin's own
    ``ice-agent`` property hands Python a reference it does not own (webrtcbin then frees
    the agent twice)."""
    for source in _ice_sources(webrtc):
        source.get_property("agent").set_property("upnp", False)


def watch_webrtc_state(webrtc: Gst.Element, prop: str, callback: Callable[[str], None]) -> int:
    """Call ``callback`` with the new value's nick ("connected", "failed", ...) from the main
    loop whenever ``prop``, an enum property of ``webrtc`` ("connection-state",
    "ice-connection-state"), changes. Returns the handler id (for ``webrtc.disconnect``)."""
    _webrtc_bindings()  # the enums' types

    def changed(element: Gst.Element, _spec: object) -> None:
        in_main_loop(callback, element.get_property(prop).value_nick)

    return webrtc.connect(f"notify::{prop}", changed)


def probe_buffers(
    element: Gst.Element, pad_name: str, callback: Callable[[Gst.Buffer], None]
) -> Callable[[], None]:
    """``add_buffer_probe`` that can be taken off again: returns the function that removes it.
    (A probe's callback refers to its owner: a pipeline whose probes stay is never freed.)"""

    def probe(_pad: Gst.Pad, info: Gst.PadProbeInfo) -> Gst.PadProbeReturn:
        callback(info.get_buffer())
        return Gst.PadProbeReturn.OK

    pad = element.get_static_pad(pad_name)
    probe_id = pad.add_probe(Gst.PadProbeType.BUFFER, probe)
    return lambda: pad.remove_probe(probe_id)


def count_received(webrtc: Gst.Element, callback: Callable[[Gst.Buffer], None]) -> list[Callable[[], None]]:
    """Call ``callback`` (from a streaming thread) for every packet ``webrtc`` receives from its
    peer through its ICE transports (RTCP, DTLS; ICE's own checks stay inside the ICE agent).
    Call once the descriptions are set (the transports exist then); returns the functions that
    remove the probes, one per transport watched."""
    return [probe_buffers(source, "src", callback) for source in _ice_sources(webrtc)]


# --- Publishing (the publish worker)


def sign_in(source: Gst.Element, credentials: tuple[tuple[str, str], ...]) -> None:
    """Give an ``rtspsrc`` of our own RTSP server the first of its ``credentials`` (the
    settings' ``rtsp_credentials``; none: no access control), as properties: never in a
    description, never logged."""
    if credentials:
        user, password = credentials[0]
        set_properties(source, {"user-id": user, "user-pw": password})


def set_properties(element: Gst.Element, properties: dict[str, str | int]) -> None:
    """Set each property of ``element``; an enum or flags property may be given by its nick
    (e.g. rtmp2sink's ``scheme="rtmps"``). Values are set as they are (never parsed), so a
    password or key may hold any character."""
    for name, value in properties.items():
        spec = element.find_property(name)
        if spec is None:
            raise LookupError(f"{element.get_name()} has no property {name!r}")
        named = GObject.type_is_a(spec.value_type, GObject.TYPE_ENUM) or GObject.type_is_a(
            spec.value_type, GObject.TYPE_FLAGS
        )
        if named and isinstance(value, str):
            Gst.util_set_object_arg(element, name, value)
        else:
            element.set_property(name, value)


def count_into(element: Gst.Element, callback: Callable[[int, int], None]) -> Callable[[], None]:
    """Call ``callback(buffers, bytes)`` (from a streaming thread) for what enters ``element``
    through its first sink pad, a request pad too (rtspclientsink's ``sink_%u``): once per
    buffer, or once per buffer list with its buffers and bytes (mpegtsmux pushes lists).
    Returns the function that removes the probe."""
    pad = element.sinkpads[0]

    def probe(_pad: Gst.Pad, info: Gst.PadProbeInfo) -> Gst.PadProbeReturn:
        if info.type & Gst.PadProbeType.BUFFER_LIST:
            buffers = info.get_buffer_list()
            callback(buffers.length(), buffers.calculate_size())
        else:
            callback(1, info.get_buffer().get_size())
        return Gst.PadProbeReturn.OK

    probe_id = pad.add_probe(Gst.PadProbeType.BUFFER | Gst.PadProbeType.BUFFER_LIST, probe)
    return lambda: pad.remove_probe(probe_id)


def on_end_of_stream(element: Gst.Element, pad_name: str, callback: Callable[[], None]) -> None:
    """Call ``callback()`` from the main loop when end-of-stream passes ``element``'s pad (a
    source of one branch that ended on its own, e.g. an RTSP server that went away)."""

    def probe(_pad: Gst.Pad, info: Gst.PadProbeInfo) -> Gst.PadProbeReturn:
        if info.get_event().type == Gst.EventType.EOS:
            in_main_loop(callback)
        return Gst.PadProbeReturn.OK

    element.get_static_pad(pad_name).add_probe(Gst.PadProbeType.EVENT_DOWNSTREAM, probe)


def comes_from(message: Gst.Message, element: Gst.Element) -> bool:
    """Whether ``message`` was posted by ``element`` or by an element inside it (a bin)."""
    return message.src is element or (
        isinstance(message.src, Gst.Object) and message.src.has_as_ancestor(element)
    )


def drop_to_keyframe_after_gap(
    element: Gst.Element, pad_name: str = "src", on_drop: Callable[[], None] | None = None
) -> Callable[[], None]:
    """Let through ``element``'s pad only video that decodes: nothing before the first
    keyframe, and after a gap (a buffer marked DISCONT that is not a keyframe: a leaky queue
    marks the first buffer after those it dropped) nothing up to the next keyframe, since the
    frames in between refer to frames that are gone. ``on_drop()`` is called (from a streaming
    thread) for each frame dropped. Returns the function that removes the probe."""
    dropping = [True]

    def probe(_pad: Gst.Pad, info: Gst.PadProbeInfo) -> Gst.PadProbeReturn:
        buffer = info.get_buffer()
        if not buffer.has_flags(Gst.BufferFlags.DELTA_UNIT):
            dropping[0] = False
        elif buffer.has_flags(Gst.BufferFlags.DISCONT):
            dropping[0] = True
        if not dropping[0]:
            return Gst.PadProbeReturn.OK
        if on_drop is not None:
            on_drop()
        return Gst.PadProbeReturn.DROP

    pad = element.get_static_pad(pad_name)
    probe_id = pad.add_probe(Gst.PadProbeType.BUFFER, probe)
    return lambda: pad.remove_probe(probe_id)


def missing_elements(names: tuple[str, ...]) -> list[str]:
    """Those of the element factories ``names`` this machine does not have."""
    return [name for name in names if Gst.ElementFactory.find(name) is None]


def probe_tcp(host: str, port: int, timeout_s: float, answer: Callable[[bool], None]) -> None:
    """Whether ``host:port`` accepts a TCP connection, found out without blocking: ``answer``
    is called from the main loop with the outcome (the connection is closed at once)."""
    client = Gio.SocketClient.new()
    client.set_timeout(max(1, round(timeout_s)))

    def connected(source: Gio.SocketClient, result: Gio.AsyncResult) -> None:
        try:
            connection = source.connect_to_host_finish(result)
        except GLib.Error:
            answer(False)
            return
        connection.close(None)
        answer(True)

    client.connect_to_host_async(host, port, None, connected)
