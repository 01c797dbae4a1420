"""What a benchmark runs and where: the plan, the service's environment, the private working
directory, the machine description and the options every benchmark's command line shares.

Shared by ``bench.run`` (the suite), ``bench.recovery`` and ``bench.ffmpeg_clients``, so that
each runs the stack at the same settings.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import logging
import os
import platform
import shutil
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import report
from streamer import config
from streamer.media.gst import Gst
from streamer.testing import free_port

log = logging.getLogger("bench")

RESULTS_DIR = Path(__file__).resolve().parent / "results"
RTSP_PATH = "/live"
CONNECT_TIMEOUT_S = 10.0  # for one client's first frame
START_TIMEOUT_S = 45.0  # for a whole stack's first frame (a slow, loaded machine included)


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
    # The restart pause, held (min = max) so that every kill counts as a first failure; None
    # leaves the stack's own RESTART_DELAY_* defaults.
    restart_delay_s: float | None = 1.0
    seed: int = 5
    short: bool = False


def short_plan(width: int, height: int) -> Plan:
    return Plan(
        width=width,
        height=height,
        seconds=1.0,
        warmup_s=0.5,
        late_join_viewers=4,
        late_join_window_s=2.0,
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
        HTTP_PORT=str(free_port()),  # the API runs, as by default, on a port of its own
        HTTP_BIND="127.0.0.1",
        LOG_LEVEL="INFO",
        RESTART_SCOPE="stack",
        PYTHONUNBUFFERED="1",
    )
    if plan.restart_delay_s is not None:
        # Every kill is measured as a first failure: the pause doubles on failures in a row.
        env.update(
            RESTART_DELAY_MIN_S=f"{plan.restart_delay_s:g}",
            RESTART_DELAY_MAX_S=f"{plan.restart_delay_s:g}",
        )
    config.load(env)  # fail here, with the variable named, rather than in a child
    return env


@contextlib.contextmanager
def private_workdir(workdir: Path | None) -> Iterator[Path]:
    """``workdir`` (or a fresh directory in /tmp) for sockets and recordings; the recordings are
    removed afterwards, and a fresh directory entirely."""
    own = workdir is None
    path = workdir or Path(tempfile.mkdtemp(prefix="streamer-bench-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path / "ssd", ignore_errors=True)
        if own:
            shutil.rmtree(path, ignore_errors=True)


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


def stream_settings(plan: Plan) -> dict[str, Any]:
    """What the stream is: the part of the plan every benchmark's results repeat."""
    return {
        "width": plan.width,
        "height": plan.height,
        "fps": plan.fps,
        "bitrate": plan.bitrate,
        "camera": plan.camera,
    }


def new_results(settings: dict[str, Any]) -> dict[str, Any]:
    """The head of a benchmark's results: when, on what machine (logged too), with what settings."""
    results: dict[str, Any] = {
        "started_utc": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": machine(),
        "settings": settings,
    }
    results["machine_line"] = report.machine_line(results["machine"])
    log.info("machine: %s", results["machine_line"])
    return results


def write_results(out_dir: Path, name: str, results: dict[str, Any], markdown: str) -> None:
    """``<name>.json`` and ``<name>.md`` in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{name}.json").write_text(json.dumps(results, indent=1) + "\n")
    (out_dir / f"{name}.md").write_text(markdown)


def finish(results: dict[str, Any], text: str, out_dir: Path, written: str) -> int:
    """Print the results' Markdown, where they went and their errors; the exit status."""
    print(text)
    print(f"written to {out_dir}/: {written}")
    for error in results["errors"]:
        print(f"error: {error}", file=sys.stderr)
    return 1 if results["errors"] else 0


def add_stack_options(parser: argparse.ArgumentParser) -> None:
    """The options every benchmark shares: frame size, where results and sockets go, echo."""
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help=f"results directory ({RESULTS_DIR})")
    parser.add_argument("--workdir", type=Path, help="where sockets and recordings go (a fresh /tmp dir)")
    parser.add_argument("--echo", action="store_true", help="show the stack's log on stderr")
