"""Value parsers: each takes a variable's raw string and returns the typed value, or raises
ValueError whose text says what is allowed (``load`` prefixes it with ``VARIABLE='value':``).

Values that end up inside a GStreamer pipeline description (device and socket paths, the RTSP
path) are restricted to characters that cannot change a pipeline's structure, so nothing from the
environment can inject elements. No parser ever echoes the content of a file it reads.
"""

from __future__ import annotations

import grp
import ipaddress
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

SYNTHETIC_CAMERA = "test"
# The synthetic camera with each frame's capture time written into its pixels (benchmarks).
STAMPED_SYNTHETIC_CAMERA = "test-stamped"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")

# Safe in a launch description even unquoted: no spaces, quotes, '!', '=', ',' or parentheses.
_PATH_CHARS = r"[A-Za-z0-9_.:+@/-]"
_DEVICE_RE = re.compile(rf"/dev/{_PATH_CHARS}+")
_SOCKET_RE = re.compile(rf"/{_PATH_CHARS}+")
_RTSP_PATH_RE = re.compile(r"(/[A-Za-z0-9_.~-]+)+")
_TRUE = frozenset({"1", "true", "yes"})
_FALSE = frozenset({"0", "false", "no"})
# User names: what RTSP clients put in a URL or an Authorization header without escaping.
_RTSP_USER_RE = re.compile(r"[A-Za-z0-9_.@+-]{1,64}")
_SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_SIZE_RE = re.compile(r"(\d+(?:\.\d+)?)\s*([KMGT]?)(?:I?B)?", re.IGNORECASE)
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd]?)", re.IGNORECASE)


def int_range(low: int, high: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw.strip(), 10)
        except ValueError:
            raise ValueError(f"must be a whole number from {low} to {high}") from None
        if not low <= value <= high:
            raise ValueError(f"must be a whole number from {low} to {high}")
        return value

    return parse


def even_range(low: int, high: int) -> Callable[[str], int]:
    as_int = int_range(low, high)

    def parse(raw: str) -> int:
        value = as_int(raw)
        if value % 2:
            raise ValueError(f"must be an even number from {low} to {high} (I420 subsamples chroma 2x2)")
        return value

    return parse


def seconds(low: float, high: float) -> Callable[[str], float]:
    def parse(raw: str) -> float:
        try:
            value = float(raw.strip())
        except ValueError:
            raise ValueError(f"must be a number of seconds from {low:g} to {high:g}") from None
        if not low <= value <= high:  # also rejects nan
            raise ValueError(f"must be a number of seconds from {low:g} to {high:g}")
        return value

    return parse


def choice(choices: tuple[str, ...]) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        word = raw.strip().lower()
        if word in choices:
            return word
        raise ValueError("must be one of " + ", ".join(choices))

    return parse


def boolean(raw: str) -> bool:
    word = raw.strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise ValueError("must be one of 1, 0, true, false, yes, no")


def camera(raw: str) -> str:
    if raw in (SYNTHETIC_CAMERA, STAMPED_SYNTHETIC_CAMERA) or (_DEVICE_RE.fullmatch(raw) and ".." not in raw):
        return raw
    raise ValueError(
        f"must be '{SYNTHETIC_CAMERA}' (synthetic camera), '{STAMPED_SYNTHETIC_CAMERA}' (synthetic, "
        "time-stamped) or a device path like /dev/video0 (letters, digits and _ . : + @ / - only)"
    )


def socket_path(raw: str) -> str:
    if _SOCKET_RE.fullmatch(raw) and ".." not in raw and not raw.endswith("/"):
        return raw
    raise ValueError("must be an absolute file path of letters, digits and _ . : + @ / - only")


def rtsp_path(raw: str) -> str:
    if _RTSP_PATH_RE.fullmatch(raw):
        return raw
    raise ValueError("must start with / and hold only letters, digits and _ . ~ - (e.g. /live)")


def optional_file(raw: str) -> Path | None:
    if not raw:
        return None
    if not os.path.isabs(raw):
        raise ValueError("must be empty or an absolute file path")
    return Path(raw)


def bind_address(raw: str) -> str:
    try:
        return str(ipaddress.ip_address(raw.strip()))
    except ValueError:
        raise ValueError(
            "must be an IPv4 or IPv6 address of this machine, e.g. 0.0.0.0 (all IPv4), :: (all), "
            "127.0.0.1 or the radio interface's address"
        ) from None


def rtsp_user(raw: str) -> str:
    if raw and not _RTSP_USER_RE.fullmatch(raw):
        raise ValueError("must be empty or 1-64 letters, digits and _ . @ + - (no ':' or spaces)")
    return raw


def password(raw: str) -> str:
    if any(ch in raw for ch in "\r\n\0"):
        raise ValueError("must not hold line breaks or NUL characters")
    return raw


def _pem_file(raw: str, what: str, marker: str) -> Path | None:
    """Empty, or an absolute path to a readable file holding ``marker`` (a PEM block)."""
    if not raw:
        return None
    path = Path(raw)
    if not path.is_absolute():
        raise ValueError(f"must be empty or the absolute path of a PEM file holding {what}")
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        raise ValueError(f"must be a PEM file holding {what}, but there is no such file") from None
    except IsADirectoryError:
        raise ValueError(f"must be a PEM file holding {what}, but it is a directory") from None
    except OSError as err:
        raise ValueError(
            f"must be a readable PEM file holding {what}, but {(err.strerror or 'it cannot be read').lower()}"
        ) from None
    if marker not in text:
        raise ValueError(f"must be a PEM file holding {what} (no '{marker}' line in it)")
    return path


def tls_cert(raw: str) -> Path | None:
    return _pem_file(raw, "a certificate", "-----BEGIN CERTIFICATE-----")


def tls_key(raw: str) -> Path | None:
    return _pem_file(raw, "a private key", "PRIVATE KEY-----")


def password_file(raw: str) -> tuple[tuple[str, str], ...]:
    """Empty, or a file of ``user:password`` lines (``#`` comments and blank lines ignored).

    The password is everything after the first ':' (it may hold ':' itself). Never echoes a
    line: a malformed one is named by its number only.
    """
    if not raw:
        return ()
    path = Path(raw)
    if not path.is_absolute():
        raise ValueError("must be empty or the absolute path of a file of user:password lines")
    try:
        info = path.stat()
        text = path.read_text()
    except FileNotFoundError:
        raise ValueError("must be a file of user:password lines, but there is no such file") from None
    except (OSError, UnicodeDecodeError) as err:
        reason = err.strerror.lower() if isinstance(err, OSError) and err.strerror else "it is not UTF-8"
        raise ValueError(f"must be a readable file of user:password lines, but {reason}") from None
    if info.st_mode & 0o022:
        raise ValueError(
            f"must not be writable by group or others (mode {info.st_mode & 0o777:o}; chmod 600 it)"
        )
    users: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        user, colon, secret = line.partition(":")
        if not colon or not _RTSP_USER_RE.fullmatch(user) or not secret:
            raise ValueError(
                f"line {number} must be user:password (user: letters, digits and _ . @ + -; "
                "password not empty)"
            )
        if user in users:
            raise ValueError(f"line {number}: user {user} appears twice")
        users[user] = secret
    if not users:
        raise ValueError("must hold at least one user:password line")
    return tuple(users.items())


def free_space(raw: str) -> tuple[int, float]:
    """A percentage of the disk ("5%") or a size ("2G", "500M", "1048576"): (bytes, fraction)."""
    text = raw.strip()
    allowed = "must be a percentage of the disk from 0 to 90 (e.g. 5%) or a size like 2G, 500M or 0"
    if text.endswith("%"):
        try:
            percent = float(text[:-1])
        except ValueError:
            raise ValueError(allowed) from None
        if not 0 <= percent <= 90:
            raise ValueError(allowed)
        return 0, percent / 100
    match = _SIZE_RE.fullmatch(text)
    if not match:
        raise ValueError(allowed)
    return int(float(match.group(1)) * _SIZE_UNITS[match.group(2).upper()]), 0.0


def optional_duration(raw: str) -> float | None:
    """Empty (off), or a duration like 7d, 12h, 30m, 90s or a number of seconds."""
    text = raw.strip()
    if not text:
        return None
    match = _DURATION_RE.fullmatch(text)
    if not match or float(match.group(1)) <= 0:
        raise ValueError(
            "must be empty (keep recordings until space is needed) or a duration like 7d, 12h, 30m, 90s"
        )
    return float(match.group(1)) * _DURATION_UNITS[(match.group(2) or "s").lower()]


def group(raw: str) -> int | None:
    """Empty (None), or the gid of an existing group given by name or id."""
    text = raw.strip()
    if not text:
        return None
    try:
        return grp.getgrgid(int(text)).gr_gid if text.isdigit() else grp.getgrnam(text).gr_gid
    except (KeyError, OverflowError):
        raise ValueError("must be empty or the name or id of an existing group") from None


def log_level(raw: str) -> str:
    level = raw.strip().upper()
    if level in LOG_LEVELS:
        return level
    raise ValueError("must be one of " + ", ".join(LOG_LEVELS))


def ssd_path(raw: str) -> Path:
    path = Path(raw)
    if not raw or not path.is_absolute():
        raise ValueError("must be an absolute directory path")
    # The directory may not exist yet (the recorder creates it); its nearest existing ancestor
    # must then be a directory we can write into.
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"must be a directory, but {existing} is not one")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"must be writable, but {existing} is not writable by this user")
    return path


# MAVLink links, as pymavlink's connection strings name them: UDP towards a router or autopilot
# (udpout), UDP waiting for one (udpin; pymavlink's plain "udp" is the same), TCP as a client,
# or a serial device with its baud rate.
MAVLINK_NETWORK_KINDS = ("udpout", "udpin", "udp", "tcp")
MAVLINK_BAUD_RATES = (9600, 19200, 38400, 57600, 115200, 230400, 460800, 500000, 921600, 1500000, 3000000)
MAVLINK_DEFAULT_BAUD = 57600
_HOST_NAME_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252})")


@dataclass(frozen=True)
class MavlinkEndpoint:
    """Where the MAVLink camera component talks: ``kind`` (udpout, udpin, tcp or serial), a host
    and port, or a serial ``device`` and ``baud``. ``connection`` is pymavlink's string for it."""

    kind: str
    host: str = ""
    port: int = 0
    device: str = ""
    baud: int = 0

    @property
    def connection(self) -> str:
        if self.kind == "serial":
            return self.device
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.kind}:{host}:{self.port}"

    def __str__(self) -> str:
        return f"{self.device}:{self.baud}" if self.kind == "serial" else self.connection


def mavlink_url(raw: str) -> MavlinkEndpoint | None:
    """Empty (no MAVLink), ``udpout:HOST:PORT``, ``udpin:ADDRESS:PORT`` (``udp:`` is udpin),
    ``tcp:HOST:PORT``, or a serial device ``/dev/NAME[:BAUD]`` (57600 when not given)."""
    raw = raw.strip()
    if not raw:
        return None
    allowed = (
        "must be empty, udpout:HOST:PORT, udpin:ADDRESS:PORT, tcp:HOST:PORT or a serial device "
        "/dev/NAME[:BAUD] (e.g. udpout:127.0.0.1:14550, /dev/ttyAMA0:921600)"
    )
    if raw.startswith("/dev/"):
        device, _, baud_text = raw.partition(":")
        if not _DEVICE_RE.fullmatch(device) or ".." in device:
            raise ValueError(allowed)
        if not baud_text:
            return MavlinkEndpoint("serial", device=device, baud=MAVLINK_DEFAULT_BAUD)
        if not baud_text.isdigit() or int(baud_text) not in MAVLINK_BAUD_RATES:
            raise ValueError(f"baud rate must be one of {', '.join(map(str, MAVLINK_BAUD_RATES))}")
        return MavlinkEndpoint("serial", device=device, baud=int(baud_text))
    kind, _, rest = raw.partition(":")
    if kind not in MAVLINK_NETWORK_KINDS:
        raise ValueError(allowed)
    host, _, port_text = rest.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not host or not port_text:
        raise ValueError(f"{allowed}: a host and a port are needed")
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"{allowed}: the port must be 1-65535")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        if kind in ("udpin", "udp") or not _HOST_NAME_RE.fullmatch(host):
            what = "an address" if kind in ("udpin", "udp") else "an address or host name"
            raise ValueError(f"{allowed}: {host!r} is not {what}") from None
    else:
        if address.is_unspecified and kind not in ("udpin", "udp"):
            raise ValueError(f"{allowed}: {kind} needs the peer's address, not {host}")
        host = str(address)
    return MavlinkEndpoint("udpin" if kind == "udp" else kind, host=host, port=int(port_text))


def optional_int_range(low: int, high: int) -> Callable[[str], int | None]:
    """Empty (decided at runtime), or a whole number from ``low`` to ``high``."""
    whole = int_range(low, high)

    def parse(raw: str) -> int | None:
        return None if not raw.strip() else whole(raw)

    return parse


def optional_host(raw: str) -> str:
    """Empty, or an IP address or host name (what goes between ``rtsp://`` and the port)."""
    raw = raw.strip()
    if not raw:
        return ""
    try:
        return str(ipaddress.ip_address(raw))
    except ValueError:
        pass
    if _HOST_NAME_RE.fullmatch(raw) and ".." not in raw and not raw.endswith("-"):
        return raw
    raise ValueError("must be empty, an IP address or a host name (letters, digits, . and -)")
