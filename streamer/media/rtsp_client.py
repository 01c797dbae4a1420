"""One RTSP viewer in this process: GStreamer's ``rtspsrc`` (what QGroundControl uses) decoding
H.264, measuring what a user would see. Used by the latency probe, the tests and the benchmarks.
"""

from __future__ import annotations

import threading
import time

from streamer.media import stamp
from streamer.media.gst import Gst, GstVideo
from streamer.media.latency import LatencySummary

# rtspsrc's lower transports by the names users know; "auto" is rtspsrc's own default order
# (UDP, then multicast, then TCP after its UDP timeout).
PROTOCOLS = {"udp": "udp", "tcp": "tcp", "auto": None}


def description(url: str, protocols: str | None, latency_ms: int, decode: bool) -> str:
    """The client pipeline. A decoding client's decoder is named ``decoder``; a light one (many
    viewers for a load test, where only the server's work matters) stops after depayloading."""
    options = f"protocols={protocols} " if protocols else ""
    head = f'rtspsrc name=src location="{url}" latency={latency_ms} {options}! rtph264depay name=depay '
    if not decode:
        return head + "! fakesink sync=false async=false"
    return (
        head + "! h264parse ! avdec_h264 name=decoder output-corrupt=false ! fakesink sync=false async=false"
    )


class RtspClient:
    """One RTSP viewer in this process, measuring what a user would see.

    - ``first_frame_s``: from ``start()`` (connecting) to the first clean decoded frame (or, for
      a light client, the first access unit received);
    - ``frames``: frames decoded (access units received, light client);
    - ``samples``: ``(seconds since start, capture→decoded ms)`` for every frame whose stamp was
      read; ``stamps_failed``: decoded frames without a readable stamp.

    Times are taken in the decoder's output pad probe, before the stamp is read, so reading it
    costs the measurement nothing.
    """

    def __init__(
        self,
        url: str,
        protocols: str | None = "udp",
        latency_ms: int = 0,
        *,
        decode: bool = True,
        read_stamps: bool = True,
    ) -> None:
        self.url = url
        self.protocols = protocols
        self.latency_ms = latency_ms
        self.read_stamps = read_stamps and decode
        self.pipeline = Gst.parse_launch(description(url, protocols, latency_ms, decode))
        self.started_at = 0.0
        self.first_frame_at: float | None = None
        self.frames = 0
        self.samples: list[tuple[float, float]] = []
        self.stamps_failed = 0
        self.errors: list[str] = []
        self._layout: stamp.FrameLayout | None = None
        self._layout_caps: Gst.Caps | None = None
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        counted = self.pipeline.get_by_name("decoder" if decode else "depay")
        counted.get_static_pad("src").add_probe(Gst.PadProbeType.BUFFER, self._on_frame)
        bus = self.pipeline.get_bus()
        bus.enable_sync_message_emission()
        bus.connect("sync-message::error", self._on_error)

    def start(self) -> RtspClient:
        self.started_at = time.monotonic()
        self.pipeline.set_state(Gst.State.PLAYING)
        return self

    def stop(self) -> None:
        self.pipeline.set_state(Gst.State.NULL)

    @property
    def first_frame_s(self) -> float | None:
        return None if self.first_frame_at is None else self.first_frame_at - self.started_at

    def latencies_ms(self, after_s: float = 0.0) -> list[float]:
        """Latency of each stamped frame decoded at least ``after_s`` after connecting."""
        with self._lock:
            return [ms for at, ms in self.samples if at >= after_s]

    def samples_from(self, index: int) -> list[tuple[float, float]]:
        """The samples taken since the first ``index`` (for printing them as they come)."""
        with self._lock:
            return self.samples[index:]

    def wait_frames(self, count: int, timeout_s: float) -> bool:
        """Wait until ``count`` frames have been decoded; False on timeout or a pipeline error."""
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while self.frames < count and not self.errors:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(left)
            return self.frames >= count

    # --- streaming thread

    def _on_frame(self, pad: Gst.Pad, info: Gst.PadProbeInfo) -> Gst.PadProbeReturn:
        decoded_wall, decoded_mono = time.time(), time.monotonic()
        buffer = info.get_buffer()
        age = self._read_stamp(pad, buffer, decoded_wall) if self.read_stamps else None
        with self._changed:
            self.frames += 1
            if self.first_frame_at is None:
                self.first_frame_at = decoded_mono
            if age is not None:
                self.samples.append((decoded_mono - self.started_at, age))
            elif self.read_stamps:
                self.stamps_failed += 1
            self._changed.notify_all()
        return Gst.PadProbeReturn.OK

    def _read_stamp(self, pad: Gst.Pad, buffer: Gst.Buffer, now_s: float) -> float | None:
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
        return None if value is None else stamp.age_ms(value, now_s)

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

    def _on_error(self, _bus: Gst.Bus, message: Gst.Message) -> None:
        with self._changed:
            self.errors.append(f"{message.src.get_name()}: {message.parse_error()[0].message}")
            self._changed.notify_all()

    def report(self, warmup_s: float = 0.0) -> dict[str, object]:
        """What this client saw, JSON-ready."""
        with self._lock:
            frames, failed, errors = self.frames, self.stamps_failed, list(self.errors)
        return {
            "url": self.url,
            "protocols": self.protocols or "auto",
            "jitter_buffer_ms": self.latency_ms,
            "first_frame_s": self.first_frame_s,
            "frames_decoded": frames,
            "stamps_failed": failed,
            "warmup_s": warmup_s,
            "latency_ms": LatencySummary.of(self.latencies_ms(warmup_s)).as_dict(),
            "errors": errors,
        }
