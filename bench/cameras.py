"""The whole stack on the synthetic camera and on the fake V4L2 webcam, side by side in one run.

Issue 19: the figures users see with a real (USB MJPEG) camera must be measured, not assumed
from the synthetic camera's. The fake webcam (``tests/fakecam``, an ``LD_PRELOAD`` library that
the real ``v4l2src`` opens) takes the camera path ``v4l2src`` → MJPEG → ``jpegdec``:

    .venv/bin/python -m bench.cameras            # 1280x720@30, 30 s per camera, 5 replugs
    .venv/bin/python -m bench.cameras --short --width 320 --height 240   # a smoke run (the test's)

The stack (``python -m streamer.drone`` under its controller, the suite's settings from
``bench.plan``: 1280x720@30, VIDEO_BITRATE 2 Mbit/s, default encoder and recorder: MP4 chunks
and a JPEG a second; private sockets, port and SSD directory) runs twice, one after the other
(never at once: their CPU figures must not mix):

1. ``synthetic``: ``CAMERA=test-stamped``, the suite's camera;
2. ``fakecam``: ``CAMERA=/dev/video42``, the fake webcam offering only MJPEG at the stream's mode
   (``mjpeg:1280x720@30``), every frame carrying its capture-time stamp (``FAKECAM_STAMP=1``: the
   buffer's timestamp on the wall clock, drawn before the JPEG encode).

For each, as in ``bench.encoders``: once the stack is up and the viewer (``RtspClient``, UDP,
rtspsrc latency=0, the latency probe's client) has decoded its first frame and warmed up, the
CPU of the controller and of every worker over ``--seconds`` (% of one core; their sum is the
whole stack), RSS at the window's end, the viewer's frame rate and capture→decoded latency (p50,
p95, p99 of the frames decoded in the window); then ``--joins`` late joiners, one at a time
(connect → first clean decoded frame); then every chunk finished while the stack ran, read with
``ffprobe`` (durations, bitrate).

The fake camera's own cost. A real webcam encodes its JPEGs in its own hardware; the fake one
encodes them with libjpeg inside the process that opened it, the feeder, so the feeder's CPU on
it includes work a real camera does not cost. Measured two ways:

- in place: the fake camera's frame thread is named ``fakecam``; its CPU (``/proc/PID/task/TID``)
  over the same window is reported, and subtracted from the feeder's and the whole stack's;
- alone: ``gst-launch-1.0 v4l2src ! image/jpeg,… ! fakesink`` on the fake camera at the same
  mode (nothing decoded), its process CPU and its ``fakecam`` thread's over a window as long.

Unplug and replug (issue 19's goal: the stream and the recording back within 3 s of the camera):
the fake camera's stack once more, with the controller's own ``RESTART_DELAY_*`` defaults and the
camera's unplugged state in a file (``FAKECAM_UNPLUG_FILE``: created, the camera is unplugged;
removed, it is back). ``--replugs`` times (5; 1 with ``--short``), each once the stack has been up
``--settle`` seconds (12: past the controller's 10 s, so every unplug is a lone failure): unplug,
wait ``--away`` seconds (2), plug back, and from that instant time a new viewer's first decoded
frame (fresh viewers from the replug on, as a player reconnecting), the first data of a new
chunk (its first fragment on disk) and the new feeder's readiness; the load average at each
replug. Median and max of each.

Writes ``cameras.json`` and ``cameras.md`` to ``bench/results/`` (``--out``); exit status 1 if a
run failed (what was measured is still written).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import logging
import os
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from bench import report
from bench.encoders import Setup, chunk_summary, finished_chunks, late_joins, probe_chunk, stack_pids
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
from bench.procs import CLOCK_TICKS_PER_S, CpuMeter, Service, alive, free_port, read_rss_kib, wait_until
from bench.stack import FAILURES, settled
from bench.viewers import first_frame_since
from streamer import config
from streamer.media.latency import LatencySummary
from streamer.media.pipelines import RECORD_CHUNK_S, RECORD_FRAGMENT_MS
from streamer.media.rtsp_client import RtspClient
from streamer.testing import stack_state, wait_state
from tests import fakecam

log = logging.getLogger("bench")

DEVICE = fakecam.DEFAULT_DEVICE  # what the tests use: no real /dev/video0 is ever touched
CAMERA_THREAD = "fakecam"  # the fake camera's frame thread (pthread_setname_np in fakecam.c)
STOP_GRACE_S = 5.0


@dataclass(frozen=True)
class Camera:
    name: str
    label: str
    fake: bool  # the fake webcam (preloaded), else the synthetic camera of the plan


CAMERAS = (
    Camera("synthetic", "CAMERA=test-stamped (synthetic)", fake=False),
    Camera("fakecam", f"CAMERA={DEVICE} (fake USB webcam, MJPEG)", fake=True),
)


def fake_mode(plan: Plan) -> str:
    """The one mode the fake webcam offers: the stream's, in MJPEG (as a UVC webcam sends it)."""
    return f"mjpeg:{plan.width}x{plan.height}@{plan.fps}"


def camera_env(camera: Camera, plan: Plan, base: dict[str, str]) -> dict[str, str]:
    """The stack's environment for ``camera``: the plan's, or CAMERA the fake webcam (stamped)."""
    if not camera.fake:
        return base
    return fakecam.fake_camera_env(DEVICE, [fake_mode(plan)], base=dict(base, CAMERA=DEVICE), stamp=True)


# --- one thread's CPU


def thread_ticks(pid: int, name: str) -> int | None:
    """utime+stime of the threads of ``pid`` named ``name`` (None: the process has none, or is gone)."""
    total, found = 0, False
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return None
    for task in tasks:
        try:
            if (task / "comm").read_text().strip() != name:
                continue
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # a thread that ended meanwhile
        total += int(fields[11]) + int(fields[12])
        found = True
    return total if found else None


@dataclass
class ThreadMeter:
    """CPU of a named thread of one process over a window, in % of one core (None if it has none
    at either end: a camera restarted in between would be a different thread)."""

    pid: int
    name: str
    _start: float = 0.0
    _ticks: int | None = None
    percent: float | None = field(default=None, init=False)

    def start(self) -> ThreadMeter:
        self._start, self._ticks = time.monotonic(), thread_ticks(self.pid, self.name)
        return self

    def stop(self) -> float | None:
        seconds, after = time.monotonic() - self._start, thread_ticks(self.pid, self.name)
        if self._ticks is not None and after is not None and after >= self._ticks:
            self.percent = round(100 * (after - self._ticks) / CLOCK_TICKS_PER_S / seconds, 1)
        return self.percent


# --- one stack


def measure(camera: Camera, plan: Plan, setup: Setup, where: Path, echo: bool) -> dict[str, Any]:
    """One camera's stack, measured and stopped; its recordings read and removed."""
    out: dict[str, Any] = {"name": camera.name, "label": camera.label, "errors": []}
    port = free_port()
    url = f"rtsp://127.0.0.1:{port}{RTSP_PATH}"
    env = camera_env(camera, plan, service_env(plan, where, port))
    out["camera"] = env["CAMERA"]
    if camera.fake:
        out["fake_modes"] = env["FAKECAM_MODES"]
    ssd = Path(env["SSD_PATH"])
    try:
        config.load(env)
    except config.ConfigError as err:
        out["errors"].append(f"configuration error: {err}")
        return out
    log.info(
        "%s: starting python -m streamer.drone on port %d with CAMERA=%s", camera.name, port, env["CAMERA"]
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
        encode = ThreadMeter(pids["feeder"], CAMERA_THREAD).start() if camera.fake else None
        frames_before, samples_before = viewer.frames, len(viewer.samples_from(0))
        failed_before = viewer.stamps_failed
        time.sleep(plan.seconds)  # the window being measured
        cpu = meter.stop()
        encode_percent = encode.stop() if encode else None
        frames = viewer.frames - frames_before
        latencies = [ms for _, ms in viewer.samples_from(samples_before)]
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
        if camera.fake:
            out["fake_camera_encode_cpu"] = encode_percent
            if encode_percent is not None and "feeder" in stack_cpu:
                out["feeder_cpu_without_fake_camera"] = round(stack_cpu["feeder"] - encode_percent, 1)
                out["cpu_total_without_fake_camera"] = round(out["cpu_total"] - encode_percent, 1)
        out["rss_kib"] = rss
        out["rss_total_mib"] = round(sum(v for v in rss.values() if v) / 1024, 1)
        out["viewer"] = {
            "frames": frames,
            "fps": round(frames / cpu.seconds, 2),
            "size": viewer.size,
            "first_frame_s": viewer.first_frame_s,
            "frames_damaged": viewer.frames_damaged,
            "stamps_failed": viewer.stamps_failed - failed_before,
        }
        out["latency_ms"] = LatencySummary.of(latencies).as_dict()
        out["latency_samples_ms"] = [round(ms, 2) for ms in latencies]
        log.info(
            "%s: whole stack %.1f %% of a core (%s)%s, RSS %.1f MiB, viewer %.1f fps, "
            "latency p50 %s p95 %s ms",
            camera.name,
            out["cpu_total"],
            ", ".join(f"{k} {v:.1f}" for k, v in sorted(stack_cpu.items())),
            f", the fake camera's encode {encode_percent}" if camera.fake else "",
            out["rss_total_mib"],
            out["viewer"]["fps"],
            _fmt(out["latency_ms"]["p50"]),
            _fmt(out["latency_ms"]["p95"]),
        )
        if not latencies:
            raise PhaseFailed(f"no frame's stamp could be read ({out['viewer']['stamps_failed']} failed)")
        out["late_join_s"], out["late_join_deltas_before_keyframe"] = late_joins(
            url, setup.joins, viewer.started_at
        )
        log.info("%s: late join %s s", camera.name, out["late_join_s"])
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
    except FAILURES as err:
        out["errors"].append(str(err).splitlines()[0])
        log.error("%s: %s\n%s", camera.name, err, service.tail())
    finally:
        if viewer is not None:
            viewer.stop()
        known.update(service.worker_pids().values())
        code = service.stop(also=sorted(known - {service.pid}))
        out["exit_status"] = code
        log.info("%s: stopped (exit status %s)", camera.name, code)
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


# --- the fake camera alone


def camera_alone(plan: Plan) -> dict[str, Any]:
    """The fake camera streaming into ``fakesink`` (``gst-launch-1.0``, nothing decoded) at the
    stack's mode: the process's CPU and its ``fakecam`` thread's over a window as long as the
    stack's, i.e. what producing the JPEGs costs, with v4l2src's own small share beside it."""
    caps = f"image/jpeg,width={plan.width},height={plan.height},framerate={plan.fps}/1"
    command = [
        "gst-launch-1.0",
        "-q",
        "v4l2src",
        f"device={DEVICE}",
        "!",
        caps,
        "!",
        "fakesink",
        "sync=false",
    ]
    env = fakecam.fake_camera_env(DEVICE, [fake_mode(plan)], stamp=True)
    out: dict[str, Any] = {"command": " ".join(command), "errors": []}
    log.info("the fake camera alone: %s", out["command"])
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        # streaming once its frame thread exists; then the same warm-up as the stack's viewer
        wait_until(
            lambda: process.poll() is not None or thread_ticks(process.pid, CAMERA_THREAD) is not None,
            CONNECT_TIMEOUT_S,
            "the fake camera's frame thread",
        )
        time.sleep(plan.warmup_s)
        if process.poll() is not None:
            raise PhaseFailed(f"gst-launch-1.0 exited with status {process.returncode}")
        meter = CpuMeter({"process": process.pid}).start()
        thread = ThreadMeter(process.pid, CAMERA_THREAD).start()
        time.sleep(plan.seconds)
        cpu = meter.stop()
        out["thread_cpu"] = thread.stop()
        out["process_cpu"] = cpu.percent.get("process")
        out["window_s"] = cpu.seconds
        out["rss_mib"] = round((read_rss_kib(process.pid) or 0) / 1024, 1)
        if process.poll() is not None:
            raise PhaseFailed(f"gst-launch-1.0 exited with status {process.returncode} during the window")
        log.info(
            "the fake camera alone: process %s %%, its frame thread %s %%",
            out["process_cpu"],
            out["thread_cpu"],
        )
    except FAILURES as err:
        out["errors"].append(str(err).splitlines()[0])
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)  # gst-launch stops cleanly on SIGINT
            try:
                process.wait(STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        stderr = process.stderr.read() if process.stderr else ""
        if out["errors"] and stderr.strip():
            out["errors"][-1] += f": {stderr.strip().splitlines()[-1]}"
    return out


# --- unplug and replug


@dataclass(frozen=True)
class Replugs:
    """The replug phase: ``count`` unplugs, each ``away_s`` long, each once the stack has been
    up for ``settle_s`` (the controller's SETTLE_S is 10 s: a failure after that is a lone one,
    restarted after RESTART_DELAY_MIN_S; sooner, the pauses of a crash loop would be measured)."""

    count: int = 5
    away_s: float = 2.0
    settle_s: float = 12.0


REPLUG_GOAL_S = 3.0  # issue 19: the stream and the recording back within 3 s of the camera
CHUNK_POLL_S = 0.02  # how often the recordings are looked at after a replug
LOG_KEPT_LINES = 200  # of the stack's log after an unplug that restarted more than once
STACK_WORKERS = ("feeder", "recorder", "rtsp")  # what the unplug restarts (not web, live: services)


def chunk_sizes(ssd: Path) -> dict[Path, int]:
    """Every chunk under ``ssd`` (all sessions) and its size now."""
    sizes: dict[Path, int] = {}
    for path in ssd.glob("*/video_*.mp4"):
        with contextlib.suppress(OSError):  # a chunk removed meanwhile
            sizes[path] = path.stat().st_size
    return sizes


class ChunkWatch:
    """Watches the recordings from a replug on, in a thread, for the first data of a chunk that
    was not there at the replug. That is the new recording's first fragment: mp4mux (fragmented,
    first-moov-then-finalise) writes a chunk's first RECORD_FRAGMENT_MS of frames at once when
    the fragment ends (seen here: the file is empty until then), so this is when the recording is
    on disk again, as a user sees it, a fragment after the recorder's first frame."""

    def __init__(self, ssd: Path) -> None:
        self.ssd = ssd
        self.before = set(chunk_sizes(ssd))  # taken before the replug
        self.since = 0.0  # monotonic: the replug
        self.chunk: Path | None = None
        self.seconds: float | None = None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="chunk-watch", daemon=True)

    def start(self, since: float) -> ChunkWatch:
        self.since = since
        self._thread.start()
        return self

    def stop(self) -> None:
        self._done.set()
        self._thread.join(5)

    def wait(self, timeout_s: float) -> float:
        """Seconds from the replug to a new chunk's first data; PhaseFailed after ``timeout_s``."""
        self._thread.join(timeout_s)
        self.stop()
        if self.seconds is None:
            raise PhaseFailed(f"no new chunk had data within {timeout_s:g} s of the replug")
        return self.seconds

    def _watch(self) -> None:
        while not self._done.is_set():
            now = time.monotonic()
            made = sorted(p for p, size in chunk_sizes(self.ssd).items() if p not in self.before and size > 0)
            if made:
                self.chunk, self.seconds = made[0], now - self.since
                return
            self._done.wait(CHUNK_POLL_S)


def load_average() -> float | None:
    """The 1-minute load average now."""
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def figure(seconds: list[float]) -> dict[str, Any]:
    """Median and max of one figure over the replugs, every value, and how many met the goal."""
    return {
        "seconds": seconds,
        "median_s": round(statistics.median(seconds), 3) if seconds else None,
        "max_s": round(max(seconds), 3) if seconds else None,
        "within_goal": sum(s <= REPLUG_GOAL_S for s in seconds),
    }


# What is timed from each replug: the key in one replug's results, and its name in the table.
REPLUG_FIGURES = {
    "viewer_s": "a new viewer's first decoded frame",
    "recorder_s": "the recording on disk again (a new chunk's first fragment)",
    "feeder_ready_s": "the feeder ready (the controller's state)",
}


def replug_env(plan: Plan, where: Path, port: int, unplug_file: Path) -> dict[str, str]:
    """The fake-camera stack's environment with the unplugged state in ``unplug_file`` (the bench
    creates it to unplug the camera and removes it to plug it back) and the controller's own
    RESTART_DELAY_* defaults (what a user's stack does), as bench.recovery."""
    base = service_env(replace(plan, restart_delay_s=None), where, port)
    return fakecam.fake_camera_env(
        DEVICE,
        [fake_mode(plan)],
        base=dict(base, CAMERA=DEVICE),
        unplug_file=unplug_file,
        stamp=True,
    )


def one_replug(
    service: Service, url: str, port: int, ssd: Path, unplug_file: Path, replugs: Replugs
) -> dict[str, Any]:
    """Once the stack has settled: unplug the camera, wait ``away_s``, plug it back, and time
    from that instant a new viewer's first frame, the new recording's first data on disk and the
    new feeder's readiness; the load average at the replug."""
    env = service.env
    before = wait_state(
        env, settled(replugs.settle_s), START_TIMEOUT_S + replugs.settle_s, "a settled stack", service
    )
    old = {name: before.workers[name].pid for name in STACK_WORKERS if name in before.workers}
    logged = len(service.output.splitlines())
    unplugged_at = time.monotonic()
    unplug_file.touch()  # unplugged: the streaming feeder sees it within a frame period
    time.sleep(replugs.away_s)
    watch = ChunkWatch(ssd)
    out: dict[str, Any] = {"loadavg": load_average()}
    replug_wall, replugged_at = time.time(), time.monotonic()
    watch.start(replugged_at)
    unplug_file.unlink()  # plugged back in
    out["away_s"] = round(replugged_at - unplugged_at, 3)
    try:
        # The old RTSP worker may still answer until the controller has stopped it (a loaded
        # machine): only a new one can serve the replugged camera's frames.
        old_rtsp = old.get("rtsp")
        wait_until(
            lambda: old_rtsp is None or not alive(old_rtsp), START_TIMEOUT_S, "the old RTSP worker to end"
        )
        out["viewer_s"] = round(first_frame_since(url, port, replugged_at, service, START_TIMEOUT_S), 3)
        out["recorder_s"] = round(watch.wait(START_TIMEOUT_S), 3)
    finally:
        watch.stop()
    after = service.wait_up(START_TIMEOUT_S, after=before)
    feeder = after.workers.get("feeder")
    if feeder is None or feeder.ready_at is None or feeder.pid == old.get("feeder"):
        raise PhaseFailed(f"no new feeder after the replug: {after.workers}")
    out["feeder_ready_s"] = round(feeder.ready_at - replug_wall, 3)
    new = [r for r in after.restarts if r.at >= before.up_since] if before.up_since else after.restarts
    out["restarts"] = [f"{r.scope}: {r.reason} (pause {r.delay_s:g} s)" for r in new]
    if len(new) != 1:  # not just the unplug's own restart: keep the stack's log to tell why
        out["log"] = service.output.splitlines()[logged:][-LOG_KEPT_LINES:]
    log.info(
        "replug: away %.2f s, load %s: a viewer's first frame %.2f s, the recording on disk %.2f s, "
        "the feeder ready %.2f s after the replug; %s",
        out["away_s"],
        out["loadavg"],
        out["viewer_s"],
        out["recorder_s"],
        out["feeder_ready_s"],
        "; ".join(out["restarts"]) or "no restart recorded",
    )
    return out


def replug_phase(plan: Plan, replugs: Replugs, where: Path, echo: bool) -> dict[str, Any]:
    """The fake-camera stack, unplugged and replugged ``replugs.count`` times."""
    port = free_port()
    url = f"rtsp://127.0.0.1:{port}{RTSP_PATH}"
    unplug_file = where / "fakecam-unplug"
    unplug_file.unlink(missing_ok=True)
    env = replug_env(plan, where, port, unplug_file)
    ssd = Path(env["SSD_PATH"])
    out: dict[str, Any] = {
        "started_utc": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "camera": env["CAMERA"],
        "fake_modes": env["FAKECAM_MODES"],
        "replugs": replugs.count,
        "away_s": replugs.away_s,
        "settle_s": replugs.settle_s,
        "goal_s": REPLUG_GOAL_S,
        "each": [],
        "errors": [],
    }
    log.info("replug: starting python -m streamer.drone on port %d with CAMERA=%s", port, env["CAMERA"])
    service = Service("streamer.drone", env, echo=echo)
    known: set[int] = set()
    try:
        first_frame_since(url, port, service.started_at, service, START_TIMEOUT_S)
        for _ in range(replugs.count):
            known.update(stack_pids(service).values())
            out["each"].append(one_replug(service, url, port, ssd, unplug_file, replugs))
        known.update(stack_pids(service).values())
        out["unplugs_reported"] = len(service.matches(r"feeder: camera \S+ disappeared \(unplugged\?\)"))
    except FAILURES as err:
        out["errors"].append(str(err).splitlines()[0])
        log.error("replug: %s\n%s", err, service.tail())
    finally:
        unplug_file.unlink(missing_ok=True)
        known.update(service.worker_pids().values())
        code = service.stop(also=sorted(known - {service.pid}))
        out["exit_status"] = code
        log.info("replug: stopped (exit status %s)", code)
        if code not in (0, None) and not out["errors"]:
            out["errors"].append(f"the stack exited with status {code}:\n{service.tail(5)}")
        shutil.rmtree(ssd, ignore_errors=True)
    out["figures"] = {
        name: figure([e[name] for e in out["each"] if e.get(name) is not None]) for name in REPLUG_FIGURES
    }
    loads = [e["loadavg"] for e in out["each"] if e.get("loadavg") is not None]
    out["loadavg"] = {"each": loads, "median": statistics.median(loads) if loads else None}
    out["loadavg"]["max"] = max(loads) if loads else None
    return out


# --- the run


def run(
    plan: Plan, setup: Setup, replugs: Replugs, out: Path, workdir: Path | None, echo: bool
) -> dict[str, Any]:
    began = time.monotonic()
    results: dict[str, Any] = new_results(
        {
            **stream_settings(plan),
            "camera": f"{plan.camera} and {DEVICE} (fake webcam, {fake_mode(plan)}, stamped)",
            "seconds": plan.seconds,
            "warmup_s": plan.warmup_s,
            "joins": setup.joins,
            "min_chunks": setup.min_chunks,
            "replugs": replugs.count,
            "away_s": replugs.away_s,
            "settle_s": replugs.settle_s,
            "short": plan.short,
        }
    )
    results.update(cameras={}, errors=[])
    try:
        fakecam.library()  # built (or found) before anything is timed
    except fakecam.FakecamUnavailable as err:
        results["errors"].append(f"fakecam: {err}")
    with private_workdir(workdir) as where:
        for camera in CAMERAS:
            if camera.fake and results["errors"]:
                break
            measured = measure(camera, plan, setup, where, echo)
            results["cameras"][camera.name] = measured
            results["errors"] += [f"{camera.name}: {error}" for error in measured["errors"]]
        if not any(e.startswith("fakecam: ") for e in results["errors"]):
            results["camera_alone"] = camera_alone(plan)
            results["errors"] += [f"camera alone: {error}" for error in results["camera_alone"]["errors"]]
            if replugs.count > 0:
                results["replug"] = replug_phase(plan, replugs, where, echo)
                results["errors"] += [f"replug: {error}" for error in results["replug"]["errors"]]
    results["duration_s"] = round(time.monotonic() - began, 1)
    write_results(out, "cameras", results, markdown(results))
    return results


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def markdown(results: dict[str, Any]) -> str:
    s = results["settings"]
    measured = results["cameras"]
    lines = [
        *report.heading("Cameras: the whole stack on the synthetic camera and on the fake webcam", results),
        f"Run: {results['started_utc']}, {results.get('duration_s', 0):.0f} s"
        f"{' (--short: a smoke run, not a measurement)' if s['short'] else ''}. Each camera is its own stack "
        "(`python -m streamer.drone`, default encoder, recording video and images), run one after the "
        "other, with one RTSP viewer (UDP, rtspsrc latency=0, decoding, in the bench's process: the latency "
        f"probe's client). CPU: % of one core over {s['seconds']:g} s after the viewer's first frame and "
        f"{s['warmup_s']:g} s of warm-up, from /proc (utime+stime, every thread); whole stack = the "
        "controller and every worker. RSS at the window's end. Latency: capture time (the stamp in the "
        "pixels) → decoded by the viewer, frames of the window. Late join: "
        f"{s['joins']} viewers, one at a time, connect → first clean decoded frame. Chunks: every chunk "
        "finished while the stack ran, read with ffprobe.",
        "",
    ]
    names = sorted({n for m in measured.values() for n in m.get("cpu_percent", {})})
    lines += [
        "| camera | whole stack CPU | "
        + " | ".join(names)
        + " | fake camera's encode | whole stack without it | RSS sum MiB | viewer fps "
        "| latency p50 / p95 ms | late join median / max ms | chunks | duration min / median / max s |",
        "|---|---:|" + "---:|" * len(names) + "---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for camera in CAMERAS:
        m = measured.get(camera.name)
        if m is None:
            continue
        cpu = m.get("cpu_percent", {})
        latency = m.get("latency_ms") or {}
        joins = m.get("late_join_s") or []
        chunks = m.get("chunk_summary") or {}
        duration = (
            " / ".join(
                _fmt(chunks.get(k), 2) for k in ("duration_min_s", "duration_median_s", "duration_max_s")
            )
            if chunks.get("count")
            else "-"
        )
        lines.append(
            f"| {camera.label} | {_fmt(m.get('cpu_total'))} | "
            + " | ".join(_fmt(cpu.get(n)) for n in names)
            + f" | {_fmt(m.get('fake_camera_encode_cpu'))} | {_fmt(m.get('cpu_total_without_fake_camera'))} "
            f"| {_fmt(m.get('rss_total_mib'))} | {_fmt((m.get('viewer') or {}).get('fps'))} "
            f"| {_fmt(latency.get('p50'))} / {_fmt(latency.get('p95'))} | "
            + (f"{statistics.median(joins) * 1000:.0f} / {max(joins) * 1000:.0f}" if joins else "-")
            + f" | {chunks.get('count', '-')} | {duration} |"
        )
    alone = results.get("camera_alone") or {}
    fake = measured.get("fakecam") or {}
    lines += [
        "",
        "**What the fake camera's CPU includes.** A real webcam encodes its JPEGs in its own hardware; the "
        "fake one encodes them with libjpeg (4:2:2, quality 80) in a thread of the process that opened it, "
        "the feeder (the preload), so the feeder's figure on it includes work a real camera does not cost. "
        "Measured in place, that thread (named `fakecam`) took "
        f"**{_fmt(fake.get('fake_camera_encode_cpu'))} %** of a core over the same window: the feeder "
        f"without it, {_fmt(fake.get('feeder_cpu_without_fake_camera'))} % (against the synthetic camera's "
        f"feeder, {_fmt((measured.get('synthetic') or {}).get('cpu_percent', {}).get('feeder'))} %), is "
        "what a real MJPEG webcam's feeder would take here (`v4l2src` + `jpegdec` + conversion). Measured "
        f"alone (`{alone.get('command', 'gst-launch-1.0 v4l2src ! fakesink')}`, nothing decoded), the fake "
        f"camera took {_fmt(alone.get('process_cpu'))} % of a core, of which its frame thread "
        f"{_fmt(alone.get('thread_cpu'))} %. Its latency figure includes that encode too: the stamp is the "
        "frame's buffer timestamp, drawn before the encode, as a real camera's exposure comes before its "
        "transfer.",
        "",
        "**Not only the camera path differs.** The two cameras' pictures differ (the synthetic camera's "
        "test pattern; the fake webcam's diagonal stripes moving 6 pixels a frame over a colour gradient), "
        "and what the H.264 encoders (the recorder's, the stream's) and the JPEG snapshots cost depends on "
        "the picture: differences in the recorder's and the RTSP worker's figures are most likely the "
        "content's (not checked here: same picture on both cameras), the camera path itself runs in the "
        "feeder only. Figures from one run on this machine, "
        "with whatever else ran on it (the load average at start is in the machine line).",
    ]
    notes = [
        f"{camera.name}: restarts during the run: {', '.join(measured[camera.name]['restarts'])}"
        for camera in CAMERAS
        if (measured.get(camera.name) or {}).get("restarts")
    ]
    lines += [f"\n- {note}" for note in notes]
    lines += replug_markdown(results.get("replug"))
    lines += [f"\n**error**: {error.splitlines()[0]}" for error in results["errors"]]
    return "\n".join(lines) + "\n"


def replug_markdown(replug: dict[str, Any] | None) -> list[str]:
    """The replug phase's section of cameras.md (nothing when it did not run)."""
    if not replug:
        return []
    lines = [
        "",
        "## Unplug and replug",
        "",
        f"Run: {replug.get('started_utc', '-')}. "
        f"The fake webcam's stack again (`{replug['camera']}`, `{replug['fake_modes']}`, the same settings "
        "but the controller's own `RESTART_DELAY_*` defaults, as a user's stack has them), the camera "
        f"unplugged {len(replug['each'])} time(s) for {replug['away_s']:g} s each, every time once the "
        f"stack had been up {replug['settle_s']:g} s"
        + (
            " (past the controller's 10 s: a lone failure, not a crash loop)"
            if replug["settle_s"] >= 10
            else ""
        )
        + ". The unplug is the "
        "fake camera's (`FAKECAM_UNPLUG_FILE` created: streaming fails `ENODEV`, the node is gone; removed: "
        "it is back). Timed from the instant it is back: a new viewer's first decoded frame (`RtspClient`, "
        "UDP, trying from the replug on, as a player that reconnects), the recording on disk again (the "
        "first data of a chunk made after the replug: mp4mux writes a chunk's first "
        f"{RECORD_FRAGMENT_MS} ms fragment at once when it ends, so this is a fragment after the "
        f"recorder's first frame; polled every {CHUNK_POLL_S * 1000:.0f} ms), and the new feeder "
        "ready (the controller's state: the camera open and delivering; the recorder and the RTSP "
        "worker start after it). Goal (issue 19): the stream and the recording back within "
        f"{replug['goal_s']:g} s." + (f" {replug['note']}" if replug.get("note") else ""),
        "",
        "| from the replug to | median s | max s | each replug, s | within the goal |",
        "|---|---:|---:|---|---:|",
    ]
    for name, label in REPLUG_FIGURES.items():
        measured = (replug.get("figures") or {}).get(name) or {}
        seconds = measured.get("seconds") or []
        lines.append(
            f"| {label} | {_fmt(measured.get('median_s'), 2)} | {_fmt(measured.get('max_s'), 2)} "
            f"| {', '.join(f'{v:.2f}' for v in seconds) or '-'} "
            f"| {measured.get('within_goal', 0)} of {len(seconds)} |"
        )
    load = replug.get("loadavg") or {}
    away = ", ".join(f"{each['away_s']:.2f}" for each in replug["each"]) or "-"
    lines += [
        "",
        f"Load average (1 min) at each replug: {', '.join(f'{v:g}' for v in load.get('each') or []) or '-'} "
        f"(median {_fmt(load.get('median'), 2)}, max {_fmt(load.get('max'), 2)}). "
        f"Away for: {away} s.",
    ]
    lines += [
        "",
        "The controller's restarts after each unplug, as it recorded them (expected: one, the feeder's):",
    ]
    for number, each in enumerate(replug["each"], 1):
        restarts = "; ".join(f"`{r}`" for r in each.get("restarts", [])) or "none"
        lines.append(f"- replug {number}: {restarts}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cameras", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="seconds of each CPU window (30)")
    parser.add_argument("--joins", type=int, default=5, help="late joiners per camera (5)")
    parser.add_argument("--replugs", type=int, default=5, help="unplugs and replugs of the fake camera (5)")
    parser.add_argument("--away", type=float, default=2.0, help="seconds the camera stays unplugged (2)")
    parser.add_argument(
        "--settle", type=float, help="seconds the stack is up before each unplug (12; 1 with --short)"
    )
    parser.add_argument(
        "--short", action="store_true", help="1 s windows, 1 joiner, 1 chunk, 1 replug: a smoke run"
    )
    add_stack_options(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    if args.short:
        plan = Plan(width=args.width, height=args.height, seconds=1.0, warmup_s=0.5, short=True)
        setup = Setup(joins=1, min_chunks=1)
    else:
        plan = Plan(width=args.width, height=args.height, seconds=args.seconds)
        setup = Setup(joins=args.joins)
    settle = args.settle if args.settle is not None else (1.0 if args.short else Replugs.settle_s)
    replugs = Replugs(count=1 if args.short else args.replugs, away_s=args.away, settle_s=settle)
    results = run(plan, setup, replugs, args.out, args.workdir, args.echo)
    return finish(results, markdown(results), args.out, "cameras.json, cameras.md")


if __name__ == "__main__":
    raise SystemExit(main())
