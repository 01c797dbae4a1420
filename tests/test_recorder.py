"""The recorder in the real stack (synthetic camera), checked with FFmpeg's tools: chunks,
snapshots and the latest_* links of a 20 s run, what a killed recorder or a lost feeder leaves,
and which recordings the settings turn on.

Chunk lengths at other frame rates and under dropped frames are in test_chunk_keyframes.py;
RECORD_REQUIRE_MOUNT is in test_require_mount.py."""

from __future__ import annotations

import os
import re
import shutil
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest

from streamer.media import shm
from streamer.runtime import state
from streamer.storage import layout
from streamer.testing import wait_state
from tests.harness import (
    TEST_FPS,
    TEST_HEIGHT,
    TEST_WIDTH,
    Proc,
    assert_no_segments_left,
    shm_segments,
    short_tempdir,
    stack_env,
)
from tests.media import (
    CHUNK_S,
    LinkWatch,
    decodes_cleanly,
    jpeg_size,
    off_whole_frames_ms,
    packet_times,
    video_info,
    wait_for_chunks,
)

RUN_SECONDS = 20
LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")


def log_time(line: str) -> float:
    match = LOG_TIME.match(line)
    assert match, line
    return datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()


def sessions(ssd: Path) -> list[Path]:
    return sorted(p for p in ssd.iterdir() if p.is_dir() and p.name != layout.LATEST_DIR)


@dataclass
class Run:
    ssd: Path
    output: str
    exit_code: int
    recording_seconds: float
    links: LinkWatch


@pytest.fixture(scope="module")
def run() -> Iterator[Run]:
    """The whole stack with the recorder for ~20 s, the latest_* links polled all along."""
    workdir = short_tempdir()
    ssd = workdir / "ssd"
    segments_before = shm_segments()
    drone = Proc("streamer.drone", stack_env(workdir, ENABLE_RTSP="0"))
    watch = LinkWatch(ssd)
    try:
        drone.wait_for("recorder: receiving frames")
        watch.start()
        time.sleep(RUN_SECONDS)  # the length of the recording under test, not a wait for a condition
        drone.signal(signal.SIGTERM)
        exit_code = drone.wait(30)
    finally:
        watch.stop()
        if drone.popen.poll() is None:
            drone.kill_group()
    started = log_time(drone.matches(r".* recorder: receiving frames")[0].group(0))
    finished = log_time(drone.matches(r".* recorder: end of stream")[0].group(0))
    yield Run(ssd, drone.output, exit_code, finished - started, watch)
    assert_no_segments_left(segments_before)
    shutil.rmtree(workdir, ignore_errors=True)


def chunks_of(run: Run) -> list[Path]:
    (session,) = sessions(run.ssd)
    return sorted(session.glob("video_*.mp4"))


def test_stack_stops_cleanly_and_recorder_finalises(run: Run):
    assert run.exit_code == 0, run.output
    assert "recorder stopped (exited with status 0)" in run.output
    assert re.search(r"recorder: stopped: \d+ chunks and \d+ snapshots finished", run.output)


def test_chunks_are_h264_of_5_5_s_and_cover_the_wall_time(run: Run):
    chunks = chunks_of(run)
    assert len(chunks) >= 3, chunks
    infos = [video_info(chunk) for chunk in chunks]
    for chunk, (codec, width, height, _duration) in zip(chunks, infos, strict=True):
        assert (codec, width, height) == ("h264", TEST_WIDTH, TEST_HEIGHT), chunk
        assert decodes_cleanly(chunk) == "", chunk
    durations = [info[3] for info in infos]
    # The camera's frame times (carried through shared memory), whole periods apart; the MP4
    # timescale rounds each to a fraction of a millisecond.
    for chunk in chunks:
        assert off_whole_frames_ms(packet_times(chunk), TEST_FPS) < 0.5, chunk
    for duration in durations[:-1]:
        assert abs(duration - CHUNK_S) <= 0.1, durations
    assert 0 < durations[-1] <= CHUNK_S + 0.1, durations
    # One continuous timeline: the chunks add up to the time the recorder was recording.
    assert abs(sum(durations) - run.recording_seconds) <= 0.5, (durations, run.recording_seconds)


def test_one_jpeg_per_second_at_full_size(run: Run):
    (session,) = sessions(run.ssd)
    images = sorted(session.glob("image_*.jpg"))
    expected = run.recording_seconds
    assert expected - 1.5 <= len(images) <= expected + 1.5, (len(images), expected)
    for image in images:
        assert jpeg_size(image) == (TEST_WIDTH, TEST_HEIGHT), image


def test_latest_links_always_resolve_to_complete_files(run: Run):
    watch = run.links
    assert watch.polls > 100
    assert not watch.problems, watch.problems
    # every finished chunk and (nearly) every snapshot was pointed at in turn
    assert len(watch.targets["video"]) >= len(chunks_of(run)) - 1
    # (judged against the snapshots written: their rate is test_one_jpeg_per_second's matter)
    (session,) = sessions(run.ssd)
    assert len(watch.targets["image"]) >= len(list(session.glob("image_*.jpg"))) - 2
    # A chunk was linked only once finished: it already had its final duration then.
    latest_dir = run.ssd / layout.LATEST_DIR
    for target, duration in watch.durations_when_linked.items():
        assert duration == pytest.approx(video_info(latest_dir / target)[3], abs=0.01), target
    video = latest_dir / layout.LATEST_VIDEO
    assert video.resolve() == chunks_of(run)[-1].resolve()  # the last one, finalised on SIGTERM


def seconds_into_open_chunk(session: Path, seconds: float, timeout: float = 20) -> None:
    """Wait until the open chunk holds about ``seconds`` of video, judged by the snapshots
    finished since the last chunk was (one per second, written as frames arrive)."""
    chunk_images = len(list(session.glob("image_*.jpg")))
    deadline = time.monotonic() + timeout
    while len(list(session.glob("image_*.jpg"))) < chunk_images + seconds:
        assert time.monotonic() < deadline, "snapshots stopped arriving"
        time.sleep(0.05)


def test_sigkill_mid_chunk_keeps_every_chunk_playable_and_restart_overwrites_nothing(env, start):
    ssd = Path(env["SSD_PATH"])
    drone = start("streamer.drone", env | {"ENABLE_RTSP": "0"})
    drone.wait_for("recorder: receiving frames")
    session = wait_for_chunks(ssd, 1)
    seconds_into_open_chunk(session, 3)
    recorder_pid = int(drone.matches(r"started recorder \(pid (\d+)\)")[0].group(1))
    os.kill(recorder_pid, signal.SIGKILL)
    drone.wait_for(r"recorder killed by SIGKILL: stopping the stack")
    drone.wait_for("recorder: receiving frames", count=2)  # the watchdog restarted the stack
    files_after_kill = {p: p.stat().st_size for p in session.iterdir()}
    wait_for_chunks(ssd, 1)  # the new session's first chunk
    drone.signal(signal.SIGTERM)
    assert drone.wait() == 0

    first, second = sessions(ssd)
    assert first == session and second != first
    # nothing in the first session changed after the kill
    assert {p: p.stat().st_size for p in first.iterdir()} == files_after_kill
    chunks = sorted(first.glob("video_*.mp4"))
    assert len(chunks) == 2, chunks
    for chunk in chunks:
        assert decodes_cleanly(chunk) == "", chunk
    closed, interrupted = (video_info(c)[3] for c in chunks)
    assert abs(closed - CHUNK_S) <= 0.1
    # ~3 s were in the open chunk when it was killed; fragments of 0.5 s bound the loss to ~1 s
    assert interrupted >= 1.5, f"only {interrupted:.2f} s of the interrupted chunk survived"


def test_losing_the_feeder_finalises_the_open_chunk(env, start):
    ssd = Path(env["SSD_PATH"])
    feeder = start("streamer.feeder", env)
    feeder.wait_for("camera is delivering frames")
    recorder = start("streamer.recorder", env)
    recorder.wait_for("receiving frames")
    session = wait_for_chunks(ssd, 1)
    seconds_into_open_chunk(session, 2)
    feeder.signal(signal.SIGKILL)
    recorder.wait_for("lost the feeder: finalising the open chunk")
    assert recorder.wait() == 1  # its input is gone: under the controller, the stack restarts
    assert "end of stream" in recorder.output
    feeder.wait()
    for stale in (env["SHM_RECORDER_SOCKET"], env["SHM_STREAM_SOCKET"]):
        os.unlink(stale)  # what the killed feeder left (the controller removes these)
    shm.remove_segments_of([feeder.popen.pid])

    chunks = sorted(session.glob("video_*.mp4"))
    assert len(chunks) == 2
    for chunk in chunks:
        assert decodes_cleanly(chunk) == "", chunk
    last = video_info(chunks[-1])[3]
    assert last >= 2.0, f"the finalised chunk holds only {last:.2f} s"
    link = ssd / layout.LATEST_DIR / layout.LATEST_VIDEO
    assert link.resolve() == chunks[-1].resolve()


def test_images_only_records_no_video(env, start):
    env.update(ENABLE_VIDEO="0", ENABLE_RTSP="0")
    ssd = Path(env["SSD_PATH"])
    drone = start("streamer.drone", env)
    drone.wait_for("recorder: recording images into")
    link = ssd / layout.LATEST_DIR / layout.LATEST_IMAGE
    deadline = time.monotonic() + 20
    while not (link.exists() and link.resolve().name >= "image_000002.jpg"):
        assert time.monotonic() < deadline, "no third snapshot"
        time.sleep(0.05)
    drone.signal(signal.SIGTERM)
    assert drone.wait() == 0
    (session,) = sessions(ssd)
    assert not list(session.glob("*.mp4"))
    assert len(list(session.glob("image_*.jpg"))) >= 3


def test_with_video_and_images_off_the_recorder_idles_and_writes_nothing(env, start):
    """Recording can be started at runtime: the recorder runs, receiving frames, writing nothing."""
    env.update(ENABLE_VIDEO="0", ENABLE_IMAGES="0", ENABLE_RTSP="0")
    drone = start("streamer.drone", env)
    drone.wait_for("stack is up: feeder, recorder$")

    def idling(current: state.StackState) -> bool:
        progress = current.workers["recorder"].progress
        return progress.get("state") == "off" and progress.get("frames", 0) >= 2 * TEST_FPS

    wait_state(env, idling, 30, "the recorder to idle, receiving frames", drone)
    assert drone.stop() == 0
    ssd = Path(env["SSD_PATH"])
    assert not [path for path in ssd.rglob("*") if path.is_file()]


def test_files_a_killed_recorder_left_half_written_are_set_aside(env, start):
    ssd = Path(env["SSD_PATH"])
    earlier = layout.create_session_dir(ssd)
    (earlier / "video_00000.mp4").write_bytes(b"\0\0\0\x18ftypisom")  # killed before its first fragment
    (earlier / "image_000000.jpg").write_bytes(b"\xff\xd8\xff\xe0 cut")  # killed mid-write
    feeder = start("streamer.feeder", env)
    feeder.wait_for("camera is delivering frames")
    recorder = start("streamer.recorder", env)
    recorder.wait_for("receiving frames")
    for name in ("video_00000.mp4", "image_000000.jpg"):
        recorder.wait_for(rf"{name} cannot be played .*: renamed to \*\.unplayable")
        assert (earlier / f"{name}.unplayable").exists()
        assert not (earlier / name).exists()
    for proc in (recorder, feeder):
        proc.signal(signal.SIGTERM)
        assert proc.wait() == 0
