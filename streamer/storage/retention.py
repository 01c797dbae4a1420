"""Retention: delete the oldest recordings to keep free space, and recordings past a maximum age.

Runs inside the recorder, which knows which files are finished and which one is being written.
Only the recorder's own layout is touched (see ``streamer.storage``): ``video_*.mp4``,
``image_*.jpg``, ``snapshot_*.jpg`` and ``*.unplayable`` files inside session folders, and then
the emptied session folders. Never deleted: the chunk or snapshot being written, the targets of
the ``latest_*`` links, and anything else under SSD_PATH (a user's files, even inside a session
folder, which then stays).

Cheap on a disk holding days of footage: SSD_PATH is listed once at start; older sessions are
then consumed oldest first, one folder listing each, when deletion reaches them; the current
session's files are queued as the recorder finishes them. Nothing walks the disk per chunk.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from streamer.storage import layout

_RECORDING_RE = re.compile(
    r"(video_\d+\.mp4|image_\d+\.jpg|snapshot_\d+\.jpg)(" + re.escape(layout.UNPLAYABLE_SUFFIX) + r")?"
)
MAX_DELETIONS_PER_PASS = 1000  # keeps one pass short on the recorder's main loop


@dataclass
class Pass:
    """What one retention pass deleted."""

    files: int = 0
    bytes: int = 0
    sessions: int = 0
    reason: str = ""


class Retention:
    """Deletes recordings oldest first while free space is below the target or files are too old.

    ``min_free_bytes``: the free space to keep (0: no deleting for space). ``headroom_bytes``:
    deletion starts below ``min_free + headroom`` and frees up to ``min_free + 2 * headroom``,
    so free space stays above the minimum between passes and deletions come in batches.
    """

    def __init__(
        self,
        ssd_path: Path,
        current_session: Path,
        min_free_bytes: int,
        headroom_bytes: int,
        max_age_s: float | None,
        log: logging.Logger,
        clock: Callable[[], float] = time.time,
        free_bytes: Callable[[], int] | None = None,
    ) -> None:
        self.ssd_path = ssd_path
        self.current_session = current_session
        self.min_free_bytes = min_free_bytes
        self.headroom_bytes = headroom_bytes
        self.max_age_s = max_age_s
        self.log = log
        self._clock = clock
        self._free_bytes = free_bytes or (lambda: shutil.disk_usage(ssd_path).free)
        self._older = collections.deque(s for s in layout.sessions(ssd_path) if s != current_session)
        self._oldest_files: collections.deque[Path] = collections.deque()  # of self._older[0]
        self._loaded: Path | None = None
        self._finished: collections.deque[Path] = collections.deque()  # current session, in order
        self.deleted_files = 0
        self.deleted_bytes = 0

    def finished(self, path: str | Path) -> None:
        """The recorder finished writing ``path`` (a chunk or snapshot of the current session)."""
        self._finished.append(Path(path))

    def run(self) -> Pass:
        """One pass: delete what is too old, then the oldest until there is room again."""
        done = Pass()
        protected = self._protected()
        if self.max_age_s is not None:
            cutoff = self._clock() - self.max_age_s
            while done.files < MAX_DELETIONS_PER_PASS:
                candidate = self._oldest(protected, done)
                if candidate is None or _mtime(candidate) >= cutoff:
                    break
                self._delete(candidate, done)
                done.reason = f"older than {_duration(self.max_age_s)}"
        if self.min_free_bytes > 0:
            free = self._free_bytes()
            if free < self.min_free_bytes + self.headroom_bytes:
                goal = self.min_free_bytes + 2 * self.headroom_bytes
                while free < goal and done.files < MAX_DELETIONS_PER_PASS:
                    candidate = self._oldest(protected, done)
                    if candidate is None:
                        break
                    free += self._delete(candidate, done)
                done.reason = done.reason or f"keeping {_mib(self.min_free_bytes)} free"
        if done.files:
            self.deleted_files += done.files
            self.deleted_bytes += done.bytes
            self.log.info(
                "retention: deleted %d files (%s) and %d emptied sessions, %s; %s free now",
                done.files,
                _mib(done.bytes),
                done.sessions,
                done.reason,
                _mib(self._free_bytes()),
            )
        return done

    def _protected(self) -> set[Path]:
        """The latest_* targets: a reader may be following them right now."""
        targets = set()
        for name in (layout.LATEST_VIDEO, layout.LATEST_IMAGE):
            with contextlib.suppress(FileNotFoundError, RuntimeError):
                targets.add((self.ssd_path / layout.LATEST_DIR / name).resolve(strict=True))
        return targets

    def _oldest(self, protected: set[Path], done: Pass) -> Path | None:
        """The oldest deletable recording, or None. Older sessions are taken oldest first; one
        emptied of recordings is removed (if nothing else is in it) and the next one listed."""
        while self._older:
            session = self._older[0]
            if self._loaded != session:
                self._oldest_files = collections.deque(_recordings_by_age(session))
                self._loaded = session
            candidate = _first_unprotected(self._oldest_files, protected)
            if candidate is not None:
                return candidate
            # Only protected files (if any) are left: they go once a later start lists them again.
            self._older.popleft()
            self._loaded = None
            if self._remove_if_empty(session):
                done.sessions += 1
        while self._finished and not self._finished[0].exists():
            self._finished.popleft()
        return _first_unprotected(self._finished, protected, only_first=True)

    def _delete(self, path: Path, done: Pass) -> int:
        for queue in (self._oldest_files, self._finished):
            if path in queue:
                queue.remove(path)  # nearly always the first element
                break
        try:
            size = path.stat().st_size
            path.unlink()
        except FileNotFoundError:
            return 0
        self.log.debug("retention: deleted %s", path)
        done.files += 1
        done.bytes += size
        return size

    def _remove_if_empty(self, session: Path) -> bool:
        try:
            session.rmdir()
        except OSError:  # a user's file is in it: the folder stays
            return False
        self.log.info("retention: removed emptied session %s", session.name)
        return True


def _first_unprotected(
    queue: collections.deque[Path], protected: set[Path], only_first: bool = False
) -> Path | None:
    """The first path in ``queue`` no link points at. ``only_first``: the current session,
    where a protected file means everything after it is newer still: stop there."""
    for path in queue:
        if path.resolve() not in protected:
            return path
        if only_first:
            return None
    return None


def _recordings_by_age(session: Path) -> list[Path]:
    """The recorder's files in a session folder, oldest first (by modification time)."""
    try:
        names = [name for name in os.listdir(session) if _RECORDING_RE.fullmatch(name)]
    except FileNotFoundError:
        return []
    paths = [session / name for name in names]
    return sorted(paths, key=lambda path: (_mtime(path), path.name))


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return 0.0


def _mib(size: int) -> str:
    return f"{size / (1 << 20):.1f} MiB"


def _duration(seconds: float) -> str:
    for unit, length in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= length and seconds % length == 0:
            return f"{seconds / length:g}{unit}"
    return f"{seconds:g}s"
