"""The viewers' phases, each one or more ``RtspClient`` in this process: a new viewer's first
frame (start-up, recovery), a viewing window with its latencies and CPU, and late joins."""

from __future__ import annotations

import itertools
import os
import random
import time
from collections.abc import Callable
from typing import Any

from bench.plan import CONNECT_TIMEOUT_S, PhaseFailed, Plan
from bench.procs import CpuMeter, Service, port_open, wait_until
from streamer.media.rtsp_client import RtspClient
from streamer.rtsp import keyframes


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

    The worker's own ``keyframes.KeyframePacer`` decides, on a fake clock; this only drives it
    as the worker does (``_keyframe_for_new_viewer``): force at once on 0, or run a timer for
    the delay it returns that calls ``forced()``. Connect times stand in for the PLAY requests a
    few milliseconds later. A request is paced when the pacer did not let it force at once.
    """
    now = 0.0
    pacer = keyframes.KeyframePacer(min_interval_s, clock=lambda: now)
    timer: float | None = None  # when the worker's pending timer fires (the pacer allows one)
    paced = []
    for at in requests:
        if timer is not None and timer <= at:
            now, timer = timer, None
            pacer.forced()
        now = at
        delay = pacer.request()
        if delay == 0:
            pacer.forced()
        elif delay is not None:
            timer = now + delay
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
