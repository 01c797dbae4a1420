"""PNG plots of a benchmark's results (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from bench.report import STACK_WORKERS


def latency_cdf(results: dict[str, Any], path: Path) -> None:
    """Capture→decoded latency CDF for UDP, TCP and the floor."""
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for side, transport, style in (
        ("stack", "udp", "-"),
        ("stack", "tcp", "--"),
        ("floor", "udp", "-"),
        ("floor", "tcp", "--"),
    ):
        values = sorted(results.get(side, {}).get("latency", {}).get(transport, {}).get("latencies_ms") or [])
        if not values:
            continue
        fractions = [(i + 1) / len(values) for i in range(len(values))]
        ax.step(values, fractions, style, where="post", label=f"{side} {transport.upper()} (n={len(values)})")
    ax.axvline(30, color="grey", lw=0.8, ls=":")
    ax.axvline(45, color="grey", lw=0.8, ls=":")
    ax.set_xlabel("capture → decoded (ms)")
    ax.set_ylabel("fraction of frames")
    ax.set_title("Latency CDF (targets: p50 ≤ 30 ms, p99 ≤ 45 ms over UDP)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    _save(fig, path)


def cpu_per_process(results: dict[str, Any], path: Path) -> None:
    """CPU of each process with 1 and with 8 viewers, stack beside floor."""
    names = [*STACK_WORKERS, "floor"]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    width = 0.38
    for offset, viewers in ((-width / 2, "1_viewer"), (width / 2, "8_viewers")):
        stack = results.get("stack", {}).get("cpu", {}).get(viewers, {})
        floor = results.get("floor", {}).get("cpu", {}).get(viewers, {})
        values = [stack.get(name, 0.0) for name in STACK_WORKERS] + [floor.get("floor", 0.0)]
        bars = ax.bar([i + offset for i in range(len(names))], values, width, label=viewers.replace("_", " "))
        ax.bar_label(bars, fmt="%.0f", fontsize=8)
    ax.set_xticks(range(len(names)), [*STACK_WORKERS, "floor (1 process)"])
    ax.set_ylabel("CPU (% of one core)")
    ax.set_title("CPU per process")
    ax.grid(axis="y", alpha=0.3)
    ax.legend()
    _save(fig, path)


def late_join(results: dict[str, Any], path: Path) -> None:
    """Each late joiner's connect → first clean frame, stack beside floor."""
    fig, ax = plt.subplots(figsize=(7, 4.2))
    data, paced, labels = [], [], []
    for side in ("stack", "floor"):
        values = [s * 1000 for s in results.get(side, {}).get("late_join_s") or []]
        if values:
            data.append(values)
            paced.append(results[side].get("late_join_paced") or [False] * len(values))
            labels.append(f"{side} (n={len(values)})")
    if data:
        ax.boxplot(data, vert=False, whis=(0, 100))
        for row, (values, waited) in enumerate(zip(data, paced, strict=True), start=1):
            for held, marker, label in (
                (False, "o", "keyframe forced at once"),
                (True, "x", "waited for the pacer"),
            ):
                xs = [v for v, w in zip(values, waited, strict=False) if w == held]
                ax.plot(
                    xs,
                    [row] * len(xs),
                    marker,
                    alpha=0.6,
                    ms=5,
                    color="C1" if held else "C0",
                    label=label if row == 1 else None,
                )
        ax.set_yticks(range(1, len(labels) + 1), labels)
        ax.legend(loc="lower right", fontsize=8)
    ax.axvline(100, color="grey", lw=0.8, ls=":")
    ax.set_xlabel("connect → first clean decoded frame (ms)")
    ax.set_title("Late join (target: median ≤ 100 ms)")
    ax.grid(axis="x", alpha=0.3)
    _save(fig, path)


def _save(fig: Any, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_all(results: dict[str, Any], directory: Path) -> list[Path]:
    paths = [directory / "latency_cdf.png", directory / "cpu_per_process.png", directory / "late_join.png"]
    for plot, path in zip((latency_cdf, cpu_per_process, late_join), paths, strict=True):
        plot(results, path)
    return paths
