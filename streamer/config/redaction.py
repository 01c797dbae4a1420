"""Keeping secrets out of log lines and error messages."""

from __future__ import annotations

import re

REDACTED = "<redacted>"
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


def is_secret_variable(name: str) -> bool:
    """A variable whose value is a secret itself (not a path to one, like RTSP_PASSWORD_FILE)."""
    return not name.upper().endswith("_FILE") and any(word in name.upper() for word in _SECRET_WORDS)


def shown(variable: str, raw: str) -> str:
    """How a value appears in an error message: quoted, or REDACTED for a secret."""
    return REDACTED if is_secret_variable(variable) and raw else repr(raw)
