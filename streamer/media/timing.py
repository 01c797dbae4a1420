"""Frame times at the readers of shared memory: frames stamped on arrival, put back on the
camera's frame grid. No GStreamer here (``gst.place_on_frame_grid`` applies it).

Shared memory carries a frame's pixels, not its capture time, so each reader stamps frames as
they arrive (``shmsrc do-timestamp``). Arrival is capture plus a delay that varies with how
busy the machine is: a few milliseconds either way, and after a starved moment a backlog that
comes all at once. Players and FFmpeg judge the frame rate by those times (a 30 fps stream
came out as 120 and 240 fps in ``ffprobe`` on a loaded machine), and the recording's frame
durations wobble with them.

``FrameGrid`` numbers the frames by the periods of the configured rate since the first one and
gives frame ``n`` the time ``n`` periods after the grid's origin, the origin being set by the
least delayed arrival of the last ``window_s`` seconds (the one that best says when frames
are captured). Hence:

- frames are whole periods apart, but where the earliest arrival of the window changes (a
  fraction of a millisecond, on a camera that keeps its rate);
- a frame's time is never after its arrival (nothing is held back for it), and a camera whose
  clock runs a little fast or slow is followed within the window;
- a frame that gets no new number (the rest of a backlog, a few ms after the previous frame)
  is dropped: there is no grid point left for it, and it is stale. Missing numbers are frames
  the camera or a leaky queue dropped: a gap stays a gap.
"""

from __future__ import annotations

from collections import deque

NS_PER_S = 1_000_000_000
GRID_WINDOW_S = 2.0


class FrameGrid:
    """The frame times of one stream, in nanoseconds on the reader's clock (``place``)."""

    def __init__(self, fps: int, window_s: float = GRID_WINDOW_S) -> None:
        self.period_ns = NS_PER_S / fps
        self._window = max(2, round(window_s * fps))  # in frame numbers
        self._origin: int | None = None  # the first arrival: times are kept relative to it
        self._last: int | None = None  # the number of the previous frame let through
        # (number, arrival - number periods) of the window's frames whose lateness no later
        # frame has beaten, lowest first: the grid's origin is the first.
        self._earliest: deque[tuple[int, float]] = deque()

    def place(self, arrival_ns: int) -> int | None:
        """The time of a frame that arrived at ``arrival_ns``, or None: drop it (bunched)."""
        if self._origin is None:
            self._origin = arrival_ns
        since = arrival_ns - self._origin
        phase = self._earliest[0][1] if self._earliest else 0.0
        number = round((since - phase) / self.period_ns)
        if self._last is not None and number <= self._last:
            return None
        self._last = number
        lateness = since - number * self.period_ns
        while self._earliest and self._earliest[-1][1] >= lateness:
            self._earliest.pop()
        self._earliest.append((number, lateness))
        while self._earliest[0][0] <= number - self._window:
            self._earliest.popleft()
        return self._origin + round(number * self.period_ns + self._earliest[0][1])
