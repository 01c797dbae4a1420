"""ENCODER in the real stack (synthetic camera, 320x240@30): with ENCODER=openh264 an RTSP viewer
decodes the stream at the configured size, a late joiner gets a keyframe at once, a chunk
plays, and the state, /api/v1/status and /metrics say openh264; with the default (auto) this
machine's stack runs x264 and its workers never see ``auto``; a requested encoder this machine
lacks stops the controller with exit status 2 and one line, before any worker starts.

Without a stack: the descriptions, the policies and the published state in test_encoders.py,
real x264/openh264 pipelines (forced keyframes, chunks) in test_encoder_wiring.py, the
self-test and the check command in test_encoder_check.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamer.media import encoder_check
from streamer.media.rtsp_client import RtspClient
from streamer.testing import stack_state
from tests.harness import TEST_HEIGHT, TEST_WIDTH, url
from tests.media import CHUNK_S, decodes_cleanly, video_info, wait_for_chunks
from tests.test_web_api import api_status, http_env, metrics, start_web_stack

# The workers that encode: they start once the encoder check has chosen (the feeder, which encodes
# nothing, starts while it runs, with ENCODER as set).
ENCODING_WORKERS = ("recorder", "rtsp")


def environment_of(pid: int) -> dict[str, str]:
    """A running process's environment, as it was started."""
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(entry.decode().partition("=")[::2] for entry in raw.split(b"\0") if b"=" in entry)


def present() -> list[str]:
    return [kind for kind, why in encoder_check.available_encoders().items() if why == "ok"]


def test_the_stack_with_openh264_streams_records_and_says_so(env, start):
    http_env(env, ENCODER="openh264", LOG_LEVEL="DEBUG")
    drone = start_web_stack(start, env)

    # The controller's choice: checked once, given to the stack's workers.
    drone.wait_for(r"encoder_check: encoder: openh264 \(requested; ok: self-test passed at 320x240@30")
    drone.wait_for(r"drone: encoder for the stack: openh264 \(ENCODER=openh264; ok: self-test passed")
    current = stack_state(env)
    assert current is not None
    assert current.encoder["requested"] == current.encoder["chosen"] == "openh264", current.encoder
    assert current.encoder["fallback"] is None
    for name in ENCODING_WORKERS:
        assert environment_of(current.workers[name].pid)["ENCODER"] == "openh264", name
    drone.wait_for(r"rtsp: encoder: openh264$")
    drone.wait_for(r"recorder: video encoder: openh264$")

    # The API and the metrics.
    encoder = api_status(env)["encoder"]
    assert (encoder["requested"], encoder["chosen"], encoder["fallback"]) == ("openh264", "openh264", None)
    assert encoder["reasons"]["openh264"].startswith("ok: self-test passed at 320x240@30")
    samples = metrics(env)
    assert samples[("streamer_encoder_info", (("chosen", "openh264"), ("requested", "openh264")))] == 1
    assert samples[("streamer_encoder_fallback", ())] == 0

    # A viewer decodes the stream at the configured size; a late joiner gets a keyframe at once
    # (openh264enc honours GstForceKeyUnit: an IDR frame).
    first = RtspClient(url(env), "udp").start()
    try:
        assert first.wait_frames(45, 30), first.report()
        late = RtspClient(url(env), "udp").start()
        try:
            assert late.wait_frames(30, 20), late.report()
        finally:
            late.stop()
    finally:
        first.stop()
    assert first.size == late.size == (TEST_WIDTH, TEST_HEIGHT)
    assert not first.errors and not late.errors
    drone.wait_for(r"forced a keyframe for new viewers")
    assert late.deltas_before_keyframe is not None and late.deltas_before_keyframe <= 5, late.report()
    print(f"openh264 late join: first clean frame after {late.first_frame_s * 1000:.0f} ms")

    # A chunk plays: H.264 at the configured size, 5.5 s, clean.
    session = wait_for_chunks(Path(env["SSD_PATH"]), 2, timeout=40)
    chunks = sorted(session.glob("video_*.mp4"))[:2]
    durations = []
    for chunk in chunks:
        codec, width, height, duration = video_info(chunk)
        assert (codec, width, height) == ("h264", TEST_WIDTH, TEST_HEIGHT), chunk
        assert decodes_cleanly(chunk) == "", chunk
        durations.append(duration)
    assert abs(durations[0] - CHUNK_S) <= 0.1, durations
    print(f"openh264 chunk durations: {durations}")
    assert drone.stop() == 0


def test_auto_runs_x264_here_and_the_workers_never_see_auto(env, start):
    if set(present()) - {"x264", "openh264"}:
        pytest.skip("this machine has a hardware encoder: auto may choose it")
    env.update(ENCODER="auto", ENABLE_IMAGES="0")
    drone = start("streamer.drone", env)
    current = drone.wait_up()
    assert drone.matches(r"drone: encoder for the stack: x264 \(ENCODER=auto; ok: the software fallback")
    assert drone.matches(r"encoder_check: encoder: x264, chosen by auto \(")
    assert current.encoder["requested"] == "auto" and current.encoder["chosen"] == "x264"
    assert set(current.encoder["reasons"]) == {"x264", "openh264", "v4l2", "nvv4l2", "va", "vaapi"}
    for name in ENCODING_WORKERS:
        assert environment_of(current.workers[name].pid)["ENCODER"] == "x264", name
    assert not drone.matches(r"ENCODER=auto outside the controller")
    assert drone.stop() == 0


def test_a_missing_encoder_stops_the_controller_with_2_and_one_line(env, start, workdir: Path):
    if "v4l2" in present():
        pytest.skip("this machine has a V4L2 H.264 encoder")
    has = ", ".join(present())
    env.update(ENCODER="v4l2")
    drone = start("streamer.drone", env)
    assert drone.wait(60) == 2, drone.output
    lines = [m.string for m in drone.matches(r"configuration error")]
    assert len(lines) == 1, drone.output
    assert lines[0].endswith(
        f"drone: configuration error: ENCODER='v4l2': no v4l2h264enc on this machine (it has: {has})"
    ), lines
    # The feeder starts while the check runs, once: no retry, and no worker that encodes.
    assert len(drone.matches(r"started feeder \(pid")) <= 1, drone.output
    assert not drone.matches(r"started (recorder|rtsp) \(pid"), drone.output
    assert stack_state(env) is None
    assert not list(workdir.glob("*.lock"))
