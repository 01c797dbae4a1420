"""Recording layout and latest_* links (no GStreamer)."""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

from streamer.storage import layout

T0 = 1_795_000_000.0  # 2026-11-18T11:06:40Z


def test_sessions_are_numbered_in_creation_order_even_when_the_clock_goes_back(tmp_path: Path):
    first = layout.create_session_dir(tmp_path, started=T0)
    second = layout.create_session_dir(tmp_path, started=0.0)  # no RTC: 1970 after a reboot
    assert first.name == "00001_2026-11-18T11-06-40Z"
    assert second.name == "00002_1970-01-01T00-00-00Z"
    assert sorted(p.name for p in tmp_path.iterdir()) == [first.name, second.name]


def test_a_session_folder_is_never_reused(tmp_path: Path):
    (tmp_path / layout.session_name(1, T0)).mkdir()
    (tmp_path / "00001_2026-11-18T11-06-40Z" / "video_00000.mp4").write_bytes(b"old")
    made = {layout.create_session_dir(tmp_path, started=T0) for _ in range(3)}
    assert len(made) == 3
    assert all(not any(p.iterdir()) for p in made)
    assert (tmp_path / "00001_2026-11-18T11-06-40Z" / "video_00000.mp4").read_bytes() == b"old"


def test_names_avoid_characters_fat_cannot_hold(tmp_path: Path):
    assert not set(layout.session_name(12, T0)) & set(':*?"<>|\\')


def test_links_are_relative_and_survive_a_move(tmp_path: Path):
    ssd = tmp_path / "ssd"
    session = layout.create_session_dir(ssd, started=T0)
    chunk = session / "video_00000.mp4"
    chunk.write_bytes(b"chunk")
    link = layout.LatestLinks(ssd).point(layout.LATEST_VIDEO, chunk)
    assert os.readlink(link) == f"../{session.name}/video_00000.mp4"
    moved = shutil.move(str(ssd), str(tmp_path / "mounted-elsewhere"))
    assert (Path(moved) / layout.LATEST_DIR / layout.LATEST_VIDEO).read_bytes() == b"chunk"


def test_repointing_is_atomic_for_a_concurrent_reader(tmp_path: Path):
    session = layout.create_session_dir(tmp_path, started=T0)
    links = layout.LatestLinks(tmp_path)
    targets = []
    for i in range(20):
        target = session / f"image_{i:06d}.jpg"
        target.write_bytes(b"jpeg")
        targets.append(target)
    links.point(layout.LATEST_IMAGE, targets[0])
    link = links.directory / layout.LATEST_IMAGE
    failures = []
    done = threading.Event()

    def read() -> None:
        while not done.is_set():
            try:
                link.read_bytes()
            except OSError as err:
                failures.append(err)

    reader = threading.Thread(target=read)
    reader.start()
    for _ in range(100):
        for target in targets:
            links.point(layout.LATEST_IMAGE, target)
    done.set()
    reader.join()
    assert not failures
    assert sorted(p.name for p in links.directory.iterdir()) == [layout.LATEST_IMAGE]  # no temp left


def test_numbering_continues_after_the_highest_existing_file(tmp_path: Path):
    assert layout.next_index(tmp_path, "video_") == 0
    for name in ("video_00000.mp4", "video_00003.mp4", "image_000009.jpg", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    assert layout.next_index(tmp_path, "video_") == 4
    assert layout.next_index(tmp_path, "image_") == 10


def test_disk_reserve_is_about_three_seconds_of_recording():
    per_second = layout.recording_bytes_per_second(4_000_000, 1280, 720, video=True, images=True)
    assert per_second == 500_000 + 230_400
    assert layout.disk_reserve_bytes(per_second) == 3 * per_second + (256 << 10)
    assert layout.recording_bytes_per_second(4_000_000, 1280, 720, video=False, images=False) == 0


def test_only_session_folders_count_and_their_newest_files_are_checked(tmp_path: Path):
    first = layout.create_session_dir(tmp_path, started=T0)
    second = layout.create_session_dir(tmp_path, started=T0)
    (tmp_path / "user-notes").mkdir()
    (tmp_path / layout.LATEST_DIR).mkdir()
    assert layout.sessions(tmp_path) == [first, second]
    for name in ("video_00000.mp4", "video_00001.mp4", "image_000000.jpg", "image_000001.jpg"):
        (second / name).write_bytes(b"\xff\xd8 data \xff\xd9")
    assert layout.last_files(second) == [second / "video_00001.mp4", second / "image_000001.jpg"]
    assert layout.jpeg_complete(second / "image_000001.jpg")
    (second / "image_000001.jpg").write_bytes(b"\xff\xd8 data cut o")
    assert not layout.jpeg_complete(second / "image_000001.jpg")
    aside = layout.set_aside(second / "image_000001.jpg")
    assert aside.name == "image_000001.jpg.unplayable"
    assert layout.last_files(second)[-1] == second / "image_000000.jpg"
