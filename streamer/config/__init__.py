"""Settings: parsed once from the environment into a frozen, typed object.

Every setting is declared once in ``_SETTINGS`` with its variable name, default and a parser that
validates it. ``load(environ)`` either returns a complete ``Settings`` or raises ``ConfigError``
naming the variable, the value and what is allowed. Values that end up inside a GStreamer
pipeline description (device and socket paths, the RTSP path) are restricted to characters that
cannot change a pipeline's structure, so nothing from the environment can inject elements.

This module imports nothing from the rest of the project.
"""

from __future__ import annotations

import difflib
import grp
import ipaddress
import os
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SYNTHETIC_CAMERA = "test"
# The synthetic camera with each frame's capture time written into its pixels (benchmarks).
STAMPED_SYNTHETIC_CAMERA = "test-stamped"
RESTART_SCOPES = ("stack", "worker")

# Safe in a launch description even unquoted: no spaces, quotes, '!', '=', ',' or parentheses.
_PATH_CHARS = r"[A-Za-z0-9_.:+@/-]"
_DEVICE_RE = re.compile(rf"/dev/{_PATH_CHARS}+")
_SOCKET_RE = re.compile(rf"/{_PATH_CHARS}+")
_RTSP_PATH_RE = re.compile(r"(/[A-Za-z0-9_.~-]+)+")
_TRUE = frozenset({"1", "true", "yes"})
_FALSE = frozenset({"0", "false", "no"})
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
RTSP_AUTH_METHODS = ("digest", "basic")
# Files and folders the stack creates are never writable by others, nor readable by the world
# (recordings, lock files): set by every worker and by the controller before anything is made.
PRIVATE_UMASK = 0o027
REDACTED = "<redacted>"
# User names: what RTSP clients put in a URL or an Authorization header without escaping.
_RTSP_USER_RE = re.compile(r"[A-Za-z0-9_.@+-]{1,64}")
# Credentials in a URL (rtsp://user:password@host/...): the part between // and @.
_URL_CREDENTIALS_RE = re.compile(r"(?<=//)[^/@\s]*:[^/@\s]*@")
# Variable names whose values are never echoed in an error message.
_SECRET_WORDS = ("PASS", "SECRET", "TOKEN")

# Unknown variables with these prefixes are almost always typos of ours (ENABLE_RSTP=0).
OWN_PREFIXES = ("ENABLE_", "VIDEO_", "RECORD_", "RTSP_", "SHM_", "RESTART_", "STOP_", "STALL_", "CAMERA_")


class ConfigError(ValueError):
    """A setting is missing, malformed or out of range. The message names the variable."""


@dataclass(frozen=True)
class Settings:
    """The whole configuration of the stack. Built by ``load``; never read from os.environ again."""

    ssd_path: Path
    enable_rtsp: bool
    enable_video: bool
    enable_images: bool
    camera: str  # a /dev/... device path, SYNTHETIC_CAMERA or STAMPED_SYNTHETIC_CAMERA
    camera_unplug_file: Path | None  # synthetic camera only: "unplugged" while this file exists
    video_fps: int
    video_width: int
    video_height: int
    video_bitrate: int  # bit/s, the RTSP stream
    record_bitrate: int  # bit/s, the recorded MP4 chunks
    record_min_free: tuple[int, float]  # keep free on SSD_PATH: (bytes, fraction of the disk), the larger
    record_max_age_s: float | None  # delete recordings older than this; None: keep until space runs out
    shm_recorder_socket: str
    shm_stream_socket: str
    shm_group: int | None  # a group (gid) that may read the shared memory too; None: the user only
    rtsp_port: int
    rtsp_path: str
    rtsp_bind: str  # the address the RTSP server listens on; 0.0.0.0: all IPv4 addresses
    # (user, password) pairs allowed to watch; empty: no authentication. Never in a repr or log.
    rtsp_credentials: tuple[tuple[str, str], ...] = field(repr=False)
    rtsp_auth_method: str  # "digest" (default) or "basic" (only when asked for)
    rtsp_tls_cert: Path | None  # PEM certificate (chain); with rtsp_tls_key: serve rtsps://
    rtsp_tls_key: Path | None
    log_level: str
    restart_delay_min_s: float
    restart_delay_max_s: float
    restart_scope: str  # "stack": any failure restarts everything; "worker": only the failed consumer
    stop_grace_s: float
    stall_feeder_s: float
    stall_recorder_s: float
    stall_rtsp_s: float

    @property
    def synthetic_camera(self) -> bool:
        return self.camera in (SYNTHETIC_CAMERA, STAMPED_SYNTHETIC_CAMERA)

    @property
    def stamped_camera(self) -> bool:
        return self.camera == STAMPED_SYNTHETIC_CAMERA

    @property
    def frame_bytes(self) -> int:
        """Size of one raw I420 frame (full-size luma plane plus two quarter-size chroma planes)."""
        return self.video_width * self.video_height * 3 // 2

    @property
    def shm_sockets(self) -> tuple[str, str]:
        return (self.shm_recorder_socket, self.shm_stream_socket)

    @property
    def rtsp_auth(self) -> bool:
        return bool(self.rtsp_credentials)

    @property
    def rtsp_tls(self) -> bool:
        return self.rtsp_tls_cert is not None

    @property
    def secrets(self) -> tuple[str, ...]:
        """Strings that must never be logged (``redact``)."""
        return tuple(password for _user, password in self.rtsp_credentials)


def redact(text: str, secrets: tuple[str, ...] = ()) -> str:
    """``text`` with every secret and every URL's user:password@ part replaced by REDACTED."""
    text = _URL_CREDENTIALS_RE.sub(REDACTED + "@", text)
    for secret in sorted(secrets, key=len, reverse=True):
        if secret:
            text = text.replace(secret, REDACTED)
    return text


def is_secret_variable(name: str) -> bool:
    """A variable whose value is a secret itself (not a path to one, like RTSP_PASSWORD_FILE)."""
    return not name.upper().endswith("_FILE") and any(word in name.upper() for word in _SECRET_WORDS)


# --- value parsers: each takes the raw string and returns the typed value or raises ValueError
# with the "what is allowed" part of the message.


def _int_range(low: int, high: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw.strip(), 10)
        except ValueError:
            raise ValueError(f"must be a whole number from {low} to {high}") from None
        if not low <= value <= high:
            raise ValueError(f"must be a whole number from {low} to {high}")
        return value

    return parse


def _even_range(low: int, high: int) -> Callable[[str], int]:
    as_int = _int_range(low, high)

    def parse(raw: str) -> int:
        value = as_int(raw)
        if value % 2:
            raise ValueError(f"must be an even number from {low} to {high} (I420 subsamples chroma 2x2)")
        return value

    return parse


def _float_range(low: float, high: float) -> Callable[[str], float]:
    def parse(raw: str) -> float:
        try:
            value = float(raw.strip())
        except ValueError:
            raise ValueError(f"must be a number of seconds from {low:g} to {high:g}") from None
        if not low <= value <= high:  # also rejects nan
            raise ValueError(f"must be a number of seconds from {low:g} to {high:g}")
        return value

    return parse


def _bool(raw: str) -> bool:
    word = raw.strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise ValueError("must be one of 1, 0, true, false, yes, no")


def _camera(raw: str) -> str:
    if raw in (SYNTHETIC_CAMERA, STAMPED_SYNTHETIC_CAMERA) or (_DEVICE_RE.fullmatch(raw) and ".." not in raw):
        return raw
    raise ValueError(
        f"must be '{SYNTHETIC_CAMERA}' (synthetic camera), '{STAMPED_SYNTHETIC_CAMERA}' (synthetic, "
        "time-stamped) or a device path like /dev/video0 (letters, digits and _ . : + @ / - only)"
    )


def _choice(choices: tuple[str, ...]) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        word = raw.strip().lower()
        if word in choices:
            return word
        raise ValueError("must be one of " + ", ".join(choices))

    return parse


def _socket_path(raw: str) -> str:
    if _SOCKET_RE.fullmatch(raw) and ".." not in raw and not raw.endswith("/"):
        return raw
    raise ValueError("must be an absolute file path of letters, digits and _ . : + @ / - only")


def _rtsp_path(raw: str) -> str:
    if _RTSP_PATH_RE.fullmatch(raw):
        return raw
    raise ValueError("must start with / and hold only letters, digits and _ . ~ - (e.g. /live)")


def _optional_file(raw: str) -> Path | None:
    if not raw:
        return None
    if not os.path.isabs(raw):
        raise ValueError("must be empty or an absolute file path")
    return Path(raw)


def _bind_address(raw: str) -> str:
    try:
        return str(ipaddress.ip_address(raw.strip()))
    except ValueError:
        raise ValueError(
            "must be an IPv4 or IPv6 address of this machine, e.g. 0.0.0.0 (all IPv4), :: (all), "
            "127.0.0.1 or the radio interface's address"
        ) from None


def _rtsp_user(raw: str) -> str:
    if raw and not _RTSP_USER_RE.fullmatch(raw):
        raise ValueError("must be empty or 1-64 letters, digits and _ . @ + - (no ':' or spaces)")
    return raw


def _password(raw: str) -> str:
    if any(ch in raw for ch in "\r\n\0"):
        raise ValueError("must not hold line breaks or NUL characters")
    return raw


def _readable_file(raw: str, what: str, marker: str) -> Path | None:
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


def _tls_cert(raw: str) -> Path | None:
    return _readable_file(raw, "a certificate", "-----BEGIN CERTIFICATE-----")


def _tls_key(raw: str) -> Path | None:
    return _readable_file(raw, "a private key", "PRIVATE KEY-----")


def _password_file(raw: str) -> tuple[tuple[str, str], ...]:
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
        user, colon, password = line.partition(":")
        if not colon or not _RTSP_USER_RE.fullmatch(user) or not password:
            raise ValueError(
                f"line {number} must be user:password (user: letters, digits and _ . @ + -; "
                "password not empty)"
            )
        if user in users:
            raise ValueError(f"line {number}: user {user} appears twice")
        users[user] = password
    if not users:
        raise ValueError("must hold at least one user:password line")
    return tuple(users.items())


_SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_SIZE_RE = re.compile(r"(\d+(?:\.\d+)?)\s*([KMGT]?)(?:I?B)?", re.IGNORECASE)
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd]?)", re.IGNORECASE)


def _free_space(raw: str) -> tuple[int, float]:
    """A percentage of the disk ("5%") or a size ("2G", "500M", "1048576")."""
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


def _optional_duration(raw: str) -> float | None:
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


def _group(raw: str) -> int | None:
    text = raw.strip()
    if not text:
        return None
    try:
        return grp.getgrgid(int(text)).gr_gid if text.isdigit() else grp.getgrnam(text).gr_gid
    except (KeyError, OverflowError):
        raise ValueError("must be empty or the name or id of an existing group") from None


def _log_level(raw: str) -> str:
    level = raw.strip().upper()
    if level in _LOG_LEVELS:
        return level
    raise ValueError("must be one of " + ", ".join(_LOG_LEVELS))


def _ssd_path(raw: str) -> Path:
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


@dataclass(frozen=True)
class _Setting:
    field: str
    variable: str
    default: str
    parse: Callable[[str], Any]


def _settings_table(home: str) -> tuple[_Setting, ...]:
    return (
        _Setting("ssd_path", "SSD_PATH", f"{home}/capture", _ssd_path),
        _Setting("enable_rtsp", "ENABLE_RTSP", "1", _bool),
        _Setting("enable_video", "ENABLE_VIDEO", "1", _bool),
        _Setting("enable_images", "ENABLE_IMAGES", "1", _bool),
        _Setting("camera", "CAMERA", "/dev/video0", _camera),
        _Setting("camera_unplug_file", "CAMERA_UNPLUG_FILE", "", _optional_file),
        _Setting("video_fps", "VIDEO_FPS", "30", _int_range(1, 120)),
        _Setting("video_width", "VIDEO_WIDTH", "1280", _even_range(16, 7680)),
        _Setting("video_height", "VIDEO_HEIGHT", "720", _even_range(16, 4320)),
        _Setting("video_bitrate", "VIDEO_BITRATE", "2000000", _int_range(10_000, 100_000_000)),
        _Setting("record_bitrate", "RECORD_BITRATE", "4000000", _int_range(10_000, 100_000_000)),
        _Setting("record_min_free", "RECORD_MIN_FREE", "5%", _free_space),
        _Setting("record_max_age_s", "RECORD_MAX_AGE", "", _optional_duration),
        _Setting("shm_recorder_socket", "SHM_RECORDER_SOCKET", "/tmp/drone_cam_rec.sock", _socket_path),
        _Setting("shm_stream_socket", "SHM_STREAM_SOCKET", "/tmp/drone_cam_str.sock", _socket_path),
        _Setting("shm_group", "SHM_GROUP", "", _group),
        _Setting("rtsp_port", "RTSP_PORT", "8554", _int_range(1, 65535)),
        _Setting("rtsp_path", "RTSP_PATH", "/live", _rtsp_path),
        _Setting("rtsp_bind", "RTSP_BIND", "0.0.0.0", _bind_address),
        _Setting("rtsp_user", "RTSP_USER", "", _rtsp_user),
        _Setting("rtsp_password", "RTSP_PASSWORD", "", _password),
        _Setting("rtsp_password_file", "RTSP_PASSWORD_FILE", "", _password_file),
        _Setting("rtsp_auth_method", "RTSP_AUTH_METHOD", "digest", _choice(RTSP_AUTH_METHODS)),
        _Setting("rtsp_tls_cert", "RTSP_TLS_CERT", "", _tls_cert),
        _Setting("rtsp_tls_key", "RTSP_TLS_KEY", "", _tls_key),
        _Setting("log_level", "LOG_LEVEL", "INFO", _log_level),
        _Setting("restart_delay_min_s", "RESTART_DELAY_MIN_S", "1", _float_range(0.05, 600)),
        _Setting("restart_delay_max_s", "RESTART_DELAY_MAX_S", "30", _float_range(0.05, 3600)),
        _Setting("restart_scope", "RESTART_SCOPE", "stack", _choice(RESTART_SCOPES)),
        _Setting("stop_grace_s", "STOP_GRACE_S", "5", _float_range(0.1, 120)),
        _Setting("stall_feeder_s", "STALL_FEEDER_S", "3", _float_range(0.5, 600)),
        _Setting("stall_recorder_s", "STALL_RECORDER_S", "20", _float_range(0.5, 600)),
        _Setting("stall_rtsp_s", "STALL_RTSP_S", "5", _float_range(0.5, 600)),
    )


def variables() -> tuple[tuple[str, str], ...]:
    """(variable, default) for every setting, in declaration order, with $HOME left symbolic."""
    return tuple((s.variable, s.default) for s in _settings_table("$HOME"))


def load(environ: Mapping[str, str]) -> Settings:
    """Parse and validate every setting; raise ConfigError on the first bad one."""
    table = _settings_table(environ.get("HOME") or str(Path.home()))
    known = {s.variable for s in table}
    for name in sorted(environ):
        if name.startswith(OWN_PREFIXES) and name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ConfigError(f"{name}={_shown(name, environ[name])}: unknown setting{hint}")

    values: dict[str, Any] = {}
    for setting in table:
        raw = environ.get(setting.variable, setting.default)
        try:
            values[setting.field] = setting.parse(raw)
        except ValueError as err:
            raise ConfigError(f"{setting.variable}={_shown(setting.variable, raw)}: {err}") from None

    values["rtsp_credentials"] = _credentials(
        values.pop("rtsp_user"), values.pop("rtsp_password"), values.pop("rtsp_password_file")
    )
    settings = Settings(**values)
    if (settings.rtsp_tls_cert is None) != (settings.rtsp_tls_key is None):
        missing = "RTSP_TLS_KEY" if settings.rtsp_tls_key is None else "RTSP_TLS_CERT"
        given = "RTSP_TLS_CERT" if missing == "RTSP_TLS_KEY" else "RTSP_TLS_KEY"
        raise ConfigError(f"{missing}='': must be set too when {given} is set (RTSPS needs both)")
    if settings.restart_delay_max_s < settings.restart_delay_min_s:
        raise ConfigError(
            f"RESTART_DELAY_MAX_S={settings.restart_delay_max_s:g}: must not be below "
            f"RESTART_DELAY_MIN_S={settings.restart_delay_min_s:g}"
        )
    if settings.shm_recorder_socket == settings.shm_stream_socket:
        raise ConfigError(
            f"SHM_STREAM_SOCKET={settings.shm_stream_socket!r}: must differ from SHM_RECORDER_SOCKET"
        )
    return settings


def _shown(variable: str, raw: str) -> str:
    """How a value appears in an error message: quoted, or REDACTED for a secret."""
    return REDACTED if is_secret_variable(variable) and raw else repr(raw)


def _credentials(
    user: str, password: str, from_file: tuple[tuple[str, str], ...]
) -> tuple[tuple[str, str], ...]:
    """RTSP_USER/RTSP_PASSWORD and RTSP_PASSWORD_FILE's users, together."""
    if bool(user) != bool(password):
        if user:
            raise ConfigError(f"RTSP_PASSWORD='': must be set too when RTSP_USER={user!r} is set")
        raise ConfigError(f"RTSP_USER='': must be set too when RTSP_PASSWORD={REDACTED} is set")
    pairs = ((user, password),) if user else ()
    if user and user in dict(from_file):
        raise ConfigError(f"RTSP_USER={user!r}: this user is also in RTSP_PASSWORD_FILE; keep one")
    return pairs + from_file


def load_or_exit(environ: Mapping[str, str] = os.environ, program: str = "streamer") -> Settings:
    """``load``, or one line on stderr and exit status 2: nothing has started yet."""
    try:
        return load(environ)
    except ConfigError as err:
        print(f"{program}: configuration error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
