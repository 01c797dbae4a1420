"""The benchmark suite: latency, late join, CPU, start-up, recovery and memory, beside a floor.

    .venv/bin/python -m bench.run                 # the full run, about 5 minutes
    .venv/bin/python -m bench.run --short         # a smoke run of about half a minute

Runs the real stack (``python -m streamer.drone``, recorder on) with ``CAMERA=test-stamped`` at
1280x720@30 and 2 Mbit/s, and then the floor (``python -m bench.floor``: the same chain in one
pipeline), measures both with the same client (``streamer.probe.RtspClient``), and writes
``bench.json``, ``bench.md`` and three PNG plots to ``bench/results/`` (``--out``). What each
figure means is in bench/README.md. Sockets, recordings and ports are private to the run; every
process it starts is stopped before it exits.
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import logging
import os
import platform
import random
import re
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench import plots, report
from bench.procs import CpuMeter, Service, free_port, port_open, read_rss_kib, wait_until
from streamer import config
from streamer.media.gst import Gst
from streamer.media.rtsp_client import RtspClient
from streamer.rtsp import keyframes

log = logging.getLogger("bench")

RESULTS_DIR = Path(__file__).resolve().parent / "results"
RTSP_PATH = "/live"
CONNECT_TIMEOUT_S = 10.0  # for one client's first frame
START_TIMEOUT_S = 45.0  # for a whole stack's first frame (a slow, loaded machine included)
STACK_UP = re.compile(r"stack is up")
RTSP_STARTED = re.compile(r"started rtsp \(pid \d+\)")


@dataclass(frozen=True)
class Plan:
    """What to run. The defaults are the issue's; ``--short`` shrinks durations and counts only."""

    width: int = 1280
    height: int = 720
    fps: int = 30
    bitrate: int = 2_000_000
    camera: str = config.STAMPED_SYNTHETIC_CAMERA
    seconds: float = 30.0  # each latency phase, and each CPU window
    warmup_s: float = 1.0  # left out of latency and CPU after a client connects
    viewers: int = 8  # the many-viewers phase: one measuring client and viewers-1 light ones
    late_join_viewers: int = 20
    late_join_window_s: float = 20.0
    kills: tuple[str, ...] = ("feeder", "recorder", "rtsp")
    restart_delay_s: float = 1.0
    seed: int = 5
    short: bool = False


def short_plan(width: int, height: int) -> Plan:
    return Plan(
        width=width,
        height=height,
        seconds=2.0,
        warmup_s=0.5,
        late_join_viewers=4,
        late_join_window_s=4.0,
        kills=("rtsp",),
        short=True,
    )


class PhaseFailed(RuntimeError):
    pass


def service_env(plan: Plan, workdir: Path, port: int) -> dict[str, str]:
    """The environment of the stack (or the floor): the plan's settings, private sockets, SSD
    and port. Our own variables from the caller's environment are dropped, not inherited."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(config.OWN_PREFIXES)}
    env.update(
        CAMERA=plan.camera,
        VIDEO_WIDTH=str(plan.width),
        VIDEO_HEIGHT=str(plan.height),
        VIDEO_FPS=str(plan.fps),
        VIDEO_BITRATE=str(plan.bitrate),
        SSD_PATH=str(workdir / "ssd"),
        SHM_RECORDER_SOCKET=str(workdir / "rec.sock"),
        SHM_STREAM_SOCKET=str(workdir / "str.sock"),
        RTSP_PORT=str(port),
        RTSP_PATH=RTSP_PATH,
        LOG_LEVEL="INFO",  # the controller's "started <worker> (pid N)" lines are read
        RESTART_SCOPE="stack",
        # Every kill is measured as a first failure: the pause doubles on failures in a row.
        RESTART_DELAY_MIN_S=f"{plan.restart_delay_s:g}",
        RESTART_DELAY_MAX_S=f"{plan.restart_delay_s:g}",
        PYTHONUNBUFFERED="1",
    )
    config.load(env)  # fail here, with the variable named, rather than in a child
    return env


# --- clients


def first_frame_since(url: str, port: int, since: float, service: Service, timeout_s: float) -> float:
    """Seconds from ``since`` (monotonic) to the first clean frame a new viewer decodes, polling
    until the server listens. Each attempt is a fresh viewer, as a user reconnecting would be."""
    deadline = time.monotonic() + timeout_s
    while True:
        service.check_running()
        if time.monotonic() > deadline:
            raise PhaseFailed(f"no frame from {url} within {timeout_s:.0f} s")
        if not port_open(port):
            time.sleep(0.01)  # polling interval: the server is not listening yet
            continue
        client = RtspClient(url, "udp").start()
        try:
            if client.wait_frames(1, CONNECT_TIMEOUT_S) and client.first_frame_at is not None:
                return client.first_frame_at - since
        finally:
            client.stop()
        time.sleep(0.05)  # polling interval after a failed attempt


def viewing_phase(
    url: str, protocols: str, plan: Plan, pids: Callable[[], dict[str, int]], light_viewers: int = 0
) -> dict[str, Any]:
    """One measuring viewer (plus ``light_viewers`` that only receive) for ``plan.seconds``:
    its latencies, and the CPU of every process of ours over the same window."""
    lights = [RtspClient(url, "udp", decode=False).start() for _ in range(light_viewers)]
    client = RtspClient(url, protocols).start()
    try:
        for viewer in [client, *lights]:
            if not viewer.wait_frames(1, CONNECT_TIMEOUT_S):
                raise PhaseFailed(f"a viewer over {viewer.protocols} got no frame: {viewer.errors}")
        wait_until(
            lambda: time.monotonic() - client.started_at >= plan.warmup_s, plan.warmup_s + 5, "warm-up"
        )
        watched = {**pids(), "client": os.getpid()}
        meter = CpuMeter(watched).start()
        time.sleep(plan.seconds)  # the measurement window
        cpu = meter.stop()
        if pids() != {k: v for k, v in watched.items() if k != "client"}:
            raise PhaseFailed(f"a process restarted during the window: {watched} → {pids()}")
        if client.errors:
            raise PhaseFailed(f"the measuring viewer failed: {client.errors}")
    finally:
        for viewer in [client, *lights]:
            viewer.stop()
    result = client.report(plan.warmup_s)
    result["latencies_ms"] = [round(ms, 2) for ms in client.latencies_ms(plan.warmup_s)]
    result["cpu_percent"] = cpu.percent
    result["viewers"] = 1 + light_viewers
    return result


def paced_joins(requests: list[float], min_interval_s: float) -> list[bool]:
    """Which keyframe requests (seconds, ascending) the RTSP worker's pacer deferred.

    Replays ``keyframes.KeyframePacer`` on a fake clock: a request in a quiet period is served at
    once; one within ``min_interval_s`` of the last forced keyframe waits for the next (shared)
    one. Connect times stand in for the PLAY requests a few milliseconds later.
    """
    now = 0.0
    pacer = keyframes.KeyframePacer(min_interval_s, clock=lambda: now)
    due: float | None = None
    paced = []
    for at in requests:
        if due is not None and due <= at:
            now = due
            pacer.forced()
            due = None
        now = at
        delay = pacer.request()
        if delay == 0:
            pacer.forced()
        elif delay is not None:
            due = at + delay
        paced.append(delay != 0)
    return paced


def late_join_phase(url: str, plan: Plan) -> dict[str, Any]:
    """``late_join_viewers`` viewers join a running stream at random moments; each measures
    connect → first clean decoded frame and leaves. A light viewer stays connected throughout
    so that every joiner joins a stream that is already running.

    Returns the join times in the order the viewers joined, each one's gap after the previous
    join, and whether the pacer made it wait for a shared keyframe (by design: at most one
    forced keyframe per 0.5 s, however many join)."""
    rng = random.Random(plan.seed)
    offsets = sorted(rng.uniform(0, plan.late_join_window_s) for _ in range(plan.late_join_viewers))
    schedule = list(enumerate(offsets))
    base = RtspClient(url, "udp", decode=False).start()
    joins: dict[int, float] = {}
    connected: dict[int, float] = {}
    failures: list[str] = []
    active: list[tuple[int, RtspClient]] = []
    try:
        if not base.wait_frames(1, CONNECT_TIMEOUT_S):
            raise PhaseFailed(f"the base viewer got no frame: {base.errors}")
        # The base viewer's own forced keyframe must not pace the first joiner's.
        quiet_s = keyframes.FORCED_KEYFRAME_MIN_INTERVAL_S + 0.1
        wait_until(lambda: time.monotonic() - base.started_at >= quiet_s, quiet_s + 5, "a quiet moment")
        start = time.monotonic()
        while schedule or active:
            while schedule and time.monotonic() - start >= schedule[0][1]:
                number, _offset = schedule.pop(0)
                viewer = RtspClient(url, "udp", read_stamps=False).start()
                connected[number] = viewer.started_at - start
                active.append((number, viewer))
            for number, viewer in list(active):
                first = viewer.first_frame_s
                if first is not None:
                    joins[number] = first
                elif viewer.errors or time.monotonic() - viewer.started_at > CONNECT_TIMEOUT_S:
                    failures.append("; ".join(viewer.errors) or "no frame")
                else:
                    continue
                viewer.stop()
                active.remove((number, viewer))
            time.sleep(0.005)  # scheduling granularity; join times are taken by the viewers
    finally:
        for _number, viewer in active:
            viewer.stop()
        base.stop()
    if failures:
        raise PhaseFailed(f"{len(failures)} late joiners got no frame: {failures[:3]}")
    order = sorted(connected)
    requests = [base.started_at - start] + [connected[n] for n in order]
    return {
        "late_join_s": [round(joins[n], 4) for n in order],
        "late_join_gap_s": [None]
        + [round(connected[b] - connected[a], 3) for a, b in itertools.pairwise(order)],
        "late_join_paced": paced_joins(requests, keyframes.FORCED_KEYFRAME_MIN_INTERVAL_S)[1:],
    }


def rss_of(pids: dict[str, int]) -> dict[str, int | None]:
    return {name: read_rss_kib(pid) for name, pid in pids.items()}


# --- the stack and the floor


def stack_pids(service: Service) -> dict[str, int]:
    return {**service.worker_pids(), "controller": service.pid}


def recovery_after_kill(service: Service, worker: str, url: str, port: int) -> float:
    """SIGKILL one worker; seconds until a new viewer decodes a frame from the restarted stack."""
    pids = service.worker_pids()
    rtsp_starts = len(service.matches(RTSP_STARTED))
    ups = len(service.matches(STACK_UP))
    killed_at = time.monotonic()
    os.kill(pids[worker], signal.SIGKILL)
    # Only a new RTSP worker counts: the old one may still answer until the controller stops it.
    wait_until(
        lambda: len(service.matches(RTSP_STARTED)) > rtsp_starts,
        START_TIMEOUT_S,
        "the controller to restart the stack",
    )
    back = first_frame_since(url, port, killed_at, service, START_TIMEOUT_S)
    wait_until(lambda: len(service.matches(STACK_UP)) > ups, START_TIMEOUT_S, "the stack to be up again")
    return back


def run_stack(plan: Plan, workdir: Path, echo: bool) -> dict[str, Any]:
    port = free_port()
    url = f"rtsp://127.0.0.1:{port}{RTSP_PATH}"
    env = service_env(plan, workdir, port)
    out: dict[str, Any] = {"latency": {}, "cpu": {}, "errors": []}
    log.info("stack: starting python -m streamer.drone on port %d", port)
    started = time.monotonic()
    service = Service("streamer.drone", env, echo=echo)
    known: set[int] = set()

    def pids() -> dict[str, int]:
        current = stack_pids(service)
        known.update(current.values())
        return current

    try:
        out["startup_s"] = round(first_frame_since(url, port, started, service, START_TIMEOUT_S), 4)
        wait_until(lambda: service.matches(STACK_UP), START_TIMEOUT_S, "stack is up")
        out["rss_kib"] = {"start": rss_of(stack_pids(service))}
        _phases(out, plan, url, pids)
        out["rss_kib"]["end"] = rss_of(stack_pids(service))
        out["recovery_s"] = {}
        for worker in plan.kills:
            log.info("stack: SIGKILL %s, waiting for the stream to come back", worker)
            pids()
            out["recovery_s"][worker] = round(recovery_after_kill(service, worker, url, port), 4)
            pids()
    except (PhaseFailed, TimeoutError, RuntimeError) as err:
        out["errors"].append(f"stack: {err}")
        log.error("stack: %s\n%s", err, service.tail())
    finally:
        pids()
        code = service.stop(also=sorted(known - {service.pid}))
        log.info("stack: stopped (exit status %s)", code)
    return out


def run_floor(plan: Plan, workdir: Path, echo: bool) -> dict[str, Any]:
    port = free_port()
    url = f"rtsp://127.0.0.1:{port}{RTSP_PATH}"
    env = service_env(plan, workdir, port)
    out: dict[str, Any] = {"latency": {}, "cpu": {}, "errors": []}
    log.info("floor: starting python -m bench.floor on port %d", port)
    started = time.monotonic()
    service = Service("bench.floor", env, echo=echo)

    def pids() -> dict[str, int]:
        return {"floor": service.pid}

    try:
        out["startup_s"] = round(first_frame_since(url, port, started, service, START_TIMEOUT_S), 4)
        out["rss_kib"] = {"start": rss_of(pids())}
        _phases(out, plan, url, pids)
        out["rss_kib"]["end"] = rss_of(pids())
    except (PhaseFailed, TimeoutError, RuntimeError) as err:
        out["errors"].append(f"floor: {err}")
        log.error("floor: %s\n%s", err, service.tail())
    finally:
        code = service.stop()
        log.info("floor: stopped (exit status %s)", code)
    return out


def _phases(out: dict[str, Any], plan: Plan, url: str, pids: Callable[[], dict[str, int]]) -> None:
    """The phases the stack and the floor share, each measured the same way."""
    for key, protocols, lights in (
        ("udp", "udp", 0),
        ("tcp", "tcp", 0),
        ("udp_8_viewers", "udp", plan.viewers - 1),
    ):
        log.info("  %s: %d viewer(s), %g s", key, 1 + lights, plan.seconds)
        phase = _retried(out, key, lambda p=protocols, n=lights: viewing_phase(url, p, plan, pids, n))
        out["latency"][key] = phase
        summary = phase["latency_ms"]
        log.info(
            "  %s: p50 %s ms, p99 %s ms, %d frames, %d stamps unread",
            key,
            _fmt(summary["p50"]),
            _fmt(summary["p99"]),
            phase["frames_decoded"],
            phase["stamps_failed"],
        )
    out["cpu"]["1_viewer"] = out["latency"]["udp"]["cpu_percent"]
    out["cpu"]["8_viewers"] = out["latency"]["udp_8_viewers"]["cpu_percent"]
    log.info("  late join: %d viewers over %g s", plan.late_join_viewers, plan.late_join_window_s)
    out.update(_retried(out, "late join", lambda: late_join_phase(url, plan)))
    log.info("  late join: median %s ms", _fmt(statistics.median(out["late_join_s"]) * 1000))


def _retried(out: dict[str, Any], name: str, phase: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run a phase; if a viewer failed, run it once more and say so in the results.

    A failed viewer is a finding (the stack's log shows why), not a reason to lose every figure
    after it: it is listed under ``retried`` and in the table's notes.
    """
    try:
        return phase()
    except PhaseFailed as err:
        log.warning("  %s failed (%s): running it again", name, err)
        out.setdefault("retried", []).append(f"{name}: {err}")
        return phase()


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


# --- the run


def machine() -> dict[str, Any]:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("model name", "Model")):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        load = Path("/proc/loadavg").read_text().split()[0]
    except OSError:
        load = None
    return {
        "cores": os.cpu_count(),
        "cpu_model": model,
        "kernel": platform.release(),
        "gstreamer": Gst.version_string().removeprefix("GStreamer "),
        "python": platform.python_version(),
        "nice": os.nice(0),
        "loadavg": load,
    }


NOTES = [
    "Latency: capture (the synthetic camera releases the frame, wall clock) → decoded (the "
    "client's decoder outputs it); the first warm-up second of each viewer is left out.",
    "CPU: utime+stime from /proc/<pid>/stat over the window, % of one core (200 % = both of 2 "
    "cores). 8 viewers = the measuring viewer + 7 that receive without decoding (a server's work "
    "per viewer does not depend on what the viewer does with the packets).",
    "Late join: each joiner connects while one other viewer keeps the stream running, and leaves "
    "after its first frame; forced keyframes are paced (at most one per 0.5 s).",
    "Start: process spawned → first clean frame at a new viewer that polls until the server "
    "listens. Kill: SIGKILL → first clean frame from the restarted stack (controller's 1 s "
    "pause included).",
]


def run(plan: Plan, out_dir: Path, workdir: Path | None, echo: bool) -> dict[str, Any]:
    own_workdir = workdir is None
    workdir = workdir or Path(tempfile.mkdtemp(prefix="streamer-bench-", dir="/tmp"))
    began = time.monotonic()
    results: dict[str, Any] = {
        "started_utc": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": machine(),
        "settings": asdict(plan),
        "notes": NOTES,
    }
    results["machine_line"] = report.machine_line(results["machine"])
    log.info("machine: %s", results["machine_line"])
    try:
        results["stack"] = run_stack(plan, workdir, echo)
        results["floor"] = run_floor(plan, workdir, echo)
    finally:
        shutil.rmtree(workdir / "ssd", ignore_errors=True)
        if own_workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    results["duration_s"] = round(time.monotonic() - began, 1)
    results["errors"] = results["stack"].pop("errors") + results["floor"].pop("errors")
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "bench.json").write_text(json.dumps(results, indent=1) + "\n")
    (out_dir / "bench.md").write_text(report.markdown(results))
    plots.write_all(results, out_dir)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0])
    parser.add_argument("--short", action="store_true", help="seconds instead of minutes (a smoke test)")
    parser.add_argument("--seconds", type=float, help="length of each latency/CPU phase (30; --short 2)")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help=f"results directory ({RESULTS_DIR})")
    parser.add_argument("--workdir", type=Path, help="where sockets and recordings go (a fresh /tmp dir)")
    parser.add_argument("--echo", action="store_true", help="show the stack's log on stderr")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)

    plan = short_plan(args.width, args.height) if args.short else Plan(width=args.width, height=args.height)
    if args.seconds is not None:
        plan = Plan(**{**asdict(plan), "seconds": args.seconds})
    results = run(plan, args.out, args.workdir, args.echo)
    print(report.markdown(results))
    print(
        f"written to {args.out}/: bench.json, bench.md, latency_cdf.png, cpu_per_process.png, late_join.png"
    )
    for error in results["errors"]:
        print(f"error: {error}", file=sys.stderr)
    return 1 if results["errors"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
