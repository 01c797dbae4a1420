"""A thin link: the stream at a fixed bitrate against the adaptive one, side by side in one run.

Issue 17's bench figure: what a UDP viewer sees when its link carries only half of
``VIDEO_BITRATE``, with ``VIDEO_BITRATE_MODE=fixed`` and with ``adaptive``:

    .venv/bin/python -m bench.link            # 1280x720@30, 2 Mbit/s, the link capped at 1 Mbit/s for 60 s
    .venv/bin/python -m bench.link --short    # 320x240, 5 s spans: a smoke run (the test's)

The stack (``python -m streamer.drone``, the suite's settings from ``bench.plan``: 1280x720@30,
``VIDEO_BITRATE`` 2 Mbit/s, default encoder and recorder; private sockets, port and SSD
directory) with ``VIDEO_BITRATE_MIN`` 200 kbit/s runs twice, one after the other: ``fixed``, then
``adaptive``. One viewer (``RtspClient``, UDP, rtspsrc latency=0, decoding and reading the
stamps: the latency probe's client) on RTP/RTCP ports chosen here, so that its link can be
shaped: an nftables policer (``streamer.testing.policed``) drops what this machine sends to the
viewer's RTP port beyond ``--cap`` (half of ``VIDEO_BITRATE``), with a 16 kB burst, as a radio
link too thin for the stream drops what it cannot carry. Its RTCP is left alone: the reports
reach the server.

For each mode: ``--clean`` seconds unshaped (the reference, and the viewer's first receiver
reports), then the cap for ``--seconds``, measured after its first ``--settle`` seconds (time
for the adaptive law to cut and the damaged pictures to pass): the intact-frame ratio (frames
decoded whole / frames the camera made, its frame rate times the span), the decoded frame rate,
capture→decoded latency p50/p95 of the intact stamped frames, the video received (H.264 bytes
the depayloader passed on: no RTP/UDP/IP headers, and a NAL unit missing a fragment is dropped
whole, so under loss it is less than what crossed the link), and the stream's bitrate as the
RTSP worker reports it (polled every second: min/median/max; adaptive: the time from the cap to
the first report under it).
Then the cap is lifted; adaptive: the time until the bitrate is back at ``VIDEO_BITRATE``
(bounded by ``--climb``).

Needs root and ``nft`` (nftables). Writes ``link.json`` and ``link.md`` to ``bench/results/``
(``--out``); exit status 1 if a run failed (what was measured is still written), 2 without
root or nft.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import statistics
import sys
import time
from collections.abc import Callable
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
from bench.procs import Service, free_port
from bench.stack import FAILURES
from streamer import config
from streamer.media.latency import LatencySummary
from streamer.media.rtsp_client import RtspClient
from streamer.testing import policed, rtsp_progress, udp_port_pair

log = logging.getLogger("bench")

MODES = ("fixed", "adaptive")
MINIMUM_BPS = 200_000
BURST_BYTES = 16_000  # the policer's burst: a radio's small buffer
POLL_S = 1.0  # the RTSP worker reports its bitrate once a second
CHANGE_LINE = r"bitrate (\d+) → (\d+) kbit/s: (.*)$"


@dataclass(frozen=True)
class Link:
    """The spans of one mode's run and the link's cap."""

    cap_bps: int
    clean_s: float = 10.0
    capped_s: float = 60.0
    settle_s: float = 15.0
    climb_timeout_s: float = 90.0
    minimum_bps: int = MINIMUM_BPS
    burst_bytes: int = BURST_BYTES


@dataclass
class Sample:
    at: float  # monotonic
    bitrate: int | None  # the stream's, as the RTSP worker last reported it
    fraction_lost: float | None  # the viewer's last receiver report, as the worker read it


def poll(env: dict[str, str], service: Service, samples: list[Sample], until: Callable[[], bool]) -> None:
    """Sample the RTSP worker's report every ``POLL_S`` until ``until()`` holds (checked after
    each sample) or the stack exits."""
    while True:
        service.check_running()
        progress = rtsp_progress(env)
        clients = progress.get("clients") or []
        lost = clients[0].get("fraction_lost") if clients else None
        samples.append(Sample(time.monotonic(), progress.get("bitrate"), lost))
        if until():
            return
        time.sleep(POLL_S)


def loadavg() -> float | None:
    """The 1-minute load average now: the machine is shared, and this says how busy it was."""
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _round(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


def window(viewer: RtspClient, fps: int, start: float, end: float, samples: list[Sample]) -> dict[str, Any]:
    """What the viewer saw between two monotonic times, and the stream's bitrate meanwhile."""
    span = max(end - start, 1e-3)
    made = fps * span
    decoded = viewer.frames_between(start, end)
    intact = viewer.frames_between(start, end, intact=True)
    latencies = [ms for at, ms in viewer.samples_from(0) if start <= viewer.started_at + at <= end]
    bitrates = [s.bitrate for s in samples if start <= s.at <= end and s.bitrate is not None]
    lost = [s.fraction_lost for s in samples if start <= s.at <= end and s.fraction_lost is not None]
    return {
        "seconds": round(span, 2),
        "frames_made": round(made),
        "frames_decoded": decoded,
        "frames_intact": intact,
        "intact_ratio": round(intact / made, 3) if made else None,
        "decoded_fps": round(decoded / span, 2),
        "intact_fps": round(intact / span, 2),
        "latency_ms": LatencySummary.of(latencies).as_dict(),
        "received_kbps": round(viewer.bitrate_bps(start, end) / 1000, 1),
        "bitrate_kbps": {
            "samples": len(bitrates),
            "min": _round(min(bitrates) / 1000) if bitrates else None,
            "median": _round(statistics.median(bitrates) / 1000) if bitrates else None,
            "max": _round(max(bitrates) / 1000) if bitrates else None,
        },
        "reported_loss_max": max(lost) if lost else None,
    }


def mode_env(mode: str, plan: Plan, link: Link, where: Path, port: int) -> dict[str, str]:
    env = service_env(plan, where, port)
    env.update(VIDEO_BITRATE_MIN=str(link.minimum_bps), VIDEO_BITRATE_MODE=mode)
    config.load(env)  # fail here, with the variable named, rather than in a child
    return env


def measure(mode: str, plan: Plan, link: Link, where: Path, echo: bool) -> dict[str, Any]:
    """One mode's stack: clean, capped, freed; measured and stopped."""
    out: dict[str, Any] = {"mode": mode, "errors": []}
    port = free_port()
    url = f"rtsp://127.0.0.1:{port}{RTSP_PATH}"
    try:
        env = mode_env(mode, plan, link, where, port)
    except config.ConfigError as err:
        out["errors"].append(f"configuration error: {err}")
        return out
    log.info("%s: starting python -m streamer.drone on port %d", mode, port)
    service = Service("streamer.drone", env, echo=echo)
    known: set[int] = set()
    viewer: RtspClient | None = None
    samples: list[Sample] = []
    try:
        service.wait_up(START_TIMEOUT_S)
        known.update(service.worker_pids().values())
        rtp_port, rtcp_port = udp_port_pair()
        out["viewer_ports"] = [rtp_port, rtcp_port]
        viewer = RtspClient(url, "udp", udp_ports=(rtp_port, rtcp_port)).start()
        if not viewer.wait_frames(1, CONNECT_TIMEOUT_S):
            raise PhaseFailed(f"the viewer got no frame within {CONNECT_TIMEOUT_S:g} s: {viewer.errors}")
        clean_from = time.monotonic()
        poll(env, service, samples, lambda: time.monotonic() >= clean_from + link.clean_s)
        capped_from = time.monotonic()
        out["clean"] = window(viewer, plan.fps, clean_from, capped_from, samples)
        out["reported_before_cap"] = samples[-1].fraction_lost is not None
        log.info("%s: the viewer's RTP port %d capped at %d kbit/s", mode, rtp_port, link.cap_bps // 1000)
        with policed(f"udp dport {rtp_port}", link.cap_bps, link.burst_bytes):
            poll(env, service, samples, lambda: time.monotonic() >= capped_from + link.capped_s)
            lifted_at = time.monotonic()
        out["loadavg_capped_end"] = loadavg()
        measured_from = min(capped_from + link.settle_s, lifted_at)
        out["capped"] = window(viewer, plan.fps, measured_from, lifted_at, samples)
        out["capped"]["settle_s"] = round(measured_from - capped_from, 2)
        out["capped"]["whole_span"] = window(viewer, plan.fps, capped_from, lifted_at, samples)
        under = [
            s.at
            for s in samples
            if capped_from <= s.at <= lifted_at and s.bitrate is not None and s.bitrate < link.cap_bps
        ]
        out["under_cap_after_s"] = round(under[0] - capped_from, 1) if under else None
        log.info(
            "%s: capped: %.0f %% of the frames intact, %.1f fps decoded, latency p50 %s p95 %s ms, "
            "%.0f kbit/s received, stream %s kbit/s (median); under the cap after %s s",
            mode,
            100 * (out["capped"]["intact_ratio"] or 0),
            out["capped"]["decoded_fps"],
            _fmt(out["capped"]["latency_ms"]["p50"]),
            _fmt(out["capped"]["latency_ms"]["p95"]),
            out["capped"]["received_kbps"],
            _fmt(out["capped"]["bitrate_kbps"]["median"], 0),
            _fmt(out["under_cap_after_s"]),
        )
        if mode == "adaptive":
            climb: dict[str, Any] = {"timeout_s": link.climb_timeout_s}
            poll(
                env,
                service,
                samples,
                lambda: (
                    samples[-1].bitrate == plan.bitrate
                    or time.monotonic() >= lifted_at + link.climb_timeout_s
                ),
            )
            back = samples[-1].bitrate == plan.bitrate
            climb["reached"] = back
            climb["seconds"] = round(samples[-1].at - lifted_at, 1) if back else None
            # where it climbed from: the last report while capped
            capped_samples = [s.bitrate for s in samples if capped_from <= s.at <= lifted_at and s.bitrate]
            climb["from_kbps"] = _round(capped_samples[-1] / 1000) if capped_samples else None
            climb["last_kbps"] = _round((samples[-1].bitrate or 0) / 1000)
            out["climb"] = climb
            log.info(
                "adaptive: the cap lifted, back at %d kbit/s %s",
                plan.bitrate // 1000,
                f"after {climb['seconds']} s" if back else f"not within {link.climb_timeout_s:g} s",
            )
        progress = rtsp_progress(env)
        out["sessions_total"] = progress.get("sessions_total")
        out["bitrate_changes"] = progress.get("bitrate_changes")
        out["changes_logged"] = [m.group(0) for m in service.matches(CHANGE_LINE)]
        # each second's report beside the frames the viewer decoded whole in the second before it
        out["samples"] = [
            {
                "t_s": round(s.at - capped_from, 2),
                "bitrate": s.bitrate,
                "fraction_lost": s.fraction_lost,
                "intact_frames": viewer.frames_between(s.at - POLL_S, s.at, intact=True),
            }
            for s in samples
        ]
        out["spans"] = {"capped_at_s": 0.0, "lifted_at_s": round(lifted_at - capped_from, 2)}
        out["viewer"] = {
            "size": viewer.size,
            "first_frame_s": viewer.first_frame_s,
            "frames": viewer.frames,
            "frames_damaged": viewer.frames_damaged,
            "stamps_failed": viewer.stamps_failed,
            "errors": list(viewer.errors),
        }
        if viewer.errors:
            raise PhaseFailed(f"the viewer failed: {viewer.errors}")
        if out["sessions_total"] != 1:
            out["errors"].append(f"the viewer reconnected: {out['sessions_total']} sessions")
        known.update(service.worker_pids().values())
    except FAILURES as err:
        out["errors"].append(str(err).splitlines()[0])
        log.error("%s: %s\n%s", mode, err, service.tail())
    finally:
        if viewer is not None:
            viewer.stop()
        known.update(service.worker_pids().values())
        code = service.stop(also=sorted(known - {service.pid}))
        out["exit_status"] = code
        log.info("%s: stopped (exit status %s)", mode, code)
        if code not in (0, None) and not out["errors"]:
            out["errors"].append(f"the stack exited with status {code}:\n{service.tail(5)}")
        shutil.rmtree(Path(where) / "ssd", ignore_errors=True)
    return out


def run(plan: Plan, link: Link, out: Path, workdir: Path | None, echo: bool) -> dict[str, Any]:
    began = time.monotonic()
    results: dict[str, Any] = new_results(
        {
            **stream_settings(plan),
            "bitrate_min": link.minimum_bps,
            "cap_bps": link.cap_bps,
            "burst_bytes": link.burst_bytes,
            "clean_s": link.clean_s,
            "capped_s": link.capped_s,
            "settle_s": link.settle_s,
            "climb_timeout_s": link.climb_timeout_s,
            "short": plan.short,
        }
    )
    results.update(modes={}, errors=[])
    with private_workdir(workdir) as where:
        for mode in MODES:
            measured = measure(mode, plan, link, where, echo)
            results["modes"][mode] = measured
            results["errors"] += [f"{mode}: {error}" for error in measured["errors"]]
    results["duration_s"] = round(time.monotonic() - began, 1)
    write_results(out, "link", results, markdown(results))
    return results


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.0f} %"


ROWS: tuple[tuple[str, Callable[[dict[str, Any]], str]], ...] = (
    ("intact frames / frames made", lambda w: _percent(w.get("intact_ratio"))),
    ("decoded fps (intact fps)", lambda w: f"{_fmt(w.get('decoded_fps'))} ({_fmt(w.get('intact_fps'))})"),
    (
        "latency p50 / p95 ms (intact stamped frames)",
        lambda w: f"{_fmt(w['latency_ms'].get('p50'))} / {_fmt(w['latency_ms'].get('p95'))}",
    ),
    ("received kbit/s (H.264)", lambda w: _fmt(w.get("received_kbps"), 0)),
    (
        "stream bitrate kbit/s min / median / max",
        lambda w: " / ".join(_fmt(w["bitrate_kbps"].get(k), 0) for k in ("min", "median", "max")),
    ),
    ("loss in the viewer's reports, max", lambda w: _percent(w.get("reported_loss_max"))),
)


def markdown(results: dict[str, Any]) -> str:
    s = results["settings"]
    modes = results["modes"]
    cap = s["cap_bps"] / 1000
    lines = [
        *report.heading("A thin link: fixed against adaptive bitrate", results),
        f"Run: {results['started_utc']}, {results.get('duration_s', 0):.0f} s"
        f"{' (--short: a smoke run, not a measurement)' if s['short'] else ''}. Each mode is its own stack "
        "(`python -m streamer.drone`, default encoder, recording video and images), run one after the other, "
        f"`VIDEO_BITRATE={s['bitrate']}`, `VIDEO_BITRATE_MIN={s['bitrate_min']}`. One viewer (UDP, rtspsrc "
        "latency=0, decoding and reading the stamps, in the bench's process). The link: an nftables policer "
        f"on the viewer's RTP port, {cap:.0f} kbit/s (half of `VIDEO_BITRATE`, IP packets, RTP and UDP "
        f"headers included), burst {s['burst_bytes'] // 1000} kB; packets beyond it are dropped. "
        f"{s['clean_s']:g} s clean, then the cap for {s['capped_s']:g} s, measured after its first "
        f"{s['settle_s']:g} s. Intact frames: decoded with none of their data (or their references') lost, "
        f"over the frames the camera made ({s['fps']} fps times the span). Received: the H.264 bytes the "
        "viewer's depayloader passed on (no RTP headers; a NAL unit missing a fragment is dropped whole, so "
        "under loss this is less than what crossed the link). Stream bitrate: the RTSP worker's report, "
        "polled every second.",
        "",
        "| figure | " + " | ".join(f"{m}, clean | {m}, capped" for m in MODES if m in modes) + " |",
        "|---|" + "---:|---:|" * len([m for m in MODES if m in modes]),
    ]
    for label, cell in ROWS:
        cells = []
        for mode in MODES:
            if mode not in modes:
                continue
            for span in ("clean", "capped"):
                w = modes[mode].get(span)
                cells.append(cell(w) if w else "-")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    adaptive = modes.get("adaptive") or {}
    climb = adaptive.get("climb") or {}
    lines += [
        "",
        "Adaptive: the stream's bitrate first reported under the cap "
        f"{_fmt(adaptive.get('under_cap_after_s'))} s after the cap was set (reports polled each second; "
        "a viewer sends a receiver report about every 5 s); "
        + (
            f"once the cap was lifted, back at {s['bitrate'] // 1000} kbit/s after "
            f"{_fmt(climb.get('seconds'))} s (from {_fmt(climb.get('from_kbps'), 0)} kbit/s)."
            if climb.get("reached")
            else f"once the cap was lifted, not back at {s['bitrate'] // 1000} kbit/s within "
            f"{_fmt(climb.get('timeout_s'), 0)} s."
        ),
    ]
    loads = ", ".join(
        f"{mode} {_fmt(modes[mode].get('loadavg_capped_end'), 2)}" for mode in MODES if mode in modes
    )
    lines += ["", f"Load average (1 min) at the end of each capped span: {loads}."]
    changes = adaptive.get("changes_logged") or []
    if changes:
        lines += [
            "",
            "The RTSP worker's bitrate changes (adaptive), as logged: "
            + "; ".join(f"`{c}`" for c in changes),
        ]
    lines += [f"\n**error**: {error.splitlines()[0]}" for error in results["errors"]]
    return "\n".join(lines) + "\n"


def _table(results: dict[str, Any]) -> str:
    """The capped figures, one line per mode, for the terminal."""
    lines = [
        f"{'mode':<9} {'intact':>7} {'fps':>6} {'p50 ms':>7} {'p95 ms':>7} "
        f"{'recv kbit/s':>11} {'stream kbit/s':>15}"
    ]
    for mode, m in results["modes"].items():
        w = m.get("capped")
        if not w:
            lines.append(f"{mode:<9} (no figures: {'; '.join(m['errors'])})")
            continue
        lines.append(
            f"{mode:<9} {_percent(w['intact_ratio']):>7} {w['decoded_fps']:>6.1f} "
            f"{_fmt(w['latency_ms']['p50']):>7} {_fmt(w['latency_ms']['p95']):>7} "
            f"{w['received_kbps']:>11.0f} {_fmt(w['bitrate_kbps']['median'], 0):>15}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.link", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, help="seconds the link is capped (60; 5 with --short)")
    parser.add_argument(
        "--settle", type=float, help="seconds of the cap left out of its figures (15; 2 with --short)"
    )
    parser.add_argument("--clean", type=float, help="seconds unshaped before the cap (10; 5 with --short)")
    parser.add_argument(
        "--climb", type=float, help="adaptive: the longest wait for the climb back (90; 5 with --short)"
    )
    parser.add_argument("--bitrate", type=int, default=Plan.bitrate, help="VIDEO_BITRATE, bit/s (2000000)")
    parser.add_argument("--cap", type=int, help="the link's rate, bit/s (half of --bitrate)")
    parser.add_argument("--short", action="store_true", help="320x240 and 5 s spans: a smoke run")
    add_stack_options(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    if os.geteuid() != 0 or not shutil.which("nft"):
        print(
            "bench.link shapes the viewer's link with nftables: it needs root and the nft command "
            f"(running as uid {os.geteuid()}, nft {'found' if shutil.which('nft') else 'not found'}; "
            "on Debian: apt-get install nftables, and run as root)",
            file=sys.stderr,
        )
        return 2
    short = args.short
    width, height = (
        (320, 240) if short and (args.width, args.height) == (1280, 720) else (args.width, args.height)
    )
    plan = Plan(width=width, height=height, bitrate=args.bitrate, short=short)
    defaults = Link(cap_bps=args.cap or args.bitrate // 2)
    link = Link(
        cap_bps=defaults.cap_bps,
        clean_s=args.clean if args.clean is not None else (5.0 if short else defaults.clean_s),
        capped_s=args.seconds if args.seconds is not None else (5.0 if short else defaults.capped_s),
        settle_s=args.settle if args.settle is not None else (2.0 if short else defaults.settle_s),
        climb_timeout_s=args.climb
        if args.climb is not None
        else (5.0 if short else defaults.climb_timeout_s),
    )
    if not 0 <= link.settle_s < link.capped_s:
        parser.error(f"--settle ({link.settle_s:g}) must be shorter than the capped span ({link.capped_s:g})")
    results = run(plan, link, args.out, args.workdir, args.echo)
    print(_table(results))
    return finish(results, markdown(results), args.out, "link.json, link.md")


if __name__ == "__main__":
    raise SystemExit(main())
