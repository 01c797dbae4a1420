"""Lone failures: SIGKILL a random worker of a settled stack, many times, and time the stream's
return each time.

    .venv/bin/python -m bench.recovery                 # 50 kills, each after 10 s up
    .venv/bin/python -m bench.recovery --kills 3       # a smoke run

The stack runs at the suite's settings (``bench.plan``: ``CAMERA=test-stamped``, 1280x720@30,
2 Mbit/s, recorder on) but with the controller's own ``RESTART_DELAY_*`` defaults: a run that
had been up for 10 s or more and then fails is restarted after ``RESTART_DELAY_MIN_S`` (1 s);
only crash loops back off. Each time: wait until the published state's ``up_since`` is
``--settle`` seconds old, SIGKILL the feeder, the recorder or the RTSP worker (seeded random
choice), and measure SIGKILL → first clean decoded frame at a new viewer, exactly as the suite's
recovery phase does (``bench.stack.recovery_after_kill``). Writes ``recovery.json`` and
``recovery.md`` to ``bench/results/`` (``--out``).
"""

from __future__ import annotations

import argparse
import logging
import random
import sys
import time
from pathlib import Path
from typing import Any

from bench import report
from bench.plan import Plan, add_stack_options, finish, new_results, stream_settings, write_results
from bench.stack import FAILURES, recovery_after_kill, stack_alone
from streamer import testing
from streamer.media.latency import percentile

log = logging.getLogger("bench")

WORKERS = ("feeder", "recorder", "rtsp")
SUMMARY_SECONDS = ("median_s", "p95_s", "max_s")
TARGET_S = 2.0  # the issue's: a lone failure is recovered within 2 s, every time


def kill_order(kills: int, seed: int) -> tuple[str, ...]:
    rng = random.Random(seed)
    return tuple(rng.choice(WORKERS) for _ in range(kills))


def summary(seconds: list[float]) -> dict[str, Any]:
    """Median, p95 and max of the figures, and how many met the target."""
    ordered = sorted(seconds)
    if not ordered:
        return {"kills": 0, "median_s": None, "p95_s": None, "max_s": None, "within_target": 0}
    return {
        "kills": len(ordered),
        "median_s": round(percentile(ordered, 50), 4),
        "p95_s": round(percentile(ordered, 95), 4),
        "max_s": round(ordered[-1], 4),
        "within_target": sum(s <= TARGET_S for s in ordered),
    }


def run(plan: Plan, settle_s: float, out_dir: Path, workdir: Path | None, echo: bool) -> dict[str, Any]:
    began = time.monotonic()
    results = new_results(
        {
            **stream_settings(plan),
            "restart_delay": "the stack's defaults (RESTART_DELAY_MIN_S, RESTART_DELAY_MAX_S)",
            "kills": len(plan.kills),
            "settle_s": settle_s,
            "seed": plan.seed,
        }
    )
    results.update(target_s=TARGET_S, recoveries=[], errors=[])
    recoveries = results["recoveries"]
    try:
        with stack_alone(plan, workdir, echo) as served:
            for number, worker in enumerate(plan.kills, 1):
                seconds = recovery_after_kill(served, worker, settle_s)
                restart = testing.stack_state(served.service.env).restarts[-1]
                recoveries.append(
                    {"worker": worker, "seconds": round(seconds, 4), "restart_delay_s": restart.delay_s}
                )
                log.info(
                    "kill %d/%d: %s → stream back in %.3f s (restart pause %.2f s)",
                    number,
                    len(plan.kills),
                    worker,
                    seconds,
                    restart.delay_s,
                )
    except FAILURES as err:
        results["errors"].append(f"stack: {err}")
    results["summary"] = summary([r["seconds"] for r in recoveries])
    results["duration_s"] = round(time.monotonic() - began, 1)
    write_results(out_dir, "recovery", results, markdown(results))
    return results


def markdown(results: dict[str, Any]) -> str:
    s, total = results["settings"], results["summary"]
    figures = [
        f"| {n} | {r['worker']} | {r['seconds']:.3f} | {r['restart_delay_s']:g} |"
        for n, r in enumerate(results["recoveries"], 1)
    ]

    lines = [
        *report.heading("Recovery from lone failures (recorder on)", results),
        f"Run: {results['started_utc']}, {results['duration_s']:.0f} s. {s['kills']} times: wait until the "
        f"stack has been up for {s['settle_s']:g} s, SIGKILL a random worker (seed {s['seed']}), measure "
        "SIGKILL → first clean decoded frame at a new viewer. Restart pause: the stack's defaults.",
        "",
        "| kills | median s | p95 s | max s | ≤ 2 s |",
        "|---:|---:|---:|---:|---:|",
        f"| {total['kills']} | {' | '.join(report.seconds(total[key]) for key in SUMMARY_SECONDS)} "
        f"| {total['within_target']} of {total['kills']} |",
        "",
        "| # | worker killed | SIGKILL → stream back, s | restart pause, s |",
        "|---:|---|---:|---:|",
        *figures,
    ]
    lines += [f"\n**error**: {error}" for error in results["errors"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.recovery", description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=50, help="how many workers to kill (50)")
    parser.add_argument("--settle", type=float, default=10.0, help="seconds up before each kill (10)")
    parser.add_argument("--seed", type=int, default=Plan.seed, help="of the random choice of worker")
    add_stack_options(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)

    plan = Plan(
        width=args.width,
        height=args.height,
        kills=kill_order(args.kills, args.seed),
        restart_delay_s=None,
        seed=args.seed,
    )
    results = run(plan, args.settle, args.out, args.workdir, args.echo)
    return finish(results, markdown(results), args.out, "recovery.json, recovery.md")


if __name__ == "__main__":
    raise SystemExit(main())
