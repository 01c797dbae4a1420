"""Keeping secrets out of log lines and error messages."""

from __future__ import annotations

import re

REDACTED = "<redacted>"
# What stands for a secret inside a URL that is shown (a destination's stream key, its streamid).
MASK = "****"
# Credentials in a URL (rtsp://user:password@host/...): the part between // and @.
URL_CREDENTIALS_RE = re.compile(r"(?<=//)[^/@\s]*:[^/@\s]*@")
# Variable names whose values are never echoed in an error message.
_SECRET_WORDS = ("PASS", "SECRET", "TOKEN")


def redact(text: str, secrets: tuple[str, ...] = ()) -> str:
    """``text`` with every secret and every URL's user:password@ part replaced by REDACTED."""
    text = URL_CREDENTIALS_RE.sub(REDACTED + "@", text)
    for secret in sorted(secrets, key=len, reverse=True):
        if secret:
            text = text.replace(secret, REDACTED)
    return text


_URL_RE = re.compile(r"([A-Za-z][A-Za-z0-9+.-]{0,15})://([^/?#]*)([^?#]*)(\?[^#]*)?(#.*)?")
# Variables whose values are URLs that may hold secrets (PUBLISH_URL): shown only through
# ``redact_urls``.
_URL_VARIABLE_PREFIX = "PUBLISH_"


def redact_url(text: str) -> str:
    """A URL, possibly malformed, as an error message may show it: scheme, host and port kept;
    ``user:password@``, the last segment of the path (an RTMP stream key), every query value
    (SRT's streamid and passphrase) and any fragment replaced by MASK. Text that is not a URL
    at all is MASK as a whole."""
    match = _URL_RE.fullmatch(text)
    if match is None:
        return MASK
    scheme, authority, path, query, fragment = match.groups()
    _userinfo, at, hostport = authority.rpartition("@")
    shown = f"{scheme}://{MASK + '@' if at else ''}{hostport}"
    if path.strip("/"):
        head, _slash, _last = path.rstrip("/").rpartition("/")
        shown += f"{head}/{MASK}"
    if query:
        items = (item.partition("=") for item in query[1:].split("&"))
        shown += "?" + "&".join(f"{name}={MASK}" if eq else MASK for name, eq, _value in items)
    return shown + (f"#{MASK}" if fragment else "")


def redact_urls(text: str) -> str:
    """Space-separated URLs (PUBLISH_URL's value), each through ``redact_url``."""
    return " ".join(redact_url(word) for word in text.split())


def is_secret_variable(name: str) -> bool:
    """A variable whose value is a secret itself (not a path to one, like RTSP_PASSWORD_FILE)."""
    return not name.upper().endswith("_FILE") and any(word in name.upper() for word in _SECRET_WORDS)


def shown(variable: str, raw: str) -> str:
    """How a value appears in an error message: quoted, REDACTED for a secret, its secrets
    masked for a URL variable (``redact_urls``)."""
    if variable.upper().startswith(_URL_VARIABLE_PREFIX):
        return repr(redact_urls(raw))
    return REDACTED if is_secret_variable(variable) and raw else repr(raw)
