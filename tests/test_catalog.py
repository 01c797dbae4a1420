"""What the web worker lists and serves from SSD_PATH (pure: temporary folders, no stack): the
recorder's files only, newest session first, chunk times from the plan and file times, and
nothing reached through a symbolic link."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from streamer.media import pipelines
from streamer.storage import catalog, layout
from streamer.storage.catalog import Catalog, ChunkPlan, NoSuchRecording, NotARecording

T0 = 1_795_000_000.0  # 2026-11-18T11:06:40Z
PLAN = ChunkPlan(length_s=5.5, gop_s=0.5)


def session_dir(ssd: Path, sequence: int, started: float = T0) -> Path:
    path = ssd / layout.session_name(sequence, started)
    path.mkdir(parents=True)
    return path


def put(folder: Path, name: str, mtime: float, data: bytes = b"x") -> Path:
    path = folder / name
    path.write_bytes(data)
    os.utime(path, (mtime, mtime))
    return path


def listed(
    ssd: Path, recording: str | None = None, births: dict[str, float] | None = None
) -> list[catalog.Session]:
    """The catalog's listing an hour after T0; ``births``: chunks' birth times by file name
    (without: a system that cannot tell them)."""
    known = births or {}
    cat = Catalog(ssd, PLAN, clock=lambda: T0 + 3600, birth_time=lambda path: known.get(Path(path).name))
    return cat.sessions(recording)


def test_the_recorders_names_are_the_ones_served():
    assert catalog.session_started(layout.session_name(1, T0)) == T0
    assert catalog.session_started(layout.session_name(123456, 0.0)) == 0.0
    assert catalog.parse_name(layout.VIDEO_PATTERN % 7) == (catalog.VIDEO, 7)
    assert catalog.parse_name(layout.VIDEO_PATTERN % 100000) == (catalog.VIDEO, 100000)
    assert catalog.parse_name(layout.IMAGE_PATTERN % 42) == (catalog.IMAGE, 42)
    assert catalog.parse_name(layout.SNAPSHOT_PATTERN % 3) == (catalog.SNAPSHOT, 3)
    for name in [
        "video_1.mp4",
        "video_00001.mp4.unplayable",
        "video_00001.MP4",
        "image_00001.jpg",
        ".snapshot_00001.tmp",
        "snapshot_.jpg",
        "notes.txt",
        "..",
        "video_00001.mp4/..",
        "/etc/passwd",
        "../video_00001.mp4",
    ]:
        assert catalog.parse_name(name) is None, name
    for name in ["..", "00001_mine", "00001_2026-11-18T11-06-40Z/..", "drone_temp", "1_2026-11-18T11-06-40Z"]:
        assert catalog.session_started(name) is None, name


def test_the_plan_is_the_recorders():
    gop, gops = pipelines.record_keyframes(30)
    assert (gop * gops / 30, gop / 30) == (PLAN.length_s, PLAN.gop_s)


def test_sessions_newest_first_files_in_time_order(tmp_path: Path):
    old = session_dir(tmp_path, 99999, T0)
    new = session_dir(tmp_path, 100000, T0 - 86400)  # numbered after, though its clock was behind
    for index in (10, 9, 100000, 99999):
        put(old, layout.VIDEO_PATTERN % index, T0 + 100 + index)
    put(old, layout.IMAGE_PATTERN % 2, T0 + 3)
    put(old, layout.SNAPSHOT_PATTERN % 0, T0 + 2)
    put(old, layout.IMAGE_PATTERN % 1, T0 + 1)
    put(new, layout.VIDEO_PATTERN % 0, T0 - 86000, b"12345")

    sessions = listed(tmp_path)
    assert [s.name for s in sessions] == [new.name, old.name]
    assert [c.name for c in sessions[1].chunks] == [
        "video_00009.mp4",
        "video_00010.mp4",
        "video_99999.mp4",
        "video_100000.mp4",
    ]
    assert [(p.name, p.kind) for p in sessions[1].pictures] == [
        ("image_000001.jpg", "image"),
        ("snapshot_00000.jpg", "snapshot"),
        ("image_000002.jpg", "image"),
    ]
    assert sessions[0].started == T0 - 86400
    assert sessions[0].bytes == 5
    assert sessions[1].bytes == 7


def test_anything_not_the_recorders_is_ignored(tmp_path: Path):
    session = session_dir(tmp_path, 1)
    put(session, "video_00000.mp4", T0 + 6)
    for junk in ["video_00001.mp4.unplayable", ".snapshot_00001.tmp", "video_1.mp4", "notes.txt"]:
        put(session, junk, T0 + 7)
    (session / "video_00002.mp4").mkdir()  # a folder named like a chunk
    os.mkfifo(session / "video_00003.mp4")  # a pipe named like one
    (tmp_path / "00002_mine").mkdir()  # folders not named by the recorder
    put(tmp_path / "00002_mine", "video_00000.mp4", T0)
    (tmp_path / layout.LATEST_DIR).mkdir()
    put(tmp_path, layout.session_name(3, T0), T0)  # a file named like a session

    (only,) = listed(tmp_path)
    assert only.name == session.name
    assert [c.name for c in only.chunks] == ["video_00000.mp4"]
    assert only.pictures == ()


def test_symbolic_links_are_never_listed(tmp_path: Path):
    ssd = tmp_path / "ssd"
    outside = tmp_path / "outside"
    outside.mkdir()
    put(outside, "video_00000.mp4", T0)
    session = session_dir(ssd, 1)
    put(session, "video_00000.mp4", T0 + 6)
    (session / "video_99999.mp4").symlink_to("/etc/passwd")
    (session / "image_000000.jpg").symlink_to(outside / "video_00000.mp4")
    (ssd / layout.session_name(2, T0)).symlink_to(outside)  # a session folder that is a link

    (only,) = listed(ssd)
    assert only.name == session.name
    assert [c.name for c in only.chunks] == ["video_00000.mp4"]
    assert only.pictures == ()


def test_a_missing_ssd_path_has_no_sessions(tmp_path: Path):
    assert listed(tmp_path / "not-mounted") == []


# --- chunk times


def test_runs_are_told_apart_by_birth_times(tmp_path: Path):
    """File times of a real recording (30 fps): images switched off, on, off at 8, 11 and 18 s,
    each change restarting the pipeline, then recording stopped at 22 s."""
    session = session_dir(tmp_path, 1)
    times = [  # (birth, mtime) relative to T0, and ffprobe's duration
        (0.0, 6.06, 5.501),  # a run's first chunk, finished when the next one was born
        (6.06, 7.768, 2.567),  # born continuing that run; its run ended
        (8.1, 10.792, 3.001),  # a new run (born 0.33 s after): ended
        (11.128, 17.204, 5.5),
        (17.204, 17.816, 1.501),
        (18.128, 21.844, 4.028),
    ]
    births = {}
    for i, (birth, mtime, _) in enumerate(times):
        put(session, layout.VIDEO_PATTERN % i, T0 + mtime)
        births[layout.VIDEO_PATTERN % i] = T0 + birth

    chunks = listed(tmp_path, births=births)[0].chunks
    # Continued chunks are the plan's; the last of a run, its file times: short by the encoder's
    # delay (the chunk's first frames were in x264 when its file was born), ~0.35 s here.
    durations = [round(c.duration_s, 3) for c in chunks]
    assert durations == [5.5, 2.208, 2.692, 5.5, 1.112, 3.716]
    for chunk, (_, _, measured) in zip(chunks, times, strict=True):
        assert -0.4 <= chunk.duration_s - measured <= 0.01, (chunk, measured)
    starts = [round(c.start - T0, 3) for c in chunks]
    assert starts == [0.06, 5.56, 8.1, 11.204, 16.704, 18.128]


def test_the_open_chunk_lasts_as_long_as_written_so_far(tmp_path: Path):
    session = session_dir(tmp_path, 1)
    put(session, layout.VIDEO_PATTERN % 0, T0 + 6.0)
    put(session, layout.VIDEO_PATTERN % 1, T0 + 8.0)
    births = {layout.VIDEO_PATTERN % 0: T0 + 0.2, layout.VIDEO_PATTERN % 1: T0 + 6.0}
    chunks = listed(tmp_path, recording=session.name, births=births)[0].chunks
    assert [(c.duration_s, c.open) for c in chunks] == [(5.5, False), (2.5, True)]


# Without birth times: the next chunk's mtime tells a run goes on.


def test_without_birth_times_chunks_followed_by_another_are_the_plans_length(tmp_path: Path):
    session = session_dir(tmp_path, 1)
    put(session, layout.IMAGE_PATTERN % 0, T0 + 0.7)
    # Each chunk is finished once the first GOP of the next one is in: gop_s after its end.
    ends = [T0 + 0.7 + 5.5 * (i + 1) for i in range(3)]
    for i, end in enumerate(ends[:2]):
        put(session, layout.VIDEO_PATTERN % i, end + PLAN.gop_s + 0.02 * i)  # a little jitter
    put(session, layout.VIDEO_PATTERN % 2, T0 + 0.7 + 11 + 2.25)  # stopped 2.25 s into the third

    chunks = listed(tmp_path)[0].chunks
    assert [c.duration_s for c in chunks[:2]] == [5.5, 5.5]
    assert chunks[0].start == pytest.approx(T0 + 0.7)
    assert chunks[1].start == pytest.approx(T0 + 0.7 + 5.5, abs=0.03)
    # The last one: from where the one before ended to its file's last write.
    assert chunks[2].duration_s == pytest.approx(2.25 - 0.02, abs=1e-6)
    assert chunks[2].start == pytest.approx(chunks[1].start + 5.5, abs=0.03)
    assert not any(c.open for c in chunks)


def test_without_birth_times_a_short_recording_starts_at_its_first_image_or_the_session(tmp_path: Path):
    with_images = session_dir(tmp_path, 1)
    put(with_images, layout.IMAGE_PATTERN % 0, T0 + 0.6)
    put(with_images, layout.VIDEO_PATTERN % 0, T0 + 3.1)
    without = session_dir(tmp_path, 2, T0 + 100)
    put(without, layout.VIDEO_PATTERN % 0, T0 + 102.5)

    newest, oldest = listed(tmp_path)
    assert oldest.chunks[0].duration_s == pytest.approx(2.5)
    assert newest.chunks[0].duration_s == pytest.approx(2.5)  # from the folder's name: to the second
    assert newest.chunks[0].start == T0 + 100


def test_without_birth_times_a_pause_ends_a_run(tmp_path: Path):
    """Recording paused (disk full) and resumed in the same session: the chunk before the pause
    is short, and is measured like the last one."""
    session = session_dir(tmp_path, 1)
    put(session, layout.IMAGE_PATTERN % 0, T0)
    put(session, layout.VIDEO_PATTERN % 0, T0 + 6.0)  # full: ended 5.5, finished 0.5 later
    put(session, layout.VIDEO_PATTERN % 1, T0 + 8.0)  # paused 2 s after
    put(session, layout.VIDEO_PATTERN % 2, T0 + 60.0)  # resumed a minute later, a full chunk
    put(session, layout.VIDEO_PATTERN % 3, T0 + 63.0)  # and stopped 3 s in

    chunks = listed(tmp_path)[0].chunks
    assert [round(c.duration_s, 3) for c in chunks] == [5.5, 2.5, 5.5, 3.5]
    assert chunks[2].start == pytest.approx(T0 + 60.0 - 0.5 - 5.5)


def test_durations_are_never_negative_nor_longer_than_a_chunk(tmp_path: Path):
    session = session_dir(tmp_path, 1)
    put(session, layout.VIDEO_PATTERN % 0, T0 + 30)  # 30 s after the session began: capped
    put(session, layout.VIDEO_PATTERN % 1, T0 + 20)  # the clock went back
    chunks = listed(tmp_path)[0].chunks
    assert [c.duration_s for c in chunks] == [5.5, 0.0]
    births = {layout.VIDEO_PATTERN % 0: T0 + 1, layout.VIDEO_PATTERN % 1: T0 + 40}
    assert [c.duration_s for c in listed(tmp_path, births=births)[0].chunks] == [5.5, 0.0]


def test_birth_times_of_real_files(tmp_path: Path):
    before = time.time()
    path = put(tmp_path, "video_00000.mp4", T0)  # an mtime set back does not change the birth
    birth = catalog.file_birth_time(str(path))
    if birth is None:
        pytest.skip("this system does not report birth times")
    assert before - 1 <= birth <= time.time() + 1
    assert catalog.file_birth_time(str(tmp_path / "missing")) is None


def test_the_newest_chunk_of_the_session_being_recorded_is_open(tmp_path: Path):
    older = session_dir(tmp_path, 1)
    put(older, layout.VIDEO_PATTERN % 0, T0 + 6)
    current = session_dir(tmp_path, 2, T0 + 10)
    put(current, layout.VIDEO_PATTERN % 0, T0 + 16)
    put(current, layout.VIDEO_PATTERN % 1, T0 + 17)

    newest, oldest = listed(tmp_path, recording=current.name)
    assert [c.open for c in newest.chunks] == [False, True]
    assert [c.open for c in oldest.chunks] == [False]
    assert not any(c.open for s in listed(tmp_path) for c in s.chunks)


def test_iso_times():
    assert catalog.iso(T0) == "2026-11-18T11:06:40.000Z"
    assert catalog.iso(T0 + 0.2504) == "2026-11-18T11:06:40.250Z"
    assert catalog.iso(T0 + 0.9999) == "2026-11-18T11:06:41.000Z"
    assert catalog.iso(T0 + 0.9, precise=False) == "2026-11-18T11:06:40Z"


# --- listing again


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_settled_sessions_are_not_listed_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    settled = session_dir(tmp_path, 1)
    for i in range(3):
        put(settled, layout.VIDEO_PATTERN % i, T0 + 6 + 5.5 * i)
    os.utime(settled, (T0 + 20, T0 + 20))
    clock = Clock(T0 + 3600)
    cat = Catalog(tmp_path, PLAN, clock=clock)
    first = cat.sessions()

    scanned: list[str] = []
    real_scandir = os.scandir

    def scandir(path):
        scanned.append(os.fspath(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    assert cat.sessions() == first
    assert scanned == [os.fspath(tmp_path)]  # SSD_PATH itself, not the settled session

    # A new file changes the folder's mtime: listed again (and kept only once settled).
    put(settled, layout.SNAPSHOT_PATTERN % 0, T0 + 3601)
    clock.now = T0 + 3602
    assert [p.name for p in cat.sessions()[0].pictures] == ["snapshot_00000.jpg"]
    scanned.clear()
    cat.sessions()
    assert settled.as_posix() in scanned  # its newest file is younger than SETTLED_S: not kept


def test_a_session_being_written_is_listed_every_time(tmp_path: Path):
    session = session_dir(tmp_path, 1)
    clock = Clock(T0 + 7)
    chunk = put(session, layout.VIDEO_PATTERN % 0, T0 + 6.5, b"a")
    cat = Catalog(tmp_path, PLAN, clock=clock)
    os.utime(session, (T0 + 6.4, T0 + 6.4))
    assert cat.sessions()[0].chunks[0].size == 1
    # The open chunk grows: the folder's mtime does not change, its listing does.
    with open(chunk, "ab") as out:
        out.write(b"bcd")
    os.utime(chunk, (T0 + 7, T0 + 7))
    os.utime(session, (T0 + 6.4, T0 + 6.4))
    clock.now = T0 + 7.5
    assert cat.sessions()[0].chunks[0].size == 4


def test_removed_sessions_disappear(tmp_path: Path):
    session = session_dir(tmp_path, 1)
    put(session, layout.VIDEO_PATTERN % 0, T0 + 6)
    cat = Catalog(tmp_path, PLAN, clock=lambda: T0 + 3600)
    assert len(cat.sessions()) == 1
    (session / "video_00000.mp4").unlink()
    session.rmdir()
    assert cat.sessions() == []


# --- serving one file


@pytest.fixture
def ssd(tmp_path: Path) -> Path:
    ssd = tmp_path / "ssd"
    session = session_dir(ssd, 1)
    put(session, "video_00000.mp4", T0, b"chunk")
    put(session, "snapshot_00000.jpg", T0, b"jpeg")
    (tmp_path / "secret").write_text("root:x:0:0")
    (session / "video_00001.mp4").symlink_to(tmp_path / "secret")
    (session / "video_00002.mp4").symlink_to("/etc/passwd")
    (session / "image_000000.jpg").mkdir()
    os.mkfifo(session / "image_000001.jpg")
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    put(outside, "video_00000.mp4", T0, b"not a recording")
    (ssd / layout.session_name(2, T0)).symlink_to(outside)
    return ssd


def read(ssd: Path, session: str, name: str) -> tuple[bytes, str]:
    fd, kind = catalog.open_recording(ssd, session, name)
    with os.fdopen(fd, "rb") as source:
        return source.read(), kind


def test_serves_the_recorders_files(ssd: Path):
    session = layout.session_name(1, T0)
    assert read(ssd, session, "video_00000.mp4") == (b"chunk", catalog.VIDEO)
    assert read(ssd, session, "snapshot_00000.jpg") == (b"jpeg", catalog.SNAPSHOT)


@pytest.mark.parametrize(
    ("session", "name"),
    [
        ("..", "etc/passwd"),
        ("..", ".."),
        (layout.session_name(1, T0), "../../secret"),
        (layout.session_name(1, T0), "/etc/passwd"),
        (layout.session_name(1, T0), "video_00000.mp4/"),
        (layout.session_name(1, T0), "video_00009.mp4"),  # does not exist
        ("/etc", "passwd"),
        (layout.session_name(1, T0) + "/..", "video_00000.mp4"),
        (layout.session_name(7, T0), "video_00000.mp4"),  # no such session
        (layout.LATEST_DIR, layout.LATEST_VIDEO),
    ],
)
def test_anything_else_is_not_found(ssd: Path, session: str, name: str):
    with pytest.raises(NoSuchRecording):
        catalog.open_recording(ssd, session, name)


@pytest.mark.parametrize(
    ("session", "name"),
    [
        (layout.session_name(1, T0), "video_00001.mp4"),  # a link to a file of ours outside
        (layout.session_name(1, T0), "video_00002.mp4"),  # a link to /etc/passwd
        (layout.session_name(1, T0), "image_000000.jpg"),  # a folder
        (layout.session_name(1, T0), "image_000001.jpg"),  # a pipe: refused without blocking
        (layout.session_name(2, T0), "video_00000.mp4"),  # a session folder that is a link
    ],
)
def test_links_and_odd_files_are_refused(ssd: Path, session: str, name: str):
    with pytest.raises(NotARecording):
        catalog.open_recording(ssd, session, name)


def test_latest_resolves_only_to_recordings_inside(ssd: Path, tmp_path: Path):
    latest = ssd / layout.LATEST_DIR
    latest.mkdir()
    session = layout.session_name(1, T0)
    (latest / layout.LATEST_VIDEO).symlink_to(f"../{session}/video_00000.mp4")
    (latest / layout.LATEST_IMAGE).symlink_to("/etc/passwd")
    assert catalog.latest(ssd, layout.LATEST_VIDEO) == (session, "video_00000.mp4")
    assert catalog.latest(ssd, layout.LATEST_IMAGE) is None
    (latest / layout.LATEST_IMAGE).unlink()
    assert catalog.latest(ssd, layout.LATEST_IMAGE) is None
    (latest / layout.LATEST_IMAGE).symlink_to(f"../{session}/image_000099.jpg")  # dangling
    assert catalog.latest(ssd, layout.LATEST_IMAGE) is None


def test_locate_takes_only_a_file_directly_in_a_session(ssd: Path, tmp_path: Path):
    session = layout.session_name(1, T0)
    assert catalog.locate(ssd, ssd / session / "snapshot_00000.jpg") == (session, "snapshot_00000.jpg")
    assert catalog.locate(ssd, ssd / session / ".." / session / "video_00000.mp4") == (
        session,
        "video_00000.mp4",
    )
    assert catalog.locate(ssd, "/etc/passwd") is None
    assert catalog.locate(ssd, tmp_path / "secret") is None
    assert catalog.locate(ssd, ssd / session / "video_00001.mp4") is None  # resolves outside
    assert catalog.locate(ssd, ssd / session / "sub" / "video_00000.mp4") is None
