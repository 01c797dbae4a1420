"""The machine against the settings, without GStreamer: SSD_PATH, its space, the ports, the
clock, the shared-memory sockets' folders and the user's groups."""

from __future__ import annotations

import contextlib
import errno
import getpass
import grp
import os
import shutil
import socket
import stat
import tempfile
import time
from pathlib import Path

from streamer.config import Settings
from streamer.doctor.report import Check
from streamer.storage import layout

GB = 1e9
MIN_HOURS = 1.0  # less room than this for recordings is a failure
MIN_YEAR = 2024  # a clock before this has never been set (no RTC, no NTP yet)
SHM_DIR = "/dev/shm"


def existing_ancestor(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def mount_of(path: Path) -> tuple[str, str, str]:
    """(mount point, file system type, source) of the mount ``path`` (which exists) lies on."""
    path = path.resolve()
    device = path.stat().st_dev
    best = ("/", "?", "?")
    with open("/proc/self/mountinfo") as mountinfo:
        for line in mountinfo:
            fields, _, rest = line.partition(" - ")
            parts, extra = fields.split(), rest.split()
            major, minor = (int(n) for n in parts[2].split(":"))
            point = parts[4].replace("\\040", " ")
            if os.makedev(major, minor) != device or len(extra) < 2:
                continue
            inside = str(path) == point or str(path).startswith(point.rstrip("/") + "/")
            if inside and len(point) >= len(best[0]):
                best = (point, extra[0], extra[1])
    return best


# --- SSD_PATH


def ssd_path(s: Settings) -> list[Check]:
    """Writable (tried, not assumed: root passes every permission check but not a read-only
    mount), symlinks (the ``latest_*`` links; FAT/exFAT have none), and where it is mounted."""
    path = s.ssd_path
    base = existing_ancestor(path)
    if not base.is_dir():
        return [Check.failed("SSD_PATH", f"{base} is not a directory", "set SSD_PATH to a directory")]
    where = "" if base == path else f" (does not exist yet: will be made in {base})"
    point, fstype, source = mount_of(base)
    on_root = layout.on_root_filesystem(path)
    mounted = "the root file system" if on_root else f"its own mount {point}"
    try:
        with tempfile.TemporaryDirectory(prefix=".streamer-doctor-", dir=base) as probe:
            target = Path(probe) / "file"
            target.write_bytes(b"x")
            try:
                os.symlink(target.name, Path(probe) / "link")
                symlinks = None
            except OSError as err:
                symlinks = err.strerror or str(err)
    except OSError as err:
        return [
            Check.failed(
                "SSD_PATH",
                f"{path}: cannot write in {base} ({err.strerror or err})",
                _write_fix(err, base, point),
            )
        ]
    result = [Check.passed("SSD_PATH", f"{path}: writable, {fstype} on {mounted} ({source}){where}")]
    if on_root and s.record_require_mount:
        result.append(
            Check.failed(
                "SSD mounted",
                f"{path} is on the root file system and RECORD_REQUIRE_MOUNT=1: the recorder would wait",
                f"mount the SSD so that {path} lies on it (findmnt, /etc/fstab), or RECORD_REQUIRE_MOUNT=0",
            )
        )
    if symlinks:
        result.append(
            Check.failed(
                "symlinks",
                f"{fstype} cannot hold symlinks ({symlinks}): drone_temp/latest_* cannot be made",
                "format the SSD with a Linux file system (ext4)",
            )
        )
    else:
        result.append(Check.passed("symlinks", f"{fstype} holds them (drone_temp/latest_*)"))
    return result


def _write_fix(err: OSError, base: Path, mount_point: str) -> str:
    if err.errno == errno.EROFS:
        return f"it is on a read-only mount: mount it read-write (mount -o remount,rw {mount_point})"
    if err.errno in (errno.EACCES, errno.EPERM):
        return (
            f"make it writable for user {getpass.getuser()} (chown or chmod {base}; chattr -i if immutable)"
        )
    if err.errno == errno.ENOSPC:
        return "free space on it"
    return "check the disk (dmesg)"


def disk_space(s: Settings) -> Check:
    """How many hours of recording fit: free space plus our recordings (retention deletes the
    oldest) less RECORD_MIN_FREE, at the configured bitrates."""
    if not (s.enable_video or s.enable_images):
        return Check.passed("disk space", "recording is off (ENABLE_VIDEO=0, ENABLE_IMAGES=0)")
    base = existing_ancestor(s.ssd_path)
    usage = shutil.disk_usage(base)
    min_bytes, fraction = s.record_min_free
    keep = max(min_bytes, int(fraction * usage.total))
    recorded = _recorded_bytes(s.ssd_path)
    rate = layout.recording_bytes_per_second(
        s.recorded_bitrate, s.video_width, s.video_height, s.enable_video, s.enable_images
    )
    hours = (usage.free + recorded - keep) / rate / 3600
    what = " + ".join(
        part
        for part, on in (
            (f"video at {s.recorded_bitrate / 1e6:g} Mbit/s", s.enable_video),
            ("a JPEG a second", s.enable_images),
        )
        if on
    )
    detail = (
        f"{usage.free / GB:.1f} GB free of {usage.total / GB:.1f} GB, {recorded / GB:.1f} GB of recordings, "
        f"keeping {keep / GB:.1f} GB free (RECORD_MIN_FREE): room for {max(hours, 0):.1f} h of {what} "
        f"({rate * 3600 / GB:.2f} GB/h)"
    )
    if hours >= MIN_HOURS:
        return Check.passed("disk space", detail)
    return Check.failed(
        "disk space",
        detail,
        "a bigger disk, or lower RECORD_BITRATE, ENABLE_IMAGES=0, a smaller RECORD_MIN_FREE",
    )


def _recorded_bytes(ssd_path: Path) -> int:
    """What the session folders hold (one listing each: no walk of the whole disk)."""
    total = 0
    for session in layout.sessions(ssd_path):
        with contextlib.suppress(OSError), os.scandir(session) as entries:
            total += sum(entry.stat().st_size for entry in entries if entry.is_file(follow_symlinks=False))
    return total


# --- ports


def listeners(port: int) -> set[int]:
    """Pids of the processes with a TCP socket listening on ``port`` (those this user may see)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as lines:
            next(lines)
            for line in lines:
                fields = line.split()
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                    inodes.add(f"socket:[{fields[9]}]")
    pids = set()
    if not inodes:
        return pids
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if any(os.readlink(fd) in inodes for fd in (entry / "fd").iterdir()):
                pids.add(int(entry.name))
    return pids


def process_name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"


def port(variable: str, bind_variable: str, address: str, number: int, ours: dict[int, str]) -> Check:
    """The port can be listened on at its bind address, or our own running stack holds it."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((address, number))
            return Check.passed(variable, f"{address}:{number} is free")
        except OSError as err:
            failure = err
    if failure.errno == errno.EADDRNOTAVAIL:
        return Check.failed(
            variable,
            f"{bind_variable}={address} is not an address of this machine",
            f"set {bind_variable} to 0.0.0.0, 127.0.0.1 or an address `ip -brief address` lists",
        )
    if failure.errno == errno.EACCES:
        return Check.failed(
            variable,
            f"port {number} needs privileges this user lacks",
            "use a port from 1024 up, or give the service CAP_NET_BIND_SERVICE (AmbientCapabilities=)",
        )
    if failure.errno != errno.EADDRINUSE:
        return Check.failed(variable, f"{address}:{number}: {failure.strerror}", "check the network settings")
    holders = listeners(number)
    if holders & set(ours):
        names = ", ".join(f"{ours[pid]} (pid {pid})" for pid in sorted(holders & set(ours)))
        return Check.passed(variable, f"port {number} is held by the running stack: {names}")
    if not holders and ours:
        return Check.passed(variable, f"port {number} is in use, presumably by the running stack")
    named = ", ".join(f"pid {pid} ({process_name(pid)})" for pid in sorted(holders)) or "another program"
    return Check.failed(
        variable,
        f"port {number} is in use by {named}",
        f"stop that program, or set {variable} to a free port",
    )


def ports(s: Settings, ours: dict[int, str]) -> list[Check]:
    found = []
    if s.enable_rtsp:
        found.append(port("RTSP_PORT", "RTSP_BIND", s.rtsp_bind, s.rtsp_port, ours))
    if s.enable_http:
        found.append(port("HTTP_PORT", "HTTP_BIND", s.http_bind, s.http_port, ours))
    return found


# --- the MAVLink link


def mavlink_link(s: Settings, ours: dict[int, str]) -> Check | None:
    """MAVLINK_URL can be used from here: a serial device that exists and this user may open, a
    UDP port to listen on that is free (or our own stack's), a TCP peer that accepts. A UDP
    peer to send to cannot be checked without a reply: it is only shown. None without a link."""
    endpoint = s.mavlink_url
    if endpoint is None:
        return None
    name = "MAVLINK_URL"
    if endpoint.kind == "serial":
        device = Path(endpoint.device)
        if not device.exists():
            return Check.failed(
                name,
                f"{device} does not exist",
                "plug the flight controller in, or name its port (ls /dev/serial/by-id/)",
            )
        if not stat.S_ISCHR(device.stat().st_mode):
            return Check.failed(
                name, f"{device} is not a serial device", "name the flight controller's serial port"
            )
        if not os.access(device, os.R_OK | os.W_OK):
            return Check.failed(
                name,
                f"{getpass.getuser()} may not open {device}",
                f"sudo usermod -aG dialout {getpass.getuser()} (the service unit adds dialout itself)",
            )
        return Check.passed(name, f"{device} at {endpoint.baud} baud can be opened")
    if endpoint.kind == "udpin":
        family = socket.AF_INET6 if ":" in endpoint.host else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            try:
                probe.bind((endpoint.host, endpoint.port))
                return Check.passed(name, f"UDP {endpoint.host}:{endpoint.port} is free to listen on")
            except OSError as err:
                failure = err
        if failure.errno == errno.EADDRINUSE and ours:
            return Check.passed(name, f"UDP port {endpoint.port} is in use, presumably by the running stack")
        return Check.failed(
            name,
            f"cannot listen on UDP {endpoint.host}:{endpoint.port}: {failure.strerror}",
            "choose a free port",
        )
    if endpoint.kind == "tcp":
        try:
            with socket.create_connection((endpoint.host, endpoint.port), timeout=2):
                return Check.passed(name, f"{endpoint.host}:{endpoint.port} accepts TCP connections")
        except OSError as err:
            return Check.failed(
                name,
                f"{endpoint.host}:{endpoint.port}: {err.strerror or err}",
                "start the autopilot's or mavlink-router's TCP server (the component retries meanwhile)",
            )
    return Check.passed(
        name, f"sends to UDP {endpoint.host}:{endpoint.port} (a reply cannot be checked from here)"
    )


# --- the rest


def clock(now: float | None = None) -> Check:
    now = time.time() if now is None else now
    shown = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(now))
    if time.gmtime(now).tm_year >= MIN_YEAR:
        return Check.passed("clock", shown)
    return Check.failed(
        "clock",
        f"{shown}: never set (no real-time clock, no NTP yet), recordings get wrong dates in their names",
        "enable time sync (timedatectl set-ntp true) with a network, or fit an RTC; session folders "
        "stay in order by their number regardless",
    )


def sockets(s: Settings, running: bool) -> Check:
    """The shared-memory sockets' folders and /dev/shm (the feeder's segments) are writable; no
    socket file left by another user where we cannot remove it (a sticky /tmp)."""
    problems = []
    folders = sorted({str(Path(path).parent) for path in s.shm_sockets} | {SHM_DIR})
    for folder in folders:
        if not os.path.isdir(folder):
            problems.append(f"{folder} does not exist")
        elif not os.access(folder, os.W_OK | os.X_OK):
            problems.append(f"{folder} is not writable")
    if not running:
        for path in s.shm_sockets:
            with contextlib.suppress(FileNotFoundError):
                info, folder = os.lstat(path), os.stat(Path(path).parent)
                if info.st_uid != os.geteuid() and os.geteuid() != 0 and folder.st_mode & stat.S_ISVTX:
                    problems.append(
                        f"{path} belongs to another user (uid {info.st_uid}) and cannot be removed"
                    )
    if problems:
        return Check.failed(
            "sockets",
            "; ".join(problems),
            f"create the folder writable for user {getpass.getuser()} (or remove the file), or set "
            "SHM_RECORDER_SOCKET / SHM_STREAM_SOCKET elsewhere",
        )
    return Check.passed("sockets", f"{', '.join(folders)} writable")


def video_group() -> Check:
    if os.geteuid() == 0:
        return Check.passed("video group", "running as root")
    user = getpass.getuser()
    try:
        video = grp.getgrnam("video").gr_gid
    except KeyError:
        return Check.passed("video group", "this system has no group video")
    if video in os.getgroups():
        return Check.passed("video group", f"{user} is in it")
    return Check.failed(
        "video group",
        f"{user} is not in group video: cameras cannot be opened",
        f"sudo usermod -aG video {user}, then log in again",
    )
