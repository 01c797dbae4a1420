"""A browser's SDP offer, read before anything of it reaches GStreamer, and the answer checked
before it goes back. Pure: no GStreamer.

The live worker sends one H.264 video stream and receives nothing: an offer must ask for
exactly one video stream that the browser will receive (``recvonly`` or ``sendrecv``), over
WebRTC's secure profile, and list H.264 with ``packetization-mode=1`` (what the payloader
sends: several NAL units per packet and fragments of large ones). Browsers give payload type
numbers their own meanings; the answer must use the browser's number for H.264, so it is
taken from the offer (``Offer.payload_type``), preferring the profiles our encoder makes:
constrained baseline (``42e0``), then baseline (``4200``), then any other.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_OFFER_BYTES = 64 * 1024
# Payload type numbers an offer may give H.264 (as pipelines.LIVE_PAYLOAD_TYPES): the dynamic
# range, and the one browsers add below it when that is full.
PAYLOAD_TYPES = frozenset((*range(35, 64), *range(96, 128)))
# Preferred profile-level-id prefixes (profile_idc, constraint flags), best first.
PROFILE_PREFERENCE = ("42e0", "42c0", "4200")
RECEIVING = ("recvonly", "sendrecv")
_RTPMAP = re.compile(r"a=rtpmap:(\d+) ([^/\s]+)/(\d+)")
_FMTP = re.compile(r"a=fmtp:(\d+) (.*)")


class OfferError(ValueError):
    """The offer cannot be answered; the message says why, for the person or program that sent it."""


@dataclass(frozen=True)
class Offer:
    sdp: str
    payload_type: int  # the browser's number for H.264 with packetization-mode=1


@dataclass
class _Media:
    kind: str
    port: str
    protocol: str
    formats: list[str]
    attributes: list[str]


def _sections(sdp: str) -> list[_Media]:
    media: list[_Media] = []
    for line in sdp.splitlines():
        if line.startswith("m="):
            fields = line[2:].split()
            if len(fields) < 4:
                raise OfferError(f"malformed media line: {line[:80]!r}")
            media.append(_Media(fields[0], fields[1], fields[2], fields[3:], []))
        elif line.startswith("a=") and media:
            media[-1].attributes.append(line)
    return media


def _direction(media: _Media) -> str:
    found = [a[2:] for a in media.attributes if a[2:] in ("sendrecv", "sendonly", "recvonly", "inactive")]
    return found[-1] if found else "sendrecv"


def _profile_rank(parameters: dict[str, str]) -> int:
    profile = parameters.get("profile-level-id", "").lower()
    for rank, prefix in enumerate(PROFILE_PREFERENCE):
        if profile.startswith(prefix):
            return rank
    return len(PROFILE_PREFERENCE)


def _h264_payload_type(video: _Media) -> int:
    listed = set(video.formats)
    codecs = {
        int(match[1]): match[2].upper()
        for a in video.attributes
        if (match := _RTPMAP.fullmatch(a.strip())) and match[3] == "90000" and match[1] in listed
    }
    parameters: dict[int, dict[str, str]] = {}
    for a in video.attributes:
        if match := _FMTP.fullmatch(a.strip()):
            pairs = (p.strip().partition("=") for p in match[2].split(";"))
            parameters[int(match[1])] = {key.lower(): value for key, _, value in pairs if key}
    usable = [
        pt
        for pt, codec in codecs.items()
        if codec == "H264" and pt in PAYLOAD_TYPES and parameters.get(pt, {}).get("packetization-mode") == "1"
    ]
    if not usable:
        raise OfferError("the offer lists no H.264 with packetization-mode=1 for video")
    return min(usable, key=lambda pt: (_profile_rank(parameters.get(pt, {})), video.formats.index(str(pt))))


def read_offer(sdp: object) -> Offer:
    """The offer, checked; raises OfferError."""
    if not isinstance(sdp, str):
        raise OfferError("the offer must be SDP text")
    if len(sdp.encode()) > MAX_OFFER_BYTES:
        raise OfferError(f"the offer is larger than {MAX_OFFER_BYTES // 1024} KiB")
    if not sdp.startswith("v=0"):
        raise OfferError('the offer is not SDP (it must start with "v=0")')
    if "\0" in sdp:
        raise OfferError("the offer holds a NUL character")
    media = _sections(sdp)
    if len(media) != 1 or media[0].kind != "video":
        kinds = ", ".join(m.kind for m in media) or "none"
        raise OfferError(f"the offer must ask for one video stream only (it has: {kinds})")
    video = media[0]
    if video.port == "0":
        raise OfferError("the offer's video stream is disabled (port 0)")
    if "SAVPF" not in video.protocol:
        raise OfferError(f"the offer's video stream is not WebRTC (protocol {video.protocol})")
    direction = _direction(video)
    if direction not in RECEIVING:
        raise OfferError(f"the offer does not ask to receive video (it is {direction})")
    return Offer(sdp, _h264_payload_type(video))


def check_answer(answer: str, payload_type: int) -> None:
    """Raise OfferError unless ``answer`` sends H.264 as ``payload_type`` on an enabled video
    stream (webrtcbin answers an offer it cannot match with a disabled stream, or another codec)."""
    media = _sections(answer)
    if len(media) != 1 or media[0].kind != "video" or media[0].port == "0":
        raise OfferError("no video stream could be agreed with this offer")
    codecs = {m[1]: m[2].upper() for a in media[0].attributes if (m := _RTPMAP.fullmatch(a.strip()))}
    if media[0].formats != [str(payload_type)] or codecs.get(str(payload_type)) != "H264":
        raise OfferError("H.264 could not be agreed with this offer")
