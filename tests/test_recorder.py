"""The recorder in the real stack (synthetic camera), checked with FFmpeg's tools."""

from __future__ import annotations

import itertools
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest

from streamer import config, recorder
from streamer.media import camera, pipelines, shm
from streamer.storage import layout
from streamer.testing import wait_state
from tests.harness import (
    TEST_FPS,
    TEST_HEIGHT,
    TEST_WIDTH,
    Proc,
    shm_segments,
    short_tempdir,
    stack_env,
    tmpfs,
    wait_until,
)
from tests.media import LinkWatch, decodes_cleanly, jpeg_size, video_info, wait_for_chunks

RUN_SECONDS = 20
CHUNK_S = 5.5
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
    assert not (shm_segments() - segments_before)
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
    assert len(watch.targets["image"]) >= RUN_SECONDS - 2
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


def test_recorder_is_not_started_with_video_and_images_off(env, start):
    env.update(ENABLE_VIDEO="0", ENABLE_IMAGES="0", ENABLE_RTSP="0")
    drone = start("streamer.drone", env)
    drone.wait_for("stack is up: feeder$")
    drone.signal(signal.SIGTERM)
    assert drone.wait() == 0
    assert "recorder" not in drone.output


def test_other_frame_rates_keep_chunks_close_to_5_5_s():
    for fps in (10, 15, 24, 25, 30, 50, 60, 120):
        gop, gops = pipelines.record_keyframes(fps)
        assert gop <= fps and 2 * gop >= fps, (fps, gop)  # keyframes every 0.5 to 1 s
        assert abs(gop * gops / fps - CHUNK_S) <= 0.1, (fps, gop, gops)
    assert pipelines.record_keyframes(TEST_FPS) == (15, 11)


def encode_with_drops(directory: Path, fps: int, seconds: int, dropped: Callable[[int], bool]) -> list[Path]:
    """Frames of a synthetic camera, with those for which ``dropped(n)`` holds taken out in
    front of the recorder's own video branch, as its leaky queue drops them under load.

    The source is not live, so it runs much faster than real time; the branch's queue is
    made non-leaky for it (a fast source would fill it, and it would drop frames of its own).
    """
    from streamer.media.gst import Gst

    s = config.load(
        {"HOME": str(directory), "CAMERA": "test", "VIDEO_FPS": str(fps), "ENABLE_IMAGES": "0"}
        | {"VIDEO_WIDTH": str(TEST_WIDTH), "VIDEO_HEIGHT": str(TEST_HEIGHT)}
    )
    (branch,) = pipelines.recorder(s, str(directory)).split(f" {pipelines.RECORDER_TEE_ELEMENT}. ! ")[1:]
    assert "leaky=downstream" in branch
    branch = branch.replace("leaky=downstream", "leaky=no")
    pipeline = Gst.parse_launch(
        f"videotestsrc name=camera num-buffers={seconds * fps} pattern=ball ! {camera.raw_caps(s)} ! {branch}"
    )
    count = itertools.count()

    def drop(_pad: Gst.Pad, _info: Gst.PadProbeInfo) -> Gst.PadProbeReturn:
        return Gst.PadProbeReturn.DROP if dropped(next(count)) else Gst.PadProbeReturn.OK

    pipeline.get_by_name("camera").get_static_pad("src").add_probe(Gst.PadProbeType.BUFFER, drop)
    recorder.pace_video(pipeline.get_by_name, fps)
    pipeline.set_state(Gst.State.PLAYING)
    try:
        message = pipeline.get_bus().timed_pop_filtered(
            60 * Gst.SECOND, Gst.MessageType.EOS | Gst.MessageType.ERROR
        )
    finally:
        pipeline.set_state(Gst.State.NULL)
    assert message is not None and message.type == Gst.MessageType.EOS, message
    return sorted(directory.glob("video_*.mp4"))


@pytest.mark.parametrize("fps", [30, 25])
def test_dropped_frames_do_not_shorten_chunks(tmp_path, fps):
    """A quarter of the frames dropped, and a burst of 0.4 s: keyframes still come at their
    times, so chunks stay whole GOPs of 5.5 s (5.52 s at 25 fps). (Keyframes counted in
    frames made these chunks 5.07 to 5.33 s at 30 fps: each GOP of 15 frames spanned 0.67 s.)"""
    burst = range(7 * fps, 7 * fps + round(0.4 * fps))
    chunks = encode_with_drops(tmp_path, fps, 20, lambda n: n % 4 == 3 or n in burst)
    gop, gops = pipelines.record_keyframes(fps)
    assert len(chunks) == 4, chunks
    for chunk in chunks:
        assert decodes_cleanly(chunk) == "", chunk
    durations = [video_info(chunk)[3] for chunk in chunks]
    for duration in durations[:-1]:
        assert abs(duration - gop * gops / fps) <= 0.1, durations
    for chunk in chunks[:-1]:
        assert len(keyframe_times(chunk)) == gops, chunk


def keyframe_times(chunk: Path) -> list[float]:
    command = ["ffprobe", "-v", "error", "-select_streams", "v", "-show_entries", "packet=pts_time,flags"]
    lines = subprocess.run(
        [*command, "-of", "csv=p=0", str(chunk)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return [float(line.split(",")[0]) for line in lines if "K" in line.split(",")[1]]


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


NOT_MOUNTED = (
    r"SSD_PATH (\S+) is on the root file system, not a mounted disk \(RECORD_REQUIRE_MOUNT=1\): "
    r"not recording until it is mounted; the stream goes on"
)


def require_root_file_system(workdir: Path) -> None:
    """SSD_PATH is ``workdir/ssd`` (``tmpfs`` mounts the "SSD" there), with ``workdir`` under
    /tmp. These tests need it to lie on the root file system until the tmpfs is mounted, as an
    SSD's mount point does while the SSD is missing: true where /tmp is a folder of / (checked
    with stat on the machines the suite runs on), not where /tmp is a tmpfs of its own."""
    if os.stat(workdir).st_dev != os.stat("/").st_dev:
        pytest.skip(f"{workdir.parent} is not on the root file system here")


def test_require_mount_waits_without_creating_anything_then_records_once_mounted(workdir, env, start):
    require_root_file_system(workdir)
    env["RECORD_REQUIRE_MOUNT"] = "1"
    ssd = Path(env["SSD_PATH"])
    assert ssd == workdir / "ssd"
    feeder = start("streamer.feeder", env)
    feeder.wait_for("camera is delivering frames")
    recorder = start("streamer.recorder", env)
    (error,) = recorder.wait_for(NOT_MOUNTED)
    assert error.group(1) == str(ssd)
    assert "ERROR" in error.string, error.string
    recorder.check_running("the SSD to be mounted")
    assert not ssd.exists(), list(ssd.rglob("*"))
    assert not recorder.matches("receiving frames")

    with tmpfs(workdir, "64M") as mounted:
        recorder.wait_for(
            rf"SSD_PATH {re.escape(str(ssd))} is on a mounted file system now: recording starts"
        )
        recorder.wait_for("receiving frames")
        wait_until(lambda: list(mounted.glob("0*/image_*.jpg")), 20, "a snapshot on the mounted disk")
        session = wait_for_chunks(mounted, 1)
        assert session.parent == mounted
        assert len(recorder.matches(NOT_MOUNTED)) == 1  # logged once, not at every check
        for proc in (recorder, feeder):
            proc.signal(signal.SIGTERM)
            assert proc.wait() == 0, proc.output
        assert decodes_cleanly(sorted(session.glob("video_*.mp4"))[0]) == ""
    assert not ssd.exists() or not any(ssd.iterdir())  # unmounted: nothing was ever written below it


def test_require_mount_under_the_controller_is_ready_idle_and_stops_promptly(workdir, env, start):
    """Waiting for the disk is the recorder's job then: the stack comes up (stream running),
    the watchdog leaves it alone well past its stall limit, and SIGTERM ends it at once."""
    require_root_file_system(workdir)
    env.update(RECORD_REQUIRE_MOUNT="1", STALL_RECORDER_S="1")
    drone = start("streamer.drone", env)
    up = drone.wait_up(timeout=30)
    assert up.workers["recorder"].ready_at is not None
    drone.wait_for(r"recorder: " + NOT_MOUNTED)

    def idle_past_stall_limit(current) -> bool:
        recorder = current.workers["recorder"]
        return (
            recorder.progress.get("state") == "no-disk"
            and recorder.progress.get("idle") is True
            and recorder.last_report_at is not None
            and recorder.ready_at is not None
            and recorder.last_report_at - recorder.ready_at > 3  # three times STALL_RECORDER_S
        )

    state = wait_state(env, idle_past_stall_limit, 20, "the waiting recorder's reports", drone)
    assert state.restarts == [] and state.workers["recorder"].restarts == 0, state
    assert state.workers["rtsp"].state == "ready"
    assert not Path(env["SSD_PATH"]).exists()

    drone.signal(signal.SIGTERM)
    assert drone.wait(10) == 0, drone.output
    assert "recorder stopped (exited with status 0)" in drone.output
    assert "recorder: stopped while waiting for SSD_PATH" in drone.output
