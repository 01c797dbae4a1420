"""The capture-time stamp: a frame's wall-clock time written into its pixels, read back later.

The synthetic camera (``CAMERA=test-stamped``) writes each frame's capture time into the top of
the picture before the frame is JPEG-encoded; a client that decodes the stream (``streamer.probe``)
reads it back and so knows how old the frame is. Pixels are the one thing that survives every
stage of the stack (JPEG, shared memory, H.264, RTP) unchanged in meaning, so no side channel
has to be trusted.

The stamp is a band of ``ROWS`` x ``COLUMNS`` large square blocks, each black or white, in the
luma plane (chroma under the band is set to neutral grey so the blocks look grey, not tinted).
Large flat blocks survive lossy coding at low bitrates: a decoder only needs the average of each
block's inner half to land on the right side of mid-grey. The bits are:

- ``VALUE_BITS`` (32) of the capture time in milliseconds since the Unix epoch, modulo 2**32
  (49.7 days): the reader restores the full time from its own clock, which must be within
  ±24.8 days of the writer's anyway for the latency to mean anything;
- ``CHECK_BITS`` (16) of a check value (CRC-32 of the value, truncated), so a frame without a
  stamp, a garbled stamp or the wrong region decodes to ``None`` rather than to a wrong time.

A block is read as a bit only when its average is clearly dark or clearly light; anything in
between rejects the whole stamp (better a missing sample than a wrong one).

Pure Python on ``bytes``/``memoryview``: no GStreamer here. Writing costs a few dozen slice
copies per frame and reading 144 short sums, cheap enough at 1280x720@30.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass

COLUMNS = 24
ROWS = 2
VALUE_BITS = 32
CHECK_BITS = 16
VALUE_MODULUS = 1 << VALUE_BITS
MIN_BLOCK_PX = 6  # smaller blocks do not survive 8x8 DCT coding at low bitrates

BLACK = 16  # video-range luma extremes, what a camera's black and white decode to
WHITE = 235
NEUTRAL_CHROMA = 128
# A block is a 0 below DARK_MAX, a 1 above LIGHT_MIN, and unreadable in between.
DARK_MAX = 96
LIGHT_MIN = 160

# Salt for the check value: an all-black or all-white band (which a blank or saturated frame
# looks like) must not pass as a stamp.
_CHECK_SALT = b"streamer-stamp-1"

assert ROWS * COLUMNS == VALUE_BITS + CHECK_BITS


class StampError(ValueError):
    """The frame is too small to carry a readable stamp."""


@dataclass(frozen=True)
class Plane:
    """Where one image plane lives in a frame's bytes."""

    offset: int
    stride: int


@dataclass(frozen=True)
class FrameLayout:
    """A frame's planar 4:2:0 geometry: the luma plane and the two chroma planes.

    Build it from GStreamer's ``VideoInfo`` (offsets and strides of the actual buffer) or, for
    GStreamer's default I420 layout, with ``i420_layout``.
    """

    width: int
    height: int
    y: Plane
    u: Plane
    v: Plane

    @classmethod
    def from_planes(
        cls, width: int, height: int, offsets: Sequence[int], strides: Sequence[int]
    ) -> FrameLayout:
        """From per-plane offsets and strides, as GStreamer's VideoInfo and VideoMeta give them."""
        y, u, v = (Plane(offsets[i], strides[i]) for i in range(3))
        return cls(width, height, y, u, v)


def _round_up_4(n: int) -> int:
    return (n + 3) & ~3


def i420_layout(width: int, height: int) -> FrameLayout:
    """GStreamer's default I420 layout (gst_video_info_set_format): rows padded to 4 bytes."""
    y_stride = _round_up_4(width)
    c_stride = _round_up_4((width + 1) // 2)
    y_size = y_stride * ((height + 1) & ~1)
    c_size = c_stride * ((height + 1) // 2)
    return FrameLayout(
        width, height, Plane(0, y_stride), Plane(y_size, c_stride), Plane(y_size + c_size, c_stride)
    )


def block_size(width: int, height: int) -> int:
    """Side of one stamp block in pixels: as large as the width allows, the band at most a third
    of the height. Raises ``StampError`` for frames too small to carry a readable stamp."""
    block = min(width // COLUMNS, height // (3 * ROWS))
    if block < MIN_BLOCK_PX:
        raise StampError(
            f"a {width}x{height} frame is too small for the stamp (needs blocks of at least "
            f"{MIN_BLOCK_PX} px: {COLUMNS * MIN_BLOCK_PX}x{3 * ROWS * MIN_BLOCK_PX} or more)"
        )
    return block


def band_height(width: int, height: int) -> int:
    """Rows at the top of the frame that the stamp covers."""
    return ROWS * block_size(width, height)


def check_value(value: int) -> int:
    return zlib.crc32(_CHECK_SALT + value.to_bytes(4, "big")) & ((1 << CHECK_BITS) - 1)


def encode_bits(value: int) -> list[int]:
    """``value`` (taken modulo 2**32) and its check value as ROWS*COLUMNS bits, most significant
    first, row by row."""
    value %= VALUE_MODULUS
    word = (value << CHECK_BITS) | check_value(value)
    total = VALUE_BITS + CHECK_BITS
    return [(word >> (total - 1 - i)) & 1 for i in range(total)]


def decode_bits(bits: list[int]) -> int | None:
    """The value the bits carry, or None if the check value does not match."""
    if len(bits) != VALUE_BITS + CHECK_BITS:
        return None
    word = 0
    for bit in bits:
        word = (word << 1) | bit
    value, check = word >> CHECK_BITS, word & ((1 << CHECK_BITS) - 1)
    return value if check == check_value(value) else None


def ms_value(wall_time_s: float) -> int:
    """The stamp value for a wall-clock time (seconds since the epoch): milliseconds mod 2**32."""
    return round(wall_time_s * 1000) % VALUE_MODULUS


def age_ms(value: int, now_s: float) -> float:
    """How many milliseconds before ``now_s`` (wall clock, seconds) the stamp ``value`` was taken.

    The value only holds the time modulo 2**32 ms; the difference is taken modulo that too and
    read as signed, so a reader whose clock is behind the writer's gets a negative age rather
    than one of 49 days.
    """
    delta = (now_s * 1000 - value) % VALUE_MODULUS
    return delta - VALUE_MODULUS if delta >= VALUE_MODULUS / 2 else delta


def write(frame: memoryview | bytearray, layout: FrameLayout, value: int) -> None:
    """Write the stamp for ``value`` into a writable 4:2:0 frame, in place."""
    block = block_size(layout.width, layout.height)
    bits = encode_bits(value)
    black, white = bytes([BLACK]) * block, bytes([WHITE]) * block
    view = memoryview(frame).cast("B")
    band_width = COLUMNS * block
    for row in range(ROWS):
        line = b"".join(white if bit else black for bit in bits[row * COLUMNS : (row + 1) * COLUMNS])
        for y in range(row * block, (row + 1) * block):
            start = layout.y.offset + y * layout.y.stride
            view[start : start + band_width] = line
    grey = bytes([NEUTRAL_CHROMA]) * (band_width // 2)
    for plane in (layout.u, layout.v):
        for y in range(ROWS * block // 2):
            start = plane.offset + y * plane.stride
            view[start : start + len(grey)] = grey


def read(frame: bytes | memoryview, layout: FrameLayout) -> int | None:
    """The stamp value in a decoded frame, or None if there is no readable, valid stamp."""
    block = block_size(layout.width, layout.height)
    view = memoryview(frame).cast("B")
    # The inner half of each block, on three lines: edges ring after lossy coding, centres don't.
    inset = block // 4
    span = max(1, block - 2 * inset)
    lines = sorted({inset, block // 2, block - 1 - inset})
    samples = span * len(lines)
    bits: list[int] = []
    for row in range(ROWS):
        for column in range(COLUMNS):
            x = column * block + inset
            total = 0
            for line in lines:
                start = layout.y.offset + (row * block + line) * layout.y.stride + x
                total += sum(view[start : start + span])
            mean = total / samples
            if mean < DARK_MAX:
                bits.append(0)
            elif mean > LIGHT_MIN:
                bits.append(1)
            else:
                return None
    return decode_bits(bits)
