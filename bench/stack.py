"""The services under measurement: the stack (``python -m streamer.drone``) and the floor
(``python -m bench.floor``), started at a plan's settings, measured through the same phases,
and always stopped; and the stack's recovery from a killed worker."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.plan import RTSP_PATH, START_TIMEOUT_S, PhaseFailed, Plan, private_workdir, service_env
from bench.procs import Service, free_port, read_rss_kib
from bench.viewers import first_frame_since, late_join_phase, viewing_phase
from streamer.runtime import state
from streamer.testing import wait_state

log = logging.getLogger("bench")

FAILURES = (PhaseFailed, TimeoutError, RuntimeError)  # what ends a service's measurements


@dataclass
class Served:
    """A service that has served its first frame: where to reach it and every pid it has had."""

    name: str
    service: Service
    url: str
    port: int
    startup_s: float = 0.0
    known: set[int] = field(default_factory=set)

    def stack_pids(self) -> dict[str, int]:
        """The stack's current processes by name (remembered, so that all are stopped)."""
        current = {**self.service.worker_pids(), "controller": self.service.pid}
        self.known.update(current.values())
        return current


@contextlib.contextmanager
def serving(name: str, module: str, plan: Plan, workdir: Path, echo: bool) -> Iterator[Served]:
    """Start ``python -m <module>`` at the plan's settings on a free port, wait for a new
    viewer's first frame (``startup_s``: spawned → that frame), and stop it (and every worker
    it had) on the way out. A failure is logged with the service's last lines and re-raised."""
    port = free_port()
    url = f"rtsp://127.0.0.1:{port}{RTSP_PATH}"
    env = service_env(plan, workdir, port)
    log.info("%s: starting python -m %s on port %d", name, module, port)
    started = time.monotonic()
    service = Service(module, env, echo=echo)
    served = Served(name, service, url, port)
    try:
        served.startup_s = round(first_frame_since(url, port, started, service, START_TIMEOUT_S), 4)
        yield served
    except FAILURES as err:
        log.error("%s: %s\n%s", name, err, service.tail())
        raise
    finally:
        served.known.update(service.worker_pids().values())
        code = service.stop(also=sorted(served.known - {service.pid}))
        log.info("%s: stopped (exit status %s)", name, code)


@contextlib.contextmanager
def stack_alone(plan: Plan, workdir: Path | None, echo: bool) -> Iterator[Served]:
    """The stack, serving, in ``workdir`` or a private directory (see ``serving``)."""
    with private_workdir(workdir) as where, serving("stack", "streamer.drone", plan, where, echo) as served:
        yield served


def rss_of(pids: dict[str, int]) -> dict[str, int | None]:
    return {name: read_rss_kib(pid) for name, pid in pids.items()}


def settled(settle_s: float) -> Callable[[state.StackState], bool]:
    """A condition on the published state: the stack has been up for ``settle_s`` or more."""

    def holds(current: state.StackState) -> bool:
        up_since = current.up_since
        return current.state == state.UP and up_since is not None and time.time() - up_since >= settle_s

    return holds


def recovery_after_kill(served: Served, worker: str, settle_s: float = 0.0) -> float:
    """Once the stack has been up for ``settle_s``, SIGKILL one worker; seconds until a new
    viewer decodes a frame from the restarted stack."""
    service = served.service
    timeout = START_TIMEOUT_S + settle_s
    before = wait_state(service.env, settled(settle_s), timeout, "a settled stack", service)
    old_rtsp = before.workers["rtsp"].pid
    served.stack_pids()
    killed_at = time.monotonic()
    os.kill(before.workers[worker].pid, signal.SIGKILL)
    # Only a new RTSP worker counts: the old one may still answer until the controller stops it.
    wait_state(
        service.env,
        lambda current: current.workers["rtsp"].pid not in (None, old_rtsp),
        START_TIMEOUT_S,
        "the controller to restart the stack",
        service,
    )
    back = first_frame_since(served.url, served.port, killed_at, service, START_TIMEOUT_S)
    service.wait_up(START_TIMEOUT_S, after=before)
    served.stack_pids()
    return back


def run_stack(plan: Plan, workdir: Path, echo: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"latency": {}, "cpu": {}, "errors": []}
    try:
        with serving("stack", "streamer.drone", plan, workdir, echo) as served:
            out["startup_s"] = served.startup_s
            served.service.wait_up(START_TIMEOUT_S)
            out["rss_kib"] = {"start": rss_of(served.stack_pids())}
            _phases(out, plan, served.url, served.stack_pids)
            out["rss_kib"]["end"] = rss_of(served.stack_pids())
            out["recovery_s"] = {}
            for worker in plan.kills:
                log.info("stack: SIGKILL %s, waiting for the stream to come back", worker)
                out["recovery_s"][worker] = round(recovery_after_kill(served, worker), 4)
    except FAILURES as err:
        out["errors"].append(f"stack: {err}")
    return out


def run_floor(plan: Plan, workdir: Path, echo: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"latency": {}, "cpu": {}, "errors": []}
    try:
        with serving("floor", "bench.floor", plan, workdir, echo) as served:
            out["startup_s"] = served.startup_s

            def pids() -> dict[str, int]:
                return {"floor": served.service.pid}

            out["rss_kib"] = {"start": rss_of(pids())}
            _phases(out, plan, served.url, pids)
            out["rss_kib"]["end"] = rss_of(pids())
    except FAILURES as err:
        out["errors"].append(f"floor: {err}")
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
            "  %s: p50 %s ms, p99 %s ms, %d frames, %d damaged by lost packets, %d stamps unread",
            key,
            _fmt(summary["p50"]),
            _fmt(summary["p99"]),
            phase["frames_decoded"],
            phase["frames_damaged"],
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
