"""Pacing of the keyframes forced for new viewers: pure, clock injectable."""

from __future__ import annotations

import time
from collections.abc import Callable

# At most one forced keyframe per this interval; joiners in between share the next one.
FORCED_KEYFRAME_MIN_INTERVAL_S = 0.5


class KeyframePacer:
    """Decides when to force a keyframe for new viewers.

    The first request in a quiet period is served at once. Requests within
    ``min_interval_s`` of the last forced keyframe are merged into one more keyframe at the end
    of that interval: every joiner gets a keyframe soon, the stream gets at most one extra
    keyframe per interval however many join.
    """

    def __init__(self, min_interval_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.min_interval_s = min_interval_s
        self._clock = clock
        self._last_forced: float | None = None
        self._scheduled = False

    def request(self) -> float | None:
        """A viewer needs a keyframe: seconds until it should be forced (0: now), or None when
        one is already scheduled that will serve this viewer too."""
        if self._scheduled:
            return None
        now = self._clock()
        if self._last_forced is None or now - self._last_forced >= self.min_interval_s:
            return 0.0
        self._scheduled = True
        return self._last_forced + self.min_interval_s - now

    def forced(self) -> None:
        self._last_forced = self._clock()
        self._scheduled = False
