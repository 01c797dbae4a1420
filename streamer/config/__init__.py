"""Settings: parsed once from the environment into a frozen, typed object.

Each setting is declared once, as a field of ``Settings`` (``settings``): its variable, default,
parser and help. ``load(environ)`` either returns a complete ``Settings`` or raises
``ConfigError`` naming the variable, the value and what is allowed (``loading``). The parsers
(``parsers``) keep values that end up inside a GStreamer pipeline description to characters
that cannot change a pipeline's structure. ``redaction`` keeps secrets out of logs and messages.
``python -m streamer.config`` prints README's settings table.

This package imports nothing from the rest of the project.
"""

from streamer.config.loading import (
    EXIT_CONFIG,
    OWN_PREFIXES,
    ConfigError,
    load,
    load_or_exit,
    markdown_table,
    variables,
)
from streamer.config.parsers import STAMPED_SYNTHETIC_CAMERA, SYNTHETIC_CAMERA
from streamer.config.redaction import REDACTED, is_secret_variable, redact
from streamer.config.settings import (
    ENCODER_AUTO,
    ENCODER_FALLBACK,
    ENCODER_KINDS,
    ENCODER_SOFTWARE,
    ENCODERS,
    PRIVATE_UMASK,
    RESTART_SCOPES,
    RTSP_AUTH_METHODS,
    Settings,
)

__all__ = [
    "ENCODERS",
    "ENCODER_AUTO",
    "ENCODER_FALLBACK",
    "ENCODER_KINDS",
    "ENCODER_SOFTWARE",
    "EXIT_CONFIG",
    "OWN_PREFIXES",
    "PRIVATE_UMASK",
    "REDACTED",
    "RESTART_SCOPES",
    "RTSP_AUTH_METHODS",
    "STAMPED_SYNTHETIC_CAMERA",
    "SYNTHETIC_CAMERA",
    "ConfigError",
    "Settings",
    "is_secret_variable",
    "load",
    "load_or_exit",
    "markdown_table",
    "redact",
    "variables",
]
