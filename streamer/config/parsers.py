"""Value parsers: each takes a variable's raw string and returns the typed value, or raises
ValueError whose text says what is allowed (``load`` prefixes it with ``VARIABLE='value':``).

Values that end up inside a GStreamer pipeline description (device and socket paths, the RTSP
path) are restricted to characters that cannot change a pipeline's structure, so nothing from the
environment can inject elements. No parser ever echoes the content of a file it reads.
"""

from __future__ import annotations

import dataclasses
import grp
import ipaddress
import os
import re
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from streamer.config.redaction import MASK

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


# Publishing (PUBLISH_URL): destinations the stream is pushed to, each a URL whose secrets (an RTMP
# stream key, SRT's streamid and passphrase, user:password, an RTSP URL's query) are kept apart
# from what may be shown (``PublishDestination.redacted``). Nothing of a destination is ever
# spliced into a launch description: the publish worker sets each part as a property.
PUBLISH_KINDS = {"rtmp": "rtmp", "rtmps": "rtmp", "srt": "srt", "rtsp": "rtsp"}  # scheme -> kind
PUBLISH_DEFAULT_PORTS = {"rtmp": 1935, "rtmps": 443}  # SRT and RTSP destinations name their port
PUBLISH_MAX_DESTINATIONS = 8
SRT_QUERY_KEYS = ("streamid", "latency", "passphrase")
SRT_LATENCY_MS = (0, 60_000)
SRT_PASSPHRASE_CHARS = (10, 79)  # libsrt's limits
SRT_STREAMID_MAX = 512
# Characters of a URL's path and query (RFC 3986 pchar, '/' and '?'), percent escapes included; no
# spaces, quotes, '#', '<', '>', backslashes or control characters.
_URL_PART_CHARS = r"A-Za-z0-9._~!$&'()*+,;=:@%\-"
_URL_SEGMENT_RE = re.compile(rf"[{_URL_PART_CHARS}]+")
_URL_PATH_RE = re.compile(rf"(/[{_URL_PART_CHARS}]*)+")
_URL_QUERY_RE = re.compile(rf"[{_URL_PART_CHARS}/?]*")
_USERINFO_RE = re.compile(rf"[{_URL_PART_CHARS}]+")
_PERCENT_RE = re.compile(r"%(?![0-9A-Fa-f]{2})")


@dataclass(frozen=True, repr=False)
class PublishDestination:
    """One destination of PUBLISH_URL, parsed and checked.

    ``kind``: ``rtmp`` (``scheme`` rtmp or rtmps), ``srt`` or ``rtsp``. RTMP: ``application``
    (what lies between the host and the last '/') and ``key`` (after it, the stream key).
    SRT: ``streamid``, ``latency_ms`` (None: the element's default), ``passphrase``. RTSP:
    ``path`` (with its query, if any). ``user``/``password``: from ``user:password@`` (RTMP,
    RTSP), percent-decoded. ``redacted``: the URL as it may be logged and shown, its secrets
    replaced by ``****``. ``secrets``: every string of it that must never be logged.
    ``str()`` and ``repr()`` show the redacted form only.
    """

    kind: str
    scheme: str
    host: str
    port: int
    port_given: bool = True
    application: str = ""
    key: str = ""
    path: str = ""
    user: str = ""
    password: str = ""
    streamid: str = ""
    latency_ms: int | None = None
    passphrase: str = ""
    redacted: str = ""
    secrets: tuple[str, ...] = ()

    @property
    def address(self) -> str:
        """``host:port`` as in a URL (an IPv6 address in brackets)."""
        return f"{_url_host(self.host)}:{self.port}"

    @property
    def identity(self) -> tuple[object, ...]:
        """What makes two destinations the same one (a duplicate in PUBLISH_URL)."""
        target = {
            "rtmp": (self.application, self.key),
            "srt": (self.streamid,),
            "rtsp": (self.path,),
        }[self.kind]
        return (self.kind, self.scheme, self.host.lower(), self.port, *target)

    def __str__(self) -> str:
        return self.redacted

    def __repr__(self) -> str:
        return f"PublishDestination({self.redacted!r})"


def _problem(where: str, text: str) -> ValueError:
    """What is wrong, with the destination it is about (``where``, e.g. "destination 2") when
    there are several."""
    return ValueError(f"{where}: {text}" if where else text)


def _about(where: str, what: str) -> str:
    return f"{where}: {what}" if where else what


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _decoded(text: str, what: str) -> str:
    """``text`` with its percent escapes decoded; printable ASCII only once decoded."""
    if _PERCENT_RE.search(text):
        raise ValueError(f"{what} has a '%' that is not a %XX escape")
    try:
        value = urllib.parse.unquote(text, errors="strict")
    except UnicodeDecodeError:
        raise ValueError(f"{what} does not decode to UTF-8") from None
    if any(not " " <= ch <= "~" for ch in value):
        raise ValueError(f"{what} may only hold printable ASCII characters")
    return value


def _publish_host(text: str, where: str) -> str:
    if text.startswith("[") and text.endswith("]"):
        try:
            address = ipaddress.IPv6Address(text[1:-1])
        except ValueError:
            raise _problem(where, f"{text!r} is not an IPv6 address") from None
        if address.is_unspecified:
            raise _problem(where, f"needs the server's address, not {text}")
        return str(address)
    try:
        address4 = ipaddress.IPv4Address(text)
    except ValueError:
        if not text or not _HOST_NAME_RE.fullmatch(text) or ".." in text or text.endswith("-"):
            raise _problem(where, "a host is needed (a name, an IPv4 address or [an IPv6 one])") from None
        return text.lower()
    if address4.is_unspecified:
        raise _problem(where, f"needs the server's address, not {text}")
    return str(address4)


def _split_authority(authority: str, where: str, *, credentials: bool) -> tuple[str, str, str, int | None]:
    """(user, password, host, port or None) of ``[user:password@]host[:port]``."""
    user = password = ""
    userinfo, at, hostport = authority.rpartition("@")
    if at:
        if not credentials:
            raise _problem(where, "SRT takes no user:password@ (use streamid and passphrase)")
        name, colon, secret = userinfo.partition(":")
        if not colon or not name or not secret or not _USERINFO_RE.fullmatch(userinfo):
            raise _problem(where, "credentials must be user:password@ (URL-escaped)")
        user = _decoded(name, _about(where, "the user"))
        password = _decoded(secret, _about(where, "the password"))
    if hostport.startswith("["):
        host, bracket, rest = hostport.partition("]")
        host += bracket
        if not bracket or (rest and not rest.startswith(":")):
            raise _problem(where, "an IPv6 address goes in brackets, e.g. [fd00::1]:1935")
        port_text = rest[1:] if rest else None
    else:
        host, colon, port_text_or_none = hostport.partition(":")
        port_text = port_text_or_none if colon else None
    host = _publish_host(host, where)
    if port_text is None:
        return user, password, host, None
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise _problem(where, "the port must be 1-65535")
    return user, password, host, int(port_text)


def _masked_query(query: str) -> tuple[str, list[str]]:
    """An RTSP URL's query with every value (and every item without one, a token, say)
    replaced by MASK, and what was replaced, as written and decoded."""
    shown, hidden = [], []
    for item in query.split("&"):
        name, eq, value = item.partition("=")
        secret = value if eq else name
        shown.append(f"{name}={MASK}" if eq else MASK)
        if secret:
            hidden += [secret, urllib.parse.unquote(secret)]
    return "&".join(shown), hidden


def publish_destination(text: str, where: str = "") -> PublishDestination:
    """One destination: ``rtmp[s]://[user:password@]host[:port]/application/key``,
    ``srt://host:port[?streamid=…&latency=MS&passphrase=…]`` or
    ``rtsp://[user:password@]host:port/path``. ``where`` names it in error messages, which
    never quote a secret."""
    scheme_text, sep, rest = text.partition("://")
    scheme = scheme_text.lower()
    if not sep:
        raise _problem(where, "not a URL: rtmp://…, rtmps://…, srt://… or rtsp://…")
    if scheme not in PUBLISH_KINDS:
        shown_scheme = scheme if re.fullmatch(r"[a-z][a-z0-9+.-]{0,15}", scheme) else "?"
        raise _problem(where, f"the scheme must be rtmp, rtmps, srt or rtsp (not {shown_scheme!r})")
    kind = PUBLISH_KINDS[scheme]
    split_at = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
    authority, tail = rest[:split_at], rest[split_at:]
    if "#" in tail and kind != "srt":
        raise _problem(where, "a URL fragment ('#') is not allowed")
    user, password, host, port = _split_authority(authority, where, credentials=kind != "srt")
    mask_user = f"{MASK}@" if user else ""
    secrets = [s for s in (password, authority.rpartition("@")[0].partition(":")[2]) if s]
    if kind == "rtmp":
        application, slash, key = tail[1:].rpartition("/")
        if (
            not tail.startswith("/")
            or not slash
            or not key
            or not all(_URL_SEGMENT_RE.fullmatch(part) for part in application.split("/"))
        ):
            raise _problem(where, "an RTMP URL needs /APPLICATION/KEY after the host")
        if not re.fullmatch(rf"[{_URL_PART_CHARS}?]+", key):
            raise _problem(where, "the stream key may only hold a URL's characters (no spaces or quotes)")
        port_given = port is not None
        shown_port = f":{port}" if port_given else ""
        return PublishDestination(
            kind,
            scheme,
            host,
            port if port is not None else PUBLISH_DEFAULT_PORTS[scheme],
            port_given,
            application=application,
            key=key,
            user=user,
            password=password,
            redacted=f"{scheme}://{mask_user}{_url_host(host)}{shown_port}/{application}/{MASK}",
            secrets=tuple(dict.fromkeys([key, *secrets])),
        )
    if port is None:
        raise _problem(where, f"a port is needed ({scheme}://HOST:PORT…)")
    if kind == "rtsp":
        path, question, query = tail.partition("?")
        if not _URL_PATH_RE.fullmatch(path) or not path.strip("/"):
            raise _problem(where, "an RTSP URL needs a /PATH after the port (URL characters only)")
        if question and not _URL_QUERY_RE.fullmatch(query):
            raise _problem(where, "the query may only hold a URL's characters")
        masked, values = _masked_query(query) if question else ("", [])
        shown_query = f"?{masked}" if question else ""
        return PublishDestination(
            kind,
            scheme,
            host,
            port,
            path=path + question + query,
            user=user,
            password=password,
            redacted=f"{scheme}://{mask_user}{_url_host(host)}:{port}{path}{shown_query}",
            secrets=tuple(dict.fromkeys([*secrets, *values])),
        )
    # SRT
    path, question, query = tail.partition("?")
    if path not in ("", "/"):
        raise _problem(where, "an SRT URL has no path (srt://HOST:PORT?streamid=…)")
    fields: dict[str, str] = {}
    raw_values: list[str] = []
    for part in query.split("&") if question else []:
        name, eq, raw = part.partition("=")
        if name not in SRT_QUERY_KEYS:
            shown_name = name if re.fullmatch(r"[A-Za-z_]{1,32}", name) else "?"
            allowed = ", ".join(SRT_QUERY_KEYS)
            raise _problem(where, f"SRT takes only {allowed} in its query (not {shown_name!r})")
        if name in fields:
            raise _problem(where, f"{name} is given twice")
        if not eq or not raw or any(ch.isspace() for ch in raw):
            raise _problem(where, f"{name} needs a value (name=value, no spaces)")
        fields[name] = _decoded(raw, _about(where, name))
        if name != "latency":
            raw_values.append(raw)
    latency_ms = None
    if "latency" in fields:
        low, high = SRT_LATENCY_MS
        if not fields["latency"].isdigit() or not low <= int(fields["latency"]) <= high:
            raise _problem(where, f"latency must be a whole number of milliseconds from {low} to {high}")
        latency_ms = int(fields["latency"])
    passphrase = fields.get("passphrase", "")
    low, high = SRT_PASSPHRASE_CHARS
    if passphrase and not low <= len(passphrase) <= high:
        raise _problem(where, f"the passphrase must be {low} to {high} characters long")
    streamid = fields.get("streamid", "")
    if len(streamid) > SRT_STREAMID_MAX:
        raise _problem(where, f"the streamid may be {SRT_STREAMID_MAX} characters long at most")
    shown_query = "&".join(
        f"{name}={fields[name] if name == 'latency' else MASK}" for name in SRT_QUERY_KEYS if name in fields
    )
    return PublishDestination(
        kind,
        scheme,
        host,
        port,
        streamid=streamid,
        latency_ms=latency_ms,
        passphrase=passphrase,
        redacted=f"srt://{_url_host(host)}:{port}" + (f"?{shown_query}" if shown_query else ""),
        secrets=tuple(dict.fromkeys(v for v in (streamid, passphrase, *raw_values) if v)),
    )


def publish_urls(raw: str) -> tuple[PublishDestination, ...]:
    """Empty (publish nothing), or up to PUBLISH_MAX_DESTINATIONS destinations separated by
    spaces (``publish_destination``), no two the same. Destinations whose redacted forms
    coincide (two stream keys on one server) are told apart by ``#2``, ``#3``… in it."""
    words = raw.split()
    if len(words) > PUBLISH_MAX_DESTINATIONS:
        raise ValueError(f"at most {PUBLISH_MAX_DESTINATIONS} destinations (got {len(words)})")
    destinations: list[PublishDestination] = []
    for number, word in enumerate(words, 1):
        where = f"destination {number}" if len(words) > 1 else ""
        destination = publish_destination(word, where)
        for earlier_number, earlier in enumerate(destinations, 1):
            if earlier.identity == destination.identity:
                raise ValueError(f"destinations {earlier_number} and {number} are the same")
        shown = destination.redacted
        seen = sum(1 for earlier in destinations if earlier.redacted.partition("#")[0] == shown)
        if seen:
            destination = dataclasses.replace(destination, redacted=f"{destination.redacted}#{seen + 1}")
        destinations.append(destination)
    return tuple(destinations)
