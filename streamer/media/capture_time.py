"""Each frame's capture time, carried through shared memory behind the frame.

Shared memory carries bytes only: no caps, no timestamps. A reader that stamps frames as they
arrive (``shmsrc do-timestamp``) gets times that wobble with the machine's load: a reader held
up for 100 ms receives three frames at once, a few microseconds apart, and an encoder, muxer or
player then sees a frame rate of hundreds. So the feeder appends to every frame the moment it
was captured, and the readers time each frame by it: the stream and the recording carry the
camera's own frame times, whole periods apart, however late the frames arrive.

The trailer is 8 bytes, little-endian: nanoseconds on the monotonic clock (``CLOCK_MONOTONIC``,
GStreamer's system clock), the frame's running time plus the feeder pipeline's base time. A
reader subtracts its own pipeline's base time to get the frame's time in its own pipeline.
Raw frames stay at their caps' size in front of the trailer; elements that take raw video
ignore bytes past a frame's planes.
"""

from __future__ import annotations

import struct

TRAILER = struct.Struct("<Q")
TRAILER_BYTES = TRAILER.size


def trailer(capture_ns: int) -> bytes:
    """The bytes the feeder appends to a frame captured at ``capture_ns`` (monotonic clock)."""
    return TRAILER.pack(capture_ns)


def read_trailer(data: bytes) -> int:
    """The capture time (ns, monotonic clock) in the last TRAILER_BYTES of ``data``."""
    if len(data) < TRAILER_BYTES:
        raise ValueError(f"a capture-time trailer is {TRAILER_BYTES} bytes, got {len(data)}")
    return TRAILER.unpack_from(data, len(data) - TRAILER_BYTES)[0]


class ReaderClock:
    """A reader's times for the frames it receives, from their capture times.

    ``time_of`` gives a frame's time in the reader's pipeline (its running time), or None for a
    frame to drop: one captured before the reader's pipeline started, or one not later than the
    frame before it (cannot happen while the feeder's clock is the reader's; a guard, since
    encoders and muxers need increasing times).
    """

    def __init__(self) -> None:
        self.last: int | None = None

    def time_of(self, capture_ns: int, base_time_ns: int) -> int | None:
        running = capture_ns - base_time_ns
        if running < 0 or (self.last is not None and running <= self.last):
            return None
        self.last = running
        return running
