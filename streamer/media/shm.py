"""Hygiene for the shared-memory transport, used by the feeder and the controller.

``shmsink`` leaves two things behind when its process is killed: the control socket file (the
next writer then silently binds ``<path>.0`` and readers get "connection refused") and its
``/dev/shm/shmpipe.<pid>.<n>`` segment.

Socket paths often live in a directory others can write to (``/tmp``, sticky): whatever is
found at a socket path is only removed when this user owns it; a file or link somebody else
put there is an error, never followed or deleted (``UntrustedPath``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
from collections.abc import Iterable
from pathlib import Path

SHM_DIR = Path("/dev/shm")
_SEGMENT_PREFIX = "shmpipe."
_UNIX_LISTENING = 0x10000  # __SO_ACCEPTCON in /proc/net/unix's Flags column


class SocketInUse(RuntimeError):
    """Somebody is still serving on a socket path we were about to take over."""


class UntrustedPath(SocketInUse):
    """A socket path holds a file or link this user does not own, or sits in a directory anyone
    may replace files in. (A SocketInUse, so every caller already refuses to start on it.)"""


def check_socket_path(path: str) -> None:
    """Raise UntrustedPath unless ``path`` is safe for this user to create, serve and remove.

    The parent directory must be owned by this user or root, and not writable by others
    unless sticky (as /tmp is: then nobody else can replace our files). An existing entry at
    ``path`` must be owned by this user; it is inspected with lstat, never followed.
    """
    uid = os.geteuid()
    parent = os.path.dirname(path) or "."
    try:
        info = os.stat(parent)
    except FileNotFoundError:
        raise UntrustedPath(f"{path}: directory {parent} does not exist") from None
    if info.st_uid not in (uid, 0):
        raise UntrustedPath(f"{path}: directory {parent} belongs to uid {info.st_uid}, not to this user")
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not info.st_mode & stat.S_ISVTX:
        raise UntrustedPath(
            f"{path}: directory {parent} is writable by others without the sticky bit "
            f"(mode {info.st_mode & 0o7777:o}); anyone could replace the socket"
        )
    try:
        entry = os.lstat(path)
    except FileNotFoundError:
        return
    if entry.st_uid != uid:
        kind = "link" if stat.S_ISLNK(entry.st_mode) else "file"
        raise UntrustedPath(
            f"{path}: a {kind} owned by uid {entry.st_uid} is in the way (not this user's: "
            "not following or removing it; remove it yourself or choose another path)"
        )


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
    """Remove a socket file nobody serves; raise SocketInUse if somebody does, UntrustedPath if
    the path is not ours to take (see ``check_socket_path``).

    Returns True if a stale file was removed.
    """
    check_socket_path(path)
    if not os.path.lexists(path):
        return False
    if is_listening(path):
        raise SocketInUse(f"{path} is being served by another process")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    return True


def remove_stale_sockets(paths: Iterable[str], log: logging.Logger) -> None:
    """``remove_stale_socket`` for each path, logging each removal; raises as it does."""
    for path in paths:
        if remove_stale_socket(path):
            log.info("removed stale socket %s", path)


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


def share_with_group(paths: Iterable[str | Path], gid: int) -> None:
    """Give the feeder's sockets and segments to SHM_GROUP (shmsink's ``perms`` sets their mode
    but cannot set a group)."""
    for path in paths:
        os.chown(path, -1, gid)
