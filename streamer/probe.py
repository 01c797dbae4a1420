"""Latency probe: how old is each picture when a viewer has decoded it?

    python -m streamer.probe rtsp://192.168.1.10:8554/live [--protocols udp|tcp|auto] [--seconds 30]

Pulls the stream with GStreamer's ``rtspsrc`` (what QGroundControl uses) with its jitter buffer
at 0 ms, decodes it with ``avdec_h264 output-corrupt=false`` (no garbage before the first
keyframe), reads the capture time that ``CAMERA=test-stamped`` writes into every frame
(``streamer.stamp``) and reports capture→decoded latency: per frame on request, p50/p95/p99/max,
frames decoded and stamps that could not be read.

The capture time comes from the drone's wall clock and the decode time from this machine's:
across two machines the figure is only as good as their clock sync (NTP/chrony: typically a few
ms on a LAN; PTP better). On the same machine no sync is needed.

``RtspClient`` is the reusable part (``bench/`` runs many of them): one viewer, measuring the
time from connecting to its first clean decoded frame, frames decoded, and stamp latencies.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from streamer import stamp
from streamer.gst import GLib, Gst, GstVideo

# rtspsrc's lower transports by the names users know; "auto" is rtspsrc's own default order
# (UDP, then multicast, then TCP after its UDP timeout).
PROTOCOLS = {"udp": "udp", "tcp": "tcp", "auto": None}
DEFAULT_WARMUP_S = 1.0


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0 to 100) of already sorted values, interpolating linearly between
    ranks (numpy's default), so small samples give sensible tails."""
    if not sorted_values:
        return math.nan
    rank = (len(sorted_values) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (rank - low)


@dataclass(frozen=True)
class LatencySummary:
    """Capture→decoded latency over a run, in milliseconds."""

    frames: int  # frames whose stamp was read
    p50: float
    p95: float
    p99: float
    max: float
    mean: float

    @classmethod
    def of(cls, latencies_ms: Sequence[float]) -> LatencySummary:
        ordered = sorted(latencies_ms)
        if not ordered:
            return cls(0, math.nan, math.nan, math.nan, math.nan, math.nan)
        return cls(
            len(ordered),
            percentile(ordered, 50),
            percentile(ordered, 95),
            percentile(ordered, 99),
            ordered[-1],
            sum(ordered) / len(ordered),
        )

    def as_dict(self) -> dict[str, float | int | None]:
        """JSON-ready (NaN, for no samples, becomes null)."""
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in vars(self).items()}


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


def _format_summary(report: dict, seconds: float) -> str:
    latency = report["latency_ms"]

    def ms(key: str) -> str:
        value = latency[key]
        return "n/a" if value is None else f"{value:.1f} ms"

    first = report["first_frame_s"]
    return "\n".join(
        [
            f"stream       {report['url']} over {report['protocols']}, "
            f"rtspsrc latency={report['jitter_buffer_ms']} ms"
            + (" (no jitter buffer: no client-side buffering)" if report["jitter_buffer_ms"] == 0 else ""),
            f"first frame  {'none' if first is None else f'{first * 1000:.0f} ms after connecting'}",
            f"frames       {report['frames_decoded']} decoded in {seconds:.1f} s, "
            f"{report['stamps_failed']} without a readable stamp",
            f"latency      capture→decoded over {latency['frames']} frames after the first "
            f"{report['warmup_s']:g} s: p50 {ms('p50')}, p95 {ms('p95')}, p99 {ms('p99')}, max {ms('max')}",
            "clocks       capture time is the drone's wall clock, decode time this machine's: across "
            "machines, sync them (NTP/chrony/PTP) or the figures are off by their offset",
        ]
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m streamer.probe",
        description="Capture→decoded latency of a stream from CAMERA=test-stamped, as an rtspsrc "
        "viewer with no jitter buffer sees it.",
    )
    parser.add_argument("url", help="e.g. rtsp://192.168.1.10:8554/live")
    parser.add_argument("--protocols", choices=sorted(PROTOCOLS), default="udp", help="transport (udp)")
    parser.add_argument("--seconds", type=float, default=30.0, help="how long to measure (30)")
    parser.add_argument(
        "--warmup",
        type=float,
        default=DEFAULT_WARMUP_S,
        help=f"seconds after connecting left out of the statistics ({DEFAULT_WARMUP_S:g})",
    )
    parser.add_argument("--connect-timeout", type=float, default=10.0, help="for the first frame (10)")
    parser.add_argument("--per-frame", action="store_true", help="print each frame's latency")
    parser.add_argument("--json", action="store_true", help="print the report as one JSON object")
    args = parser.parse_args(argv)

    client = RtspClient(args.url, PROTOCOLS[args.protocols], latency_ms=0).start()
    loop = GLib.MainLoop()  # rtspsrc needs no main loop, but keeps Ctrl-C and timers simple
    printed = 0

    def tick() -> bool:
        nonlocal printed
        if args.per_frame:
            fresh = client.samples_from(printed)
            for at, ms in fresh:
                print(f"{at:9.3f} s  {ms:7.1f} ms", flush=True)
            printed += len(fresh)
        elapsed = time.monotonic() - client.started_at
        no_picture = client.first_frame_at is None and elapsed > args.connect_timeout
        if client.errors or no_picture or elapsed >= args.seconds:
            loop.quit()
            return GLib.SOURCE_REMOVE
        return GLib.SOURCE_CONTINUE

    GLib.timeout_add(100, tick)
    with contextlib.suppress(KeyboardInterrupt):
        loop.run()
    client.stop()
    seconds = time.monotonic() - client.started_at
    report = client.report(args.warmup)
    report["seconds"] = round(seconds, 3)
    if args.json:
        print(json.dumps(report), flush=True)
    else:
        print(_format_summary(report, seconds), flush=True)
    for error in report["errors"]:
        print(f"error: {error}", file=sys.stderr)
    if client.frames == 0:
        print("error: no frame decoded (is the URL right and the stream up?)", file=sys.stderr)
        return 1
    if not client.samples:
        print("error: no stamp read (is the drone running CAMERA=test-stamped?)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
