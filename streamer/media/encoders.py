"""H.264 encoders: one place mapping the common settings onto each encoder element. Pure: no
GStreamer import.

The settings carry a bitrate in bit/s and the pipelines a keyframe interval in frames; each
encoder wants them in its own units and under its own property names, wants its own input
format, and handles B-frames, SPS/PPS repetition and forced keyframes its own way. ``ENCODERS``
says all of that per kind (``EncoderSpec``), and ``encoder_chain`` builds the part of a launch
description between the raw I420 caps and ``h264parse`` for either use:

- ``Purpose.STREAM``: low latency. A keyframe every ``keyframe_interval`` frames and forced
  keyframes on demand (each new viewer gets one); no B-frames, no look-ahead.
- ``Purpose.RECORD``: quality per bit. Scene-cut keyframes off where the encoder has them, so
  the recorder's forced keyframes alone decide the GOPs (``keyframe_interval`` is then only a
  backstop, see ``record_keyframe_interval``).

The x264 stream description is byte for byte what ``pipelines.rtsp_media`` emitted before this
module existed; the recording's has since lost x264's frame delay (see ``_x264``).

What each choice rests on is cited beside it. Sources: ``gst-inspect-1.0`` 1.22.0 on Debian
bookworm (x264enc, openh264enc); the GStreamer sources at tag 1.22.0 (subprojects
gst-plugins-good/sys/v4l2, gst-plugins-bad/sys/va, gstreamer-vaapi); NVIDIA's gst-v4l2
(gst-nvvideo4linux2) sources as published with L4T (gstv4l2videoenc.c, gstv4l2h264enc.c,
v4l2_nv_extensions.h); pipelines of Rpanion-server and other Raspberry Pi users for the Pi's
``extra-controls``. None of the hardware descriptions has run on real hardware here (an x86
VM without a hardware encoder): they are checked as strings against those sources only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum


class EncoderKind(StrEnum):
    """The values of ENCODER besides ``auto`` (``streamer.config.settings.ENCODER_KINDS``)."""

    X264 = "x264"
    OPENH264 = "openh264"
    V4L2 = "v4l2"
    NVV4L2 = "nvv4l2"
    VA = "va"
    VAAPI = "vaapi"


class Purpose(StrEnum):
    STREAM = "stream"
    RECORD = "record"


AUTO = "auto"
# ENCODER=auto tries these in order and takes the first whose elements exist and that passes its
# self-test; x264 is the fallback (software, what the stack has always run: not self-tested).
# openh264 is never picked by auto: its quality per bit is lower than x264's (OpenH264 makes
# constrained-baseline streams only: no CABAC, no 8x8 transform, no B-frames), so where x264 is
# installed it is the better software encoder. ENCODER=openh264 is there for machines without x264
# (gstreamer1.0-plugins-ugly) or for a licence reason.
AUTO_ORDER = (EncoderKind.NVV4L2, EncoderKind.V4L2, EncoderKind.VA, EncoderKind.VAAPI, EncoderKind.X264)
FALLBACK = EncoderKind.X264

# Where a missing element comes from (Debian / Raspberry Pi OS / JetPack package names).
ELEMENT_PACKAGES = {
    "x264enc": "gstreamer1.0-plugins-ugly",
    "openh264enc": "gstreamer1.0-plugins-bad",
    # Registered only where a V4L2 memory-to-memory H.264 encoder device exists (the Pi 4's
    # /dev/video11, bcm2835-codec): the plugin alone is not enough.
    "v4l2h264enc": "gstreamer1.0-plugins-good and a V4L2 M2M H.264 encoder device",
    "nvv4l2h264enc": "nvidia-l4t-gstreamer, from JetPack",
    "nvvidconv": "nvidia-l4t-gstreamer, from JetPack",
    # Registered only where a VA-API driver can encode H.264 (intel-media-va-driver, mesa-va-drivers).
    "vah264enc": "gstreamer1.0-plugins-bad and a VA-API driver that encodes H.264",
    "vaapih264enc": "gstreamer1.0-vaapi and a VA-API driver that encodes H.264",
    "videoconvert": "gstreamer1.0-plugins-base",
}


@dataclass(frozen=True)
class EncoderSpec:
    """One encoder element and how the common settings map onto it."""

    kind: EncoderKind
    factory: str  # the encoder element
    package: str  # where it comes from
    boards: str  # where it is found
    input: str  # the raw video it takes, and what is put in front of it
    converter: str  # launch fragment between the raw I420 caps and the encoder ("" for none)
    elements: tuple[str, ...]  # every element factory the chain needs
    bitrate_unit: str  # of the element's bitrate property ("bit/s" or "kbit/s"); settings are bit/s
    b_frames: str  # how they are kept off (a viewer must never wait for a later frame)
    low_latency: str
    sps_pps: str  # SPS/PPS in front of every IDR (also h264parse config-interval=-1 on the stream)
    force_key_unit: str  # what a GstForceKeyUnit event does to it (all are GstVideoEncoder subclasses)
    # The GStreamer version (major, minor) from which a forced keyframe comes out as an IDR frame;
    # None: never (the element ignores the request).
    forced_idr_since: tuple[int, int] | None
    # A hardware encoder (a driver, a device): what the fallback after repeated stalls leaves.
    hardware: bool
    # (name, bitrate in bit/s, keyframe interval in frames, purpose) -> the element with its
    # properties (and any caps that must follow it).
    element: Callable[[str, int, int, Purpose], str] = field(repr=False, compare=False)
    # The element's own action signal that makes its next frame an IDR, for an encoder that
    # ignores GstForceKeyUnit (``gst.force_keyframe`` emits it instead of sending the event).
    keyframe_signal: str | None = None


def _kbit(bitrate_bps: int) -> int:
    return max(1, bitrate_bps // 1000)


def _x264(name: str, bitrate_bps: int, keyframe_interval: int, purpose: Purpose) -> str:
    # The stream: zerolatency (no look-ahead, no frame threads, no B-frames: x264's delay is zero
    # frames), ultrafast. The recording: superfast (quality per bit, within a core), no scene-cut
    # keyframes, so the forced keyframes alone decide the GOPs (field notes), and no frame delay
    # either (no look-ahead, sliced threads, no B-frames): a keyframe forced while the encoder
    # still holds frames for an earlier one is lost in GStreamer 1.22, and with a camera
    # delivering half its rate (low light) a 0.5 s GOP is 7 frames, fewer than superfast's
    # look-ahead: keyframes then came every key-int-max frames only and chunks were 4 s, not
    # 5.5 s. bitrate is kbit/s.
    if purpose is Purpose.STREAM:
        return (
            f"x264enc name={name} tune=zerolatency speed-preset=ultrafast bframes=0 "
            f"key-int-max={keyframe_interval} bitrate={_kbit(bitrate_bps)}"
        )
    return (
        f"x264enc name={name} speed-preset=superfast bitrate={_kbit(bitrate_bps)} "
        f"key-int-max={keyframe_interval} bframes=0 sliced-threads=true "
        "option-string=scenecut=0:rc-lookahead=0:sync-lookahead=0"
    )


def _openh264(name: str, bitrate_bps: int, keyframe_interval: int, purpose: Purpose) -> str:
    # gst-inspect-1.0 openh264enc (1.22.0): bitrate in bit/s, held only with rate-control=bitrate
    # (the default, "quality", favours quality over the target); gop-size = frames between intra
    # (IDR) frames; complexity low/medium/high; scene-change-detection on by default.
    # enable-frame-skip stays at its default (false): every frame comes out.
    complexity, scene_cuts = (
        ("low", "") if purpose is Purpose.STREAM else ("medium", " scene-change-detection=false")
    )
    return (
        f"openh264enc name={name} usage-type=camera complexity={complexity} rate-control=bitrate "
        f"bitrate={bitrate_bps} gop-size={keyframe_interval}{scene_cuts}"
    )


# The Pi's encoder driver (bcm2835-codec) wants a level in the caps after the encoder: every
# published Pi pipeline (Rpanion-server's, the Raspberry Pi forum's) puts these caps there, and
# without them negotiation can fail. Level 4 covers 1920x1080@30.
V4L2_CAPS = "video/x-h264,level=(string)4"


def _v4l2(name: str, bitrate_bps: int, keyframe_interval: int, purpose: Purpose) -> str:
    # gst-plugins-good 1.22 v4l2h264enc has no bitrate or GOP properties of its own: the V4L2
    # controls go in extra-controls, named as v4l2-ctl names them: video_bitrate (V4L2's
    # V4L2_CID_MPEG_VIDEO_BITRATE, bit/s), h264_i_frame_period (V4L2_CID_MPEG_VIDEO_H264_I_PERIOD;
    # every I frame of the Pi's encoder is an IDR frame), repeat_sequence_header=1 (SPS/PPS in
    # front of every IDR; off by default on the Pi; Rpanion-server sets it). The Pi's encoder has
    # no B-frames at all (its video_b_frames control is 0..0). The same description serves both
    # purposes: the Pi's encoder has no scene-cut keyframes and no speed/quality preset.
    del purpose
    controls = (
        f"controls,video_bitrate={bitrate_bps},h264_i_frame_period={keyframe_interval},"
        "repeat_sequence_header=1"
    )
    return f'v4l2h264enc name={name} extra-controls="{controls}" ! {V4L2_CAPS}'


def _nvv4l2(name: str, bitrate_bps: int, keyframe_interval: int, purpose: Purpose) -> str:
    # NVIDIA's gst-v4l2 (gstv4l2videoenc.c, gstv4l2h264enc.c): bitrate in bit/s; control-rate
    # variable_bitrate | constant_bitrate (default CBR); iframeinterval (I frames, default 30) and
    # idrinterval (IDR frames, default 256!) both set, so every I frame is an IDR a late joiner can
    # start at; insert-sps-pps (SPS/PPS at every IDR, default false); num-B-Frames defaults to 0
    # ("not recommended") and is left so; preset-level DisablePreset | UltraFastPreset |
    # FastPreset | MediumPreset | SlowPreset (enum nicks, stable across L4T releases where the
    # numbers are not); maxperf-enable keeps the encoder clocked up (lower latency per frame).
    preset = "UltraFastPreset" if purpose is Purpose.STREAM else "MediumPreset"
    maxperf = " maxperf-enable=true" if purpose is Purpose.STREAM else ""
    return (
        f"nvv4l2h264enc name={name} bitrate={bitrate_bps} control-rate=constant_bitrate "
        f"iframeinterval={keyframe_interval} idrinterval={keyframe_interval} insert-sps-pps=true "
        f"preset-level={preset}{maxperf}"
    )


def _va(name: str, bitrate_bps: int, keyframe_interval: int, purpose: Purpose) -> str:
    # gst-plugins-bad 1.22 sys/va/gstvah264enc.c: bitrate in kbit/s; key-int-max = the GOP (IDR
    # period); b-frames default 0, set anyway; target-usage 1 (quality) .. 7 (speed), default 4.
    # rate-control exists only for the modes the driver offers (GST_PARAM_CONDITIONALLY_AVAILABLE,
    # default the first of cbr, vbr, vcm, cqp it has): on a driver without CBR the description
    # does not parse, the self-test fails and ENCODER=auto moves on. SPS/PPS are repeated before
    # every IDR by the element itself ("Repeat the SPS for IDR").
    usage = 7 if purpose is Purpose.STREAM else 4
    return (
        f"vah264enc name={name} rate-control=cbr bitrate={_kbit(bitrate_bps)} "
        f"key-int-max={keyframe_interval} b-frames=0 target-usage={usage}"
    )


def _vaapi(name: str, bitrate_bps: int, keyframe_interval: int, purpose: Purpose) -> str:
    # gstreamer-vaapi 1.22 (gstvaapiencoder.c, gstvaapiencoder_h264.c): bitrate in kbit/s and only
    # honoured with rate-control=cbr/vbr (the default is cqp, which ignores it); keyframe-period
    # (default 30) is also the IDR period; max-bframes default 0, set anyway; quality-level 1
    # (quality, more latency) .. 7 (speed, less latency), default 4 (vaapih264enc's documentation).
    level = 7 if purpose is Purpose.STREAM else 4
    return (
        f"vaapih264enc name={name} rate-control=cbr bitrate={_kbit(bitrate_bps)} "
        f"keyframe-period={keyframe_interval} max-bframes=0 quality-level={level}"
    )


_VIDEO_ENCODER = "a GstVideoEncoder subclass: the base class marks the frame the event asks for"

ENCODERS: dict[EncoderKind, EncoderSpec] = {
    EncoderKind.X264: EncoderSpec(
        kind=EncoderKind.X264,
        factory="x264enc",
        package=ELEMENT_PACKAGES["x264enc"],
        boards="any (software)",
        input="I420 in system memory, as the frames come: nothing in front",
        converter="",
        elements=("x264enc",),
        bitrate_unit="kbit/s",
        b_frames="bframes=0 (stream; tune=zerolatency has none either); the recording keeps "
        "superfast's, reordered by the muxer",
        low_latency="tune=zerolatency speed-preset=ultrafast",
        sps_pps="h264parse config-interval=-1 (the stream); x264 writes them with every IDR",
        force_key_unit=f"{_VIDEO_ENCODER}; x264enc encodes it as an IDR frame (gstx264enc.c)",
        forced_idr_since=(1, 0),
        hardware=False,
        element=_x264,
    ),
    EncoderKind.OPENH264: EncoderSpec(
        kind=EncoderKind.OPENH264,
        factory="openh264enc",
        package=ELEMENT_PACKAGES["openh264enc"],
        boards="any (software, Cisco's OpenH264)",
        input="I420 only (its sink template), as the frames come: nothing in front",
        converter="",
        elements=("openh264enc",),
        bitrate_unit="bit/s",
        b_frames="none: it makes constrained-baseline streams (I and P frames only)",
        low_latency="complexity=low; no look-ahead, one frame in, one out",
        sps_pps="h264parse config-interval=-1 (not checked whether OpenH264 repeats them itself)",
        force_key_unit=f"{_VIDEO_ENCODER}; openh264enc calls ForceIntraFrame (an IDR) (gstopenh264enc.cpp)",
        forced_idr_since=(1, 0),
        hardware=False,
        element=_openh264,
    ),
    EncoderKind.V4L2: EncoderSpec(
        kind=EncoderKind.V4L2,
        factory="v4l2h264enc",
        package=ELEMENT_PACKAGES["v4l2h264enc"],
        boards="Raspberry Pi 4 (and 3), other V4L2 M2M encoders (Rockchip, Allwinner, i.MX); "
        "the Pi 5 has none",
        input="I420 in system memory (the Pi's driver takes YU12 as is; copied into its buffers)",
        converter="",
        elements=("v4l2h264enc",),
        bitrate_unit="bit/s (the video_bitrate control)",
        b_frames="none on the Pi (video_b_frames is 0..0)",
        low_latency="a hardware encoder: no look-ahead; no further knob",
        sps_pps="extra-controls repeat_sequence_header=1",
        force_key_unit=f"{_VIDEO_ENCODER}; v4l2videoenc passes it to the driver "
        "(V4L2_CID_MPEG_VIDEO_FORCE_KEY_FRAME) only from GStreamer 1.24 (commit 8dd51501, "
        "May 2023): on 1.22 (Debian bookworm, Raspberry Pi OS bookworm) it is ignored",
        forced_idr_since=(1, 24),
        hardware=True,
        element=_v4l2,
    ),
    EncoderKind.NVV4L2: EncoderSpec(
        kind=EncoderKind.NVV4L2,
        factory="nvv4l2h264enc",
        package=ELEMENT_PACKAGES["nvv4l2h264enc"],
        boards="NVIDIA Jetson with NVENC (Nano, TX2, Xavier, Orin AGX/NX); the Orin Nano has none",
        input="video/x-raw(memory:NVMM) I420/NV12: nvvidconv copies the frames into NVMM as NV12",
        converter="nvvidconv ! video/x-raw(memory:NVMM),format=NV12",
        elements=("nvvidconv", "nvv4l2h264enc"),
        bitrate_unit="bit/s",
        b_frames="num-B-Frames defaults to 0",
        low_latency="preset-level=UltraFastPreset maxperf-enable=true (the stream)",
        sps_pps="insert-sps-pps=true",
        force_key_unit="a GstVideoEncoder subclass, but NVIDIA's handle_frame never reads the "
        "force-keyframe flag: a GstForceKeyUnit event is ignored. It has an action signal, "
        "force-IDR, instead (emit it on the element)",
        forced_idr_since=None,
        hardware=True,
        element=_nvv4l2,
        # NVIDIA's gstv4l2videoenc.c registers it (G_SIGNAL_ACTION, no arguments); Jetson users'
        # pipelines emit it by name (``encoder.emit("force-IDR")``).
        keyframe_signal="force-IDR",
    ),
    EncoderKind.VA: EncoderSpec(
        kind=EncoderKind.VA,
        factory="vah264enc",
        package=ELEMENT_PACKAGES["vah264enc"],
        boards="Intel (iHD/i965) and AMD (radeonsi) GPUs with VA-API encode; x86 mini-PCs",
        input="NV12 only (system or VA memory): videoconvert turns I420 into NV12 on the CPU",
        converter="videoconvert ! video/x-raw,format=NV12",
        elements=("videoconvert", "vah264enc"),
        bitrate_unit="kbit/s",
        b_frames="b-frames=0",
        low_latency="target-usage=7 (the stream); no B-frames, so no reordering delay",
        sps_pps="vah264enc repeats SPS/PPS before every IDR itself",
        force_key_unit=f"{_VIDEO_ENCODER}; vah264enc up to 1.24 makes it an I frame that is not an "
        "IDR (not a sync point: splitmuxsink cannot split there); an IDR from 1.26 (commit "
        "ea015bea, April 2024)",
        forced_idr_since=(1, 26),
        hardware=True,
        element=_va,
    ),
    EncoderKind.VAAPI: EncoderSpec(
        kind=EncoderKind.VAAPI,
        factory="vaapih264enc",
        package=ELEMENT_PACKAGES["vaapih264enc"],
        boards="Intel and AMD GPUs with VA-API encode (gstreamer-vaapi: deprecated, removed "
        "after 1.26 in favour of va)",
        input="I420/NV12/YV12 in system memory (it uploads them itself): nothing in front",
        converter="",
        elements=("vaapih264enc",),
        bitrate_unit="kbit/s",
        b_frames="max-bframes=0",
        low_latency="quality-level=7 (the stream)",
        sps_pps="h264parse config-interval=-1 (the stream)",
        force_key_unit=f"{_VIDEO_ENCODER}; vaapih264enc makes it an IDR frame "
        "(gstvaapiencoder_h264.c, set_key_frame)",
        forced_idr_since=(1, 0),
        hardware=True,
        element=_vaapi,
    ),
}


def encoder_chain(
    kind: EncoderKind | str, *, name: str, bitrate_bps: int, keyframe_interval: int, purpose: Purpose | str
) -> str:
    """The launch description between the raw I420 caps and ``h264parse``: the converter the
    encoder needs, the encoder named ``name`` with ``bitrate_bps`` (bit/s, converted to the
    element's unit) and a keyframe at least every ``keyframe_interval`` frames, and any caps
    that must follow it. Every value is a number, so nothing here can change a pipeline's
    structure."""
    spec = ENCODERS[EncoderKind(kind)]
    element = spec.element(name, int(bitrate_bps), int(keyframe_interval), Purpose(purpose))
    return f"{spec.converter} ! {element}" if spec.converter else element


def honours_forced_keyframes(kind: EncoderKind | str, gst_version: tuple[int, int]) -> bool:
    """Whether a GstForceKeyUnit event gives an IDR frame with ``kind`` on this GStreamer
    (major, minor): what the stream's instant join and the recording's timed GOPs rely on."""
    since = ENCODERS[EncoderKind(kind)].forced_idr_since
    return since is not None and tuple(gst_version) >= since


def keyframe_signal(kind: EncoderKind | str) -> str | None:
    """How a keyframe is asked of ``kind``'s encoder: None to send it a GstForceKeyUnit event
    (every GstVideoEncoder's way), else the name of the element's own action signal to emit
    (nvv4l2h264enc ignores the event: its ``force-IDR`` signal). The pure half of
    ``gst.force_keyframe``."""
    return ENCODERS[EncoderKind(kind)].keyframe_signal


def runtime_bitrate(kind: EncoderKind | str, bitrate_bps: int) -> tuple[str, int] | None:
    """The property, and its value, that set ``kind``'s bitrate while it plays (the pure half of
    ``gst.set_bitrate``); None for v4l2h264enc, whose bitrate is a V4L2 control in
    ``extra-controls``, applied when the encoder starts."""
    spec = ENCODERS[EncoderKind(kind)]
    if spec.kind is EncoderKind.V4L2:
        return None
    return "bitrate", _kbit(bitrate_bps) if spec.bitrate_unit == "kbit/s" else bitrate_bps


def is_hardware(kind: EncoderKind | str) -> bool:
    return ENCODERS[EncoderKind(kind)].hardware


def record_keyframe_interval(kind: EncoderKind | str, gop_frames: int, gst_version: tuple[int, int]) -> int:
    """The recording encoder's own keyframe interval, in frames, for GOPs of ``gop_frames``: twice
    a GOP where forced keyframes work (they place the keyframes, the encoder's interval is a
    backstop: ``pipelines.record_encoder_key_int_max``), else the GOP itself, so chunks can still
    split near their length (frames dropped in front of the encoder then stretch a GOP)."""
    return 2 * gop_frames if honours_forced_keyframes(kind, gst_version) else gop_frames


def missing_message(requested: str, missing_element: str, available: list[str] | tuple[str, ...]) -> str:
    """The one line for a requested encoder this machine lacks, e.g. ``ENCODER='v4l2': no
    v4l2h264enc on this machine (it has: x264, openh264)``."""
    has = ", ".join(available) if available else "none"
    return f"ENCODER={requested!r}: no {missing_element} on this machine (it has: {has})"


# The self-test (``streamer.media.encoder_check``): a few frames through the real element.
SELF_TEST_FRAMES = 5
SELF_TEST_SINK = "encoded"


def self_test_description(
    chain: str, width: int, height: int, fps: int, frames: int = SELF_TEST_FRAMES
) -> str:
    """``frames`` test frames at the configured size and rate through ``chain`` into an appsink
    that receives whole H.264 access units (one buffer per frame)."""
    return (
        f"videotestsrc num-buffers={int(frames)} pattern=ball "
        f"! video/x-raw,format=I420,width={int(width)},height={int(height)},framerate={int(fps)}/1 "
        f"! {chain} ! h264parse ! video/x-h264,stream-format=byte-stream,alignment=au "
        f"! appsink name={SELF_TEST_SINK} sync=false emit-signals=false max-buffers=0 "
        "enable-last-sample=false"
    )


def self_test_verdict(answer: dict[str, object], frames: int) -> str | None:
    """None when the self-test's ``answer`` (what the child reported: ``error``, or ``frames``,
    ``keyframe_first`` and ``caps``) shows every frame encoded as H.264 with a keyframe first,
    else why not."""
    if answer.get("error"):
        return str(answer["error"])
    produced = answer.get("frames", 0)
    if not produced:
        return "no frame came out"
    if not str(answer.get("caps", "")).startswith("video/x-h264"):
        return f"not H.264 ({answer.get('caps')})"
    if not answer.get("keyframe_first"):
        return "the first frame out is not a keyframe"
    if produced != frames:
        return f"{produced} of {frames} frames came out"
    return None
