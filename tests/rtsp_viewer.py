"""A real RTSP viewer for tests: GStreamer's rtspsrc (what QGroundControl uses) decoding H.264.

In-process: ``RtspViewer(url, protocols="tcp").start()``. As a process (e.g. inside a network
namespace): ``python -m tests.rtsp_viewer URL [--protocols tcp] [--frames N] [--timeout S]``
prints one JSON object with what it saw.
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time

import gi

gi.require_version("Gst", "1.0")
from gi.repository import Gst  # noqa: E402

Gst.init(None)


class RtspViewer:
    def __init__(
        self,
        url: str,
        protocols: str | None = None,
        latency_ms: int | None = 0,
        user: str | None = None,
        password: str | None = None,
    ) -> None:
        """``user``/``password``: rtspsrc's user-id/user-pw (set as properties, so no quoting
        of the launch line is involved). An rtsps:// URL accepts any certificate (tests use a
        self-signed one)."""
        options = f"protocols={protocols} " if protocols else ""
        options += f"latency={latency_ms} " if latency_ms is not None else ""
        self.pipeline = Gst.parse_launch(
            f'rtspsrc name=src location="{url}" {options}! rtph264depay ! h264parse name=parse '
            "! avdec_h264 output-corrupt=false ! appsink name=out emit-signals=true sync=false "
            "max-buffers=2 drop=true"
        )
        source = self.pipeline.get_by_name("src")
        if user is not None:
            source.set_property("user-id", user)
        if password is not None:
            source.set_property("user-pw", password)
        if url.startswith("rtsps://"):
            source.set_property("tls-validation-flags", 0)
        self.started_at = 0.0
        self.frame_times: list[float] = []
        self.size: tuple[int, int] | None = None
        self.deltas_before_keyframe: int | None = None  # access units received before the first IDR
        self.errors: list[str] = []  # while playing
        self.teardown_errors: list[str] = []  # while being stopped (e.g. TEARDOWN under load)
        self._stopping = False
        self._deltas = 0
        self._lock = threading.Lock()
        self.pipeline.get_by_name("out").connect("new-sample", self._on_sample)
        self.pipeline.get_by_name("parse").get_static_pad("src").add_probe(
            Gst.PadProbeType.BUFFER, self._on_access_unit
        )
        bus = self.pipeline.get_bus()
        bus.enable_sync_message_emission()
        bus.connect("sync-message::error", self._on_error)

    def _on_access_unit(self, _pad: Gst.Pad, info: Gst.PadProbeInfo) -> Gst.PadProbeReturn:
        if self.deltas_before_keyframe is None:
            if info.get_buffer().has_flags(Gst.BufferFlags.DELTA_UNIT):
                self._deltas += 1
            else:
                self.deltas_before_keyframe = self._deltas
        return Gst.PadProbeReturn.OK

    def _on_sample(self, sink: Gst.Element) -> Gst.FlowReturn:
        sample = sink.emit("pull-sample")
        with self._lock:
            self.frame_times.append(time.monotonic())
            if self.size is None:
                structure = sample.get_caps().get_structure(0)
                self.size = (structure.get_value("width"), structure.get_value("height"))
        return Gst.FlowReturn.OK

    def _on_error(self, _bus: Gst.Bus, message: Gst.Message) -> None:
        errors = self.teardown_errors if self._stopping else self.errors
        errors.append(message.parse_error()[0].message)

    def start(self) -> RtspViewer:
        self.started_at = time.monotonic()
        self.pipeline.set_state(Gst.State.PLAYING)
        return self

    def stop(self) -> None:
        self._stopping = True
        self.pipeline.set_state(Gst.State.NULL)

    @property
    def frames(self) -> int:
        return len(self.frame_times)

    @property
    def first_frame_s(self) -> float | None:
        return self.frame_times[0] - self.started_at if self.frame_times else None

    def fps(self, last: int = 60) -> float:
        """Frame rate over the last ``last`` frames."""
        times = self.frame_times[-last:]
        return (len(times) - 1) / (times[-1] - times[0]) if len(times) > 2 else 0.0

    def wait_frames(self, count: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.frames < count and not self.errors:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return self.frames >= count

    def report(self) -> dict:
        return {
            "frames": self.frames,
            "size": self.size,
            "fps": round(self.fps(), 2),
            "first_frame_s": self.first_frame_s,
            "deltas_before_keyframe": self.deltas_before_keyframe,
            "errors": self.errors,
        }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--protocols", default=None, help="rtspsrc protocols (default: rtspsrc's own)")
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--timeout", type=float, default=30)
    parser.add_argument("--user", default=None, help="rtspsrc user-id")
    parser.add_argument("--password-env", default=None, help="environment variable holding user-pw")
    args = parser.parse_args()
    password = os.environ.get(args.password_env) if args.password_env else None
    viewer = RtspViewer(args.url, args.protocols, latency_ms=None, user=args.user, password=password).start()
    viewer.wait_frames(args.frames, args.timeout)
    viewer.stop()
    print(json.dumps(viewer.report()), flush=True)


if __name__ == "__main__":
    main()
