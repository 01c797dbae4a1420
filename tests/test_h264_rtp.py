"""The first packet a viewer gets: does it begin a picture (streamer.media.h264_rtp)?"""

from __future__ import annotations

import pytest

from streamer.media.h264_rtp import begins_nal_unit, starts_access_unit

IDR_HEADER, P_HEADER = 0x65, 0x41  # nal_ref_idc 3 / 2, types 5 / 1
FIRST_SLICE, LATER_SLICE = 0x88, 0x3A  # first_mb_in_slice = 0 ("1"), > 0 ("0..." prefix)


@pytest.mark.parametrize(
    ("payload", "starts"),
    [
        (bytes([0x09, 0xF0]), True),  # access unit delimiter
        (bytes([0x67, 0x42, 0xC0, 0x1E]), True),  # SPS
        (bytes([0x68, 0xCE]), True),  # PPS
        (bytes([0x06, 0x05]), True),  # SEI
        (bytes([IDR_HEADER, FIRST_SLICE, 0x84]), True),  # a keyframe's first slice, whole
        (bytes([IDR_HEADER, LATER_SLICE, 0x84]), False),  # a keyframe's second slice
        (bytes([P_HEADER, FIRST_SLICE]), True),
        (bytes([P_HEADER, LATER_SLICE]), False),
        (bytes([0x7C, 0x85, FIRST_SLICE]), True),  # FU-A, start bit, IDR, first slice
        (bytes([0x7C, 0x85, LATER_SLICE]), False),  # FU-A, start bit, IDR, a later slice
        (bytes([0x7C, 0x05, FIRST_SLICE]), False),  # FU-A without the start bit: a middle piece
        (bytes([0x7C, 0x45, 0x00]), False),  # FU-A end piece
        (bytes([0x78, 0x00, 0x04, 0x67, 0x42, 0xC0, 0x1E]), True),  # STAP-A starting with an SPS
        (bytes([0x78, 0x00, 0x02, IDR_HEADER, LATER_SLICE]), False),  # STAP-A, a later slice
        (b"", False),
        (bytes([0x7C]), False),
        (bytes([0x78, 0x00]), False),
    ],
)
def test_a_packet_begins_a_picture_only_at_its_first_nal_unit(payload: bytes, starts: bool) -> None:
    assert starts_access_unit(payload) is starts


def test_a_fragments_continuation_begins_no_nal_unit() -> None:
    assert begins_nal_unit(bytes([IDR_HEADER, LATER_SLICE]))  # a whole slice, not the first
    assert begins_nal_unit(bytes([0x7C, 0x85, LATER_SLICE]))  # a fragment's first piece
    assert not begins_nal_unit(bytes([0x7C, 0x05, 0x00]))  # a middle piece
    assert not begins_nal_unit(bytes([0x7C, 0x45, 0x00]))  # the last piece
    assert not begins_nal_unit(b"")
