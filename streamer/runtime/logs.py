"""Logging for the controller and the workers.

A worker run on its own logs ``time LEVEL name: message``. Under the controller it logs bare
``LEVEL message`` lines; the controller relays each one under the worker's name and level, so
the stack's log reads as one stream with one timestamp and one prefix per line.
"""

from __future__ import annotations

import logging
import sys

from streamer import config

FULL_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
RELAYED_FORMAT = "%(levelname)s %(message)s"


class RedactingFilter(logging.Filter):
    """Rewrites every record so that no configured secret and no URL's user:password@ part
    reaches a log line (a GStreamer error or a client's URL may quote them)."""

    def __init__(self, secrets: tuple[str, ...]) -> None:
        super().__init__()
        self._secrets = secrets

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        clean = config.redact(message, self._secrets)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_text:
            record.exc_text = config.redact(record.exc_text, self._secrets)
        return True


def setup(name: str, level: str, *, relayed: bool = False, secrets: tuple[str, ...] = ()) -> logging.Logger:
    """Configure the root logger on stderr and return the process's own logger. Every line,
    from any logger, goes through ``RedactingFilter``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(RELAYED_FORMAT if relayed else FULL_FORMAT))
    handler.addFilter(RedactingFilter(secrets))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    return logging.getLogger(name)


def parse_relayed(line: str) -> tuple[int, str]:
    """Split a worker's relayed line into (level, message).

    Lines that do not start with a level name (GStreamer's own warnings, a Python traceback)
    are passed on whole at WARNING: they are rarely good news.
    """
    word, _, rest = line.partition(" ")
    level = logging.getLevelName(word)
    if isinstance(level, int) and word.isupper():
        return level, rest
    return logging.WARNING, line
