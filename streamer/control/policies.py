"""Pure policies of the controller, testable on a fake clock: when to restart, and when a worker
counts as stalled. No processes, no GStreamer here.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable
from typing import Any


class RestartPolicy:
    """Growing pauses between restarts of something that keeps failing.

    Failures are counted in a sliding window: the n-th failure within ``window_s`` waits
    ``min_delay_s * 2**(n-1)``, capped at ``max_delay_s``. A run that stayed up for
    ``healthy_after_s`` counts as healthy and clears the count.
    """

    def __init__(
        self,
        min_delay_s: float,
        max_delay_s: float,
        window_s: float = 600.0,
        healthy_after_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.min_delay_s = min_delay_s
        self.max_delay_s = max_delay_s
        self.window_s = window_s
        self.healthy_after_s = healthy_after_s
        self._clock = clock
        self._started_at = clock()
        self._failures: collections.deque[float] = collections.deque()

    @property
    def failures(self) -> int:
        """Failures counted in the window (including the latest)."""
        return len(self._failures)

    def started(self) -> None:
        self._started_at = self._clock()

    def failed(self) -> float:
        """Record a failure of the current run; return the pause before the next start."""
        now = self._clock()
        if now - self._started_at >= self.healthy_after_s:
            self._failures.clear()
        while self._failures and now - self._failures[0] > self.window_s:
            self._failures.popleft()
        self._failures.append(now)
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

    def stalled(self) -> str | None:
        """Why the worker counts as stalled, or None."""
        now = self._clock()
        if now - self._last_report > self.limit_s:
            return f"no report for {now - self._last_report:.1f} s"
        if now - self._last_advance > self.limit_s:
            return f"no frames for {now - self._last_advance:.1f} s"
        return None
