"""Encoder descriptions as strings (every kind, both purposes, units and property names against
each element's documentation), x264 byte for byte as the pipelines emit it, the choice rules
that need no GStreamer, the controller's reading of the encoder check's answer, the pipelines
with each encoder, the fallback from a hardware encoder (fake clock), and the encoder in the
published state, the status and the metrics. Nothing here uses GStreamer (the self-test and the
command: test_encoder_check.py; real pipelines with x264 and openh264: test_encoder_wiring.py)."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import pytest

from streamer import config
from streamer.control import encoder_choice, policies
from streamer.control.publisher import StatePublisher
from streamer.media import encoders, pipelines
from streamer.media.encoders import AUTO_ORDER, ENCODERS, EncoderKind, Purpose, encoder_chain
from streamer.runtime import state
from streamer.web import metrics, status
from streamer.web.health import Health
from streamer.web.snapshot import Snapshot

BPS, GOP = 2_000_000, 30

EXPECTED = {
    ("x264", "stream"): "x264enc name=enc tune=zerolatency speed-preset=ultrafast bframes=0 key-int-max=30 "
    "bitrate=2000",
    ("x264", "record"): "x264enc name=enc speed-preset=superfast bitrate=2000 key-int-max=30 "
    "bframes=0 sliced-threads=true option-string=scenecut=0:rc-lookahead=0:sync-lookahead=0",
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
        "bframes=0 sliced-threads=true option-string=scenecut=0:rc-lookahead=0:sync-lookahead=0"
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


# --- The pipelines take the encoder from the settings (ENCODER is a kind in the workers)


def stack_settings(tmp_path: Path, encoder: str) -> config.Settings:
    return config.load({"HOME": str(tmp_path), "ENCODER": encoder})  # 1280x720@30, 2 and 4 Mbit/s


def test_auto_in_a_description_is_x264_byte_for_byte(tmp_path):
    """Under the controller ENCODER is always a kind; a description built from the bare settings
    (tests, bench, a worker run alone) gets x264, exactly as before encoders could be chosen."""
    auto, x264 = stack_settings(tmp_path, "auto"), stack_settings(tmp_path, "x264")
    assert pipelines.encoder_kind(auto) == pipelines.encoder_kind(x264) == "x264"
    assert pipelines.rtsp_media(auto) == pipelines.rtsp_media(x264)
    assert pipelines.recorder(auto, "/s") == pipelines.recorder(x264, "/s")
    assert pipelines.describe_encoder(x264) == "x264"
    assert pipelines.describe_encoder(auto) == "x264 (ENCODER=auto outside the controller: the fallback)"


def test_openh264_descriptions(tmp_path):
    s = stack_settings(tmp_path, "openh264")
    assert (
        "max-size-time=0 ! openh264enc name=stream_encoder usage-type=camera complexity=low "
        "rate-control=bitrate bitrate=2000000 gop-size=30 ! h264parse config-interval=-1 ! rtph264pay "
    ) in pipelines.rtsp_media(s)
    # The recording: RECORD_BITRATE in bit/s, twice a GOP of 15 frames as the backstop (forced
    # keyframes give IDR frames with openh264), no scene-cut keyframes.
    assert (
        "max-size-time=0 ! openh264enc name=video_encoder usage-type=camera complexity=medium "
        "rate-control=bitrate bitrate=4000000 gop-size=30 scene-change-detection=false ! h264parse "
        "! queue name=video_write_queue "
    ) in pipelines.recorder(s, "/s")


def test_v4l2_descriptions_and_its_keyframe_interval_by_gstreamer_version(tmp_path):
    """v4l2h264enc honours forced keyframes only from 1.24: on 1.22 (Raspberry Pi OS bookworm)
    the recording's own interval is the GOP itself, so chunks still split near 5.5 s."""
    s = stack_settings(tmp_path, "v4l2")
    assert (
        '! v4l2h264enc name=stream_encoder extra-controls="controls,video_bitrate=2000000,'
        'h264_i_frame_period=30,repeat_sequence_header=1" ! video/x-h264,level=(string)4 '
        "! h264parse config-interval=-1 ! rtph264pay"
    ) in pipelines.rtsp_media(s)
    on_1_22 = pipelines.recorder(s, "/s", gst_version=(1, 22))
    assert (
        '! v4l2h264enc name=video_encoder extra-controls="controls,video_bitrate=4000000,'
        'h264_i_frame_period=15,repeat_sequence_header=1" ! video/x-h264,level=(string)4 ! h264parse ! '
    ) in on_1_22
    assert pipelines.recorder(s, "/s") == on_1_22  # the oldest supported GStreamer by default
    assert "h264_i_frame_period=30," in pipelines.recorder(s, "/s", gst_version=(1, 24))


def test_nvv4l2_descriptions_convert_into_nvmm(tmp_path):
    s = stack_settings(tmp_path, "nvv4l2")
    assert (
        "! nvvidconv ! video/x-raw(memory:NVMM),format=NV12 ! nvv4l2h264enc name=stream_encoder "
        "bitrate=2000000 control-rate=constant_bitrate iframeinterval=30 idrinterval=30 "
        "insert-sps-pps=true preset-level=UltraFastPreset maxperf-enable=true ! h264parse config-interval=-1 "
    ) in pipelines.rtsp_media(s)
    # Forced keyframes are asked of it by its force-IDR signal, never checked here: the GOP
    # itself is its interval, whatever the GStreamer.
    assert (
        "! nvvidconv ! video/x-raw(memory:NVMM),format=NV12 ! nvv4l2h264enc name=video_encoder "
        "bitrate=4000000 control-rate=constant_bitrate iframeinterval=15 idrinterval=15 "
        "insert-sps-pps=true preset-level=MediumPreset ! h264parse ! "
    ) in pipelines.recorder(s, "/s", gst_version=(1, 26))


@pytest.mark.parametrize("kind", list(EncoderKind))
def test_every_kind_names_the_elements_the_workers_look_up(tmp_path, kind):
    s = stack_settings(tmp_path, kind)
    assert f" {ENCODERS[kind].factory} name={pipelines.STREAM_ENCODER_ELEMENT} " in pipelines.rtsp_media(s)
    recorded = pipelines.recorder(s, "/s")
    assert f" {ENCODERS[kind].factory} name={pipelines.VIDEO_ENCODER_ELEMENT} " in recorded


def test_how_a_keyframe_is_asked_of_each_encoder():
    """The pure half of gst.force_keyframe: a GstForceKeyUnit event, but nvv4l2h264enc's own
    force-IDR action signal (it ignores the event)."""
    assert {kind.value: encoders.keyframe_signal(kind) for kind in EncoderKind} == {
        "x264": None,
        "openh264": None,
        "v4l2": None,
        "nvv4l2": "force-IDR",
        "va": None,
        "vaapi": None,
    }


def test_config_knows_which_encoders_are_software_and_the_fallback():
    """The controller (no media import) decides the fallback from config's tuples."""
    software = tuple(kind.value for kind in EncoderKind if not encoders.is_hardware(kind))
    assert software == config.ENCODER_SOFTWARE == ("x264", "openh264")
    assert config.ENCODER_FALLBACK == encoders.FALLBACK


# --- The fallback from a hardware encoder (pure, fake clock)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_three_failures_of_the_encoding_workers_within_the_window_fall_back_to_x264():
    clock = FakeClock()
    fallback = policies.EncoderFallback("nvv4l2", limit=3, window_s=600, clock=clock)
    assert fallback.kind == "nvv4l2"
    assert fallback.failed("rtsp", "stalled (no frames for 5.1 s)") is None
    clock.now += 100
    assert fallback.failed("recorder", "exited with status 1") is None
    clock.now += 100
    why = fallback.failed("rtsp", "killed by SIGSEGV")
    assert why == (
        "nvv4l2 replaced by x264: 3 failures of the recorder or the RTSP worker within 600 s while it "
        "encoded (the last: rtsp killed by SIGSEGV)"
    )
    assert (fallback.kind, fallback.reason) == ("x264", why)
    # Said once; kept for the controller's life.
    assert fallback.failed("rtsp", "stalled (no frames for 5.0 s)") is None
    clock.now += 10_000
    assert fallback.kind == "x264"


def test_failures_that_leave_the_window_or_are_not_the_encoders_do_not_count():
    clock = FakeClock()
    fallback = policies.EncoderFallback("v4l2", limit=3, window_s=600, clock=clock)
    for worker, problem in [
        ("feeder", "stalled (no frames for 3.1 s)"),  # the camera, not an encoder
        ("web", "stalled (no report for 10.2 s)"),
        ("recorder", "killed by SIGKILL"),  # from outside: an operator, a test, the OOM killer
        ("rtsp", "killed by SIGTERM"),
    ]:
        assert fallback.failed(worker, problem) is None
    assert fallback.failures == 0
    fallback.failed("rtsp", "stalled (no frames for 5.1 s)")
    clock.now += 400
    fallback.failed("rtsp", "was not ready within 15 s")
    clock.now += 300  # the first has left the window
    assert fallback.failed("recorder", "stalled (no report for 20.1 s)") is None
    assert fallback.failures == 2 and fallback.kind == "v4l2"
    assert fallback.failed("recorder", "exited with status 1") is not None
    assert fallback.kind == "x264"


@pytest.mark.parametrize("chosen", ["x264", "openh264"])
def test_a_software_encoder_is_never_replaced(chosen):
    fallback = policies.EncoderFallback(chosen, limit=1)
    assert fallback.failed("rtsp", "stalled (no frames for 5.1 s)") is None
    assert fallback.kind == chosen and fallback.reason is None


# --- The controller's published state, the status and the metrics


def test_the_encoder_is_published_and_served_in_status_and_metrics(tmp_path):
    publisher = StatePublisher(str(tmp_path / "x.state.json"), logging.getLogger("test"))
    publisher.start()
    reasons = {"nvv4l2": "ok: self-test passed at 1280x720@30 in 0.6 s", "x264": "present, not tried"}
    publisher.encoder("auto", "nvv4l2", reasons)
    published = state.read(publisher.path)
    assert published is not None
    assert published.encoder == {
        "requested": "auto",
        "chosen": "nvv4l2",
        "reasons": reasons,
        "fallback": None,
    }
    s = config.load({"HOME": str(tmp_path)})
    snap = Snapshot(time.time(), published, True, Health(True, "up", None), {}, None, 0.0, False)
    assert status.build(s, snap)["encoder"] == published.encoder
    text = metrics.exposition(s, snap).decode()
    assert 'streamer_encoder_info{chosen="nvv4l2",requested="auto"} 1.0' in text
    assert "streamer_encoder_fallback 0.0" in text

    publisher.encoder("auto", "x264", reasons, "nvv4l2 replaced by x264: ...")
    published = state.read(publisher.path)
    snap = Snapshot(time.time(), published, True, Health(True, "up", None), {}, None, 0.0, False)
    assert status.encoder_section(s, snap)["fallback"] == "nvv4l2 replaced by x264: ..."
    text = metrics.exposition(s, snap).decode()
    assert 'streamer_encoder_info{chosen="x264",requested="auto"} 1.0' in text
    assert "streamer_encoder_fallback 1.0" in text
    publisher.finish()


def test_before_the_check_the_status_shows_what_was_requested_and_no_metric(tmp_path):
    s = config.load({"HOME": str(tmp_path), "ENCODER": "va"})
    for stack in (None, state.StackState()):
        snap = Snapshot(time.time(), stack, False, Health(False, "stopped", "x"), {}, None, 0.0, False)
        assert status.encoder_section(s, snap) == {
            "requested": "va",
            "chosen": None,
            "reasons": {},
            "fallback": None,
        }
        assert "streamer_encoder" not in metrics.exposition(s, snap).decode()
    # A state file without the section (a controller from before encoders) still reads.
    data = state.StackState().as_dict()
    del data["encoder"]
    assert state.StackState.from_dict(data).encoder == {}


def test_the_bitrate_changes_while_playing_in_each_encoders_own_unit():
    assert encoders.runtime_bitrate(EncoderKind.X264, 800_000) == ("bitrate", 800)  # kbit/s
    assert encoders.runtime_bitrate(EncoderKind.OPENH264, 800_000) == ("bitrate", 800_000)
    assert encoders.runtime_bitrate(EncoderKind.NVV4L2, 800_000) == ("bitrate", 800_000)
    assert encoders.runtime_bitrate(EncoderKind.VA, 800_000) == ("bitrate", 800)
    assert encoders.runtime_bitrate(EncoderKind.VAAPI, 800_000) == ("bitrate", 800)
    assert encoders.runtime_bitrate(EncoderKind.V4L2, 800_000) is None  # a control read at start
