"""Hygiene for the shared-memory transport, used by the feeder and the controller.

``shmsink`` leaves two things behind when its process is killed: the control socket file (the
next writer then silently binds ``<path>.0`` and readers get "connection refused") and its
``/dev/shm/shmpipe.<pid>.<n>`` segment.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from pathlib import Path

SHM_DIR = Path("/dev/shm")
_SEGMENT_PREFIX = "shmpipe."
_UNIX_LISTENING = 0x10000  # __SO_ACCEPTCON in /proc/net/unix's Flags column


class SocketInUse(RuntimeError):
    """Somebody is still serving on a socket path we were about to take over."""


def is_listening(path: str) -> bool:
    """True if a live process listens on the Unix socket ``path`` (without connecting to it)."""
    try:
        with open("/proc/net/unix") as table:
            next(table)  # header
            for row in table:
                fields = row.split()
                if len(fields) >= 8 and fields[7] == path and int(fields[3], 16) & _UNIX_LISTENING:
                    return True
    except FileNotFoundError:  # not Linux: fall back to nothing listening
        pass
    return False


def remove_stale_socket(path: str) -> bool:
    """Remove a socket file nobody serves; raise SocketInUse if somebody does.

    Returns True if a stale file was removed.
    """
    if not os.path.lexists(path):
        return False
    if is_listening(path):
        raise SocketInUse(f"{path} is being served by another process")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    return True


def segment_owner(name: str) -> int | None:
    """The writer's pid from a segment name like ``shmpipe. 3847.    0`` (space-padded)."""
    if not name.startswith(_SEGMENT_PREFIX):
        return None
    pid, _, _ = name[len(_SEGMENT_PREFIX) :].partition(".")
    try:
        return int(pid.strip())
    except ValueError:
        return None


def segments_of(pids: Iterable[int]) -> list[Path]:
    wanted = set(pids)
    try:
        entries = list(SHM_DIR.iterdir())
    except FileNotFoundError:
        return []
    return [entry for entry in entries if segment_owner(entry.name) in wanted]


def remove_segments_of(pids: Iterable[int]) -> list[Path]:
    """Remove the shm segments of (dead) writer processes; returns what was removed."""
    removed = []
    for segment in segments_of(pids):
        with contextlib.suppress(FileNotFoundError):
            segment.unlink()
            removed.append(segment)
    return removed
