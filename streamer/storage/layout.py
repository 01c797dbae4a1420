"""Where recordings go under SSD_PATH, and the ``latest_*`` links. No GStreamer here.

    SSD_PATH/
      00001_2026-11-23T23-04-05Z/     one folder per recorder start ("session")
        video_00000.mp4               H.264 MP4 chunks of 5.5 s, in time order
        image_000000.jpg              one JPEG per second, in time order
        snapshot_00000.jpg            full-size JPEGs taken on demand, in time order
      drone_temp/
        latest_video.mp4 -> ../00001_2026-11-23T23-04-05Z/video_00012.mp4
        latest_image.jpg -> ../00001_2026-11-23T23-04-05Z/image_000067.jpg

Session folders start with a sequence number so they sort in creation order even when the
clock is wrong (companion computers often boot without a real-time clock), and are created
exclusively, so nothing ever writes into an earlier session. Names avoid ':' so they survive
FAT/exFAT media.

Snapshots are written under a temporary dot-name, flushed and renamed: a ``snapshot_*.jpg`` is
always whole, and what a killed recorder leaves is a ``.snapshot_*.tmp`` nothing looks at.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from pathlib import Path

LATEST_DIR = "drone_temp"
LATEST_VIDEO = "latest_video.mp4"
LATEST_IMAGE = "latest_image.jpg"
VIDEO_PATTERN = "video_%05d.mp4"
IMAGE_PATTERN = "image_%06d.jpg"
SNAPSHOT_PREFIX = "snapshot_"
SNAPSHOT_PATTERN = SNAPSHOT_PREFIX + "%05d.jpg"
UNPLAYABLE_SUFFIX = ".unplayable"

_SESSION_RE = re.compile(r"(\d{5,})_")


def sessions(ssd_path: Path) -> list[Path]:
    """Session folders under SSD_PATH, oldest first (anything else there is left alone)."""
    try:
        entries = os.listdir(ssd_path)
    except FileNotFoundError:
        return []
    return sorted(
        ssd_path / name for name in entries if _SESSION_RE.match(name) and (ssd_path / name).is_dir()
    )


def last_files(session: Path) -> list[Path]:
    """The newest chunk and the newest snapshot of a session: the only files a killed recorder
    can have left half-written."""
    newest = []
    for prefix in ("video_", "image_"):
        files = sorted(session.glob(f"{prefix}*"))
        files = [f for f in files if f.suffix in (".mp4", ".jpg")]
        if files:
            newest.append(files[-1])
    return newest


def set_aside(path: Path) -> Path:
    """Rename a file that cannot be played to ``<name>.unplayable`` (kept, but no longer looks
    like a recording)."""
    target = path.with_name(path.name + UNPLAYABLE_SUFFIX)
    os.replace(path, target)
    return target


def jpeg_complete(path: Path) -> bool:
    """A JPEG whose writing finished ends with the end-of-image marker; a cut-off one does not."""
    with open(path, "rb") as image:
        image.seek(max(0, path.stat().st_size - 2))
        return image.read(2) == b"\xff\xd9"


def next_index(session: Path, prefix: str) -> int:
    """The number after the highest ``<prefix>NNNN.*`` in a session folder (0 if none), so a
    resumed recording continues the numbering instead of overwriting."""
    numbers = [
        int(digits)
        for name in os.listdir(session)
        if name.startswith(prefix) and (digits := name[len(prefix) :].split(".", 1)[0]).isdigit()
    ]
    return max(numbers, default=-1) + 1


def save_snapshot(session: Path, jpeg: bytes) -> Path:
    """Write ``jpeg`` as the session's next ``snapshot_NNNNN.jpg`` and return its path. The
    name appears only once the whole file is on disk (temporary name, fsync, rename); on an
    error (e.g. the disk is full) nothing is left behind and OSError is raised."""
    path = session / (SNAPSHOT_PATTERN % next_index(session, SNAPSHOT_PREFIX))
    temporary = session / f".{path.stem}.tmp"
    try:
        with open(temporary, "wb") as out:
            out.write(jpeg)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except OSError:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise
    return path


def interrupted_snapshots(session: Path) -> list[Path]:
    """Temporary files of snapshots a killed recorder was writing in ``session``."""
    return sorted(session.glob(f".{SNAPSHOT_PREFIX}*.tmp"))


def recording_bytes_per_second(
    record_bitrate: int, width: int, height: int, video: bool, images: bool
) -> int:
    """About how fast the recorder fills the disk (a JPEG at quality 90: roughly 2 bits/pixel)."""
    return (record_bitrate // 8 if video else 0) + (width * height // 4 if images else 0)


def disk_reserve_bytes(bytes_per_second: int) -> int:
    """Free space below which the recorder pauses: about 3 s of recording plus 256 KiB, room to
    finalise the open chunk (its index is a few KiB) with margin."""
    return 3 * bytes_per_second + (256 << 10)


def on_root_filesystem(path: Path) -> bool:
    """Whether ``path``, or while it does not exist its nearest existing ancestor, lies on the
    root file system: where an SSD that failed to mount leaves its mount point."""
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    return existing.stat().st_dev == os.stat("/").st_dev


def session_name(sequence: int, started: float) -> str:
    return f"{sequence:05d}_{time.strftime('%Y-%m-%dT%H-%M-%SZ', time.gmtime(started))}"


def create_session_dir(ssd_path: Path, started: float | None = None) -> Path:
    """Create and return a new, empty session folder numbered after every existing one."""
    ssd_path.mkdir(parents=True, exist_ok=True)
    started = time.time() if started is None else started
    existing = [int(m.group(1)) for entry in os.listdir(ssd_path) if (m := _SESSION_RE.match(entry))]
    sequence = max(existing, default=0) + 1
    while True:
        path = ssd_path / session_name(sequence, started)
        try:
            path.mkdir()  # exclusive: never reuse a folder, even one another process just made
        except FileExistsError:
            sequence += 1
            continue
        return path


class LatestLinks:
    """Repoints ``drone_temp/latest_*`` atomically, as relative links.

    A reader never sees a missing or half-made link: the new link is made under a temporary
    name in the same folder and renamed over the old one. Relative targets keep the links
    working when the SSD is mounted elsewhere.
    """

    def __init__(self, ssd_path: Path) -> None:
        self.directory = ssd_path / LATEST_DIR
        self.directory.mkdir(parents=True, exist_ok=True)

    def point(self, link_name: str, target: str | os.PathLike[str]) -> Path:
        link = self.directory / link_name
        relative = os.path.relpath(Path(target).resolve(), self.directory.resolve())
        temporary = self.directory / f".{link_name}.{os.getpid()}.tmp"
        if temporary.is_symlink():
            temporary.unlink()
        os.symlink(relative, temporary)
        os.replace(temporary, link)
        return link
