"""One stack per set of sockets: an flock'ed lock file that also remembers its workers' pids.

The kernel drops the lock when the controller dies, however it dies, so a stale lock never
blocks a restart. The pids written into it let the next controller clear the shared-memory
segments that a killed run's feeder left in /dev/shm.
"""

from __future__ import annotations

import contextlib
import fcntl
import os


class AlreadyRunning(RuntimeError):
    pass


class InstanceLock:
    def __init__(self, path: str) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> list[int]:
        """Take the lock; return the pids a previous, crashed holder recorded."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).split(b"\n", 1)[0].decode(errors="replace") or "?"
            os.close(fd)
            raise AlreadyRunning(f"another stack (pid {holder}) holds {self.path}") from None
        previous = [int(line) for line in os.pread(fd, 65536, 0).split() if line.isdigit()]
        self._fd = fd
        self.record([])
        return previous[1:]  # the first line is the old controller itself

    def record(self, worker_pids: list[int]) -> None:
        """Remember the workers whose leftovers are ours to clear (the file is rewritten)."""
        if self._fd is None:
            return
        data = "".join(f"{pid}\n" for pid in [os.getpid(), *worker_pids]).encode()
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, data, 0)

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        os.close(self._fd)
        self._fd = None
