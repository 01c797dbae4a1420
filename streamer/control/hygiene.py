"""Start-up and between-run hygiene of the controller: one stack per socket set, and nothing a
killed run left behind (socket files, ``/dev/shm`` segments, a stale state file) in the way.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
import subprocess
import sys

from streamer.config import Settings
from streamer.control.instance import AlreadyRunning, InstanceLock
from streamer.media import shm
from streamer.runtime import commands, state

# What a worker needs of its interpreter, checked in a child so the controller itself never
# loads GStreamer.
_GSTREAMER_CHECK = (
    "import gi; gi.require_version('Gst', '1.0'); gi.require_version('GstRtspServer', '1.0'); "
    "from gi.repository import Gst, GstRtspServer; Gst.init(None)"
)


def gstreamer_missing(python: str = sys.executable) -> str | None:
    """Why the workers could not run on ``python`` (e.g. a Python without GStreamer's bindings:
    pyenv's, or a venv made without --system-site-packages), or None. Otherwise every worker
    would die on import and the stack would restart forever."""
    result = subprocess.run([python, "-c", _GSTREAMER_CHECK], capture_output=True, text=True, timeout=60)
    if result.returncode == 0:
        return None
    lines = result.stderr.strip().splitlines()
    return lines[-1] if lines else f"exit status {result.returncode}"


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def port_in_use(address: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((address, port))
        except OSError as err:
            return err.errno == errno.EADDRINUSE
    return False


def start_up(settings: Settings, lock: InstanceLock, owned_pids: set[int], log: logging.Logger) -> None:
    """Before the first start: refuse to run twice; clear what a crashed run left.

    Raises AlreadyRunning. ``owned_pids`` gets the workers of a crashed run whose leftovers are
    ours to clear (those still leaking something stay in it)."""
    owned_pids.update(lock.acquire())
    state.remove(state.state_file(lock.path))  # the lock is ours: any state file is stale
    forget_recording_wish(settings)  # a new controller starts from the settings
    clear_leftovers(settings, lock, owned_pids, log, refuse_if_served=True)
    if settings.enable_rtsp and port_in_use(settings.rtsp_bind, settings.rtsp_port):
        raise AlreadyRunning(f"RTSP port {settings.rtsp_port} is in use by another process")
    if settings.enable_http and port_in_use(settings.http_bind, settings.http_port):
        raise AlreadyRunning(f"HTTP port {settings.http_port} is in use by another process (HTTP_PORT)")


def forget_recording_wish(settings: Settings) -> None:
    """Remove the operator's runtime choice of what to record (``commands.wish_path``): it
    holds for restarts under one controller, not for the next one."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(commands.wish_path(settings))


def clear_leftovers(
    settings: Settings, lock: InstanceLock, owned_pids: set[int], log: logging.Logger, refuse_if_served: bool
) -> None:
    """Remove socket files (shared memory's, and the workers' command sockets) and shm segments
    that killed workers of ours left behind."""
    for path in (*settings.shm_sockets, *commands.socket_paths(settings)):
        try:
            if shm.remove_stale_socket(path):
                log.info("removed stale socket %s", path)
        except shm.UntrustedPath as err:
            if refuse_if_served:
                raise AlreadyRunning(str(err)) from None
        except shm.SocketInUse as err:  # a service's (the live worker's) while the stack restarts
            if refuse_if_served:
                raise AlreadyRunning(f"{err}; is another stack running?") from None
    dead = {pid for pid in owned_pids if not pid_alive(pid)}
    for segment in shm.remove_segments_of(dead):
        log.info("removed leaked shared memory %s", segment)
    owned_pids -= dead
    lock.record(sorted(owned_pids))
