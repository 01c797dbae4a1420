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

``streamer.media.rtsp_client.RtspClient`` is the reusable part (``bench/`` and the tests run
many of them): one viewer, measuring the time from connecting to its first clean decoded frame,
frames decoded, and stamp latencies.

Errors are those while measuring: any fails the run (exit status 1). What rtspsrc reports while
the probe disconnects (a TEARDOWN it could not send to a busy server, say) is not one.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from collections.abc import Sequence

from streamer.media.gst import GLib
from streamer.media.rtsp_client import PROTOCOLS, RtspClient

DEFAULT_WARMUP_S = 1.0


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
            f"{report['frames_damaged']} damaged (lost packets"
            + (
                ", or joined mid-picture or mid-GOP"
                if report["joined_mid_picture"] or report["deltas_before_keyframe"]
                else ""
            )
            + "; not read), "
            f"{report['stamps_failed']} intact without a readable stamp",
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
    for error in report["errors"]:  # while playing only: not the probe's own disconnection
        print(f"error: {error}", file=sys.stderr)
    if client.frames == 0:
        print("error: no frame decoded (is the URL right and the stream up?)", file=sys.stderr)
        return 1
    if report["errors"]:
        return 1
    if not client.samples:
        print("error: no stamp read (is the drone running CAMERA=test-stamped?)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
