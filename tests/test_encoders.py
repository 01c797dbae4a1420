"""Encoder descriptions as strings (every kind, both purposes, units and property names against
each element's documentation), x264 byte for byte as the pipelines emit it, the choice rules
that need no GStreamer, and the controller's reading of the encoder check's answer. Nothing here
uses GStreamer (the self-test and the command: test_encoder_check.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from streamer import config
from streamer.control import encoder_choice
from streamer.media import encoders, pipelines
from streamer.media.encoders import AUTO_ORDER, ENCODERS, EncoderKind, Purpose, encoder_chain

BPS, GOP = 2_000_000, 30

EXPECTED = {
    ("x264", "stream"): "x264enc name=enc tune=zerolatency speed-preset=ultrafast bframes=0 key-int-max=30 "
    "bitrate=2000",
    ("x264", "record"): "x264enc name=enc speed-preset=superfast bitrate=2000 key-int-max=30 "
    "option-string=scenecut=0",
    ("openh264", "stream"): "openh264enc name=enc usage-type=camera complexity=low rate-control=bitrate "
    "bitrate=2000000 gop-size=30",
    ("openh264", "record"): "openh264enc name=enc usage-type=camera complexity=medium rate-control=bitrate "
    "bitrate=2000000 gop-size=30 scene-change-detection=false",
    ("v4l2", "stream"): 'v4l2h264enc name=enc extra-controls="controls,video_bitrate=2000000,'
    'h264_i_frame_period=30,repeat_sequence_header=1" ! video/x-h264,level=(string)4',
    ("v4l2", "record"): 'v4l2h264enc name=enc extra-controls="controls,video_bitrate=2000000,'
    'h264_i_frame_period=30,repeat_sequence_header=1" ! video/x-h264,level=(string)4',
    ("nvv4l2", "stream"): "nvvidconv ! video/x-raw(memory:NVMM),format=NV12 ! nvv4l2h264enc name=enc "
    "bitrate=2000000 control-rate=constant_bitrate iframeinterval=30 idrinterval=30 insert-sps-pps=true "
    "preset-level=UltraFastPreset maxperf-enable=true",
    ("nvv4l2", "record"): "nvvidconv ! video/x-raw(memory:NVMM),format=NV12 ! nvv4l2h264enc name=enc "
    "bitrate=2000000 control-rate=constant_bitrate iframeinterval=30 idrinterval=30 insert-sps-pps=true "
    "preset-level=MediumPreset",
    ("va", "stream"): "videoconvert ! video/x-raw,format=NV12 ! vah264enc name=enc rate-control=cbr "
    "bitrate=2000 key-int-max=30 b-frames=0 target-usage=7",
    ("va", "record"): "videoconvert ! video/x-raw,format=NV12 ! vah264enc name=enc rate-control=cbr "
    "bitrate=2000 key-int-max=30 b-frames=0 target-usage=4",
    (
        "vaapi",
        "stream",
    ): "vaapih264enc name=enc rate-control=cbr bitrate=2000 keyframe-period=30 max-bframes=0 quality-level=7",
    (
        "vaapi",
        "record",
    ): "vaapih264enc name=enc rate-control=cbr bitrate=2000 keyframe-period=30 max-bframes=0 quality-level=4",
}


@pytest.mark.parametrize(("kind", "purpose"), sorted(EXPECTED), ids=[f"{k}-{p}" for k, p in sorted(EXPECTED)])
def test_each_encoder_and_purpose_as_a_string(kind, purpose):
    chain = encoder_chain(kind, name="enc", bitrate_bps=BPS, keyframe_interval=GOP, purpose=purpose)
    assert chain == EXPECTED[kind, purpose]


def test_every_kind_and_purpose_is_described():
    assert set(EXPECTED) == {(k.value, p.value) for k in EncoderKind for p in Purpose}


@pytest.mark.parametrize("kind", list(EncoderKind))
def test_bitrate_goes_in_the_elements_unit(kind):
    """The settings carry bit/s: x264, va and vaapi take kbit/s, the others bit/s."""
    chain = encoder_chain(kind, name="enc", bitrate_bps=3_500_000, keyframe_interval=GOP, purpose="stream")
    unit = ENCODERS[kind].bitrate_unit
    if unit == "kbit/s":
        assert " bitrate=3500 " in chain + " " and "3500000" not in chain
    else:
        assert unit.startswith("bit/s") and "3500000" in chain


@pytest.mark.parametrize("kind", list(EncoderKind))
def test_the_chain_starts_with_its_converter_and_holds_every_element_it_needs(kind):
    spec = ENCODERS[kind]
    chain = encoder_chain(kind, name="enc", bitrate_bps=BPS, keyframe_interval=GOP, purpose="record")
    assert chain.startswith(
        f"{spec.converter} ! {spec.factory} name=enc " if spec.converter else spec.factory
    )
    words = {part.split()[0] for part in chain.split(" ! ")}
    assert {e for e in spec.elements} <= words
    assert spec.factory in spec.elements


def test_the_stream_keeps_b_frames_off_and_the_recording_scene_cuts_off():
    for kind in EncoderKind:
        stream = encoder_chain(kind, name="enc", bitrate_bps=BPS, keyframe_interval=GOP, purpose="stream")
        assert "bframes=3" not in stream and "b-frames=1" not in stream
    assert "bframes=0" in EXPECTED["x264", "stream"]
    assert "b-frames=0" in EXPECTED["va", "stream"] and "max-bframes=0" in EXPECTED["vaapi", "stream"]
    assert "scenecut=0" in EXPECTED["x264", "record"]
    assert "scene-change-detection=false" in EXPECTED["openh264", "record"]


@pytest.fixture
def settings(tmp_path: Path) -> config.Settings:
    return config.load({"HOME": str(tmp_path), "VIDEO_FPS": "25", "VIDEO_BITRATE": "1500000"})


def test_x264_stream_is_byte_for_byte_what_rtsp_media_emits(settings):
    chain = encoder_chain(
        "x264",
        name=pipelines.STREAM_ENCODER_ELEMENT,
        bitrate_bps=settings.video_bitrate,
        keyframe_interval=settings.video_fps * pipelines.STREAM_KEYFRAME_INTERVAL_S,
        purpose="stream",
    )
    assert chain == (
        "x264enc name=stream_encoder tune=zerolatency speed-preset=ultrafast bframes=0 key-int-max=25 "
        "bitrate=1500"
    )
    assert f"! {chain} ! h264parse config-interval=-1 " in pipelines.rtsp_media(settings)


def test_x264_recording_is_byte_for_byte_what_the_recorder_emits(settings):
    chain = encoder_chain(
        "x264",
        name=pipelines.VIDEO_ENCODER_ELEMENT,
        bitrate_bps=settings.record_bitrate,
        keyframe_interval=pipelines.record_encoder_key_int_max(settings.video_fps),
        purpose="record",
    )
    assert chain == (
        "x264enc name=video_encoder speed-preset=superfast bitrate=4000 key-int-max=46 "
        "option-string=scenecut=0"
    )
    assert f"! {chain} ! h264parse ! " in pipelines.recorder(settings, "/tmp/session")


def test_config_names_the_same_encoders_as_the_media_layer():
    assert tuple(kind.value for kind in EncoderKind) == config.ENCODER_KINDS
    assert ("auto", *config.ENCODER_KINDS) == config.ENCODERS
    assert encoders.AUTO == config.ENCODER_AUTO


def test_auto_tries_the_hardware_first_and_never_openh264():
    assert AUTO_ORDER == ("nvv4l2", "v4l2", "va", "vaapi", "x264")
    assert encoders.FALLBACK == AUTO_ORDER[-1] == "x264"
    assert EncoderKind.OPENH264 not in AUTO_ORDER


@pytest.mark.parametrize(
    ("kind", "version", "honoured"),
    [
        ("x264", (1, 22), True),
        ("openh264", (1, 22), True),
        ("vaapi", (1, 22), True),
        ("v4l2", (1, 22), False),
        ("v4l2", (1, 24), True),
        ("va", (1, 24), False),
        ("va", (1, 26), True),
        ("nvv4l2", (1, 26), False),
    ],
)
def test_where_forced_keyframes_give_an_idr(kind, version, honoured):
    assert encoders.honours_forced_keyframes(kind, version) is honoured
    gop = 15
    expected = 2 * gop if honoured else gop
    assert encoders.record_keyframe_interval(kind, gop, version) == expected


def test_a_missing_encoder_is_named_with_what_the_machine_has():
    assert encoders.missing_message("v4l2", "v4l2h264enc", ["x264", "openh264"]) == (
        "ENCODER='v4l2': no v4l2h264enc on this machine (it has: x264, openh264)"
    )
    assert encoders.missing_message("va", "vah264enc", []).endswith("(it has: none)")
    assert set(encoders.ELEMENT_PACKAGES) >= {e for spec in ENCODERS.values() for e in spec.elements}


def test_self_test_description_and_verdict():
    description = encoders.self_test_description("x264enc", 320, 240, 30, 5)
    assert description == (
        "videotestsrc num-buffers=5 pattern=ball "
        "! video/x-raw,format=I420,width=320,height=240,framerate=30/1 "
        "! x264enc ! h264parse ! video/x-h264,stream-format=byte-stream,alignment=au "
        "! appsink name=encoded sync=false emit-signals=false max-buffers=0 enable-last-sample=false"
    )
    h264 = "video/x-h264, stream-format=(string)byte-stream"
    verdict = encoders.self_test_verdict
    assert verdict({"frames": 5, "keyframe_first": True, "caps": h264}, 5) is None
    assert verdict({"error": "x: boom"}, 5) == "x: boom"
    assert verdict({"frames": 0, "keyframe_first": False, "caps": None}, 5) == "no frame came out"
    assert (
        verdict({"frames": 5, "keyframe_first": False, "caps": h264}, 5)
        == "the first frame out is not a keyframe"
    )
    assert verdict({"frames": 3, "keyframe_first": True, "caps": h264}, 5) == "3 of 5 frames came out"
    assert verdict({"frames": 5, "keyframe_first": True, "caps": "video/x-raw"}, 5).startswith("not H.264")


# --- The controller's side: reading the check's answer (no process started)


def test_the_controller_reads_the_choice():
    answer = {"chosen": "x264", "reasons": {"x264": "ok", "v4l2": "no v4l2h264enc"}, "available": ["x264"]}
    choice = encoder_choice.parse_encoder_check(
        0, "noise\n" + json.dumps(answer) + "\n", "INFO    encoder: x264"
    )
    assert choice == encoder_choice.EncoderChoice("x264", answer["reasons"], ("x264",))


def test_the_controller_gets_the_checks_one_line_on_exit_2():
    stderr = (
        "encoder_check: configuration error: ENCODER='v4l2': no v4l2h264enc on this machine (it has: x264)\n"
    )
    with pytest.raises(encoder_choice.EncoderCheckError) as caught:
        encoder_choice.parse_encoder_check(2, json.dumps({"chosen": None}), stderr)
    assert caught.value.config_error is True
    assert str(caught.value) == "ENCODER='v4l2': no v4l2h264enc on this machine (it has: x264)"


@pytest.mark.parametrize(
    ("returncode", "stdout", "stderr", "message"),
    [
        (
            1,
            "",
            "Traceback ...\nImportError: gi",
            "the encoder check failed (exit status 1): ImportError: gi",
        ),
        (-9, "", "", "the encoder check failed (exit status -9): no message"),
        (0, "not json", "", "the encoder check answered nonsense"),
        (0, json.dumps({"chosen": "nvenc", "reasons": {}, "available": []}), "", "answered nonsense"),
        (0, json.dumps({"chosen": "x264"}), "", "answered nonsense"),
    ],
)
def test_a_failed_check_is_not_a_configuration_error(returncode, stdout, stderr, message):
    with pytest.raises(encoder_choice.EncoderCheckError) as caught:
        encoder_choice.parse_encoder_check(returncode, stdout, stderr)
    assert caught.value.config_error is False
    assert message in str(caught.value)


def test_the_check_command_is_the_media_module():
    assert encoder_choice.encoder_check_command("/usr/bin/python3") == [
        "/usr/bin/python3",
        "-m",
        "streamer.media.encoder_check",
        "--relayed",
    ]
