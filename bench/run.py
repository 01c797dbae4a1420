"""The benchmark suite: latency, late join, CPU, start-up, recovery and memory, beside a floor.

    .venv/bin/python -m bench.run                 # the full run, about 5 minutes
    .venv/bin/python -m bench.run --short         # a smoke run of about half a minute

Runs the real stack (``python -m streamer.drone``, recorder on) with ``CAMERA=test-stamped`` at
1280x720@30 and 2 Mbit/s, and then the floor (``python -m bench.floor``: the same chain in one
pipeline), measures both with the same client
(``streamer.media.rtsp_client.RtspClient``), and writes
``bench.json``, ``bench.md`` and three PNG plots to ``bench/results/`` (``--out``). What each
figure means is in bench/README.md. Sockets, recordings and ports are private to the run; every
process it starts is stopped before it exits.

The parts: ``bench.plan`` (settings, environment, working directory), ``bench.viewers`` (the
viewers' phases), ``bench.stack`` (the stack and the floor through those phases, and recovery).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench import plots, report
from bench.plan import (
    Plan,
    add_stack_options,
    finish,
    new_results,
    private_workdir,
    short_plan,
    write_results,
)
from bench.stack import run_floor, run_stack

log = logging.getLogger("bench")

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
    began = time.monotonic()
    results = new_results(asdict(plan))
    results["notes"] = NOTES
    with private_workdir(workdir) as where:
        results["stack"] = run_stack(plan, where, echo)
        results["floor"] = run_floor(plan, where, echo)
    results["duration_s"] = round(time.monotonic() - began, 1)
    results["errors"] = results["stack"].pop("errors") + results["floor"].pop("errors")
    write_results(out_dir, "bench", results, report.markdown(results))
    plots.write_all(results, out_dir)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0])
    parser.add_argument("--short", action="store_true", help="seconds instead of minutes (a smoke test)")
    parser.add_argument("--seconds", type=float, help="length of each latency/CPU phase (30; --short 2)")
    add_stack_options(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)

    plan = short_plan(args.width, args.height) if args.short else Plan(width=args.width, height=args.height)
    if args.seconds is not None:
        plan = Plan(**{**asdict(plan), "seconds": args.seconds})
    results = run(plan, args.out, args.workdir, args.echo)
    written = "bench.json, bench.md, latency_cdf.png, cpu_per_process.png, late_join.png"
    return finish(results, report.markdown(results), args.out, written)


if __name__ == "__main__":
    raise SystemExit(main())
