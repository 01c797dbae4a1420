"""What the first RTP packet of an H.264 stream (RFC 6184) says about where a viewer joined.

A viewer that joins while a picture is being sent receives the rest of it: with x264's sliced
threads a picture is several slices, so the lower slices of a keyframe can arrive whole, decode,
and show a picture whose top (where the capture-time stamp is) is concealed grey, with no RTP
sequence gap to say so. A packet starts an access unit when its first NAL unit is one that only
comes first (access unit delimiter, SPS, PPS, SEI) or a slice's start whose ``first_mb_in_slice``
is 0. Pure: no GStreamer.
"""

from __future__ import annotations

AUD, SEI, SPS, PPS = 9, 6, 7, 8
STAP_A, FU_A = 24, 28
SLICE_NON_IDR, SLICE_IDR = 1, 5
_LEADING = {AUD, SEI, SPS, PPS}


def _first_slice_of_picture(slice_header: bytes) -> bool:
    # first_mb_in_slice is ue(v): its code for 0 is the single bit "1".
    return bool(slice_header) and slice_header[0] & 0x80 != 0


def starts_access_unit(payload: bytes) -> bool:
    """Whether an RTP payload's first NAL unit begins an access unit (a picture)."""
    if not payload:
        return False
    kind = payload[0] & 0x1F
    if kind == STAP_A:  # aggregation: 16-bit size, then the first NAL unit
        if len(payload) < 4:
            return False
        return starts_access_unit(payload[3:])
    if kind == FU_A:  # fragment: FU header (start bit, original type), then the NAL's body
        if len(payload) < 2 or not payload[1] & 0x80:
            return False
        kind = payload[1] & 0x1F
        body = payload[2:]
    else:
        body = payload[1:]
    if kind in _LEADING:
        return True
    if kind in (SLICE_NON_IDR, SLICE_IDR):
        return _first_slice_of_picture(body)
    return False


def begins_nal_unit(payload: bytes) -> bool:
    """Whether an RTP payload holds the beginning of a NAL unit (anything but a fragment's
    continuation): what a depayloader keeps from a picture it joined in the middle of."""
    if not payload:
        return False
    if payload[0] & 0x1F == FU_A:
        return len(payload) >= 2 and bool(payload[1] & 0x80)
    return True
