"""Whole-stack CPU and memory per encoder choice, side by side in one run, one viewer each.

The default (two x264 encoders), one encode for both paths (``RECORD_SOURCE=stream``) and
``ENCODER=openh264``:

    .venv/bin/python -m bench.encoders            # 1280x720@30, 30 s per configuration
    .venv/bin/python -m bench.encoders --short --width 320 --height 240   # a smoke run (the test's)

The stack (``python -m streamer.drone`` under its controller) runs at the suite's settings
(``bench.plan``: CAMERA=test-stamped, 1280x720@30, VIDEO_BITRATE 2 Mbit/s, recorder on: MP4
chunks and a JPEG a second; private sockets, port and SSD directory), once per configuration,
one after the other (never two at once: their CPU figures must not mix):

1. ``default``: ``ENCODER=x264 RECORD_SOURCE=own`` (the recorder encodes on its own, at
   RECORD_BITRATE; the stream's encoder serves the viewer);
2. ``record_stream``: ``ENCODER=x264 RECORD_SOURCE=stream`` (one encode: the recorder records
   the stream encoder's output over RTSP);
3. ``openh264``: ``ENCODER=openh264 RECORD_SOURCE=own``.

For each: once the controller says the stack is up and the viewer (``RtspClient``, UDP, the
suite's client) has decoded its first frame and warmed up, the CPU of the controller and every
worker over ``--seconds`` (``utime + stime`` from ``/proc``, % of one core; the sum is the
"whole stack"), their RSS at the window's end, and the viewer's received frame rate over the
window. Then ``--joins`` late joiners, one at a time, each joining the running stream more than
the RTSP worker's keyframe pacing interval after the previous one: connect → first clean decoded
frame (a keyframe forced for it). Then, once ``min_chunks`` chunks are finished (a deadline), the
stack is stopped and every chunk finished while it ran is read with ``ffprobe``: duration
(min/median/max) and bitrate (size x 8 / duration).

The goal (issue 16): whole-stack CPU with ``RECORD_SOURCE=stream`` ≤ 0.65 x the default's.

Writes ``encoders.json`` and ``encoders.md`` to ``bench/results/`` (``--out``); exit status 1
if a configuration failed (what was measured is still written).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import report
from bench.plan import (
    CONNECT_TIMEOUT_S,
    RTSP_PATH,
    START_TIMEOUT_S,
    PhaseFailed,
    Plan,
    add_stack_options,
    finish,
    new_results,
    private_workdir,
    service_env,
    stream_settings,
    write_results,
)
from bench.procs import CpuMeter, Service, free_port, read_rss_kib, wait_until
from bench.stack import FAILURES
from streamer import config
from streamer.media.pipelines import RECORD_CHUNK_S
from streamer.media.rtsp_client import RtspClient
from streamer.rtsp import keyframes
from streamer.testing import stack_state

log = logging.getLogger("bench")

GOAL_RATIO = 0.65  # RECORD_SOURCE=stream's whole-stack CPU / the default's (issue 16)
# A joiner's keyframe is forced at once only when the previous forced one is older than this.
JOIN_GAP_S = keyframes.FORCED_KEYFRAME_MIN_INTERVAL_S + 0.1
FFPROBE_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Configuration:
    name: str
    label: str
    settings: dict[str, str]  # on top of the suite's environment


CONFIGURATIONS = (
    Configuration("default", "default (x264, recorder encodes)", {"ENCODER": "x264", "RECORD_SOURCE": "own"}),
    Configuration(
        "record_stream", "RECORD_SOURCE=stream (one encode)", {"ENCODER": "x264", "RECORD_SOURCE": "stream"}
    ),
    Configuration("openh264", "ENCODER=openh264", {"ENCODER": "openh264", "RECORD_SOURCE": "own"}),
)


@dataclass(frozen=True)
class Setup:
    joins: int = 5  # late joiners per configuration
    min_chunks: int = 3  # finished chunks to wait for before stopping each stack


# --- chunks


def finished_chunks(ssd: Path) -> list[Path]:
    """Chunks splitmuxsink has closed while the recorder runs: every one but the newest of each
    session (a restarted recorder starts a session of its own)."""
    chunks: list[Path] = []
    for session in sorted(p for p in ssd.glob("0*") if p.is_dir()):
        chunks += sorted(session.glob("video_*.mp4"))[:-1]
    return chunks


def probe_chunk(path: Path) -> dict[str, Any]:
    """ffprobe's duration, codec and size of one chunk, and its bitrate (file size x 8 / duration)."""
    result = subprocess.run(
        ["ffprobe", "-v", "error", "-of", "json", "-show_format", "-show_streams", str(path)],
        capture_output=True,
        text=True,
        timeout=FFPROBE_TIMEOUT_S,
    )
    if result.returncode != 0:
        return {"chunk": path.name, "error": result.stderr.strip() or f"ffprobe exit {result.returncode}"}
    info = json.loads(result.stdout)
    streams = [s for s in info.get("streams", []) if s.get("codec_type") == "video"]
    duration = float(info.get("format", {}).get("duration") or 0)
    size = path.stat().st_size
    if not streams or duration <= 0:
        return {"chunk": path.name, "error": "no video stream or no duration"}
    return {
        "chunk": path.name,
        "codec": streams[0].get("codec_name"),
        "size": [streams[0].get("width"), streams[0].get("height")],
        "duration_s": round(duration, 3),
        "bytes": size,
        "bitrate_bps": round(size * 8 / duration),
    }


def chunk_summary(chunks: list[dict[str, Any]]) -> dict[str, Any]:
    """Min/median/max duration and bitrate of the chunks ffprobe could read."""
    read = [c for c in chunks if "error" not in c]
    durations = [c["duration_s"] for c in read]
    total_s = sum(durations)
    if not read:
        return {"count": 0, "unreadable": len(chunks)}
    return {
        "count": len(read),
        "unreadable": len(chunks) - len(read),
        "duration_min_s": min(durations),
        "duration_median_s": round(statistics.median(durations), 3),
        "duration_max_s": max(durations),
        "bitrate_median_bps": round(statistics.median(c["bitrate_bps"] for c in read)),
        "bitrate_overall_bps": round(sum(c["bytes"] for c in read) * 8 / total_s) if total_s else None,
    }


# --- one configuration


def stack_pids(service: Service) -> dict[str, int]:
    """The controller and every worker it runs now."""
    return {**service.worker_pids(), "controller": service.pid}


def late_joins(url: str, count: int, previous_join: float) -> tuple[list[float], list[int | None]]:
    """``count`` viewers join the running stream one at a time, each more than the keyframe
    pacing interval after the previous (``previous_join``: when the last viewer connected,
    monotonic): connect → first clean decoded frame, and the delta frames received before the
    first keyframe."""
    seconds: list[float] = []
    deltas: list[int | None] = []
    for _ in range(count):
        wait_until(
            lambda since=previous_join: time.monotonic() - since >= JOIN_GAP_S,
            JOIN_GAP_S + 5,
            "a quiet moment",
        )
        joiner = RtspClient(url, "udp", read_stamps=False).start()
        previous_join = joiner.started_at
        try:
            if not joiner.wait_frames(1, CONNECT_TIMEOUT_S) or joiner.first_frame_s is None:
                raise PhaseFailed(
                    f"a late joiner got no frame within {CONNECT_TIMEOUT_S:g} s: {joiner.errors}"
                )
            seconds.append(round(joiner.first_frame_s, 4))
            deltas.append(joiner.deltas_before_keyframe)
        finally:
            joiner.stop()
    return seconds, deltas


def measure(
    configuration: Configuration, plan: Plan, setup: Setup, where: Path, echo: bool
) -> dict[str, Any]:
    """One configuration's stack, measured and stopped; its recordings read and removed."""
    out: dict[str, Any] = {
        "name": configuration.name,
        "label": configuration.label,
        "settings": configuration.settings,
        "errors": [],
    }
    port = free_port()
    url = f"rtsp://127.0.0.1:{port}{RTSP_PATH}"
    env = service_env(plan, where, port)
    env.update(configuration.settings)
    ssd = Path(env["SSD_PATH"])
    try:
        config.load(env)  # a setting this stack does not know: named here, not only in its log
    except config.ConfigError as err:
        out["errors"].append(f"configuration error: {err}")
        log.error("%s: configuration error: %s", configuration.name, err)
        return out
    log.info(
        "%s: starting python -m streamer.drone on port %d with %s",
        configuration.name,
        port,
        " ".join(f"{k}={v}" for k, v in configuration.settings.items()),
    )
    service = Service("streamer.drone", env, echo=echo)
    known: set[int] = set()
    viewer: RtspClient | None = None
    chunks: list[Path] = []
    try:
        service.wait_up(START_TIMEOUT_S)
        viewer = RtspClient(url, "udp").start()
        if not viewer.wait_frames(1, CONNECT_TIMEOUT_S):
            raise PhaseFailed(f"the viewer got no frame within {CONNECT_TIMEOUT_S:g} s: {viewer.errors}")
        started_at = viewer.started_at
        wait_until(
            lambda: time.monotonic() - started_at >= plan.warmup_s, plan.warmup_s + 5, "the viewer's warm-up"
        )
        pids = stack_pids(service)
        known.update(pids.values())
        meter = CpuMeter({**pids, "bench": os.getpid()}).start()
        frames_before = viewer.frames
        time.sleep(plan.seconds)  # the window being measured
        cpu = meter.stop()
        frames = viewer.frames - frames_before
        rss = {name: read_rss_kib(pid) for name, pid in pids.items()}
        if stack_pids(service) != pids:
            raise PhaseFailed(
                f"a process of the stack restarted during the window: {pids} → {stack_pids(service)}"
            )
        if viewer.errors:
            raise PhaseFailed(f"the viewer failed: {viewer.errors}")
        stack_cpu = {name: cpu.percent[name] for name in pids if name in cpu.percent}
        out["cpu_percent"] = stack_cpu
        out["cpu_total"] = round(sum(stack_cpu.values()), 1)
        out["cpu_bench"] = cpu.percent.get("bench")
        out["window_s"] = cpu.seconds
        out["rss_kib"] = rss
        out["rss_total_mib"] = round(sum(v for v in rss.values() if v) / 1024, 1)
        out["viewer"] = {
            "frames": frames,
            "fps": round(frames / cpu.seconds, 2),
            "size": viewer.size,
            "first_frame_s": viewer.first_frame_s,
            "frames_damaged": viewer.frames_damaged,
        }
        log.info(
            "%s: whole stack %.1f %% of a core (%s), RSS %.1f MiB, viewer %.1f fps",
            configuration.name,
            out["cpu_total"],
            ", ".join(f"{k} {v:.1f}" for k, v in sorted(stack_cpu.items())),
            out["rss_total_mib"],
            out["viewer"]["fps"],
        )
        out["late_join_s"], out["late_join_deltas_before_keyframe"] = late_joins(
            url, setup.joins, viewer.started_at
        )
        log.info("%s: late join %s s", configuration.name, out["late_join_s"])
        wait_until(
            lambda: len(finished_chunks(ssd)) >= setup.min_chunks,
            RECORD_CHUNK_S * (setup.min_chunks + 2) + 15,
            f"{setup.min_chunks} finished chunk(s)",
        )
        chunks = finished_chunks(ssd)
        current = stack_state(env)
        if current is not None:
            out["encoder"] = current.encoder.get("chosen")
            out["restarts"] = [f"{r.scope}: {r.reason}" for r in current.restarts]
        out["recorder_records_stream"] = bool(service.matches(r"recorder: recording the RTSP stream"))
        out["recorder_encodes"] = bool(service.matches(r"recorder: video encoder"))
    except FAILURES as err:
        out["errors"].append(str(err).splitlines()[0])
        log.error("%s: %s\n%s", configuration.name, err, service.tail())
    finally:
        if viewer is not None:
            viewer.stop()
        known.update(service.worker_pids().values())
        code = service.stop(also=sorted(known - {service.pid}))
        out["exit_status"] = code
        log.info("%s: stopped (exit status %s)", configuration.name, code)
        if code not in (0, None) and not out["errors"]:
            out["errors"].append(f"the stack exited with status {code}:\n{service.tail(5)}")
    try:
        out["chunks"] = [probe_chunk(chunk) for chunk in chunks]
        out["chunk_summary"] = chunk_summary(out["chunks"])
        if chunks and not out["chunk_summary"]["count"]:
            out["errors"].append(f"no chunk could be read: {out['chunks'][:2]}")
    finally:
        shutil.rmtree(ssd, ignore_errors=True)
    return out


# --- the run


def cpu_ratio(configurations: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """RECORD_SOURCE=stream's whole-stack CPU over the default's, against the goal."""
    default = configurations.get("default", {}).get("cpu_total")
    one = configurations.get("record_stream", {}).get("cpu_total")
    ratio = round(one / default, 3) if default and one is not None else None
    return {"ratio": ratio, "goal": GOAL_RATIO, "met": None if ratio is None else ratio <= GOAL_RATIO}


def run(plan: Plan, setup: Setup, out: Path, workdir: Path | None, echo: bool) -> dict[str, Any]:
    began = time.monotonic()
    results: dict[str, Any] = new_results(
        {
            **stream_settings(plan),
            "seconds": plan.seconds,
            "warmup_s": plan.warmup_s,
            "joins": setup.joins,
            "min_chunks": setup.min_chunks,
            "short": plan.short,
        }
    )
    results.update(configurations={}, errors=[])
    with private_workdir(workdir) as where:
        for configuration in CONFIGURATIONS:
            measured = measure(configuration, plan, setup, where, echo)
            results["configurations"][configuration.name] = measured
            results["errors"] += [f"{configuration.name}: {error}" for error in measured["errors"]]
    results["cpu_ratio_record_stream_to_default"] = cpu_ratio(results["configurations"])
    results["duration_s"] = round(time.monotonic() - began, 1)
    write_results(out, "encoders", results, markdown(results))
    return results


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def markdown(results: dict[str, Any]) -> str:
    s = results["settings"]
    measured = results["configurations"]
    lines = [
        *report.heading("Encoders: whole-stack CPU and memory per encoder choice", results),
        f"Run: {results['started_utc']}, {results.get('duration_s', 0):.0f} s"
        f"{' (--short: a smoke run, not a measurement)' if s['short'] else ''}. Each configuration is its "
        "own stack (`python -m streamer.drone`, recording video and images), run one after the other, "
        f"with one RTSP viewer (UDP, rtspsrc latency=0, decoding, in the bench's process). CPU: % of one "
        f"core over {s['seconds']:g} s after the viewer's first frame and {s['warmup_s']:g} s of warm-up, "
        "from /proc (utime+stime, every thread); whole stack = the controller and every worker. RSS at the "
        f"window's end. Late join: {s['joins']} viewers, one at a time, connect → first clean decoded frame. "
        "Chunks: every chunk finished while the stack ran, read with ffprobe; bitrate = size x 8 / duration.",
        "",
    ]
    names = sorted({n for m in measured.values() for n in m.get("cpu_percent", {})})
    lines += [
        "| configuration | encoder | whole stack CPU | "
        + " | ".join(names)
        + " | RSS sum MiB | viewer fps | late join median / max ms | chunks | duration min / median / max s "
        "| bitrate Mbit/s (median) |",
        "|---|---|---:|" + "---:|" * len(names) + "---:|---:|---:|---:|---:|---:|",
    ]
    for configuration in CONFIGURATIONS:
        m = measured.get(configuration.name)
        if m is None:
            continue
        cpu = m.get("cpu_percent", {})
        joins = m.get("late_join_s") or []
        chunks = m.get("chunk_summary") or {}
        duration = (
            " / ".join(
                _fmt(chunks.get(k), 2) for k in ("duration_min_s", "duration_median_s", "duration_max_s")
            )
            if chunks.get("count")
            else "-"
        )
        bitrate = chunks.get("bitrate_median_bps")
        mbps = None if bitrate is None else bitrate / 1e6
        lines.append(
            f"| {configuration.label} | {m.get('encoder') or '-'} | {_fmt(m.get('cpu_total'))} | "
            + " | ".join(_fmt(cpu.get(n)) for n in names)
            + f" | {_fmt(m.get('rss_total_mib'))} | {_fmt((m.get('viewer') or {}).get('fps'))} | "
            + (f"{statistics.median(joins) * 1000:.0f} / {max(joins) * 1000:.0f}" if joins else "-")
            + f" | {chunks.get('count', '-')} | {duration} | {_fmt(mbps, 2)} |"
        )
    ratio = results.get("cpu_ratio_record_stream_to_default") or {}
    met = ratio.get("met")
    lines += [
        "",
        f"Whole-stack CPU, RECORD_SOURCE=stream / default: **{_fmt(ratio.get('ratio'), 2)}x**; goal "
        f"≤ {ratio.get('goal', GOAL_RATIO):g}x the default: "
        + ("not measured" if met is None else ("**met**" if met else "**not met**"))
        + ".",
    ]
    notes = []
    for configuration in CONFIGURATIONS:
        m = measured.get(configuration.name) or {}
        if m.get("restarts"):
            notes.append(f"{configuration.name}: restarts during the run: {', '.join(m['restarts'])}")
        one_encode = configuration.settings.get("RECORD_SOURCE") == "stream" and "recorder_encodes" in m
        if one_encode and (m["recorder_encodes"] or not m.get("recorder_records_stream")):
            notes.append(f"{configuration.name}: the recorder did not (only) record the stream")
    lines += [f"\n- {note}" for note in notes]
    lines += [f"\n**error**: {error.splitlines()[0]}" for error in results["errors"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.encoders", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="seconds of each CPU window (30)")
    parser.add_argument("--joins", type=int, default=5, help="late joiners per configuration (5)")
    parser.add_argument("--short", action="store_true", help="1 s windows, 1 joiner, 1 chunk: a smoke run")
    add_stack_options(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    if args.short:
        plan = Plan(width=args.width, height=args.height, seconds=1.0, warmup_s=0.5, short=True)
        setup = Setup(joins=1, min_chunks=1)
    else:
        plan = Plan(width=args.width, height=args.height, seconds=args.seconds)
        setup = Setup(joins=args.joins)
    results = run(plan, setup, args.out, args.workdir, args.echo)
    return finish(results, markdown(results), args.out, "encoders.json, encoders.md")


if __name__ == "__main__":
    raise SystemExit(main())
