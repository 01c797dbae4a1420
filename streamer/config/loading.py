"""Reading the settings from the environment: ``load``, ``load_or_exit``, and the settings table.

``load(environ)`` either returns a complete ``Settings`` or raises ``ConfigError`` naming the
variable, the value (never a secret's) and what is allowed.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import ssl
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from streamer.config.redaction import REDACTED, shown
from streamer.config.settings import Settings, declarations

# Exit status of a program whose configuration is bad: nothing has started.
EXIT_CONFIG = 2
# Unknown variables with these prefixes are almost always typos of ours (ENABLE_RSTP=0). Not
# HTTP_: HTTP_PROXY is everybody's.
OWN_PREFIXES = (
    "ENABLE_",
    "VIDEO_",
    "RECORD_",
    "RTSP_",
    "SHM_",
    "RESTART_",
    "STOP_",
    "STALL_",
    "CAMERA_",
    "MAVLINK_",
    "PUBLISH_",
)
# Variables with our prefixes that are other programs' (pymavlink's and MAVProxy's dialect).
FOREIGN_VARIABLES = frozenset({"MAVLINK_DIALECT"})


class ConfigError(ValueError):
    """A setting is missing, malformed or out of range. The message names the variable."""


def variables() -> tuple[tuple[str, str], ...]:
    """(variable, default) for every setting, in declaration order, with $HOME left symbolic."""
    return tuple((d.variable, d.default) for _name, d in declarations())


def markdown_table() -> str:
    """README's settings table: one row per setting, in declaration order."""
    rows = ["| Variable | Default | Meaning |", "|---|---|---|"]
    rows += [f"| `{d.variable}` | `{d.default}` | {d.help} |" for _name, d in declarations()]
    return "\n".join(rows) + "\n"


def load(environ: Mapping[str, str]) -> Settings:
    """Parse and validate every setting; raise ConfigError on the first bad one."""
    home = environ.get("HOME") or str(Path.home())
    known = {d.variable for _name, d in declarations()}
    for name in sorted(environ):
        if name.startswith(OWN_PREFIXES) and name not in known and name not in FOREIGN_VARIABLES:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ConfigError(f"{name}={shown(name, environ[name])}: unknown setting{hint}")

    values: dict[str, Any] = {}
    for name, declared in declarations():
        raw = environ.get(declared.variable, declared.default.replace("$HOME", home))
        try:
            values[name] = declared.parse(raw)
        except ValueError as err:
            raise ConfigError(f"{declared.variable}={shown(declared.variable, raw)}: {err}") from None
    settings = Settings(**values)
    _check_together(settings)
    return settings


def _check_together(s: Settings) -> None:
    """The rules that involve several settings."""
    if bool(s.rtsp_user) != bool(s.rtsp_password):
        if s.rtsp_user:
            raise ConfigError(f"RTSP_PASSWORD='': must be set too when RTSP_USER={s.rtsp_user!r} is set")
        raise ConfigError(f"RTSP_USER='': must be set too when RTSP_PASSWORD={REDACTED} is set")
    if s.rtsp_user and s.rtsp_user in dict(s.rtsp_file_users):
        raise ConfigError(f"RTSP_USER={s.rtsp_user!r}: this user is also in RTSP_PASSWORD_FILE; keep one")
    if (s.rtsp_tls_cert is None) != (s.rtsp_tls_key is None):
        missing = "RTSP_TLS_KEY" if s.rtsp_tls_key is None else "RTSP_TLS_CERT"
        given = "RTSP_TLS_CERT" if missing == "RTSP_TLS_KEY" else "RTSP_TLS_KEY"
        raise ConfigError(f"{missing}='': must be set too when {given} is set (RTSPS needs both)")
    if s.rtsp_tls_cert is not None and s.rtsp_tls_key is not None:
        _check_tls_pair(s.rtsp_tls_cert, s.rtsp_tls_key)
    if s.restart_delay_max_s < s.restart_delay_min_s:
        raise ConfigError(
            f"RESTART_DELAY_MAX_S={s.restart_delay_max_s:g}: must not be below "
            f"RESTART_DELAY_MIN_S={s.restart_delay_min_s:g}"
        )
    if s.video_bitrate_min > s.video_bitrate:
        raise ConfigError(
            f"VIDEO_BITRATE_MIN={s.video_bitrate_min}: must not be above VIDEO_BITRATE={s.video_bitrate}"
        )
    if s.enable_http and s.enable_rtsp and s.http_port == s.rtsp_port:
        raise ConfigError(f"HTTP_PORT={s.http_port}: must differ from RTSP_PORT")
    if s.publish_urls:
        _check_publishing(s)
    if s.record_source == "stream" and not s.enable_rtsp:
        raise ConfigError(
            "RECORD_SOURCE='stream': needs ENABLE_RTSP=1 (the recording is then the RTSP stream's "
            "encoder output), but ENABLE_RTSP=0"
        )
    if s.shm_recorder_socket == s.shm_stream_socket:
        raise ConfigError(f"SHM_STREAM_SOCKET={s.shm_stream_socket!r}: must differ from SHM_RECORDER_SOCKET")


# What names this machine in a destination: publishing to our own RTSP server would loop.
_LOOPBACK_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost")


def _check_publishing(s: Settings) -> None:
    """PUBLISH_URL needs the RTSP stream (its encoder is the RTSP worker's), and no destination
    may be our own RTSP server."""
    value = " ".join(d.redacted for d in s.publish_urls)
    if not s.enable_rtsp:
        raise ConfigError(
            f"PUBLISH_URL={value!r}: needs ENABLE_RTSP=1 (the published stream is the RTSP stream's "
            "encoder), but ENABLE_RTSP=0"
        )
    for d in s.publish_urls:
        if d.kind == "rtsp" and d.port == s.rtsp_port and _is_this_machine(d.host, s.rtsp_bind):
            raise ConfigError(
                f"PUBLISH_URL={value!r}: {d.redacted} is this machine's own RTSP server (RTSP_PORT="
                f"{s.rtsp_port}), which does not take a published stream"
            )


def _is_this_machine(host: str, bind: str) -> bool:
    if host in _LOOPBACK_NAMES or host == bind:
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback


class _EncryptedKey(Exception):
    """Raised from OpenSSL's passphrase callback: the key is encrypted."""


def _ask_passphrase() -> str:
    # Without a callback OpenSSL would prompt on the terminal for an encrypted key.
    raise _EncryptedKey


def _openssl_reason(err: ssl.SSLError) -> str:
    """OpenSSL's reason, e.g. "key values mismatch" (never any of the files' content)."""
    return f"OpenSSL: {err.reason.lower().replace('_', ' ') if err.reason else 'not valid PEM data'}"


def _check_tls_pair(cert: Path, key: Path) -> None:
    """The certificate parses and the key is the private key of its public key: what the RTSP
    worker's TLS library would otherwise find only at the first handshake. Only whether they
    belong together is checked, not their strength (OpenSSL's security level 0)."""
    cert_var, key_var = f"RTSP_TLS_CERT={str(cert)!r}", f"RTSP_TLS_KEY={str(key)!r}"
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    try:
        context.load_verify_locations(cafile=str(cert))
    except (ssl.SSLError, OSError) as err:
        reason = _openssl_reason(err) if isinstance(err, ssl.SSLError) else (err.strerror or "unreadable")
        raise ConfigError(f"{cert_var}: cannot be read as a PEM certificate ({reason})") from None
    try:
        context.load_cert_chain(str(cert), str(key), password=_ask_passphrase)
    except _EncryptedKey:
        raise ConfigError(
            f"{key_var}: is encrypted (protected by a passphrase), which the RTSP server cannot use; "
            "store it unencrypted (openssl pkey -in KEY -out NEW_KEY) with mode 600"
        ) from None
    except ssl.SSLError as err:
        if err.reason in ("KEY_VALUES_MISMATCH", "NO_CERTIFICATE_ASSIGNED"):
            raise ConfigError(
                f"{key_var}: does not match RTSP_TLS_CERT (the certificate in {str(cert)!r} is for "
                "another key; use the key it was made with)"
            ) from None
        raise ConfigError(
            f"{key_var}: cannot be loaded as the private key of RTSP_TLS_CERT ({_openssl_reason(err)})"
        ) from None
    except OSError as err:
        raise ConfigError(f"{key_var}: cannot be read ({(err.strerror or 'unreadable').lower()})") from None


def load_or_exit(environ: Mapping[str, str] = os.environ, program: str = "streamer") -> Settings:
    """``load``, or one line on stderr and exit status EXIT_CONFIG: nothing has started yet."""
    try:
        return load(environ)
    except ConfigError as err:
        print(f"{program}: configuration error: {err}", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG) from None
