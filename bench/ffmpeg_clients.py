"""OpenCV and PyAV: open → first decoded frame from the stack, with FFmpeg's default probing and
with ``probesize=32``.

    .venv/bin/python -m bench.ffmpeg_clients               # 5 repeats of each
    .venv/bin/python -m bench.ffmpeg_clients --repeats 1   # a smoke run

Both clients are FFmpeg's RTSP demuxer underneath. By default it probes the stream before
returning from open: 7 frames until the H.264 DTS is known, then 20 frame durations for the
frame rate (it ignores the SDP's ``a=framerate``), about 1 s at 30 fps, whatever the server
does. ``probesize=32`` stops probing at the first packets. For each client, over UDP and TCP
(``rtsp_transport``), with default options and with ``probesize=32``, this runs the stack at
the suite's settings (``bench.plan``) and measures open → first decoded frame.

Every measurement runs in a fresh ``python -m bench.ffmpeg_clients --measure`` process, timed
inside it from just before the open (imports excluded). OpenCV takes its FFmpeg options only
from the ``OPENCV_FFMPEG_CAPTURE_OPTIONS`` environment variable, which the child is given for
that one measurement. (OpenCV reads it at each open, checked: in one process, setting
``os.environ`` between opens switches 0.97 s → 0.10 s → 0.97 s; a fresh process still leaves
nothing to chance, and keeps OpenCV's and PyAV's own FFmpeg builds out of each other's way.)
Measurements are spaced by more than the RTSP worker's keyframe pacing interval, so none waits
for a shared keyframe. Writes ``ffmpeg_clients.json`` and ``ffmpeg_clients.md`` to
``bench/results/`` (``--out``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench import report
from bench.plan import Plan, add_stack_options, finish, new_results, stream_settings, write_results
from bench.stack import FAILURES, stack_alone
from streamer.rtsp import keyframes
from streamer.testing import ROOT

log = logging.getLogger("bench")

CLIENTS = ("opencv", "pyav")
TRANSPORTS = ("udp", "tcp")
OPTIONS = {"default": {}, "probesize=32": {"probesize": "32"}}
MEASURE_TIMEOUT_S = 30.0  # one child: start, imports, open and first frame


def ffmpeg_options(transport: str, options: str) -> dict[str, str]:
    return {"rtsp_transport": transport, **OPTIONS[options]}


def opencv_env(options: dict[str, str]) -> str:
    """``OPENCV_FFMPEG_CAPTURE_OPTIONS``: ``key;value`` pairs joined by ``|``. (Unset, OpenCV
    would pick its own ``rtsp_flags=prefer_tcp``; here the transport is always given.)"""
    return "|".join(f"{key};{value}" for key, value in options.items())


# --- one measurement, in a child process


def first_frame_opencv(url: str) -> tuple[float, str]:
    import cv2

    began = time.monotonic()
    capture = cv2.VideoCapture(url, cv2.CAP_FFMPEG)
    try:
        ok, _frame = capture.read()
        seconds = time.monotonic() - began
    finally:
        capture.release()
    if not ok:
        raise RuntimeError("OpenCV read no frame")
    return seconds, f"OpenCV {cv2.__version__}"


def first_frame_pyav(url: str, options: dict[str, str]) -> tuple[float, str]:
    import av

    began = time.monotonic()
    with av.open(url, options=options, timeout=10) as container:
        next(container.decode(video=0))
        seconds = time.monotonic() - began
    return seconds, f"PyAV {av.__version__}"


def measure(client: str, url: str, options: dict[str, str]) -> dict[str, Any]:
    """The child's work: open ``url`` with ``client``, decode one frame; seconds and version."""
    if client == "opencv":
        seconds, version = first_frame_opencv(url)
    else:
        seconds, version = first_frame_pyav(url, options)
    return {"first_frame_s": round(seconds, 4), "version": version}


def measure_in_child(client: str, url: str, transport: str, options: str) -> dict[str, Any]:
    """One measurement in a fresh process; OpenCV's options are its environment."""
    env = dict(os.environ)
    env.pop("OPENCV_FFMPEG_CAPTURE_OPTIONS", None)
    if client == "opencv":
        env["OPENCV_FFMPEG_CAPTURE_OPTIONS"] = opencv_env(ffmpeg_options(transport, options))
    command = [sys.executable, "-m", "bench.ffmpeg_clients", "--measure", client, url, transport, options]
    try:
        done = subprocess.run(
            command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=MEASURE_TIMEOUT_S
        )
    except subprocess.TimeoutExpired:
        return {"error": f"no frame within {MEASURE_TIMEOUT_S:.0f} s"}
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        return {"error": (done.stderr.strip().splitlines() or ["no output"])[-1]}
    return json.loads(lines[-1])


# --- the run


def run(plan: Plan, repeats: int, out_dir: Path, workdir: Path | None, echo: bool) -> dict[str, Any]:
    began = time.monotonic()
    results = new_results({**stream_settings(plan), "repeats": repeats})
    results["errors"] = []
    combinations = [(c, t, o) for c in CLIENTS for t in TRANSPORTS for o in OPTIONS]
    figures = {combo: {"seconds": [], "errors": []} for combo in combinations}
    versions: set[str] = set()
    try:
        with stack_alone(plan, workdir, echo) as served:
            for _repeat in range(repeats):  # repeats interleaved: drift spreads over every figure
                for combo in combinations:
                    time.sleep(keyframes.FORCED_KEYFRAME_MIN_INTERVAL_S + 0.1)  # no paced keyframe
                    served.service.check_running()
                    measured = measure_in_child(combo[0], served.url, *combo[1:])
                    if "error" in measured:
                        figures[combo]["errors"].append(measured["error"])
                        log.warning("%s over %s, %s: %s", *combo, measured["error"])
                        continue
                    figures[combo]["seconds"].append(measured["first_frame_s"])
                    versions.add(measured["version"])
                    log.info("%s over %s, %s: first frame %.3f s", *combo, measured["first_frame_s"])
    except FAILURES as err:
        results["errors"].append(f"stack: {err}")
    results["versions"] = sorted(versions)
    results["figures"] = [
        {
            "client": c,
            "transport": t,
            "options": o,
            **_summary(figures[c, t, o]["seconds"]),
            **figures[c, t, o],
        }
        for c, t, o in combinations
    ]
    for figure in results["figures"]:
        results["errors"] += [
            f"{figure['client']}/{figure['transport']}/{figure['options']}: {e}" for e in figure["errors"]
        ]
    results["duration_s"] = round(time.monotonic() - began, 1)
    write_results(out_dir, "ffmpeg_clients", results, markdown(results))
    return results


def _summary(seconds: list[float]) -> dict[str, float | None]:
    return {
        "median_s": round(statistics.median(seconds), 4) if seconds else None,
        "max_s": max(seconds) if seconds else None,
    }


def markdown(results: dict[str, Any]) -> str:
    s = results["settings"]

    lines = [
        *report.heading("OpenCV and PyAV, open → first decoded frame", results),
        f"Run: {results['started_utc']}, {results['duration_s']:.0f} s, {s['repeats']} repeat(s) of each, "
        f"each in a fresh process. Clients: {', '.join(results['versions']) or '-'}.",
        "",
        "| client | transport | FFmpeg options | median s | max s | measured |",
        "|---|---|---|---:|---:|---:|",
    ]
    for f in results["figures"]:
        lines.append(
            f"| {f['client']} | {f['transport']} | {f['options']} | {report.seconds(f['median_s'])} "
            f"| {report.seconds(f['max_s'])} | {len(f['seconds'])} of {s['repeats']} |"
        )
    lines += [
        "",
        "- OpenCV: `cv2.VideoCapture(url, cv2.CAP_FFMPEG)` then `read()`, with "
        '`OPENCV_FFMPEG_CAPTURE_OPTIONS="rtsp_transport;udp|probesize;32"` (or without `probesize`).',
        '- PyAV: `av.open(url, options={"rtsp_transport": "udp", "probesize": "32"})` then the first '
        "frame of `decode(video=0)`.",
    ]
    lines += [f"\n**error**: {error}" for error in results["errors"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    if argv is None and sys.argv[1:2] == ["--measure"]:
        client, url, transport, options = sys.argv[2:6]
        print(json.dumps(measure(client, url, ffmpeg_options(transport, options))))
        return 0
    parser = argparse.ArgumentParser(
        prog="python -m bench.ffmpeg_clients", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--repeats", type=int, default=5, help="measurements of each client and option (5)")
    add_stack_options(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)

    plan = Plan(width=args.width, height=args.height)
    results = run(plan, args.repeats, args.out, args.workdir, args.echo)
    return finish(results, markdown(results), args.out, "ffmpeg_clients.json, ffmpeg_clients.md")


if __name__ == "__main__":
    raise SystemExit(main())
