"""What the HTTP API costs and what abuse of it can do: CPU while it is scraped, and lone-failure
recovery while hostile clients hammer it.

    .venv/bin/python -m bench.operations               # 60 s windows, 10 kills each way
    .venv/bin/python -m bench.operations --short       # a smoke run

The stack runs at the suite's settings (``bench.plan``: 1280x720@30, 2 Mbit/s, recorder on) with
the web worker on:

1. CPU of every process, one viewer watching, over a window with no HTTP client, then with
   ``/api/v1/status``, ``/metrics`` and ``/health`` each fetched every second (a dashboard and a
   Prometheus server). The controller's share is the issue's figure (≤ 1 % of a core): it does
   not serve HTTP itself, the web worker reads the state the controller publishes anyway.
2. Lone-failure recovery (``bench.stack.recovery_after_kill``: SIGKILL → a new viewer's first
   clean frame) of a random worker, ``--kills`` times without and then with 200 slow
   connections held open and malformed requests sent over and over (``bench.http_abuse``).

Writes ``operations.json`` and ``operations.md`` to ``bench/results/`` (``--out``).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import logging
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench import http_abuse, report
from bench.plan import Plan, add_stack_options, finish, new_results, stream_settings, write_results
from bench.procs import CpuMeter
from bench.recovery import kill_order, summary
from bench.stack import FAILURES, Served, recovery_after_kill, stack_alone
from streamer import testing
from streamer.media.rtsp_client import RtspClient

log = logging.getLogger("bench")

SCRAPED = ("/api/v1/status", "/metrics", "/health")
CONTROLLER_TARGET_PERCENT = 1.0


@contextlib.contextmanager
def scraped(port: int, interval_s: float = 1.0) -> Iterator[dict[str, int]]:
    """Every ``interval_s``: GET each of ``SCRAPED`` (one keep-alive connection), from a thread.
    Yields counts of answers by status."""
    counts: dict[str, int] = {}
    stop = threading.Event()

    def scrape() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        while not stop.wait(interval_s):
            for path in SCRAPED:
                try:
                    connection.request("GET", path)
                    response = connection.getresponse()
                    response.read()
                    key = str(response.status)
                except (OSError, http.client.HTTPException) as err:
                    connection.close()
                    key = type(err).__name__
                counts[key] = counts.get(key, 0) + 1
        connection.close()

    thread = threading.Thread(target=scrape, name="scraper", daemon=True)
    thread.start()
    try:
        yield counts
    finally:
        stop.set()
        thread.join()


def cpu_window(served: Served, seconds: float) -> dict[str, float]:
    pids = served.stack_pids()
    meter = CpuMeter(pids).start()
    time.sleep(seconds)  # the window being measured
    return meter.stop().percent


def recoveries(served: Served, kills: tuple[str, ...], settle_s: float) -> list[float]:
    seconds = []
    for number, worker in enumerate(kills, 1):
        seconds.append(recovery_after_kill(served, worker, settle_s))
        log.info("kill %d/%d: %s → stream back in %.3f s", number, len(kills), worker, seconds[-1])
    return seconds


def run(plan: Plan, window_s: float, settle_s: float, out: Path, workdir: Path | None, echo: bool) -> dict:
    began = time.monotonic()
    results: dict[str, Any] = new_results(
        {**stream_settings(plan), "window_s": window_s, "kills": len(plan.kills), "settle_s": settle_s}
    )
    results.update(cpu={}, recovery={}, errors=[], target_percent=CONTROLLER_TARGET_PERCENT)
    try:
        with stack_alone(plan, workdir, echo) as served:
            env = served.service.env
            port = int(env["HTTP_PORT"])
            testing.wait_until(lambda: testing.port_open(port), 20, "the HTTP API to listen")
            viewer = RtspClient(served.url, decode=False, read_stamps=False).start()
            try:
                results["cpu"]["idle_api"] = cpu_window(served, window_s)
                with scraped(port) as answers:
                    results["cpu"]["scraped"] = cpu_window(served, window_s)
            finally:
                viewer.stop()
            results["scrape_answers"] = answers
            results["viewer_frames"] = viewer.frames
            results["recovery"]["quiet"] = summary(recoveries(served, plan.kills, settle_s))
            address = ("127.0.0.1", port)
            with http_abuse.abused(address) as outcome:
                results["recovery"]["abused"] = summary(recoveries(served, plan.kills, settle_s))
            results["abuse"] = {
                "malformed_rounds": outcome["rounds"],
                "statuses": {str(code): n for code, n in outcome["statuses"].items()},  # type: ignore[union-attr]
                "slow_still_open": outcome["slow_open"],
            }
            final = testing.stack_state(env)
            results["web_restarts"] = final.workers["web"].restarts if final else None
    except FAILURES as err:
        results["errors"].append(f"stack: {err}")
    results["duration_s"] = round(time.monotonic() - began, 1)
    write_results(out, "operations", results, markdown(results))
    return results


def markdown(results: dict[str, Any]) -> str:
    s = results["settings"]
    cpu = results["cpu"]
    names = sorted({name for window in cpu.values() for name in window})
    lines = [
        *report.heading("HTTP API: cost and abuse", results),
        f"Run: {results['started_utc']}, {results['duration_s']:.0f} s; one viewer watching during the CPU "
        f"windows ({results.get('viewer_frames')} frames received).",
        "",
        f"CPU, % of one core, over {s['window_s']:g} s windows (`scraped`: {', '.join(SCRAPED)} each fetched "
        f"every second). Target for the controller: ≤ {results['target_percent']:g} %.",
        "",
        "| window | " + " | ".join(names) + " |",
        "|---|" + "---:|" * len(names),
        *(
            f"| {window} | " + " | ".join(f"{figures.get(name, float('nan')):.1f}" for name in names) + " |"
            for window, figures in cpu.items()
        ),
        "",
        f"Lone-failure recovery, SIGKILL → first clean frame at a new viewer, {s['kills']} kills each, "
        f"{s['settle_s']:g} s up before each. `abused`: 200 slow connections held open and malformed "
        "requests sent over and over meanwhile.",
        "",
        "| | kills | median s | p95 s | max s |",
        "|---|---:|---:|---:|---:|",
        *(
            f"| {name} | {figures['kills']} | "
            + " | ".join(report.seconds(figures[key]) for key in ("median_s", "p95_s", "max_s"))
            + " |"
            for name, figures in results["recovery"].items()
        ),
    ]
    if "abuse" in results:
        abuse = results["abuse"]
        lines += [
            "",
            f"Abuse: {abuse['malformed_rounds']} rounds of 1000 malformed requests, answers by status "
            f"{abuse['statuses']}; slow connections still open at the end: "
            f"{abuse['slow_still_open']} of 200; web worker restarts: {results.get('web_restarts')}.",
        ]
    lines += [f"\n**error**: {error}" for error in results["errors"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.operations", description=__doc__.splitlines()[0])
    parser.add_argument("--window", type=float, default=60.0, help="seconds of each CPU window (60)")
    parser.add_argument("--kills", type=int, default=10, help="kills without and with abuse (10 each)")
    parser.add_argument("--settle", type=float, default=10.0, help="seconds up before each kill (10)")
    parser.add_argument("--short", action="store_true", help="3 s windows, 2 kills: a smoke run")
    add_stack_options(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    kills = min(2, args.kills) if args.short else args.kills
    plan = Plan(
        width=args.width, height=args.height, kills=kill_order(kills, Plan.seed), restart_delay_s=None
    )
    window = 3.0 if args.short else args.window
    results = run(plan, window, args.settle, args.out, args.workdir, args.echo)
    return finish(results, markdown(results), args.out, "operations.json, operations.md")


if __name__ == "__main__":
    raise SystemExit(main())
