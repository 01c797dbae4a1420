"""What is recorded under SSD_PATH, as the web worker lists and serves it. No GStreamer, no HTTP.

Only the recorder's own files count (see ``layout``): session folders named like
``00001_2026-11-23T23-04-05Z`` holding ``video_NNNNN.mp4`` chunks, ``image_NNNNNN.jpg`` (one a
second) and ``snapshot_NNNNN.jpg`` (taken on demand). Anything else, ``*.unplayable`` files, and
every symbolic link are ignored: listed, they could be served, and a link can lead anywhere.

Chunk times come from the plan and from file times, without reading the files (the web worker
parses no MP4 and loads no GStreamer). The recorder's chunks come in runs: one pipeline's
chunks, back to back; a run ends when recording stops, when what is recorded changes (the
pipeline is restarted), when the disk fills, or when the recorder stops.

- A chunk followed by another of the same run is the plan's length (``ChunkPlan``: whole GOPs
  making up RECORD_CHUNK_S, exact to a frame, since keyframes are placed by time). splitmuxsink
  finishes it (its mtime) once the next chunk's first GOP is in, and opens the next file at
  that very moment: that is how the next chunk's birth time (statx) tells it continues the run.
  A new run's first file is born later, when the new pipeline's first frame is encoded.
- The last chunk of a run ends at its mtime (end-of-stream finalises it at once) and starts at
  its birth, less a GOP if it was born continuing a run (the GOP splitmuxsink held back).
  What file times cannot show is the encoder's delay (x264 holds ~10 frames: ~0.35 s at 30 fps
  here, 1.6 s at 10 fps): such a chunk comes out that much short, its start that much late.
- Without birth times (older kernels or C libraries, some file systems), a chunk continues the
  run when the next one's mtime comes one chunk length later (within half a GOP), and the last
  of a run starts where the chunk before it ended (or at the first image, or the session's
  start): a run restarted and ended within one chunk length is then mistaken for one run.

Listing a big disk stays cheap: a session folder that has not changed for SETTLED_S (its own
mtime and its newest file's) is not listed again while its mtime stays the same; only the
sessions being written are.
"""

from __future__ import annotations

import calendar
import ctypes
import errno
import os
import re
import stat
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from streamer.storage import layout

# The recorder's names: ``layout.session_name``, ``VIDEO_PATTERN``, ``IMAGE_PATTERN``, ``SNAPSHOT_PATTERN``.
SESSION_RE = re.compile(r"(\d{5,})_(\d{4}-\d\d-\d\dT\d\d-\d\d-\d\dZ)")
VIDEO_RE = re.compile(r"video_(\d{5,})\.mp4")
IMAGE_RE = re.compile(r"image_(\d{6,})\.jpg")
SNAPSHOT_RE = re.compile(r"snapshot_(\d{5,})\.jpg")
SESSION_TIME_FORMAT = "%Y-%m-%dT%H-%M-%SZ"

VIDEO, IMAGE, SNAPSHOT = "video", "image", "snapshot"
CONTENT_TYPES = {VIDEO: "video/mp4", IMAGE: "image/jpeg", SNAPSHOT: "image/jpeg"}

# A folder untouched this long is settled (FAT stores times to 2 s); its listing is then kept.
SETTLED_S = 3.0
# A chunk born this soon after the previous one was finished continues its run (splitmuxsink
# does both in one go; a new pipeline takes at least its encoder's delay to open a file).
SWITCH_S = 0.1


def session_started(name: str) -> float | None:
    """The UTC start time in a session folder's name, or None if the name is not the recorder's."""
    match = SESSION_RE.fullmatch(name)
    return _started(match) if match else None


def _started(match: re.Match[str]) -> float:
    return float(calendar.timegm(time.strptime(match.group(2), SESSION_TIME_FORMAT)))


def parse_name(name: str) -> tuple[str, int] | None:
    """(VIDEO, IMAGE or SNAPSHOT, its number) for a recorder's file name, None for anything else."""
    for kind, pattern in ((VIDEO, VIDEO_RE), (IMAGE, IMAGE_RE), (SNAPSHOT, SNAPSHOT_RE)):
        if match := pattern.fullmatch(name):
            return kind, int(match.group(1))
    return None


@dataclass(frozen=True)
class ChunkPlan:
    """How long the recorder's chunks are (from ``media.pipelines.record_keyframes``)."""

    length_s: float  # a chunk that is not the last of its run
    gop_s: float  # one GOP: how long after a chunk's end its file is finished


@dataclass(frozen=True)
class Chunk:
    name: str
    size: int
    start: float  # wall clock, estimated (see the module's docstring)
    duration_s: float
    open: bool  # being written: the newest chunk of the session the recorder records into


@dataclass(frozen=True)
class Picture:
    name: str
    kind: str  # IMAGE (one a second) or SNAPSHOT (on demand)
    size: int
    time: float  # when it was written (mtime)


@dataclass(frozen=True)
class Session:
    name: str
    started: float  # from its name (UTC, to the second)
    chunks: tuple[Chunk, ...]  # in time order
    pictures: tuple[Picture, ...]  # in time order

    @property
    def bytes(self) -> int:
        return sum(c.size for c in self.chunks) + sum(p.size for p in self.pictures)

    @property
    def duration_s(self) -> float:
        return sum(c.duration_s for c in self.chunks)


@dataclass(frozen=True)
class _File:
    name: str
    kind: str
    number: int  # from its name
    size: int
    mtime: float
    birth: float | None  # chunks only, where the system tells


@dataclass(frozen=True)
class _Listing:
    mtime_ns: int  # of the folder
    files: tuple[_File, ...]


class Catalog:
    """Lists SSD_PATH's sessions; keeps the listing of settled ones. Safe to call from several
    threads (one listing at a time)."""

    def __init__(
        self,
        ssd_path: Path,
        plan: ChunkPlan,
        clock: Callable[[], float] = time.time,
        birth_time: Callable[[str], float | None] | None = None,
    ) -> None:
        self.ssd_path = ssd_path
        self.plan = plan
        self._clock = clock
        self._birth_time = birth_time or file_birth_time
        self._settled: dict[str, _Listing] = {}
        self._built: dict[str, tuple[_Listing, Session]] = {}  # each session, and what it was built from
        self._lock = threading.Lock()

    def sessions(self, recording: str | None = None) -> list[Session]:
        """Every session, newest first. ``recording``: the session the recorder is writing a
        chunk into now (its newest chunk is listed as open). Raises OSError when SSD_PATH
        cannot be read (a missing SSD_PATH has no sessions)."""
        with self._lock:
            try:
                entries = list(os.scandir(self.ssd_path))
            except FileNotFoundError:
                return []
            found: list[tuple[int, Session]] = []
            for entry in entries:
                match = SESSION_RE.fullmatch(entry.name)
                if match is None or not entry.is_dir(follow_symlinks=False):
                    continue
                listing = self._list(entry)
                if listing is None:
                    continue  # removed meanwhile (retention)
                recorded = entry.name == recording
                built = self._built.get(entry.name)
                if built is not None and built[0] is listing and not recorded:
                    session = built[1]  # settled: the very same listing as last time
                else:
                    session = self._session(entry.name, _started(match), listing, open_last=recorded)
                    self._built[entry.name] = (listing, session)
                found.append((int(match.group(1)), session))
            present = {session.name for _, session in found}
            for cache in (self._settled, self._built):
                for name in set(cache) - present:
                    del cache[name]
            return [session for _, session in sorted(found, key=lambda pair: pair[0], reverse=True)]

    def _session(self, name: str, started: float, listing: _Listing, open_last: bool) -> Session:
        files = listing.files
        pictures = (Picture(f.name, f.kind, f.size, f.mtime) for f in files if f.kind != VIDEO)
        return Session(
            name,
            started,
            self._chunks(files, started, open_last),
            tuple(sorted(pictures, key=lambda p: (p.time, p.name))),
        )

    def _list(self, folder: os.DirEntry[str]) -> _Listing | None:
        try:
            mtime_ns = folder.stat(follow_symlinks=False).st_mtime_ns
            kept = self._settled.get(folder.name)
            if kept is not None and kept.mtime_ns == mtime_ns:
                return kept
            listed_at = self._clock()
            files = []
            for entry in os.scandir(folder.path):
                parsed = parse_name(entry.name)
                if parsed is None or not entry.is_file(follow_symlinks=False):
                    continue
                try:
                    info = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                birth = self._birth_time(entry.path) if parsed[0] == VIDEO else None
                files.append(_File(entry.name, *parsed, info.st_size, info.st_mtime, birth))
        except (FileNotFoundError, NotADirectoryError):
            return None
        listing = _Listing(mtime_ns, tuple(sorted(files, key=lambda f: (f.kind, f.number, f.name))))
        newest = max((f.mtime for f in files), default=0.0)
        if max(mtime_ns / 1e9, newest) < listed_at - SETTLED_S:
            self._settled[folder.name] = listing
        else:
            self._settled.pop(folder.name, None)
        return listing

    def _chunks(self, files: tuple[_File, ...], started: float, open_last: bool) -> tuple[Chunk, ...]:
        """Each chunk's start and duration (see the module's docstring)."""
        videos = [f for f in files if f.kind == VIDEO]
        images = [f for f in files if f.kind == IMAGE]
        if not videos:
            return ()
        plan = self.plan
        births = [v.birth for v in videos]
        born = births if all(b is not None for b in births) else None

        def continues(earlier: _File, later: _File, later_birth: float | None) -> bool:
            if later_birth is not None:
                return later_birth - earlier.mtime <= SWITCH_S
            return later.mtime - earlier.mtime <= plan.length_s + plan.gop_s / 2

        # Without birth times, the first run starts at the first image (the same first frame),
        # else at the folder's creation (to the second, shortly before the pipeline started).
        previous_end = images[0].mtime if images and images[0].mtime <= videos[0].mtime else started
        chunks: list[Chunk] = []
        for i, video in enumerate(videos):
            birth = born[i] if born else None
            if i + 1 < len(videos) and continues(video, videos[i + 1], born[i + 1] if born else None):
                end, duration = video.mtime - plan.gop_s, plan.length_s
            else:
                if birth is None or (i > 0 and continues(videos[i - 1], video, birth)):
                    began = previous_end
                else:
                    began = birth
                end = video.mtime
                duration = min(plan.length_s, max(0.0, end - began))
            is_open = open_last and i == len(videos) - 1
            chunks.append(Chunk(video.name, video.size, end - duration, duration, is_open))
            previous_end = end
        return tuple(chunks)


# --- birth times: statx(2) (Python has no os.statx before 3.15)

_AT_FDCWD = -100
_AT_SYMLINK_NOFOLLOW = 0x100
_STATX_BTIME = 0x800
_STATX_SIZE = 256  # bytes of struct statx
_STX_MASK = struct.Struct("=I")  # at offset 0
_STX_BTIME = struct.Struct("=qI")  # tv_sec, tv_nsec at offset 80


def _load_statx() -> Callable[..., int] | None:
    try:
        statx = ctypes.CDLL(None, use_errno=True).statx  # glibc 2.28+, musl 1.2.5+
    except (OSError, AttributeError):
        return None
    statx.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_uint, ctypes.c_char_p)
    statx.restype = ctypes.c_int
    return statx


_statx = _load_statx()


def file_birth_time(path: str) -> float | None:
    """When the file at ``path`` was created, or None where the kernel, the C library or the
    file system cannot say. Does not follow a symbolic link."""
    if _statx is None:
        return None
    buffer = ctypes.create_string_buffer(_STATX_SIZE)
    if _statx(_AT_FDCWD, os.fsencode(path), _AT_SYMLINK_NOFOLLOW, _STATX_BTIME, buffer) != 0:
        return None
    if not _STX_MASK.unpack_from(buffer, 0)[0] & _STATX_BTIME:
        return None
    seconds, nanoseconds = _STX_BTIME.unpack_from(buffer, 80)
    return seconds + nanoseconds / 1e9


def iso(when: float, precise: bool = True) -> str:
    """``2026-11-23T23:04:05.250Z`` (UTC; to the millisecond, or the second)."""
    moment = datetime.fromtimestamp(round(when, 3) if precise else int(when), UTC)
    return moment.isoformat(timespec="milliseconds" if precise else "seconds").removesuffix("+00:00") + "Z"


# --- serving one file


class NoSuchRecording(Exception):
    """No recorder's file by that name (or not one that may be served): 404 to a client."""


class NotARecording(Exception):
    """The name is a recorder's, but the thing is a symbolic link or not a regular file: 403."""


def open_recording(ssd_path: Path, session: str, name: str) -> tuple[int, str]:
    """Open ``SSD_PATH/session/name`` for reading when it is one of the recorder's files; return
    the descriptor and the file's kind.

    Names must be the recorder's (so no ``..``, no ``/``, nothing absolute), and no symbolic link
    is followed below SSD_PATH: the session folder and the file are opened with O_NOFOLLOW,
    relative to the folder above, so nothing can swap a link in between checking and opening.
    A FIFO named like a chunk is opened without blocking and refused. Blocking I/O: call it
    from a thread.
    """
    parsed = parse_name(name)
    if session_started(session) is None or parsed is None:
        raise NoSuchRecording("no such recording: not a name the recorder gives")
    missing = NoSuchRecording(f"no recording {session}/{name}")
    try:
        root = os.open(ssd_path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise missing from None
    try:
        folder = _open_no_link(root, session, os.O_DIRECTORY, missing)
        try:
            fd = _open_no_link(folder, name, os.O_NONBLOCK, missing)
        finally:
            os.close(folder)
    finally:
        os.close(root)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise NotARecording(f"{session}/{name} is not a regular file")
    return fd, parsed[0]


def _open_no_link(folder: int, name: str, flags: int, missing: NoSuchRecording) -> int:
    """Open ``name`` in the folder open as ``folder``, unless it is a symbolic link."""
    try:
        return os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | flags, dir_fd=folder)
    except OSError as err:
        if err.errno not in (errno.ELOOP, errno.ENOTDIR, errno.ENOENT):
            raise
        try:  # a link gives ELOOP, or ENOTDIR where a folder was asked for
            is_link = stat.S_ISLNK(os.stat(name, dir_fd=folder, follow_symlinks=False).st_mode)
        except FileNotFoundError:
            is_link = False
        if is_link:
            raise NotARecording(f"{name} is a symbolic link, not a recording") from None
        raise missing from None


def locate(ssd_path: Path, path: str | os.PathLike[str]) -> tuple[str, str] | None:
    """(session, name) when ``path``, with every link in it resolved, is a recorder's file
    directly inside a session folder of SSD_PATH (e.g. a ``latest_*`` link's target, or the
    path the recorder reports for a snapshot); None otherwise."""
    relative = os.path.relpath(os.path.realpath(path), os.path.realpath(ssd_path))
    parts = relative.split(os.sep)
    if len(parts) != 2 or session_started(parts[0]) is None or parse_name(parts[1]) is None:
        return None
    return parts[0], parts[1]


def latest(ssd_path: Path, link_name: str) -> tuple[str, str] | None:
    """Where ``drone_temp/<link_name>`` points: (session, name) of an existing recorder's file
    inside SSD_PATH, or None (no link yet, a dangling one, or one that leads elsewhere)."""
    link = ssd_path / layout.LATEST_DIR / link_name
    if not link.is_symlink() or not link.exists():
        return None
    return locate(ssd_path, link)
