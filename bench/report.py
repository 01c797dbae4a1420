"""Turning a benchmark's results into the Markdown table: pure functions of the results dict.

The results dict is what ``bench.run`` writes as JSON (see bench/README.md for its fields).
Every figure of the stack is put next to the floor's where the floor has one, with the ratio,
and next to its target where the issue sets one.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

STACK_WORKERS = ("feeder", "recorder", "rtsp")


@dataclass(frozen=True)
class Target:
    limit: float
    text: str  # e.g. "≤ 30 ms"

    def met(self, value: float | None) -> bool | None:
        return None if value is None or math.isnan(value) else value <= self.limit


@dataclass(frozen=True)
class Row:
    figure: str
    unit: str
    stack: float | None
    floor: float | None = None
    target: Target | None = None

    @property
    def ratio(self) -> float | None:
        if self.stack is None or not self.floor:
            return None
        return self.stack / self.floor


TARGETS = {
    "latency_p50": Target(30, "≤ 30 ms"),
    "latency_p99": Target(45, "≤ 45 ms"),
    "late_join_median": Target(100, "≤ 100 ms"),
    "rtsp_cpu_8_over_1": Target(1.1, "≤ 1.1x"),
    "startup": Target(2, "≤ 2 s"),
    "recovery": Target(3, "≤ 3 s"),
}


def _get(data: dict[str, Any], *path: str) -> Any:
    for key in path:
        if not isinstance(data, dict) or key not in data:
            return None
        data = data[key]
    return data


def _ms(values: Sequence[float] | None, summary: Callable[[Sequence[float]], float]) -> float | None:
    return summary(values) * 1000 if values else None


def _sum(values: Sequence[float | None]) -> float | None:
    return None if any(v is None for v in values) else sum(v for v in values if v is not None)


def _div(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def rows(results: dict[str, Any]) -> list[Row]:
    """Every figure of the run, stack beside floor, in the order the table shows them."""
    stack, floor = results.get("stack", {}), results.get("floor", {})
    out: list[Row] = []
    for transport in ("udp", "tcp", "udp_8_viewers"):
        label = {"udp": "UDP", "tcp": "TCP", "udp_8_viewers": "UDP, 8 viewers"}[transport]
        for stat in ("p50", "p95", "p99", "max"):
            target = TARGETS.get(f"latency_{stat}") if transport == "udp" else None
            out.append(
                Row(
                    f"capture→decoded {stat}, {label}",
                    "ms",
                    _get(stack, "latency", transport, "latency_ms", stat),
                    _get(floor, "latency", transport, "latency_ms", stat),
                    target,
                )
            )
    frame_counts = (("frames_damaged", "damaged by lost packets"), ("stamps_failed", "stamps not read"))
    for transport, label in (("udp", "UDP"), ("tcp", "TCP"), ("udp_8_viewers", "UDP, 8 viewers")):
        for key, what in frame_counts:
            out.append(
                Row(
                    f"{what} / frames decoded, {label}",
                    "%",
                    _percent_of_frames(_get(stack, "latency", transport), key),
                    _percent_of_frames(_get(floor, "latency", transport), key),
                )
            )
    stack_joins, floor_joins = stack.get("late_join_s"), floor.get("late_join_s")
    for name, fn in (("median", statistics.median), ("max", max)):
        out.append(
            Row(
                f"late join → first clean frame, {name}",
                "ms",
                _ms(stack_joins, fn),
                _ms(floor_joins, fn),
                TARGETS["late_join_median"] if name == "median" else None,
            )
        )
    out.append(
        Row(
            "late join, median of joiners not held back by the keyframe pacer",
            "ms",
            _ms(_unpaced(stack), statistics.median),
            _ms(_unpaced(floor), statistics.median),
        )
    )
    out.append(
        Row(
            "start → first decoded frame",
            "s",
            stack.get("startup_s"),
            floor.get("startup_s"),
            TARGETS["startup"],
        )
    )
    for worker, seconds in sorted((stack.get("recovery_s") or {}).items()):
        out.append(Row(f"SIGKILL {worker} → stream back", "s", seconds, None, TARGETS["recovery"]))
    for viewers in ("1_viewer", "8_viewers"):
        label = viewers.replace("_", " ")
        cpu = _get(stack, "cpu", viewers) or {}
        floor_cpu = _get(floor, "cpu", viewers, "floor")
        for worker in STACK_WORKERS:
            out.append(Row(f"CPU {worker}, {label}", "% of a core", cpu.get(worker)))
        out.append(
            Row(
                f"CPU feeder + rtsp (the floor's work), {label}",
                "% of a core",
                _sum([cpu.get("feeder"), cpu.get("rtsp")]),
                floor_cpu,
            )
        )
        out.append(
            Row(
                f"CPU whole stack incl. recorder, {label}",
                "% of a core",
                _sum([cpu.get(w) for w in STACK_WORKERS]),
                floor_cpu,
            )
        )
        out.append(
            Row(f"CPU this client (decoding 1 viewer), {label}", "% of a core", cpu.get("client"), None)
        )
    out.append(
        Row(
            "RTSP worker CPU, 8 viewers / 1 viewer",
            "x",
            _div(_get(stack, "cpu", "8_viewers", "rtsp"), _get(stack, "cpu", "1_viewer", "rtsp")),
            _div(_get(floor, "cpu", "8_viewers", "floor"), _get(floor, "cpu", "1_viewer", "floor")),
            TARGETS["rtsp_cpu_8_over_1"],
        )
    )
    out.append(Row("CPU controller, 1 viewer", "% of a core", _get(stack, "cpu", "1_viewer", "controller")))
    for moment in ("start", "end"):
        rss = _get(stack, "rss_kib", moment) or {}
        floor_rss = _get(floor, "rss_kib", moment, "floor")
        for worker in (*STACK_WORKERS, "controller"):
            value = rss.get(worker)
            out.append(Row(f"RSS {worker}, {moment}", "MiB", None if value is None else value / 1024))
        total = _sum([rss.get(w) for w in (*STACK_WORKERS, "controller")])
        out.append(
            Row(
                f"RSS whole stack, {moment}",
                "MiB",
                None if total is None else total / 1024,
                None if floor_rss is None else floor_rss / 1024,
            )
        )
    return out


def _unpaced(side: dict[str, Any]) -> list[float] | None:
    """Join times of the viewers whose keyframe was forced at once; the others waited for the
    pacer's next shared keyframe (by design)."""
    joins, paced = side.get("late_join_s"), side.get("late_join_paced")
    if not joins or not paced:
        return None
    return [join for join, waited in zip(joins, paced, strict=False) if not waited] or None


def _percent_of_frames(phase: dict[str, Any] | None, key: str) -> float | None:
    """``key`` (a count of frames) as a share of the frames decoded; None where not measured
    (results from before ``frames_damaged`` existed have none)."""
    if not phase or not phase.get("frames_decoded") or key not in phase:
        return None
    return 100 * phase[key] / phase["frames_decoded"]


def _number(value: float | None, unit: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if unit in ("s", "x"):
        return f"{value:.2f}"
    if unit == "%":
        return f"{value:.2f}"
    return f"{value:.1f}"


def seconds(value: float | None) -> str:
    """Seconds to the millisecond, "-" for none."""
    return "-" if value is None else f"{value:.3f}"


def heading(title: str, results: dict[str, Any]) -> list[str]:
    """The first lines of a benchmark's Markdown: the title with the stream's settings, the machine."""
    s = results["settings"]
    return [
        f"# {title}: {s['width']}x{s['height']}@{s['fps']}, {s['bitrate'] / 1e6:g} Mbit/s, "
        f"CAMERA={s['camera']}",
        "",
        f"Machine: {results['machine_line']}",
        "",
    ]


def markdown(results: dict[str, Any]) -> str:
    """The results as a Markdown document: machine, settings, then one table of every figure."""
    s = results["settings"]
    lines = [
        *heading("Benchmark", results),
        f"Run: {results['started_utc']}, {results['duration_s']:.0f} s{' (--short)' if s['short'] else ''}; "
        f"latency phases {s['seconds']:g} s each after {s['warmup_s']:g} s of warm-up; "
        f"{s['late_join_viewers']} late joiners over {s['late_join_window_s']:g} s; "
        f"CPU with 1 and 8 viewers over {s['seconds']:g} s. Client: rtspsrc latency=0 (no jitter buffer), "
        "avdec_h264 output-corrupt=false, in the benchmark process on the same machine.",
        "",
        "Floor: the stack's own camera→RTP chain in one pipeline (no shared memory, no recorder), "
        "served by the same RTSP server class. Ratio = stack / floor.",
        "",
        "| figure | unit | stack | floor | ratio | target | met |",
        "|---|---|---:|---:|---:|---|---|",
    ]
    for row in rows(results):
        met = row.target.met(row.stack) if row.target else None
        lines.append(
            f"| {row.figure} | {row.unit} | {_number(row.stack, row.unit)} | {_number(row.floor, row.unit)} "
            f"| {_number(row.ratio, 'x')} | {row.target.text if row.target else ''} "
            f"| {'' if met is None else ('yes' if met else '**no**')} |"
        )
    notes = list(results.get("notes") or [])
    for side in ("stack", "floor"):
        for retry in results.get(side, {}).get("retried", []):
            notes.append(f"**{side}: a phase failed and was run again**: {retry}")
    if notes:
        lines += ["", *[f"- {note}" for note in notes]]
    return "\n".join(lines) + "\n"


def machine_line(machine: dict[str, Any]) -> str:
    """One line describing where the numbers come from."""
    load = machine.get("loadavg")
    return (
        f"{machine['cores']} cores, {machine['cpu_model']}, Linux {machine['kernel']}, "
        f"GStreamer {machine['gstreamer']}, Python {machine['python']}, nice {machine['nice']}"
        + (f", load average {load} at start" if load else "")
    )
