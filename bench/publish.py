"""Publishing to media servers (PUBLISH_URL): what many viewers of a media server cost the drone,
and the latency and join time each path adds.

    .venv/bin/python -m bench.publish            # 4 CPU windows of 30 s, 20 s per latency path, 10 joins
    .venv/bin/python -m bench.publish --short    # a smoke run

The stack runs at the suite's settings (``bench.plan``: CAMERA=test-stamped, 1280x720@30,
2 Mbit/s, recorder on) with ``PUBLISH_URL`` naming three destinations on loopback, each a real
server this bench starts and stops (``tests/media_servers.py``):

- ``rtmp``: nginx with the RTMP module (``application live { live on; }``);
- ``srt``: a GStreamer ``srtsrc mode=listener`` in this process, decoding (one hop), at SRT's
  default latency (srtsrc/srtsink: 125 ms);
- ``srt_20``: the same with ``latency=20`` on both ends (``srt://…?latency=20``);
- ``srt_relay``: a GStreamer SRT relay in a process of its own (``srtsrc mode=listener !
  srtsink mode=listener``, a minimal SRT gateway) that viewers call (two hops).

1. CPU of the drone's processes (controller and every worker, % of one core, from ``/proc``)
   over windows with 0 and with ``--viewers`` (50) RTMP viewers pulling from nginx, side by
   side: 0, 50, 0, 50 (``--short``: 0, 5). The viewers run in one process of their own
   (``rtmp2src ! flvdemux ! fakesink`` each: they copy, they do not decode); each one's
   frames over the window are counted. nginx's CPU and the viewers' are reported apart.
2. Capture→decoded latency through each path, one at a time, ``--seconds`` each, after a
   warm-up: direct RTSP (UDP and TCP, ``RtspClient``, the probe's client), nginx (an RTMP
   viewer: ``rtmp2src ! flvdemux``), SRT (the listener), the SRT relay (a caller viewer). Every
   decoder is ``avdec_h264 output-corrupt=false`` reading the stamp (``streamer.media.stamp``).
3. Join time: a new viewer's start → its first clean decoded frame, ``--joins`` times per path
   (direct RTSP over TCP, nginx, the SRT relay), at random moments (seeded).

Writes ``publish.json`` and ``publish.md`` to ``bench/results/`` (``--out``).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import random
import statistics
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import report
from bench.plan import (
    CONNECT_TIMEOUT_S,
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
from bench.procs import CpuMeter, Service, free_port
from bench.stack import FAILURES
from streamer.media.latency import LatencySummary
from streamer.media.rtsp_client import RtspClient
from streamer.runtime.state import StackState
from streamer.testing import stack_state, wait_state, wait_until
from tests.media_servers import (
    CopyingViewers,
    Decoder,
    Nginx,
    SrtRelay,
    rtmp_viewer,
    srt_listener,
    srt_viewer,
)

log = logging.getLogger("bench")

STREAM_KEY = "bench"
LATENCY_PATHS = ("rtsp_udp", "rtsp_tcp", "rtmp", "srt", "srt_20", "srt_relay")
SRT_LOW_LATENCY_MS = 20
JOIN_PATHS = ("rtsp_tcp", "rtmp", "srt_relay")
PATH_NAMES = {
    "rtsp_udp": "direct RTSP (UDP)",
    "rtsp_tcp": "direct RTSP (TCP)",
    "rtmp": "nginx (RTMP)",
    "srt": "SRT listener (1 hop)",
    "srt_20": f"SRT listener, latency={SRT_LOW_LATENCY_MS}",
    "srt_relay": "SRT relay (2 hops)",
}


@dataclass(frozen=True)
class Setup:
    viewers: int = 50
    windows: tuple[int, ...] = (0, 50, 0, 50)  # viewers in each CPU window, in order
    window_s: float = 30.0
    joins: int = 10


@dataclass
class Servers:
    nginx: Nginx
    srt: Decoder
    srt_20: Decoder
    relay: SrtRelay
    publish_url: str


@contextlib.contextmanager
def servers(where: Path) -> Iterator[Servers]:
    """The destinations' servers, started before the stack (so that its first attempts find
    them) and stopped after it."""
    with contextlib.ExitStack() as started:
        nginx = Nginx(where / "nginx").start()
        started.callback(nginx.stop)
        srt = srt_listener(read_stamps=True, decoding=False).start()
        started.callback(srt.stop)
        srt_20 = srt_listener(latency_ms=SRT_LOW_LATENCY_MS, read_stamps=True, decoding=False).start()
        started.callback(srt_20.stop)
        relay = SrtRelay(where)
        started.callback(relay.stop)
        destinations = [
            nginx.url(STREAM_KEY),
            f"srt://127.0.0.1:{srt.port}",
            f"srt://127.0.0.1:{srt_20.port}?latency={SRT_LOW_LATENCY_MS}",
            f"srt://127.0.0.1:{relay.in_port}",
        ]
        yield Servers(nginx, srt, srt_20, relay, " ".join(destinations))


@contextlib.contextmanager
def publishing_stack(plan: Plan, where: Path, publish_url: str, echo: bool) -> Iterator[tuple[Service, str]]:
    """The stack with PUBLISH_URL, up, every destination connected; always stopped."""
    port = free_port()
    env = service_env(plan, where, port)
    env["PUBLISH_URL"] = publish_url
    log.info("stack: starting python -m streamer.drone on port %d, publishing to %s", port, publish_url)
    service = Service("streamer.drone", env, echo=echo)
    known: set[int] = set()
    try:
        service.wait_up(START_TIMEOUT_S)
        wait_state(env, all_connected, START_TIMEOUT_S, "every destination connected", service)
        known.update(service.worker_pids().values())
        yield service, f"rtsp://127.0.0.1:{port}/live"
    except FAILURES as err:
        log.error("stack: %s\n%s", err, service.tail())
        raise
    finally:
        known.update(service.worker_pids().values())
        code = service.stop(also=sorted(known - {service.pid}))
        log.info("stack: stopped (exit status %s)", code)


def all_connected(current: StackState) -> bool:
    worker = current.workers.get("publish")
    destinations = (worker.progress or {}).get("destinations") if worker else None
    return bool(destinations) and all(d["connected"] for d in destinations)


def drone_pids(service: Service) -> dict[str, int]:
    return {**service.worker_pids(), "controller": service.pid}


# --- 1. CPU with 0 and with many viewers


def cpu_window(service: Service, srv: Servers, viewers: int, seconds: float) -> dict[str, Any]:
    crowd = CopyingViewers(srv.nginx.url(STREAM_KEY), viewers) if viewers else None
    try:
        if crowd is not None:
            wait_until(
                lambda: (counts := crowd.counts()) is not None and min(counts) > 0,
                60,
                f"every one of {viewers} viewers to receive frames",
            )
        drone = drone_pids(service)
        nginx = {f"nginx_{pid}": pid for pid in srv.nginx.pids()}
        crowd_pids = {"viewers": crowd.popen.pid} if crowd is not None else {}
        # The viewers' counts as they print them (once a second), each read fresh; the encoder's as
        # of its latest report (up to a second old at either end).
        before = crowd.next_counts() if crowd is not None else None
        encoded_before = encoded(service)
        meter = CpuMeter({**drone, **nginx, **crowd_pids, "bench": os.getpid()}).start()
        time.sleep(seconds)  # the window being measured
        cpu = meter.stop()
        after = crowd.next_counts() if crowd is not None else None
        encoded_after = encoded(service)
        if drone_pids(service) != drone:
            raise PhaseFailed(f"a process of the drone restarted during the window: {drone}")
    finally:
        if crowd is not None:
            crowd.stop()
    percent = cpu.percent
    figures = {name: percent[name] for name in drone if name in percent}
    return {
        "viewers": viewers,
        "seconds": cpu.seconds,
        "drone": figures,
        "drone_total": round(sum(figures.values()), 1),
        "nginx": round(sum(v for k, v in percent.items() if k.startswith("nginx_")), 1),
        "viewers_process": percent.get("viewers"),
        "bench": percent.get("bench"),
        "viewer_frames": [b - a for a, b in zip(before, after, strict=True)] if before and after else [],
        # What the stream carried meanwhile (the RTSP worker's count of encoded frames, as of its
        # latest report: within a second of the window's ends).
        "stream_frames": encoded_after - encoded_before,
    }


def encoded(service: Service) -> int:
    """Frames the stream's encoder has made (the RTSP worker's latest progress report)."""
    current = stack_state(service.env)
    worker = current.workers.get("rtsp") if current else None
    return int(worker.progress.get("frames", 0)) if worker else 0


# --- 2. latency through each path


def _summary(
    decoded: int, failed: int, latencies: list[float], first_frame_s: float | None
) -> dict[str, Any]:
    return {
        "frames_decoded": decoded,
        "stamps_failed": failed,
        "first_frame_s": first_frame_s,
        "latency_ms": LatencySummary.of(latencies).as_dict(),
        "latencies_ms": [round(ms, 2) for ms in latencies],
    }


def _watch(plan: Plan) -> None:
    time.sleep(plan.warmup_s + plan.seconds)  # the warm-up and the measurement window


def latency_of(path: str, plan: Plan, rtsp_url: str, srv: Servers) -> dict[str, Any]:
    if path in ("rtsp_udp", "rtsp_tcp"):
        client = RtspClient(rtsp_url, path.removeprefix("rtsp_")).start()
        try:
            if not client.wait_frames(1, CONNECT_TIMEOUT_S):
                raise PhaseFailed(f"{path}: no frame ({client.errors})")
            _watch(plan)
            if client.errors:
                raise PhaseFailed(f"{path}: {client.errors}")
        finally:
            client.stop()
        return _summary(
            client.frames, client.stamps_failed, client.latencies_ms(plan.warmup_s), client.first_frame_s
        )
    if path in ("srt", "srt_20"):  # the listener stays connected; it decodes only while measured
        decoder, own = (srv.srt if path == "srt" else srv.srt_20), False
        decoder.decoding = True
        began = time.monotonic() - decoder.started_at
        frames_before, failed_before = decoder.frames, decoder.stamps_failed
    else:
        decoder = (
            rtmp_viewer(srv.nginx.url(STREAM_KEY), read_stamps=True)
            if path == "rtmp"
            else srt_viewer(srv.relay.out_port, read_stamps=True)
        ).start()
        own, began, frames_before, failed_before = True, 0.0, 0, 0
    try:
        if not decoder.wait_frames(frames_before + 1, CONNECT_TIMEOUT_S):
            raise PhaseFailed(f"{path}: no frame ({decoder.errors})")
        _watch(plan)
        if decoder.errors:
            raise PhaseFailed(f"{path}: {decoder.errors}")
    finally:
        if own:
            decoder.stop()
        else:
            decoder.decoding = False
    return _summary(
        decoder.frames - frames_before,
        decoder.stamps_failed - failed_before,
        decoder.latencies_ms(began + plan.warmup_s),
        decoder.first_frame_s if own else None,
    )


# --- 3. join time


def join_once(path: str, rtsp_url: str, srv: Servers) -> float:
    """A new viewer's start → its first clean decoded frame, in seconds."""
    if path == "rtsp_tcp":
        client = RtspClient(rtsp_url, "tcp", read_stamps=False).start()
        try:
            if not client.wait_frames(1, CONNECT_TIMEOUT_S) or client.first_frame_s is None:
                raise PhaseFailed(f"{path}: a joiner got no frame ({client.errors})")
            return client.first_frame_s
        finally:
            client.stop()
    decoder = (
        rtmp_viewer(srv.nginx.url(STREAM_KEY)) if path == "rtmp" else srt_viewer(srv.relay.out_port)
    ).start()
    try:
        if not decoder.wait_frames(1, CONNECT_TIMEOUT_S) or decoder.first_frame_s is None:
            raise PhaseFailed(f"{path}: a joiner got no frame ({decoder.errors})")
        return decoder.first_frame_s
    finally:
        decoder.stop()


def joins_of(path: str, count: int, rtsp_url: str, srv: Servers, rng: random.Random) -> list[float]:
    seconds = []
    for _ in range(count):
        # A random moment in the stream's keyframe interval (1 s), and more than the RTSP
        # worker's keyframe pacing interval (0.5 s) after the previous joiner.
        time.sleep(rng.uniform(0.6, 1.6))
        seconds.append(round(join_once(path, rtsp_url, srv), 4))
    return seconds


# --- the run


def run(plan: Plan, setup: Setup, out: Path, workdir: Path | None, echo: bool) -> dict[str, Any]:
    began = time.monotonic()
    results: dict[str, Any] = new_results(
        {
            **stream_settings(plan),
            "viewers": setup.viewers,
            "windows": list(setup.windows),
            "window_s": setup.window_s,
            "seconds": plan.seconds,
            "warmup_s": plan.warmup_s,
            "joins": setup.joins,
            "seed": plan.seed,
            "short": plan.short,
        }
    )
    results.update(cpu={"windows": []}, latency={}, join_s={}, errors=[])
    rng = random.Random(plan.seed)
    try:
        with (
            private_workdir(workdir) as where,
            servers(where) as srv,
            publishing_stack(plan, where, srv.publish_url, echo) as (service, rtsp_url),
        ):
            for viewers in setup.windows:
                log.info("CPU: %d viewers of nginx, %g s", viewers, setup.window_s)
                window = cpu_window(service, srv, viewers, setup.window_s)
                results["cpu"]["windows"].append(window)
                frames = window["viewer_frames"]
                log.info(
                    "  drone %.1f %% of a core, nginx %.1f %%%s",
                    window["drone_total"],
                    window["nginx"],
                    f", frames per viewer {min(frames)} to {max(frames)}" if frames else "",
                )
            # A path that fails is an error of its own: the other paths are still measured.
            for path in LATENCY_PATHS:
                log.info("latency: %s, %g s", PATH_NAMES[path], plan.seconds)
                try:
                    results["latency"][path] = measured = latency_of(path, plan, rtsp_url, srv)
                except PhaseFailed as err:
                    results["errors"].append(f"latency, {err}")
                    log.error("  %s", err)
                    continue
                log.info("  p50 %s ms", _fmt(measured["latency_ms"]["p50"]))
            for path in JOIN_PATHS:
                log.info("join: %s, %d joiners", PATH_NAMES[path], setup.joins)
                try:
                    results["join_s"][path] = joins_of(path, setup.joins, rtsp_url, srv, rng)
                except PhaseFailed as err:
                    results["errors"].append(f"join, {err}")
                    log.error("  %s", err)
                    continue
                log.info("  median %.3f s", statistics.median(results["join_s"][path]))
            results["publish_progress"] = _publish_progress(service)
            results["restarts"] = _restarts(service)
    except (*FAILURES, AssertionError) as err:
        results["errors"].append(str(err).splitlines()[0])
        log.error("%s", err)
    results["duration_s"] = round(time.monotonic() - began, 1)
    write_results(out, "publish", results, markdown(results))
    return results


def _restarts(service: Service) -> list[str]:
    """Restarts of the stack or of a worker during the run (there should be none)."""
    current = stack_state(service.env)
    return [f"{r.scope}: {r.reason}" for r in current.restarts] if current else []


def _publish_progress(service: Service) -> dict[str, Any] | None:
    current = stack_state(service.env)
    worker = current.workers.get("publish") if current else None
    return worker.progress if worker else None


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def markdown(results: dict[str, Any]) -> str:
    s = results["settings"]
    lines = [
        *report.heading("Publishing to media servers", results),
        f"Run: {results['started_utc']}, {results.get('duration_s', 0):.0f} s. PUBLISH_URL: nginx-rtmp, "
        f"two SRT listeners (SRT's default latency, and latency={SRT_LOW_LATENCY_MS} at both ends), an SRT "
        "relay (a minimal gateway: listener in, listener out), all on loopback, all publishing throughout.",
        "",
        f"CPU, % of one core, over {s['window_s']:g} s windows, with RTMP viewers pulling from nginx "
        "(`rtmp2src ! flvdemux ! fakesink`, in one process of their own). `drone`: the controller and "
        "every worker; nginx and the viewers' process are not the drone's. Frames per viewer: the fewest "
        "and most any viewer received in the window, of the frames the stream's encoder made meanwhile "
        "(its count as reported once a second).",
        "",
    ]
    windows = results["cpu"]["windows"]
    names = sorted({name for w in windows for name in w["drone"]})
    lines += [
        "| window | drone | " + " | ".join(names) + " | nginx | viewers' process | frames per viewer |",
        "|---|---:|" + "---:|" * len(names) + "---:|---:|---|",
    ]
    for w in windows:
        frames = w["viewer_frames"]
        spread = f"{min(frames)} to {max(frames)} of {w['stream_frames']}" if frames else "-"
        lines.append(
            f"| {w['viewers']} viewers | {w['drone_total']:.1f} | "
            + " | ".join(_fmt(w["drone"].get(n)) for n in names)
            + f" | {w['nginx']:.1f} | {_fmt(w['viewers_process'])} | {spread} |"
        )
    latency = results["latency"]
    base = {p: _get_p50(latency, p) for p in ("rtsp_udp", "rtsp_tcp")}
    lines += [
        "",
        f"Capture→decoded latency, ms, {s['seconds']:g} s per path after {s['warmup_s']:g} s of warm-up "
        "(`avdec_h264 output-corrupt=false`; no client buffering beyond the protocol's own: rtspsrc "
        "latency=0, rtmp2src, SRT at its configured latency). "
        "`+` columns: the p50 minus direct RTSP's.",
        "",
        "| path | p50 | p95 | max | + vs RTSP UDP | + vs RTSP TCP | frames | stamps not read |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for path in LATENCY_PATHS:
        if path not in latency:
            continue
        m = latency[path]["latency_ms"]
        p50 = m["p50"]
        added = [None if p50 is None or b is None else p50 - b for b in base.values()]
        lines.append(
            f"| {PATH_NAMES[path]} | {_fmt(p50)} | {_fmt(m['p95'])} | {_fmt(m['max'])} | "
            + " | ".join(_fmt(a) for a in added)
            + f" | {latency[path]['frames_decoded']} | {latency[path]['stamps_failed']} |"
        )
    lines += [
        "",
        f"Join: a new viewer's start → its first clean decoded frame, s, {s['joins']} joiners per path at "
        "random moments. Direct RTSP forces a keyframe for each new viewer; nginx-rtmp and the SRT relay "
        "have no GOP cache: a joiner waits for the stream's next keyframe (one a second).",
        "",
        "| path | median | max |",
        "|---|---:|---:|",
    ]
    for path, seconds in results["join_s"].items():
        lines.append(f"| {PATH_NAMES[path]} | {statistics.median(seconds):.3f} | {max(seconds):.3f} |")
    restarts = results.get("restarts")
    if restarts is not None:
        lines += ["", f"Restarts of the stack or a worker during the run: {', '.join(restarts) or 'none'}."]
    lines += [f"\n**error**: {error}" for error in results["errors"]]
    return "\n".join(lines) + "\n"


def _get_p50(latency: dict[str, Any], path: str) -> float | None:
    return latency[path]["latency_ms"]["p50"] if path in latency else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.publish", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--viewers", type=int, default=50, help="RTMP viewers of nginx in the busy windows (50)"
    )
    parser.add_argument("--window", type=float, default=30.0, help="seconds of each CPU window (30)")
    parser.add_argument("--seconds", type=float, default=20.0, help="seconds of latency per path (20)")
    parser.add_argument("--joins", type=int, default=10, help="joiners per path (10)")
    parser.add_argument("--short", action="store_true", help="1 s windows, 5 viewers, 1 join: a smoke run")
    add_stack_options(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    if args.short:
        viewers = min(5, args.viewers)
        setup = Setup(viewers=viewers, windows=(0, viewers), window_s=2.0, joins=1)
        plan = Plan(width=args.width, height=args.height, seconds=1.0, warmup_s=0.5, short=True)
    else:
        setup = Setup(
            viewers=args.viewers,
            windows=(0, args.viewers, 0, args.viewers),
            window_s=args.window,
            joins=args.joins,
        )
        plan = Plan(width=args.width, height=args.height, seconds=args.seconds)
    results = run(plan, setup, args.out, args.workdir, args.echo)
    return finish(results, markdown(results), args.out, "publish.json, publish.md")


if __name__ == "__main__":
    raise SystemExit(main())
