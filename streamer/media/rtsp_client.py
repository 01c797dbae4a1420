"""One RTSP viewer in this process: GStreamer's ``rtspsrc`` (what QGroundControl uses) decoding
H.264, measuring what a user would see. Used by the latency probe, the benchmarks and the tests.
"""

from __future__ import annotations

import threading
import time

from streamer.media import gst, h264_rtp, stamp
from streamer.media.gst import Gst, GstVideo
from streamer.media.latency import LatencySummary

# rtspsrc's lower transports by the names users know; "auto" is rtspsrc's own default order
# (UDP, then multicast, then TCP after its UDP timeout).
PROTOCOLS = {"udp": "udp", "tcp": "tcp", "auto": None}


def description(url: str, protocols: str | None, latency_ms: int | None, decode: bool) -> str:
    """The client pipeline. A decoding client parses (``parse``) and decodes (``decoder``); a
    light one (many viewers for a load test, where only the server's work matters) stops after
    depayloading (``depay``). ``None`` leaves rtspsrc's own default for protocols and latency."""
    options = f"protocols={protocols} " if protocols else ""
    options += f"latency={latency_ms} " if latency_ms is not None else ""
    head = f'rtspsrc name=src location="{url}" {options}! rtph264depay name=depay '
    if not decode:
        return head + "! fakesink sync=false async=false"
    return (
        head + "! h264parse name=parse ! avdec_h264 name=decoder output-corrupt=false "
        "! fakesink sync=false async=false"
    )


class StampReader:
    """Reads the capture-time stamp (``streamer.media.stamp``) of decoded frames on one pad."""

    def __init__(self) -> None:
        self._layout: stamp.FrameLayout | None = None
        self._layout_caps: Gst.Caps | None = None

    def age_ms(self, pad: Gst.Pad, buffer: Gst.Buffer, decoded_s: float) -> float | None:
        """Capture→``decoded_s`` (wall clock) in ms; None when the frame has no readable stamp."""
        layout = self._frame_layout(pad, buffer)
        if layout is None:
            return None
        ok, mapped = buffer.map(Gst.MapFlags.READ)
        if not ok:
            return None
        try:
            value = stamp.read(mapped.data, layout)
        except (stamp.StampError, IndexError, ValueError):
            value = None
        finally:
            buffer.unmap(mapped)
        return None if value is None else stamp.age_ms(value, decoded_s)

    def _frame_layout(self, pad: Gst.Pad, buffer: Gst.Buffer) -> stamp.FrameLayout | None:
        meta = GstVideo.buffer_get_video_meta(buffer)
        if meta is not None:  # the decoder's own strides, e.g. padded for direct rendering
            return stamp.FrameLayout.from_planes(meta.width, meta.height, meta.offset, meta.stride)
        caps = pad.get_current_caps()
        if caps is None:
            return None
        if self._layout is None or not caps.is_equal(self._layout_caps):
            info = GstVideo.VideoInfo.new_from_caps(caps)
            self._layout = stamp.FrameLayout.from_planes(info.width, info.height, info.offset, info.stride)
            self._layout_caps = caps
        return self._layout


class RtspClient:
    """One RTSP viewer in this process, measuring what a user would see.

    - ``frame_times`` (monotonic) and ``frames``: frames decoded (access units received, for a
      light client); ``first_frame_s``: from ``start()`` (connecting) to the first clean one;
      ``fps(last)``; ``size``: the decoded frames' (width, height);
    - ``deltas_before_keyframe``: access units received before the first IDR (decoding client);
    - ``samples``: ``(seconds since start, capture→decoded ms)`` for every frame whose stamp was
      read; ``stamps_failed``: intact decoded frames without a readable stamp;
    - ``frames_damaged``: frames decoded from a stream that had lost packets (RTP sequence
      gaps: UDP loss, or the jitter buffer giving up on a late packet), from the frame after
      the gap to the next keyframe received whole; and likewise from the first picture if the
      viewer joined in its middle (``joined_mid_picture``: its start was sent before the viewer
      was there, no gap says so) or if it is not a keyframe (``deltas_before_keyframe``: its
      references were sent before). The decoder conceals what is missing (avdec_h264 outputs
      such pictures), so their pictures, stamp included, may be smeared: they are counted
      apart, not read;
    - ``errors``: errors posted while playing. Errors posted once ``stop()`` has begun (rtspsrc
      failing to send its TEARDOWN to a busy or gone server, say) are ``teardown_errors``: the
      viewer had already seen what it came for.

    ``user``/``password`` are rtspsrc's user-id/user-pw (properties: no quoting of the launch
    line is involved). An rtsps:// URL accepts any certificate (a drone's is self-signed).
    Times are taken in the decoder's output pad probe, before the stamp is read, so reading it
    costs the measurement nothing.
    """

    def __init__(
        self,
        url: str,
        protocols: str | None = None,
        latency_ms: int | None = 0,
        user: str | None = None,
        password: str | None = None,
        *,
        decode: bool = True,
        read_stamps: bool = True,
        udp_ports: tuple[int, int] | None = None,
    ) -> None:
        self.url = url
        self.protocols = protocols
        self.latency_ms = latency_ms
        self.read_stamps = read_stamps and decode
        self.pipeline = Gst.parse_launch(description(url, protocols, latency_ms, decode))
        source = self.pipeline.get_by_name("src")
        if user is not None:
            source.set_property("user-id", user)
        if password is not None:
            source.set_property("user-pw", password)
        if url.startswith("rtsps://"):
            source.set_property("tls-validation-flags", 0)
        if udp_ports is not None:  # its RTP and RTCP ports (a test shapes the link to them)
            source.set_property("port-range", f"{udp_ports[0]}-{udp_ports[1]}")
        self.started_at = 0.0
        self.frame_times: list[float] = []
        # (monotonic time, H.264 bytes received so far) at each depayloaded access unit: the
        # bitrate the viewer gets, over any span (``bitrate_bps``).
        self.video_bytes: list[tuple[float, int]] = []
        self.size: tuple[int, int] | None = None
        self.deltas_before_keyframe: int | None = None
        self.samples: list[tuple[float, float]] = []
        self.stamps_failed = 0
        self.frames_damaged = 0
        self.damaged_times: list[float] = []  # monotonic, of each damaged frame
        self.joined_mid_picture = False
        self.errors: list[str] = []
        self.teardown_errors: list[str] = []
        self._stopping = False
        self._deltas = 0
        self._stamps = StampReader()
        self._damaged_pts: set[int] = set()  # access units decoded from a stream with a gap
        self._in_damage = False
        self._seen_access_unit = False
        # The first picture's RTP timestamp: if the viewer joined in its middle with something of
        # it still to decode (see h264_rtp), that picture is damaged, with no gap to say so.
        self._first_picture: int | None = None
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        counted = self.pipeline.get_by_name("decoder" if decode else "depay")
        counted.get_static_pad("src").add_probe(Gst.PadProbeType.BUFFER, self._on_frame)
        depay = self.pipeline.get_by_name("depay")
        depay.get_static_pad("src").add_probe(Gst.PadProbeType.BUFFER, self._on_video_bytes)
        if decode:
            depay.get_static_pad("sink").add_probe(Gst.PadProbeType.BUFFER, self._on_first_packets)
            depay.get_static_pad("src").add_probe(Gst.PadProbeType.BUFFER, self._on_depayloaded)
            parse = self.pipeline.get_by_name("parse").get_static_pad("src")
            parse.add_probe(Gst.PadProbeType.BUFFER, self._on_access_unit)
        bus = self.pipeline.get_bus()
        bus.enable_sync_message_emission()
        bus.connect("sync-message::error", self._on_error)

    def start(self) -> RtspClient:
        self.started_at = time.monotonic()
        self.pipeline.set_state(Gst.State.PLAYING)
        return self

    def stop(self) -> None:
        """Disconnect (TEARDOWN) and free the pipeline; errors from here on are teardown errors."""
        with self._changed:
            self._stopping = True
            self._changed.notify_all()
        self.pipeline.set_state(Gst.State.NULL)  # not under the lock: the probes take it

    @property
    def frames(self) -> int:
        return len(self.frame_times)

    @property
    def first_frame_at(self) -> float | None:
        """Monotonic time of the first frame."""
        times = self.frame_times
        return times[0] if times else None

    @property
    def first_frame_s(self) -> float | None:
        first = self.first_frame_at
        return None if first is None else first - self.started_at

    def fps(self, last: int = 60) -> float:
        """Frame rate over the last ``last`` frames."""
        with self._lock:
            times = self.frame_times[-last:]
        return (len(times) - 1) / (times[-1] - times[0]) if len(times) > 2 else 0.0

    def latencies_ms(self, after_s: float = 0.0) -> list[float]:
        """Latency of each stamped frame decoded at least ``after_s`` after connecting."""
        with self._lock:
            return [ms for at, ms in self.samples if at >= after_s]

    def samples_from(self, index: int) -> list[tuple[float, float]]:
        """The samples taken since the first ``index`` (for printing them as they come)."""
        with self._lock:
            return self.samples[index:]

    def bitrate_bps(self, start: float, end: float) -> float:
        """The video bitrate received between two monotonic times (H.264, without RTP headers)."""
        with self._lock:
            inside = [total for at, total in self.video_bytes if start <= at <= end]
            before = [total for at, total in self.video_bytes if at < start]
        if not inside:
            return 0.0
        return (inside[-1] - (before[-1] if before else 0)) * 8 / (end - start)

    def frames_between(self, start: float, end: float, *, intact: bool = False) -> int:
        """Frames decoded (or, not decoding, depayloaded) between two monotonic times; only those
        decoded whole (none of their data lost) with ``intact``."""
        with self._lock:
            frames = sum(start <= at <= end for at in self.frame_times)
            if intact:
                frames -= sum(start <= at <= end for at in self.damaged_times)
            return frames

    def wait_frames(self, count: int, timeout: float) -> bool:
        """Wait until ``count`` frames have come; False on timeout or an error while playing."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while self.frames < count and not self.errors and not self._stopping:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(left)
            return self.frames >= count

    # --- streaming threads

    def _on_access_unit(self, _pad: Gst.Pad, info: Gst.PadProbeInfo) -> Gst.PadProbeReturn:
        if self.deltas_before_keyframe is None:
            if info.get_buffer().has_flags(Gst.BufferFlags.DELTA_UNIT):
                self._deltas += 1
            else:
                self.deltas_before_keyframe = self._deltas
        return Gst.PadProbeReturn.OK

    def _on_first_packets(self, _pad: Gst.Pad, info: Gst.PadProbeInfo) -> Gst.PadProbeReturn:
        """Watch the packets of the first picture only: if the first did not begin it and a later
        one begins a NAL unit, the depayloader will hand on a picture missing its start."""
        packet = gst.rtp_packet(info.get_buffer())
        if packet is None:
            return Gst.PadProbeReturn.OK
        timestamp, payload = packet
        if self._first_picture is None:
            self._first_picture = timestamp
            if h264_rtp.starts_access_unit(payload):
                return Gst.PadProbeReturn.REMOVE  # joined at a picture's start: nothing is missing
        elif timestamp != self._first_picture:
            return Gst.PadProbeReturn.REMOVE  # the first picture is past
        if h264_rtp.begins_nal_unit(payload):
            self.joined_mid_picture = True
            return Gst.PadProbeReturn.REMOVE
        return Gst.PadProbeReturn.OK

    def _on_video_bytes(self, _pad: Gst.Pad, info: Gst.PadProbeInfo) -> Gst.PadProbeReturn:
        now, size = time.monotonic(), info.get_buffer().get_size()
        with self._lock:
            total = self.video_bytes[-1][1] if self.video_bytes else 0
            self.video_bytes.append((now, total + size))
        return Gst.PadProbeReturn.OK

    def _on_depayloaded(self, _pad: Gst.Pad, info: Gst.PadProbeInfo) -> Gst.PadProbeReturn:
        """Note the access units that depend on lost packets. The depayloader flags the first
        one after an RTP sequence gap DISCONT (the very first one too: nothing is lost there);
        a keyframe that comes whole ends the damage."""
        buffer = info.get_buffer()
        if self._seen_access_unit:
            gap = buffer.has_flags(Gst.BufferFlags.DISCONT)
        else:  # no gap before the first picture, but its start or its references may be missing
            gap = self.joined_mid_picture or buffer.has_flags(Gst.BufferFlags.DELTA_UNIT)
        self._seen_access_unit = True
        if gap:
            self._in_damage = True
        elif not buffer.has_flags(Gst.BufferFlags.DELTA_UNIT):
            self._in_damage = False
        if self._in_damage and buffer.pts != Gst.CLOCK_TIME_NONE:
            with self._lock:
                self._damaged_pts.add(buffer.pts)
        return Gst.PadProbeReturn.OK

    def _on_frame(self, pad: Gst.Pad, info: Gst.PadProbeInfo) -> Gst.PadProbeReturn:
        decoded_wall, decoded_mono = time.time(), time.monotonic()
        buffer = info.get_buffer()
        with self._lock:
            damaged = buffer.pts in self._damaged_pts
            if self._damaged_pts:  # forget this one and any the decoder dropped before it
                self._damaged_pts = {pts for pts in self._damaged_pts if pts > buffer.pts}
        read = self.read_stamps and not damaged
        age = self._stamps.age_ms(pad, buffer, decoded_wall) if read else None
        size = None
        if self.size is None and (caps := pad.get_current_caps()) is not None:
            structure = caps.get_structure(0)
            if structure.has_field("width"):
                size = (structure.get_value("width"), structure.get_value("height"))
        with self._changed:
            self.frame_times.append(decoded_mono)
            if size is not None:
                self.size = size
            if damaged:
                self.frames_damaged += 1
                self.damaged_times.append(decoded_mono)
            elif age is not None:
                self.samples.append((decoded_mono - self.started_at, age))
            elif self.read_stamps:
                self.stamps_failed += 1
            self._changed.notify_all()
        return Gst.PadProbeReturn.OK

    def _on_error(self, _bus: Gst.Bus, message: Gst.Message) -> None:
        error = f"{message.src.get_name()}: {message.parse_error()[0].message}"
        with self._changed:
            (self.teardown_errors if self._stopping else self.errors).append(error)
            self._changed.notify_all()

    def report(self, warmup_s: float = 0.0) -> dict[str, object]:
        """What this client saw, JSON-ready. ``errors`` are those while playing only."""
        with self._lock:
            frames, failed, errors = self.frames, self.stamps_failed, list(self.errors)
            damaged = self.frames_damaged
            joined_mid_picture = self.joined_mid_picture
        return {
            "url": self.url,
            "protocols": self.protocols or "auto",
            "jitter_buffer_ms": self.latency_ms,  # None: rtspsrc's default (2000 ms)
            "first_frame_s": self.first_frame_s,
            "frames_decoded": frames,
            "size": self.size,
            "fps": round(self.fps(), 2),
            "deltas_before_keyframe": self.deltas_before_keyframe,
            "stamps_failed": failed,
            "frames_damaged": damaged,
            "joined_mid_picture": joined_mid_picture,
            "warmup_s": warmup_s,
            "latency_ms": LatencySummary.of(self.latencies_ms(warmup_s)).as_dict(),
            "errors": errors,
        }
