"""The encoder self-test through real elements (x264 and openh264 at 320x240, a test double that
never outputs), the choice ``auto`` makes around a failing candidate, and the encoder check as a
command, run the way the controller runs it. No stack is started."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from streamer.control import encoder_choice
from streamer.media import encoder_check, encoders
from streamer.media.encoders import EncoderKind, Purpose
from streamer.media.gst import Gst
from tests.harness import ROOT

WIDTH, HEIGHT, FPS = 320, 240, 30
DEADLINE_S = 2.0
# A double for an encoder that exists but never outputs: identity holds each frame for 60 s in
# front of a real encoder (what a hardware encoder stuck in its driver looks like from outside).
STALLS = "identity sleep-time=60000000 ! x264enc tune=zerolatency"
# One that drops every frame: the stream ends with nothing encoded.
DROPS = "identity drop-probability=1.0 ! x264enc tune=zerolatency"
# How long past the deadline stopping a stalled child may take: SIGTERM, its grace, SIGKILL.
STOP_MARGIN_S = encoder_check.SELF_TEST_TERM_GRACE_S + encoder_check.SELF_TEST_KILL_WAIT_S + 1.0


def chain(kind: str, purpose: str) -> str:
    return encoders.encoder_chain(
        kind, name="enc", bitrate_bps=500_000, keyframe_interval=FPS, purpose=purpose
    )


@pytest.mark.parametrize("purpose", list(Purpose))
@pytest.mark.parametrize("kind", ["x264", "openh264"])
def test_the_software_encoders_pass_their_self_test(kind, purpose):
    assert encoder_check.encoder_self_test(chain(kind, purpose), WIDTH, HEIGHT, FPS) is None


def test_an_encoder_that_stalls_fails_within_its_deadline():
    started = time.monotonic()
    why = encoder_check.encoder_self_test(STALLS, WIDTH, HEIGHT, FPS, deadline_s=DEADLINE_S)
    took = time.monotonic() - started
    assert why is not None and why.startswith(f"no answer within {DEADLINE_S:g} s: stalled (")
    assert DEADLINE_S <= took < DEADLINE_S + STOP_MARGIN_S


def test_a_child_that_ignores_sigterm_is_killed():
    """What a process stuck in a driver call gets: SIGTERM to its group, then SIGKILL."""
    process = subprocess.Popen(
        ["sh", "-c", "trap '' TERM; sleep 30 & wait"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    time.sleep(0.2)  # the trap is set
    why = encoder_check._kill_stalled(process, 0.2)
    assert why == "no answer within 0.2 s: stalled (killed with SIGKILL)"
    assert process.poll() == -9


def test_an_encoder_that_drops_everything_fails_at_once():
    assert encoder_check.encoder_self_test(DROPS, WIDTH, HEIGHT, FPS) == "no frame came out"


def test_a_chain_that_cannot_be_built_is_named():
    why = encoder_check.encoder_self_test("nosuchenc bitrate=1", WIDTH, HEIGHT, FPS)
    assert why is not None and why.startswith("cannot build the pipeline: ") and "nosuchenc" in why


@pytest.mark.parametrize("purpose", list(Purpose))
@pytest.mark.parametrize("kind", list(EncoderKind))
def test_every_caps_in_every_chain_parses(kind, purpose):
    """What can be checked of a chain without its element: the caps between the elements."""
    caps = [part for part in chain(kind, purpose).split(" ! ") if part.startswith("video/")]
    for text in caps:
        assert Gst.Caps.from_string(text) is not None, text


def test_this_machine_has_the_software_encoders():
    found = encoder_check.available_encoders()
    assert set(found) == {kind.value for kind in EncoderKind}
    assert found["x264"] == found["openh264"] == "ok"
    for kind, why in found.items():
        if why != "ok":
            element = why.split()[1]
            assert element == encoders.ENCODERS[EncoderKind(kind)].factory, why
            assert encoders.ELEMENT_PACKAGES[element] in why


def test_auto_skips_a_candidate_that_stalls_and_falls_back_to_x264(caplog):
    caplog.set_level(logging.INFO, logger="test_choice")
    started = time.monotonic()
    choice = encoder_check.choose_encoder(
        "auto",
        width=WIDTH,
        height=HEIGHT,
        fps=FPS,
        bitrate_bps=500_000,
        deadline_s=DEADLINE_S,
        chains={"nvv4l2": STALLS, "vaapi": DROPS},
        log=logging.getLogger("test_choice"),
    )
    took = time.monotonic() - started
    assert choice.chosen == "x264" and choice.error is None
    assert choice.reasons["nvv4l2"].startswith(
        f"self-test failed at 320x240@30: no answer within {DEADLINE_S:g} s: stalled"
    )
    assert choice.reasons["vaapi"] == "self-test failed at 320x240@30: no frame came out"
    assert choice.reasons["x264"] == "ok: the software fallback (not self-tested)"
    assert choice.reasons["openh264"].startswith("present, never chosen by auto")
    assert {"nvv4l2", "vaapi", "x264", "openh264"} <= set(choice.available)
    assert took < DEADLINE_S + STOP_MARGIN_S + 5
    logged = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "test_choice"]
    assert ("WARNING", f"encoder nvv4l2 skipped: {choice.reasons['nvv4l2']}") in logged
    assert logged[-1][0] == "INFO" and logged[-1][1].startswith("encoder: x264, chosen by auto (")
    assert "nvv4l2: self-test failed" in logged[-1][1]


def test_auto_takes_the_first_candidate_that_passes():
    choice = encoder_check.choose_encoder(
        "auto",
        width=WIDTH,
        height=HEIGHT,
        fps=FPS,
        bitrate_bps=500_000,
        chains={"v4l2": chain("openh264", "stream"), "va": STALLS},
    )
    assert choice.chosen == "v4l2"
    assert choice.reasons["v4l2"].startswith("ok: self-test passed at 320x240@30 in ")
    assert choice.reasons["va"] == choice.reasons["x264"] == "present, not tried: v4l2 comes first"


def test_a_requested_encoder_that_fails_its_self_test_is_refused():
    choice = encoder_check.choose_encoder(
        "va", width=WIDTH, height=HEIGHT, fps=FPS, bitrate_bps=500_000, chains={"va": DROPS}
    )
    assert choice.chosen is None
    assert choice.error == "ENCODER='va': vah264enc self-test failed at 320x240@30: no frame came out"


# --- The command, as the controller runs it


def check_env(tmp_path: Path, **settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("ENCODER", "VIDEO_WIDTH", "VIDEO_HEIGHT")}
    return {**env, "HOME": str(tmp_path), "VIDEO_WIDTH": str(WIDTH), "VIDEO_HEIGHT": str(HEIGHT), **settings}


@pytest.mark.skipif(
    encoder_check.available_encoders()["v4l2"] == "ok", reason="this machine has a V4L2 H.264 encoder"
)
def test_a_requested_encoder_that_is_missing_stops_with_one_line(tmp_path: Path):
    has = ", ".join(k for k, why in encoder_check.available_encoders().items() if why == "ok")
    expected = f"ENCODER='v4l2': no v4l2h264enc on this machine (it has: {has})"
    assert has == "x264, openh264"  # this machine: the brief's example
    with pytest.raises(encoder_choice.EncoderCheckError) as caught:
        encoder_choice.run_encoder_check(check_env(tmp_path, ENCODER="v4l2"), python=sys.executable)
    assert caught.value.config_error is True
    assert str(caught.value) == expected
    # The command itself: exit status 2, that one line on stderr, the reasons on stdout.
    result = subprocess.run(
        encoder_choice.encoder_check_command(sys.executable),
        cwd=ROOT,
        env=check_env(tmp_path, ENCODER="v4l2"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"encoder_check: configuration error: {expected}"]
    assert '"chosen": null' in result.stdout


def test_the_controller_learns_what_auto_chose(tmp_path: Path, caplog):
    caplog.set_level(logging.INFO, logger="encoders_test")
    choice = encoder_choice.run_encoder_check(
        check_env(tmp_path, ENCODER="auto"), log=logging.getLogger("encoders_test")
    )
    hardware = {k for k, why in encoder_check.available_encoders().items() if why == "ok"} - {
        "x264",
        "openh264",
    }
    if not hardware:
        assert choice.chosen == "x264"
        assert choice.reasons["x264"] == "ok: the software fallback (not self-tested)"
    assert set(choice.reasons) == {kind.value for kind in EncoderKind}
    assert "x264" in choice.available
    relayed = [r.getMessage() for r in caplog.records if r.name == "encoders_test"]
    assert any(message.startswith(f"encoder: {choice.chosen}") for message in relayed), relayed
