"""The encoder choice wired into the workers, through real elements (x264 and openh264, the
encoders this machine has) but no stack: the descriptions parse into the named elements, a
keyframe asked for a new viewer and the recording's timed keyframes come out where asked
(``gst.force_keyframe``, the one glue for both), the recorder's video branch makes chunks of
5.5 s with openh264, the controller's non-blocking encoder check and its use of the choice
(without starting a worker), and the doctor's encoder row. The stack itself with
ENCODER=openh264: test_encoders_stack.py."""

from __future__ import annotations

import dataclasses
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from streamer import config, recorder
from streamer.control import encoder_choice
from streamer.doctor import gstreamer as doctor_gstreamer
from streamer.media import camera, encoders, gst, pipelines
from streamer.media.encoders import EncoderKind, Purpose
from streamer.media.gst import Gst
from streamer.runtime import state
from streamer.testing import alive
from tests.harness import TEST_FPS, TEST_HEIGHT, TEST_WIDTH
from tests.media import CHUNK_S, decodes_cleanly, video_info

SOFTWARE = ["x264", "openh264"]
FRAME_NS = Gst.SECOND // TEST_FPS
RAW_CAPS = f"video/x-raw,format=I420,width={TEST_WIDTH},height={TEST_HEIGHT},framerate={TEST_FPS}/1"
FRAME_BYTES = TEST_WIDTH * TEST_HEIGHT * 3 // 2
# No keyframe of the encoder's own within a test: every keyframe seen was asked for.
NEVER = 1000


def settings(tmp_path: Path, kind: str, **more: str) -> config.Settings:
    return config.load({"HOME": str(tmp_path), "CAMERA": "test", "ENCODER": kind, **more})


# --- The descriptions


@pytest.mark.parametrize("kind", SOFTWARE)
def test_every_description_parses_into_the_named_elements(tmp_path, kind):
    s = settings(tmp_path, kind)
    factory = encoders.ENCODERS[EncoderKind(kind)].factory
    for description, name in [
        (pipelines.rtsp_media(s), pipelines.STREAM_ENCODER_ELEMENT),
        (pipelines.recorder(s, "/tmp/session", gst_version=gst.version()), pipelines.VIDEO_ENCODER_ELEMENT),
    ]:
        pipeline = Gst.parse_launch(description)
        encoder = pipeline.get_by_name(name)
        assert encoder is not None and encoder.get_factory().get_name() == factory, description
        for element in (pipelines.PAYLOADER_ELEMENT, pipelines.VIDEO_SINK_ELEMENT):
            if f"name={element} " in description:
                assert pipeline.get_by_name(element) is not None
        pipeline.set_state(Gst.State.NULL)


@pytest.mark.parametrize("kind", ["v4l2", "nvv4l2", "va", "vaapi"])
def test_a_hardware_description_fails_to_parse_here_only_for_its_missing_element(tmp_path, kind):
    """This machine has no hardware encoder: its description must fail on that element (what
    the encoder check and the doctor report), not on a syntax error."""
    spec = encoders.ENCODERS[EncoderKind(kind)]
    missing = [e for e in spec.elements if Gst.ElementFactory.find(e) is None]
    if not missing:
        pytest.skip(f"this machine has {spec.factory}")
    with pytest.raises(gst.GLib.Error) as caught:
        Gst.parse_launch(pipelines.rtsp_media(settings(tmp_path, kind)))
    assert any(element in caught.value.message for element in missing), caught.value.message


# --- Forced keyframes, through the one glue function


class Encoding:
    """``kind``'s chain for ``purpose`` between an appsrc of gray frames and an appsink of
    H.264 access units; frames are pushed one by one, with their times."""

    def __init__(self, kind: str, purpose: Purpose) -> None:
        chain = encoders.encoder_chain(
            kind, name="enc", bitrate_bps=500_000, keyframe_interval=NEVER, purpose=purpose
        )
        self.pipeline = Gst.parse_launch(
            f'appsrc name=src format=time caps="{RAW_CAPS}" ! {chain} ! h264parse '
            "! video/x-h264,stream-format=byte-stream,alignment=au "
            "! appsink name=out sync=false emit-signals=false max-buffers=0 enable-last-sample=false"
        )
        self.encoder = self.pipeline.get_by_name("enc")
        self.source = self.pipeline.get_by_name("src")
        self.sink = self.pipeline.get_by_name("out")
        self.pushed = 0
        self.out: list[tuple[int, bool]] = []  # (pts, keyframe) of each access unit out
        assert self.pipeline.set_state(Gst.State.PLAYING) != Gst.StateChangeReturn.FAILURE

    def push(self, frames: int) -> None:
        for _ in range(frames):
            buffer = Gst.Buffer.new_wrapped(bytes([128]) * FRAME_BYTES)
            buffer.pts, buffer.duration = self.pushed * FRAME_NS, FRAME_NS
            assert self.source.emit("push-buffer", buffer) == Gst.FlowReturn.OK
            self.pushed += 1

    def pull(self, frames: int, timeout_s: float = 10.0) -> None:
        """Wait until ``frames`` more access units came out."""
        wanted = len(self.out) + frames
        deadline = time.monotonic() + timeout_s
        while len(self.out) < wanted:
            assert time.monotonic() < deadline, f"{len(self.out)} of {wanted} frames came out"
            sample = self.sink.emit("try-pull-sample", 100 * Gst.MSECOND)
            if sample is not None:
                buffer = sample.get_buffer()
                self.out.append((buffer.pts, not buffer.has_flags(Gst.BufferFlags.DELTA_UNIT)))

    def finish(self) -> list[int]:
        """End the stream; the frame numbers (by time from the first frame: x264 shifts its
        times by 1000 hours) that came out as keyframes."""
        self.source.emit("end-of-stream")
        self.pull(self.pushed - len(self.out))
        self.pipeline.set_state(Gst.State.NULL)
        first = min(pts for pts, _key in self.out)
        return sorted(round((pts - first) / FRAME_NS) for pts, key in self.out if key)


@pytest.mark.parametrize("kind", SOFTWARE)
def test_a_keyframe_for_a_new_viewer_comes_at_once(kind):
    """The RTSP worker's request ("as soon as possible", an upstream event): the next frame the
    stream's encoder takes is a keyframe, long before its own interval."""
    encoding = Encoding(kind, Purpose.STREAM)
    encoding.push(10)
    encoding.pull(10)  # every frame so far encoded: the request applies to what comes next
    assert gst.force_keyframe(encoding.encoder, kind) == gst.BY_EVENT
    encoding.push(10)
    keyframes = encoding.finish()
    assert keyframes[0] == 0 and len(keyframes) == 2, keyframes
    assert 10 <= keyframes[1] <= 12, keyframes


@pytest.mark.parametrize("kind", SOFTWARE)
def test_the_recordings_keyframes_come_at_their_times(kind):
    """The recorder's request (``force_keyframes``: a downstream event naming its frame, from a
    probe on the encoder's sink pad): a keyframe exactly at each GOP's first frame."""
    encoding = Encoding(kind, Purpose.RECORD)
    gst.force_keyframes(encoding.encoder, lambda offset_ns: offset_ns // (10 * FRAME_NS), kind)
    encoding.push(45)
    assert encoding.finish() == [0, 10, 20, 30, 40]


class FakeJetsonEncoder:
    """What the glue may touch of an nvv4l2h264enc: its action signal, never its pads (this
    machine has no Jetson)."""

    def __init__(self) -> None:
        self.emitted: list[str] = []

    def emit(self, name: str) -> None:
        self.emitted.append(name)

    def get_static_pad(self, name: str) -> None:
        raise AssertionError(f"nvv4l2h264enc ignores GstForceKeyUnit: no event into its {name} pad")


def test_a_jetson_encoder_gets_its_force_idr_signal_for_both_uses():
    encoder = FakeJetsonEncoder()
    assert gst.force_keyframe(encoder, "nvv4l2") == gst.BY_SIGNAL  # a new viewer
    assert gst.force_keyframe(encoder, "nvv4l2", (0, 0, 0, 1)) == gst.BY_SIGNAL  # the recording's
    assert encoder.emitted == ["force-IDR", "force-IDR"]


# --- The recorder's video branch with openh264


def test_openh264_chunks_are_whole_gops_of_5_5_s_and_decode(tmp_path):
    """The recorder's own video branch (its description, ``recorder.pace_video``), run faster
    than real time on a synthetic camera (as test_chunk_keyframes.py does for x264)."""
    fps, seconds = TEST_FPS, 13
    s = settings(tmp_path, "openh264", VIDEO_FPS=str(fps), ENABLE_IMAGES="0")
    s = dataclasses.replace(s, video_width=TEST_WIDTH, video_height=TEST_HEIGHT)
    description = pipelines.recorder(s, str(tmp_path), gst_version=gst.version())
    (branch,) = description.split(f" {pipelines.RECORDER_TEE_ELEMENT}. ! ")[1:]
    assert " openh264enc name=video_encoder " in branch
    branch = branch.replace("leaky=downstream", "leaky=no")  # a fast source would fill it
    pipeline = Gst.parse_launch(
        f"videotestsrc num-buffers={seconds * fps} pattern=ball ! {camera.raw_caps(s)} ! {branch}"
    )
    recorder.pace_video(pipeline.get_by_name, fps, pipelines.encoder_kind(s))
    pipeline.set_state(Gst.State.PLAYING)
    try:
        message = pipeline.get_bus().timed_pop_filtered(
            60 * Gst.SECOND, Gst.MessageType.EOS | Gst.MessageType.ERROR
        )
    finally:
        pipeline.set_state(Gst.State.NULL)
    assert message is not None and message.type == Gst.MessageType.EOS, message
    chunks = sorted(tmp_path.glob("video_*.mp4"))
    assert len(chunks) == 3, chunks
    for chunk in chunks:
        codec, width, height, _duration = video_info(chunk)
        assert (codec, width, height) == ("h264", TEST_WIDTH, TEST_HEIGHT), chunk
        assert decodes_cleanly(chunk) == "", chunk
    durations = [video_info(chunk)[3] for chunk in chunks]
    for duration in durations[:-1]:
        assert abs(duration - CHUNK_S) <= 0.1, durations
    print(f"openh264 chunk durations: {durations}")


# --- The controller's side: the check as a child, while its loop goes on


def check_env(tmp_path: Path, **more: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(config.OWN_PREFIXES) and k != "ENCODER"}
    return {
        **env,
        "HOME": str(tmp_path),
        "VIDEO_WIDTH": str(TEST_WIDTH),
        "VIDEO_HEIGHT": str(TEST_HEIGHT),
        **more,
    }


def test_the_check_answers_while_the_callers_loop_goes_on(tmp_path):
    check = encoder_choice.EncoderCheck(check_env(tmp_path, ENCODER="openh264")).start()
    turns = 0
    while (choice := check.poll()) is None:
        turns += 1
        time.sleep(0.02)
    assert turns > 0  # the check took a while, and never held the caller up
    assert choice.chosen == "openh264"
    assert choice.reasons["openh264"].startswith("ok: self-test passed at 320x240@30")
    assert not alive(check.pid)


def test_a_check_that_does_not_answer_is_killed_at_its_deadline(tmp_path):
    hanging = tmp_path / "python"
    hanging.write_text("#!/bin/sh\nexec sleep 30\n")
    hanging.chmod(0o755)
    check = encoder_choice.EncoderCheck(check_env(tmp_path), timeout_s=0.5, python=str(hanging)).start()
    started = time.monotonic()
    with pytest.raises(encoder_choice.EncoderCheckError) as caught:
        while check.poll() is None:
            time.sleep(0.02)
    assert time.monotonic() - started < 3.0
    assert caught.value.config_error is False
    assert str(caught.value) == "the encoder check did not answer within 0.5 s"
    assert not alive(check.pid)


# --- The doctor's row: the same choice


def test_the_doctor_names_the_encoder_auto_picks_and_what_a_missing_one_needs(tmp_path):
    auto, kind = doctor_gstreamer.encoder(settings(tmp_path, "auto"))
    hardware = [k for k, why in encoders_present().items() if why == "ok" and encoders.is_hardware(k)]
    if not hardware:
        assert auto.ok and kind == "x264"
        assert auto.detail.startswith("ENCODER=auto → x264 (ok: the software fallback (not self-tested)); ")
        assert "this machine has: x264, openh264" in auto.detail
    if "v4l2" not in hardware:
        refused, kind = doctor_gstreamer.encoder(settings(tmp_path, "v4l2"))
        assert not refused.ok and kind == "x264"
        assert refused.detail.startswith("ENCODER='v4l2': no v4l2h264enc on this machine (it has: ")
        if not hardware:
            assert refused.detail.endswith("; auto would pick x264")
        assert "set ENCODER to one this machine has" in str(refused.fix)


def test_the_doctor_checks_the_pipelines_with_the_chosen_encoder(tmp_path):
    rows = doctor_gstreamer.checks(settings(tmp_path, "openh264"))
    by_name = {row.name: row for row in rows}
    assert by_name["encoder"].ok and " → openh264 (ok: self-test passed" in by_name["encoder"].detail
    assert "openh264enc" in by_name["GStreamer elements"].detail.split(", ")
    assert "x264enc" not in by_name["GStreamer elements"].detail.split(", ")
    assert all(row.ok for row in rows), rows


def encoders_present() -> dict[str, str]:
    from streamer.media import encoder_check

    return encoder_check.available_encoders()


def test_the_encoder_check_command_still_answers_for_the_controller(tmp_path):
    """What the controller reads (``encoder_choice.parse_encoder_check``) from the command."""
    result = subprocess.run(
        encoder_choice.encoder_check_command(sys.executable),
        env=check_env(tmp_path, ENCODER="auto"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    choice = encoder_choice.parse_encoder_check(result.returncode, result.stdout, result.stderr)
    assert choice.chosen in config.ENCODER_KINDS


# --- The controller's use of the check, without a stack (no worker is started)


def controller_for(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **settings: str):
    from streamer.control.controller import Controller

    env = check_env(tmp_path, SHM_RECORDER_SOCKET=str(tmp_path / "rec.sock"), **settings)
    for name in [name for name in os.environ if name not in env]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)  # the check child gets the controller's environment
    controller = Controller(config.load(env), logging.getLogger("controller_test"))
    controller.published.start()
    return controller


def choose_encoder(controller) -> None:
    """What the controller does at its start: the check, then (once the feeder is up) its answer."""
    controller._encoder_check = controller._start_encoder_check()
    controller._choose_encoder()


def test_the_controller_gives_the_stack_the_checks_choice(tmp_path, monkeypatch):
    controller = controller_for(tmp_path, monkeypatch, ENCODER="openh264")
    try:
        choose_encoder(controller)
        assert controller.encoder is not None and controller.encoder.kind == "openh264"
        assert controller._stack_environment()["ENCODER"] == "openh264"
        published = state.read(controller.published.path)
        assert published is not None
        assert published.encoder["requested"] == published.encoder["chosen"] == "openh264"
        assert published.encoder["fallback"] is None
        # openh264 is software: failures of the workers never replace it.
        for _ in range(5):
            controller._encoder_failed("rtsp", "stalled (no frames for 5.1 s)")
        assert controller._stack_environment()["ENCODER"] == "openh264"
    finally:
        controller.published.finish()


def test_the_controller_refuses_a_missing_encoder_before_any_start(tmp_path, monkeypatch):
    if encoders_present()["v4l2"] == "ok":
        pytest.skip("this machine has a V4L2 H.264 encoder")
    controller = controller_for(tmp_path, monkeypatch, ENCODER="v4l2")
    try:
        with pytest.raises(encoder_choice.EncoderCheckError) as caught:
            choose_encoder(controller)
        assert caught.value.config_error
        assert str(caught.value).startswith("ENCODER='v4l2': no v4l2h264enc on this machine (it has: ")
        assert controller.encoder is None
    finally:
        controller.published.finish()


def test_the_controller_falls_back_to_x264_after_repeated_failures_of_a_hardware_encoder(
    tmp_path, monkeypatch
):
    """As if the check had chosen the Pi's encoder: the third stall of the stream makes the
    next start x264, published with the reason."""
    from streamer.control.policies import EncoderFallback

    controller = controller_for(tmp_path, monkeypatch, ENCODER="auto")
    try:
        reasons = {"v4l2": "ok: self-test passed at 320x240@30 in 0.4 s"}
        controller.encoder_choice = encoder_choice.EncoderChoice("v4l2", reasons, ("v4l2", "x264"))
        controller.encoder = EncoderFallback("v4l2")
        controller.published.encoder("auto", "v4l2", reasons)
        controller._encoder_failed("rtsp", "stalled (no frames for 5.2 s)")
        controller._encoder_failed("recorder", "killed by SIGKILL")  # from outside: not counted
        controller._encoder_failed("rtsp", "stalled (no frames for 5.1 s)")
        assert controller._stack_environment()["ENCODER"] == "v4l2"
        controller._encoder_failed("rtsp", "exited with status 1")
        assert controller._stack_environment()["ENCODER"] == "x264"
        published = state.read(controller.published.path)
        assert published is not None and published.encoder["chosen"] == "x264"
        assert published.encoder["fallback"].startswith("v4l2 replaced by x264: 3 failures")
        assert published.encoder["reasons"] == reasons
    finally:
        controller.published.finish()
