"""How much latency the feeder's format stage adds, with and without videorate drop-only.

Runs the real feeder description (synthetic camera, 1280x720@30 by default) in this process and
times each frame from the decoder's output to the tee, i.e. across videoconvert, videorate and
the caps filter. Plain videorate holds a frame to decide on duplicates; drop-only must not.

    .venv/bin/python -m bench.feeder_latency [--seconds 10]
"""

from __future__ import annotations

import argparse
import collections
import os
import statistics
import tempfile
import time

import gi

gi.require_version("Gst", "1.0")
from gi.repository import GLib, Gst  # noqa: E402

from streamer import config  # noqa: E402
from streamer.media import pipelines  # noqa: E402

Gst.init(None)


def measure(description: str, seconds: float) -> list[float]:
    pipeline = Gst.parse_launch(description)
    decoder = next(e for e in pipeline.iterate_elements() if e.get_factory().get_name() == "jpegdec")
    tee = pipeline.get_by_name(pipelines.TEE_ELEMENT)
    decoded: collections.deque[float] = collections.deque()
    latencies: list[float] = []

    def at_decoder(_pad: Gst.Pad, _info: Gst.PadProbeInfo) -> Gst.PadProbeReturn:
        decoded.append(time.perf_counter())
        return Gst.PadProbeReturn.OK

    def at_tee(_pad: Gst.Pad, _info: Gst.PadProbeInfo) -> Gst.PadProbeReturn:
        # The synthetic camera runs at exactly the configured rate: videorate neither drops nor
        # duplicates, so frames leave in the order they entered.
        if decoded:
            latencies.append(time.perf_counter() - decoded.popleft())
        return Gst.PadProbeReturn.OK

    decoder.get_static_pad("src").add_probe(Gst.PadProbeType.BUFFER, at_decoder)
    tee.get_static_pad("sink").add_probe(Gst.PadProbeType.BUFFER, at_tee)
    loop = GLib.MainLoop()
    GLib.timeout_add(int(seconds * 1000), loop.quit)
    pipeline.set_state(Gst.State.PLAYING)
    loop.run()
    pipeline.set_state(Gst.State.NULL)
    return latencies[30:]  # skip start-up


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    workdir = tempfile.mkdtemp(prefix="streamer-bench-")
    settings = config.load(
        {
            "HOME": workdir,
            "CAMERA": "test",
            "SHM_RECORDER_SOCKET": f"{workdir}/rec.sock",
            "SHM_STREAM_SOCKET": f"{workdir}/str.sock",
        }
    )
    feeder = pipelines.feeder(settings)
    variants = {
        "videorate drop-only=true (shipped)": feeder,
        "videorate (default)": feeder.replace("videorate drop-only=true", "videorate"),
    }
    print(f"{settings.video_width}x{settings.video_height}@{settings.video_fps}, {os.cpu_count()} cores")
    print("decoder → tee latency per frame, ms")
    for name, description in variants.items():
        ms = sorted(x * 1000 for x in measure(description, args.seconds))
        print(
            f"  {name:36s} n={len(ms):4d}  p50={statistics.median(ms):6.2f}  "
            f"p95={ms[int(len(ms) * 0.95)]:6.2f}  max={ms[-1]:6.2f}"
        )
    os.rmdir(workdir)


if __name__ == "__main__":
    main()
