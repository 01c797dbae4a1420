"""Fault injection on the real stack: kills, freezes, power cuts, a full disk, a lost camera."""

from __future__ import annotations

import itertools
import os
import random
import re
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from streamer.media import pipelines
from streamer.media.rtsp_client import RtspClient
from streamer.runtime.state import UP
from streamer.storage import layout
from streamer.testing import Proc, stack_state, wait_until
from tests.harness import TEST_FPS, tmpfs, url, watch
from tests.media import CHUNK_S, LinkWatch, decodes_cleanly, video_info, wait_for_chunks

FAST_RESTARTS = {"RESTART_DELAY_MIN_S": "0.1", "RESTART_DELAY_MAX_S": "0.5"}


def sessions(ssd: Path) -> list[Path]:
    return sorted(p for p in ssd.iterdir() if p.is_dir() and p.name != layout.LATEST_DIR)


def latest_image(ssd: Path) -> str | None:
    try:
        return os.readlink(ssd / layout.LATEST_DIR / layout.LATEST_IMAGE)
    except FileNotFoundError:
        return None


def recording_goes_on(ssd: Path, timeout: float = 20) -> None:
    """Wait for a snapshot newer than the one linked now (one is finished every second)."""
    before = latest_image(ssd)
    wait_until(lambda: latest_image(ssd) not in (None, before), timeout, "a new snapshot")


def stream_is_back(env: dict[str, str], frames: int = 5, timeout: float = 20) -> None:
    watch(RtspClient(url(env), "tcp").start(), frames, timeout)


def all_chunks(ssd: Path) -> list[Path]:
    return sorted(ssd.glob("*/video_*.mp4"))


def playable_s(chunk: Path) -> float:
    """Seconds of video a player finds in ``chunk``; 0 before its first fragment is written."""
    try:
        return video_info(chunk)[3]
    except (AssertionError, KeyError, ValueError):  # ffprobe finds no stream or no duration yet
        return 0.0


def freeze_until_restarted(drone: Proc, worker: str, stalled: str) -> float:
    """SIGSTOP ``worker`` of a stack that is up; wait for the controller to tell the user it
    stalled (``stalled``: the reason in parentheses) and for the stack to be up again. Returns
    the seconds from the freeze to the stack being up again."""
    up = drone.wait_up()
    os.kill(up.workers[worker].pid, signal.SIGSTOP)
    frozen_at = time.monotonic()
    drone.wait_for(rf"{worker} stalled \({stalled}\): stopping the stack")
    drone.wait_up(after=up)
    return time.monotonic() - frozen_at


def longest_gap(times: list[float]) -> float:
    return max((b - a for a, b in itertools.pairwise(times)), default=0.0)


def test_sigkill_a_random_worker_ten_times(env, start):
    env.update(FAST_RESTARTS)
    ssd = Path(env["SSD_PATH"])
    seed = random.randrange(1 << 30)
    chooser = random.Random(seed)
    drone = start("streamer.drone", env)
    up = drone.wait_up()
    links = LinkWatch(ssd).start()
    victims = []
    try:
        for _round in range(10):
            victim = chooser.choice(["feeder", "recorder", "rtsp"])
            victims.append(victim)
            killed = rf"{victim} killed by SIGKILL: stopping the stack"
            before = len(drone.matches(killed))
            os.kill(drone.worker_pid(victim), signal.SIGKILL)
            drone.wait_for(killed, count=before + 1)  # what the user is told
            up = drone.wait_up(30, after=up)
            stream_is_back(env)
            recording_goes_on(ssd)
    finally:
        links.stop()
    assert [(r.scope, r.reason) for r in up.restarts] == [
        ("stack", f"{victim} killed by SIGKILL") for victim in victims
    ], seed
    drone.signal(signal.SIGTERM)
    assert drone.wait() == 0
    assert not links.problems, (seed, links.problems)
    assert len(sessions(ssd)) == 11, seed
    for chunk in all_chunks(ssd):  # closed ones, and the ones cut short by a killed recorder
        assert decodes_cleanly(chunk) == "", (seed, chunk)


def test_a_recorder_frozen_for_10_s_slows_nothing_and_is_not_restarted(env, start):
    ssd = Path(env["SSD_PATH"])
    drone = start("streamer.drone", env)
    recorder = drone.wait_up().workers["recorder"].pid
    assert recorder is not None
    viewer = RtspClient(url(env), "udp").start()
    try:
        assert viewer.wait_frames(30, 20), viewer.report()
        os.kill(recorder, signal.SIGSTOP)  # a disk so slow the recorder stops moving
        frozen_at = time.monotonic()
        frames_before = viewer.frames
        while time.monotonic() - frozen_at < 10:  # the freeze, not a wait for a condition
            time.sleep(0.2)
        rate = (viewer.frames - frames_before) / (time.monotonic() - frozen_at)
        os.kill(recorder, signal.SIGCONT)
        recording_goes_on(ssd)
    finally:
        os.kill(recorder, signal.SIGCONT)
        viewer.stop()
    assert 0.8 * TEST_FPS <= rate <= 1.2 * TEST_FPS, rate
    after = stack_state(env)
    assert after is not None and after.state == UP and after.restarts == [], after
    assert (after.workers["recorder"].pid, after.workers["recorder"].restarts) == (recorder, 0)
    drone.signal(signal.SIGTERM)
    assert drone.wait() == 0


def test_a_recorder_frozen_past_its_stall_limit_is_restarted(env, start):
    env.update(FAST_RESTARTS, STALL_RECORDER_S="3")
    ssd = Path(env["SSD_PATH"])
    drone = start("streamer.drone", env)
    drone.wait_up()
    recording_goes_on(ssd)
    freeze_until_restarted(drone, "recorder", r"no report for 3\.\d s")
    recording_goes_on(ssd)
    drone.signal(signal.SIGTERM)
    assert drone.wait() == 0
    first, _second = sessions(ssd)
    for chunk in sorted(first.glob("video_*.mp4")):  # finalised after SIGTERM + SIGCONT
        assert decodes_cleanly(chunk) == "", chunk


def test_a_frozen_feeder_restarts_the_stack(env, start):
    env.update(FAST_RESTARTS)
    drone = start("streamer.drone", env)
    back_after = freeze_until_restarted(drone, "feeder", r"no (report|frames) for 3\.\d s")
    print(f"frozen feeder: stack up again {back_after:.1f} s after SIGSTOP (limit 3 s)")
    stream_is_back(env)
    drone.signal(signal.SIGTERM)
    assert drone.wait() == 0


def test_worker_scope_restarts_a_killed_recorder_alone(env, start):
    env.update(FAST_RESTARTS, RESTART_SCOPE="worker")
    ssd = Path(env["SSD_PATH"])
    drone = start("streamer.drone", env)
    up = drone.wait_up()
    feeder, recorder, rtsp_worker = (up.workers[name].pid for name in ("feeder", "recorder", "rtsp"))
    viewer = RtspClient(url(env), "udp").start()
    try:
        assert viewer.wait_frames(30, 20), viewer.report()
        watched_from = len(viewer.frame_times)
        os.kill(recorder, signal.SIGKILL)
        drone.wait_for("recorder killed by SIGKILL: restarting it alone")  # what the user is told
        drone.wait_worker_ready("recorder", replacing=recorder)
        recording_goes_on(ssd)
        gap = longest_gap(viewer.frame_times[watched_from:])
    finally:
        viewer.stop()
    assert not viewer.errors
    assert gap < 0.5, f"the stream paused for {gap:.2f} s"
    after = stack_state(env)
    assert after is not None and after.state == UP and after.up_since == up.up_since, after
    assert (after.workers["feeder"].pid, after.workers["rtsp"].pid) == (feeder, rtsp_worker)
    assert [(r.scope, r.reason) for r in after.restarts] == [("recorder", "recorder killed by SIGKILL")]
    assert after.workers["recorder"].restarts == 1
    drone.signal(signal.SIGTERM)
    assert drone.wait() == 0


def test_power_cut_loses_at_most_about_a_second_and_the_next_start_works(env, start, workdir: Path):
    ssd = Path(env["SSD_PATH"])
    drone = start("streamer.drone", env)
    drone.wait_worker_ready("recorder")
    started = stack_state(env).workers["recorder"].ready_at  # its first frame, by the controller's clock
    third = wait_for_chunks(ssd, 2) / (layout.VIDEO_PATTERN % 2)
    wait_until(lambda: playable_s(third) > 0, 15, "the third chunk's first fragment")
    # Cut halfway through the fragment being written (a placement, not a wait for a condition).
    time.sleep(pipelines.RECORD_FRAGMENT_MS / 2000)
    stack = [drone.pid, *(drone.worker_pid(w) for w in ("feeder", "recorder", "rtsp"))]
    # Everything at once, nobody gets to clean up: frozen first, then killed. (Killed one by one,
    # a worker could run its SIGTERM handler, which the controller's death sends it, before its
    # own SIGKILL arrives on a loaded machine, and tidy up as a power cut never would.)
    for signum in (signal.SIGSTOP, signal.SIGKILL):
        for pid in stack:
            os.kill(pid, signum)
    cut_at = time.time()
    drone.wait()
    wait_until(lambda: not any(os.path.exists(f"/proc/{pid}") for pid in stack[1:]), 10, "the workers to die")

    # However late the cut landed: every chunk before the last is whole, the last plays up to
    # its last fragment (a chunk begun after the third may have none yet), all decode cleanly.
    chunks = all_chunks(ssd)
    assert [c.name for c in chunks] == [layout.VIDEO_PATTERN % i for i in range(len(chunks))], chunks
    assert len(chunks) >= 3, chunks
    durations = [playable_s(chunk) for chunk in chunks]
    for duration in durations[:-1]:
        assert duration == pytest.approx(CHUNK_S, abs=0.1), durations
    assert durations[-1] > 0 or len(chunks) > 3, durations
    for chunk, duration in zip(chunks, durations, strict=True):
        assert duration == 0 or decodes_cleanly(chunk) == "", chunk
    recorded = sum(durations)
    lost = (cut_at - started) - recorded
    print(f"power cut: {recorded:.2f} s on disk {durations}, {cut_at - started:.2f} s since recording began")
    print(f"power cut: {lost:.2f} s lost")
    assert lost <= 1.5, f"{lost:.2f} s lost"

    # What the cut left (socket files, shm segments, the lock, the published state) does not
    # stop the next start.
    assert (workdir / "rec.sock").exists()
    assert stack_state(env).controller_pid == drone.pid
    again = start("streamer.drone", env)
    again.wait_for("removed stale socket .*rec.sock")
    again.wait_for(rf"removed leaked shared memory .*shmpipe\.\s*{stack[1]}\.")
    again.wait_up()  # its own state, not the one the cut left
    stream_is_back(env)
    again.signal(signal.SIGTERM)
    assert again.wait() == 0  # the workdir fixture then checks nothing at all is left


@pytest.fixture
def small_disk(workdir: Path) -> Iterator[Path]:
    """A 12 MiB tmpfs as SSD_PATH."""
    with tmpfs(workdir, "12m") as ssd:
        yield ssd


def test_full_disk_pauses_recording_not_the_stream_and_resumes(env, start, small_disk: Path):
    # Deleting old recordings for space off: this is about what happens when nothing can be
    # deleted. 500 kbit/s at 320x240: the recorder pauses below ~0.5 MiB free, resumes at ~1 MiB.
    env.update(RECORD_BITRATE="500000", RECORD_MIN_FREE="0")
    filler = small_disk / "user-file.bin"
    filler.write_bytes(b"\0" * (shutil.disk_usage(small_disk).free - (1300 << 10)))  # leaves ~1.3 MiB
    drone = start("streamer.drone", env)
    drone.wait_up()
    viewer = RtspClient(url(env), "udp").start()
    try:
        drone.wait_for(r"recorder: disk full: .* recording paused \(the stream goes on\)", timeout=60)
        watched_from = len(viewer.frame_times)
        paused_at = time.monotonic()
        while time.monotonic() - paused_at < 3:  # the stream while the disk is full
            time.sleep(0.2)
        rate = (len(viewer.frame_times) - watched_from) / (time.monotonic() - paused_at)
        (session,) = sessions(small_disk)
        written = sorted(session.glob("video_*.mp4"))
        assert written, "nothing was recorded before the disk filled"
        for chunk in written:
            assert decodes_cleanly(chunk) == "", chunk
        filler.unlink()
        drone.wait_for("recorder: space is back .*: recording resumes", timeout=20)
        recording_goes_on(small_disk)
        wait_until(lambda: len(list(session.glob("video_*.mp4"))) > len(written), 20, "a new chunk")
    finally:
        viewer.stop()
    assert 0.8 * TEST_FPS <= rate <= 1.2 * TEST_FPS, rate
    after = stack_state(env)  # no crash loop, nothing restarted
    assert after is not None and after.state == UP and after.restarts == [], after
    drone.signal(signal.SIGTERM)
    assert drone.wait() == 0
    for chunk in sorted(session.glob("video_*.mp4")):
        assert decodes_cleanly(chunk) == "", chunk


def test_a_lost_camera_is_retried_slowly_and_the_stack_resumes_when_it_is_back(env, start, workdir: Path):
    plug = workdir / "unplugged"
    env.update(CAMERA_UNPLUG_FILE=str(plug), RESTART_DELAY_MIN_S="0.2", RESTART_DELAY_MAX_S="1.6")
    plug.touch()  # never there at start
    drone = start("streamer.drone", env)
    delays = drone.wait_for(r"restarting the stack in ([\d.]+) s", count=4)
    assert "feeder: camera test is unplugged" in drone.output
    assert [float(m.group(1)) for m in delays] == [0.2, 0.4, 0.8, 1.6]
    plug.unlink()  # plugged in
    up = drone.wait_up()
    stream_is_back(env)
    plug.touch()  # unplugged in flight
    drone.wait_for("feeder: camera test was unplugged")
    # The reason the feeder gave comes with its failure, into the log and the published state.
    drone.wait_for(r"feeder exited with status 1 \(camera test was unplugged\): stopping the stack")
    problem = stack_state(env).workers["feeder"].last_problem  # this failure's, or the next start's
    assert re.fullmatch(r"exited with status 1 \(camera test (was|is) unplugged\)", problem or ""), problem
    plug.unlink()
    drone.wait_up(after=up)
    stream_is_back(env)
    drone.signal(signal.SIGTERM)
    assert drone.wait() == 0
