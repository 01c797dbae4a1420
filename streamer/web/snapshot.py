"""What the stack looks like now: one ``Snapshot`` from which /health, /api/v1/status and /metrics
are all built, so the three never disagree.

The ``Observer`` makes snapshots. It reads the controller's published state (a small local JSON
file, replaced atomically), asks the kernel (psutil) for each worker's CPU time and memory,
and keeps what needs history: the recorder's measured write rate (for "hours left"). The free
space of SSD_PATH is refreshed in a thread of its own, about once a second: ``statvfs`` on a
dying USB disk can hang, and the event loop (whose heartbeats the controller watches) must not
hang with it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import shutil
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psutil

from streamer.config import Settings
from streamer.media.camera import Camera, camera_for
from streamer.runtime import state
from streamer.runtime.state import StackState
from streamer.storage import layout
from streamer.web.health import Health, assess

RATE_WINDOW_S = 60.0  # the recorder's write rate is averaged over about this long
RATE_MIN_SPAN_S = 5.0  # and only trusted once its changes span this long (about one chunk)


@dataclass(frozen=True)
class ProcessStats:
    cpu_seconds: float  # user + system
    rss_bytes: int


@dataclass(frozen=True)
class Disk:
    free_bytes: int
    total_bytes: int


@dataclass(frozen=True)
class Snapshot:
    at: float  # wall clock, as the state's times
    stack: StackState | None  # None: no stack is running
    controller_alive: bool
    health: Health
    processes: dict[str, ProcessStats]  # by worker name, for the workers with a live process
    disk: Disk | None  # SSD_PATH's file system; None before the first look or when it fails
    rate_bytes_per_s: float  # the recorder's write rate: measured, or estimated from the settings
    rate_measured: bool

    def progress(self, worker: str) -> dict[str, Any]:
        """The latest progress report of ``worker`` (empty when it has none)."""
        if self.stack is None or worker not in self.stack.workers:
            return {}
        return self.stack.workers[worker].progress


class RateMeter:
    """The rate of a counter that grows in steps (the recorder's ``bytes`` grows by a finished
    chunk every 5.5 s): measured between its first and last change within the window, so steps
    do not make it jitter. The first value seen is only a baseline: when it changed is unknown.
    A counter that goes down (its worker restarted) starts the measurement again."""

    def __init__(self, window_s: float = RATE_WINDOW_S, min_span_s: float = RATE_MIN_SPAN_S) -> None:
        self.window_s = window_s
        self.min_span_s = min_span_s
        self._changes: deque[tuple[float, int]] = deque()
        self._last: int | None = None

    def reset(self) -> None:
        self._changes.clear()
        self._last = None

    def observe(self, at: float, value: int) -> None:
        if self._last is not None and value < self._last:
            self.reset()
        if (
            self._last is not None
            and value != self._last
            and (not self._changes or at > self._changes[-1][0])
        ):
            self._changes.append((at, value))
        self._last = value
        while self._changes and self._changes[0][0] < at - self.window_s:
            self._changes.popleft()

    def rate(self) -> float | None:
        """Units per second, or None before there is a measurement."""
        if len(self._changes) < 2:
            return None
        (start, first), (end, last) = self._changes[0], self._changes[-1]
        if end - start < self.min_span_s:
            return None
        return (last - first) / (end - start)


def recording_kinds(settings: Settings, recorder: dict[str, Any]) -> tuple[bool, bool]:
    """(video, images) being recorded: as the recorder reports, or as configured until it does."""
    return bool(recorder.get("video", settings.enable_video)), bool(
        recorder.get("images", settings.enable_images)
    )


class Observer:
    def __init__(
        self,
        settings: Settings,
        log: logging.Logger,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.state_path = state.state_file(settings.shm_recorder_socket + ".lock")
        self._state = state.StateReader(self.state_path, log)
        self._log = log
        self._clock = clock
        self._camera: Camera = camera_for(settings)
        self._processes: dict[int, psutil.Process] = {}
        self._rate = RateMeter()
        self._recording: tuple[object, ...] | None = None  # what the rate was measured for
        self._disk: Disk | None = None
        self._disk_executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="disk")
        self._disk_pending = False
        self._disk_problem: str | None = None

    def close(self) -> None:
        self._disk_executor.shutdown(wait=False, cancel_futures=True)

    # --- samples

    def read_state(self) -> StackState | None:
        """The published state, None when there is none (or it cannot be read: said once)."""
        current = self._state.read()
        if current is not None:
            self._observe_recorder(current)
        return current

    def _observe_recorder(self, stack: StackState) -> None:
        recorder = stack.workers.get("recorder")
        progress = recorder.progress if recorder is not None else {}
        measured_for = (
            recorder.pid if recorder else None,
            progress.get("state"),
            progress.get("session"),
            *recording_kinds(self.settings, progress),
        )
        if measured_for != self._recording:  # another process, state, session or kind: start again
            self._recording = measured_for
            self._rate.reset()
        written = progress.get("bytes")
        if isinstance(written, int) and recorder is not None:
            self._rate.observe(recorder.last_report_at or self._clock(), written)

    async def refresh_disk(self) -> None:
        """Look at SSD_PATH's free space in the disk thread; skipped while a look still hangs."""
        if self._disk_pending:
            return
        self._disk_pending = True
        try:
            loop = asyncio.get_running_loop()
            usage = await loop.run_in_executor(self._disk_executor, shutil.disk_usage, self.settings.ssd_path)
            self._disk = Disk(usage.free, usage.total)
            self._disk_problem = None
        except OSError as err:
            if str(err) != self._disk_problem:  # said once, not twice a second
                self._log.info("cannot look at SSD_PATH %s: %s", self.settings.ssd_path, err)
                self._disk_problem = str(err)
            self._disk = None
        except RuntimeError:  # the executor was shut down: the worker is stopping
            pass
        finally:
            self._disk_pending = False

    def process_stats(self, pid: int) -> ProcessStats | None:
        """CPU seconds and resident memory of ``pid``; None when it is gone or not ours to see."""
        process = self._processes.get(pid)
        try:
            if process is None:
                process = self._processes[pid] = psutil.Process(pid)
            with process.oneshot():
                cpu = process.cpu_times()
                return ProcessStats(cpu.user + cpu.system, process.memory_info().rss)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            self._processes.pop(pid, None)
            return None

    # --- the snapshot

    def snapshot(self) -> Snapshot:
        now = self._clock()
        stack = self.read_state()
        alive = stack is not None and state.controller_alive(stack.controller_pid)
        processes: dict[str, ProcessStats] = {}
        if stack is not None and alive:
            pids = {worker.pid for worker in stack.workers.values() if worker.pid is not None}
            for name, worker in stack.workers.items():
                stats = self.process_stats(worker.pid) if worker.pid is not None else None
                if stats is not None:
                    processes[name] = stats
            for gone in set(self._processes) - pids:  # keep psutil's handles of live workers only
                del self._processes[gone]
        camera_problem = None
        if stack is not None and stack.state != state.UP:  # a missing camera keeps it from coming up
            with contextlib.suppress(OSError):
                camera_problem = self._camera.lost()
        health = assess(stack, now, controller_alive=alive, camera_problem=camera_problem)
        measured = self._rate.rate()
        if measured is None:
            recorder = stack.workers["recorder"].progress if stack and "recorder" in stack.workers else {}
            video, images = recording_kinds(self.settings, recorder)
            s = self.settings
            estimate = layout.recording_bytes_per_second(
                s.recorded_bitrate, s.video_width, s.video_height, video, images
            )
        return Snapshot(
            at=now,
            stack=stack if alive else None,
            controller_alive=alive,
            health=health,
            processes=processes,
            disk=self._disk,
            rate_bytes_per_s=measured if measured is not None else float(estimate),
            rate_measured=measured is not None,
        )
