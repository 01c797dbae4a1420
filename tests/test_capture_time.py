"""The capture-time trailer behind each frame in shared memory, and a reader's frame times."""

from __future__ import annotations

import pytest

from streamer.media import capture_time
from streamer.media.capture_time import ReaderClock


def test_the_trailer_is_8_little_endian_bytes_read_from_the_end():
    frame = b"\x10" * 100 + capture_time.trailer(0x0102030405060708)
    assert capture_time.TRAILER_BYTES == 8
    assert frame[-8:] == bytes([8, 7, 6, 5, 4, 3, 2, 1])
    assert capture_time.read_trailer(frame) == 0x0102030405060708
    assert capture_time.read_trailer(capture_time.trailer(2**64 - 1)) == 2**64 - 1


def test_a_buffer_too_short_for_a_trailer_is_an_error():
    with pytest.raises(ValueError, match="8 bytes, got 3"):
        capture_time.read_trailer(b"abc")


def test_a_reader_times_frames_by_capture_less_its_base_time():
    clock = ReaderClock()
    base = 5_000_000_000
    # Arrivals bunched or late make no difference: the times are the capture times.
    assert [clock.time_of(base + n * 33_333_333, base) for n in (1, 2, 3)] == [
        33_333_333,
        66_666_666,
        99_999_999,
    ]


def test_frames_captured_before_the_reader_started_or_out_of_order_are_dropped():
    clock = ReaderClock()
    base = 5_000_000_000
    assert clock.time_of(base - 1, base) is None
    assert clock.time_of(base, base) == 0
    assert clock.time_of(base, base) is None  # not later than the last
    assert clock.time_of(base - 10, base) is None
    assert clock.time_of(base + 10, base) == 10
