"""Retention: unit tests on real folders with a fake clock and fake free space, then the real
recorder filling a small tmpfs several times over, and deleting by age."""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from streamer.storage import layout, retention
from tests.harness import tmpfs, wait_until
from tests.media import LinkWatch, decodes_cleanly, video_info

LOG = logging.getLogger("test")
T0 = 1_795_000_000.0


def make_session(ssd: Path, started: float, chunks: int, images: int, size: int = 1000) -> Path:
    """A session folder with files whose mtimes follow their recording times."""
    session = layout.create_session_dir(ssd, started=started)
    for i in range(chunks):
        path = session / f"video_{i:05d}.mp4"
        path.write_bytes(b"v" * size)
        os.utime(path, (started + 5.5 * (i + 1),) * 2)
    for i in range(images):
        path = session / f"image_{i:06d}.jpg"
        path.write_bytes(b"i" * (size // 10))
        os.utime(path, (started + i + 0.5,) * 2)
    return session


class FakeDisk:
    """Free space that grows by what retention deletes."""

    def __init__(self, ssd: Path, free: int) -> None:
        self.ssd, self.free_at_start = ssd, free
        self.start_usage = self.used()

    def used(self) -> int:
        return sum(p.stat().st_size for p in self.ssd.rglob("*") if p.is_file() and not p.is_symlink())

    def __call__(self) -> int:
        return self.free_at_start + (self.start_usage - self.used())


def test_deletes_oldest_first_until_there_is_room_and_never_the_current_or_linked(tmp_path: Path):
    old = make_session(tmp_path, T0, chunks=3, images=16)
    current = make_session(tmp_path, T0 + 100, chunks=2, images=5)
    (tmp_path / "flight-log.txt").write_bytes(b"x" * 5000)  # the user's
    (old / "notes.txt").write_bytes(b"mine")  # the user's, inside a session
    links = layout.LatestLinks(tmp_path)
    links.point(layout.LATEST_VIDEO, current / "video_00001.mp4")
    links.point(layout.LATEST_IMAGE, current / "image_000004.jpg")
    disk = FakeDisk(tmp_path, free=1000)
    keeper = retention.Retention(tmp_path, current, 10_000, 1000, None, LOG, free_bytes=disk)
    for name in ("video_00000.mp4", "image_000000.jpg", "image_000001.jpg", "video_00001.mp4"):
        keeper.finished(current / name)
    (current / "video_00002.mp4").write_bytes(b"being written")  # not finished: never a candidate

    done = keeper.run()
    # Not enough to reach the goal: everything deletable went, and nothing else.
    assert done.bytes == (3 * 1000 + 16 * 100) + (1000 + 2 * 100)
    # the old session went first, oldest first; its folder stays for the user's notes
    assert sorted(p.name for p in old.iterdir()) == ["notes.txt"]
    assert done.sessions == 0
    # then the current session's finished files, oldest first, up to the linked ones
    assert not (current / "video_00000.mp4").exists()
    assert (current / "video_00001.mp4").exists()  # latest_video.mp4 points here
    assert (current / "video_00002.mp4").exists()  # being written
    assert (current / "image_000004.jpg").exists()  # latest_image.jpg points here
    assert (tmp_path / "flight-log.txt").exists()
    assert keeper.deleted_files == done.files and keeper.deleted_bytes == done.bytes > 0


def test_nothing_happens_with_room_to_spare_or_with_deleting_for_space_off(tmp_path: Path):
    make_session(tmp_path, T0, chunks=2, images=5)
    current = layout.create_session_dir(tmp_path, started=T0 + 100)
    roomy = retention.Retention(tmp_path, current, 10_000, 1000, None, LOG, free_bytes=lambda: 20_000)
    assert roomy.run().files == 0
    off = retention.Retention(tmp_path, current, 0, 1000, None, LOG, free_bytes=lambda: 0)
    assert off.run().files == 0


def test_emptied_sessions_are_removed(tmp_path: Path):
    first = make_session(tmp_path, T0, chunks=1, images=2)
    second = make_session(tmp_path, T0 + 50, chunks=1, images=2)
    current = layout.create_session_dir(tmp_path, started=T0 + 100)
    disk = FakeDisk(tmp_path, free=0)
    keeper = retention.Retention(tmp_path, current, 1500, 100, None, LOG, free_bytes=disk)
    done = keeper.run()
    assert not first.exists()
    assert second.exists()
    assert done.sessions == 1


def test_deletes_by_age(tmp_path: Path):
    old = make_session(tmp_path, T0, chunks=2, images=12)
    current = layout.create_session_dir(tmp_path, started=T0 + 100)
    now = [T0 + 8.2]
    keeper = retention.Retention(
        tmp_path, current, 0, 0, max_age_s=5.0, log=LOG, clock=lambda: now[0], free_bytes=lambda: 0
    )
    keeper.run()
    # older than 3.2 s: images 0-2 (mtimes 0.5, 1.5, 2.5 s), not the chunk that ended at 5.5 s
    assert sorted(p.name for p in old.glob("image_*"))[0] == "image_000003.jpg"
    assert (old / "video_00000.mp4").exists()
    now[0] = T0 + 200
    keeper.run()
    assert not old.exists()  # everything aged out, the emptied session went too


@pytest.fixture
def tiny_disk(workdir: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs as SSD_PATH."""
    with tmpfs(workdir, "4m") as ssd:
        yield ssd


def test_recording_never_stops_on_a_disk_it_fills_several_times(env, start, tiny_disk: Path):
    # 1.5 Mbit/s: a chunk is ~1 MiB; retention keeps 1.5 MiB (≥ twice the pause reserve) free,
    # which leaves room for one finished chunk beside the open one.
    env.update(RECORD_BITRATE="1500000", RECORD_MIN_FREE="1.5M", ENABLE_RTSP="0")
    user_file = tiny_disk / "flight-plan.txt"
    user_file.write_text("mine\n")
    min_free = int(1.5 * (1 << 20))
    disk_mib = shutil.disk_usage(tiny_disk).total / (1 << 20)

    def recorded_mib() -> float:
        deleted = drone.matches(r"retention: deleted \d+ files \(([\d.]+) MiB\)")
        kept = sum(p.stat().st_size for p in tiny_disk.glob("0*/*") if p.exists())
        return sum(float(m.group(1)) for m in deleted) + kept / (1 << 20)

    def newest_chunk_index() -> int:
        names = [p.name for p in tiny_disk.glob("0*/video_*.mp4")]
        return max((int(re.search(r"(\d+)", name).group(1)) for name in names), default=-1)

    drone = start("streamer.drone", env)
    drone.wait_for("stack is up")
    links = LinkWatch(tiny_disk).start()
    lowest_free = shutil.disk_usage(tiny_disk).total
    # The run under test: until the disk was filled twice over and a sixth chunk opened
    # (some 45 s at this rate), free space sampled all along.
    deadline = time.monotonic() + 150
    try:
        while recorded_mib() < 2 * disk_mib or newest_chunk_index() < 5:
            progress = f"{recorded_mib():.1f} MiB recorded, newest chunk {newest_chunk_index()}"
            assert time.monotonic() < deadline, progress
            drone.check_running()
            lowest_free = min(lowest_free, shutil.disk_usage(tiny_disk).free)
            time.sleep(0.1)
    finally:
        links.stop()
    drone.signal(signal.SIGTERM)
    assert drone.wait() == 0

    recorded = recorded_mib()
    print(f"recorded {recorded:.1f} MiB on a {disk_mib:.0f} MiB disk; lowest free {lowest_free} B")
    assert recorded >= 2 * disk_mib, "the disk was not filled several times over"
    assert "disk full" not in drone.output
    assert not drone.matches(r"(exited|killed|stalled).*: stopping the stack"), "a worker failed"
    assert lowest_free >= min_free, f"free space fell to {lowest_free} B, below the {min_free} B minimum"
    assert not links.problems, links.problems
    assert user_file.read_text() == "mine\n"
    (session,) = layout.sessions(tiny_disk)
    chunks = sorted(session.glob("video_*.mp4"))
    assert int(re.search(r"(\d+)", chunks[0].name).group(1)) > 0, "old chunks were never deleted"
    assert int(re.search(r"(\d+)", chunks[-1].name).group(1)) >= 5, "recording did not go on"
    for chunk in chunks:  # the newest are there and play
        assert decodes_cleanly(chunk) == "", chunk
        assert video_info(chunk)[3] > 0


def test_a_maximum_age_removes_old_recordings_while_new_ones_come(env, start):
    ssd = Path(env["SSD_PATH"])
    old = make_session(ssd, time.time() - 3600, chunks=2, images=3)  # an hour-old earlier session
    env.update(RECORD_MAX_AGE="4s", ENABLE_RTSP="0")
    drone = start("streamer.drone", env)
    drone.wait_for("stack is up")
    drone.wait_for("retention: removed emptied session")
    assert not old.exists()
    session = layout.sessions(ssd)[-1]
    wait_until(lambda: not (session / "image_000000.jpg").exists(), 20, "the first snapshot to age out")
    wait_until(lambda: not (session / "video_00000.mp4").exists(), 30, "the first chunk to age out")
    newest_before = sorted(session.glob("image_*.jpg"))[-1].name
    wait_until(lambda: sorted(session.glob("image_*.jpg"))[-1].name > newest_before, 10, "new snapshots")
    oldest_age = time.time() - min(p.stat().st_mtime for p in session.glob("image_*.jpg"))
    assert oldest_age < 4 + 2.5, f"a snapshot {oldest_age:.1f} s old is still there"
    drone.signal(signal.SIGTERM)
    assert drone.wait() == 0
    assert re.search(r"retention: deleted \d+ files .*older than 4s", drone.output)
