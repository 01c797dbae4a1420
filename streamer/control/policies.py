"""Pure policies of the controller, testable on a fake clock: when to restart, when a worker
counts as stalled, and when to give up a hardware encoder. No processes, no GStreamer here.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable
from typing import Any

from streamer import config

# A run that has been ready and progressing this long has settled: its failure is a lone one.
SETTLE_S = 10.0
REPORT_INTERVAL_S = 1.0  # workers report progress about this often (see streamer.runtime.status)


class RestartPolicy:
    """How long to pause before starting again something that failed.

    A lone failure of a run that had been ready and progressing for ``settle_s`` restarts after
    ``min_delay_s`` and clears the count. Failures of runs that never became ready, or failed
    within ``settle_s`` of becoming ready, are a crash loop: they are counted in a sliding
    window of ``window_s``, and the n-th waits ``min_delay_s * 2**(n-1)``, capped at
    ``max_delay_s``. A missing camera (the feeder never ready) therefore backs off to the cap.

    Call ``started()`` when a run starts, ``ready()`` when it is doing its job, and ``failed()``
    when it has failed.
    """

    def __init__(
        self,
        min_delay_s: float,
        max_delay_s: float,
        window_s: float = 600.0,
        settle_s: float = SETTLE_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.min_delay_s = min_delay_s
        self.max_delay_s = max_delay_s
        self.window_s = window_s
        self.settle_s = settle_s
        self._clock = clock
        self._ready_at: float | None = None
        self._failures: collections.deque[float] = collections.deque()

    @property
    def failures(self) -> int:
        """Failures counted in the window (including the latest)."""
        return len(self._failures)

    def started(self) -> None:
        self._ready_at = None

    def ready(self) -> None:
        self._ready_at = self._clock()

    def failed(self, quiet_s: float = 0.0) -> float:
        """Record a failure of the current run; return the pause before the next start.

        ``quiet_s``: how long the run had already stopped progressing when its failure was
        seen (a stall is only seen after its limit); that time does not count as settled.
        """
        now = self._clock()
        if self._ready_at is not None and now - quiet_s - self._ready_at >= self.settle_s:
            self._failures.clear()  # a lone failure of a settled run
        while self._failures and now - self._failures[0] > self.window_s:
            self._failures.popleft()
        self._failures.append(now)
        self._ready_at = None
        return min(self.max_delay_s, self.min_delay_s * 2 ** (len(self._failures) - 1))


class ProgressWatch:
    """Tells a worker that is alive but not doing its job, from its status reports.

    A worker reports ``progress`` about every second with a ``frames`` counter and an ``idle``
    flag (nothing is expected of it now: an RTSP worker without viewers, a recorder paused for
    a full disk). It counts as stalled when no report at all has come for ``limit_s`` (frozen,
    e.g. SIGSTOPped), or when it is not idle and ``frames`` has not grown for ``limit_s``.
    """

    def __init__(self, limit_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit_s = limit_s
        self._clock = clock
        self.restart()

    def restart(self) -> None:
        now = self._clock()
        self._last_report = now
        self._last_advance = now
        self._frames: int | None = None
        self._idle = False
        self.state = ""

    def observe(self, event: dict[str, Any]) -> None:
        now = self._clock()
        self._last_report = now
        if event.get("event") == "ready":
            self._last_advance = now
            return
        frames = event.get("frames")
        if isinstance(frames, int) and (self._frames is None or frames > self._frames):
            self._last_advance = now
            self._frames = frames
        self._idle = bool(event.get("idle", False))
        if self._idle:
            self._last_advance = now
        self.state = str(event.get("state", ""))

    def excuse(self) -> None:
        """Nothing is expected of the worker now, for a reason outside it (a reader of the
        feeder while the feeder waits for its camera): its frames may stop growing without it
        counting as stalled, as when it reports idle. Its reports must still come."""
        self._last_advance = self._clock()

    def quiet_s(self) -> float:
        """How long the worker has not been progressing (0 while it is)."""
        return max(0.0, self._clock() - self._last_advance - REPORT_INTERVAL_S)

    def stalled(self) -> str | None:
        """Why the worker counts as stalled, or None."""
        now = self._clock()
        if now - self._last_report > self.limit_s:
            return f"no report for {now - self._last_report:.1f} s"
        if now - self._last_advance > self.limit_s:
            return f"no frames for {now - self._last_advance:.1f} s"
        return None


# The fallback from a hardware encoder after repeated failures of the workers that encode.
ENCODER_WORKERS = ("recorder", "rtsp")
ENCODER_FALLBACK_FAILURES = 3
ENCODER_FALLBACK_WINDOW_S = 600.0
# Deaths from outside (an operator's kill, the OOM killer, a test): not the encoder's doing.
_KILLED_FROM_OUTSIDE = ("killed by SIGKILL", "killed by SIGTERM", "killed by SIGINT")


def encoder_may_be_at_fault(worker: str, problem: str) -> bool:
    """Whether ``worker``'s failure (``problem`` as the controller words it: "stalled (...)",
    "exited with status 1", "killed by SIGSEGV", "was not ready within 15 s") may be its
    encoder's: a failure of a worker that encodes (the recorder, the RTSP worker) that no one
    caused from outside. A hardware encoder stuck in its driver shows as a stall; one that
    crashes in it, as an exit or a signal like SIGSEGV or SIGBUS."""
    return worker in ENCODER_WORKERS and not problem.startswith(_KILLED_FROM_OUTSIDE)


class EncoderFallback:
    """Which encoder the stack's workers get, and the fall back to software after repeated
    failures a hardware encoder may be behind.

    ``chosen``: the encoder check's choice. While it is a hardware encoder (not one of
    ``software``), each failure ``encoder_may_be_at_fault`` is counted in a sliding window of
    ``window_s``; the ``limit``-th makes ``kind`` the ``fallback`` (x264) from the next start
    on, for as long as this object lives (the controller's life: a new controller tries the
    hardware again), and ``reason`` says why. Call ``failed`` for every failure of a worker,
    whether it restarted the stack or the worker alone.
    """

    def __init__(
        self,
        chosen: str,
        *,
        fallback: str = config.ENCODER_FALLBACK,
        software: tuple[str, ...] = config.ENCODER_SOFTWARE,
        limit: int = ENCODER_FALLBACK_FAILURES,
        window_s: float = ENCODER_FALLBACK_WINDOW_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.chosen = chosen
        self.kind = chosen
        self.fallback = fallback
        self.limit = limit
        self.window_s = window_s
        self.reason: str | None = None  # set once fallen back
        self._armed = chosen not in software and chosen != fallback
        self._clock = clock
        self._failures: collections.deque[float] = collections.deque()

    @property
    def failures(self) -> int:
        """Failures counted in the window."""
        return len(self._failures)

    def failed(self, worker: str, problem: str) -> str | None:
        """Count ``worker``'s failure; the reason when this one makes the stack fall back to
        software (once), else None."""
        if not self._armed or self.reason is not None or not encoder_may_be_at_fault(worker, problem):
            return None
        now = self._clock()
        while self._failures and now - self._failures[0] > self.window_s:
            self._failures.popleft()
        self._failures.append(now)
        if len(self._failures) < self.limit:
            return None
        self.kind = self.fallback
        self.reason = (
            f"{self.chosen} replaced by {self.fallback}: {len(self._failures)} failures of the recorder "
            f"or the RTSP worker within {self.window_s:.0f} s while it encoded (the last: {worker} {problem})"
        )
        return self.reason
