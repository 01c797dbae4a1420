"""Logging for the controller and the workers.

A worker run on its own logs ``time LEVEL name: message``. Under the controller it logs bare
``LEVEL message`` lines (every line of a multi-line message, a traceback say, carries the
level); the controller relays each one under the worker's name and level, so the stack's log
reads as one stream with one timestamp and one prefix per line.

Under systemd, when stderr is the journal's stream (``journald_stream``), lines carry a syslog
priority prefix (``<3>`` error, ``<4>`` warning, ``<6>`` info, ``<7>`` debug) that journald
takes as the entry's priority, and no timestamp (journald stamps every entry itself): so
``journalctl -p warning -u streamer`` shows warnings and errors, the workers' relayed ones too.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping

from streamer import config

FULL_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
RELAYED_FORMAT = "%(levelname)s %(message)s"
JOURNAL_FORMAT = "%(levelname)-7s %(name)s: %(message)s"

# syslog priorities (sd-daemon.h's SD_ERR ...) of the logging levels; in-between levels round up
# to the next more severe one.
PRIORITIES = ((logging.DEBUG, 7), (logging.INFO, 6), (logging.WARNING, 4), (logging.ERROR, 3))
CRITICAL_PRIORITY = 2


def priority(level: int) -> int:
    """The syslog priority of a logging level."""
    return next((prio for limit, prio in PRIORITIES if level <= limit), CRITICAL_PRIORITY)


def journald_stream(environ: Mapping[str, str] = os.environ, fd: int = 2) -> bool:
    """Whether ``fd`` is the journal's stream: systemd names the stream in JOURNAL_STREAM as
    ``device:inode``. Being set is not enough: a program started from a service inherits the
    variable with other output (a worker's stderr is a pipe to the controller)."""
    device, _, inode = environ.get("JOURNAL_STREAM", "").partition(":")
    try:
        info = os.fstat(fd)
        return (info.st_dev, info.st_ino) == (int(device), int(inode))
    except (OSError, ValueError):
        return False


class _EveryLine(logging.Formatter):
    """Starts every further line of a record (a traceback, say) with ``continued(record)``, so
    each line is read (by the controller's relay, or by journald) like the record's first."""

    def continued(self, record: logging.LogRecord) -> str:
        raise NotImplementedError

    def format(self, record: logging.LogRecord) -> str:
        first, *rest = super().format(record).split("\n")
        return "\n".join([first, *(self.continued(record) + line for line in rest)])


class RelayedFormatter(_EveryLine):
    """``LEVEL message``, each line starting with the level (``parse_relayed``)."""

    def __init__(self) -> None:
        super().__init__(RELAYED_FORMAT)

    def continued(self, record: logging.LogRecord) -> str:
        return f"{record.levelname} "


class JournalFormatter(_EveryLine):
    """``<priority>LEVEL name: message``, each line starting with the priority; no timestamp."""

    def __init__(self) -> None:
        super().__init__(JOURNAL_FORMAT)

    def continued(self, record: logging.LogRecord) -> str:
        return f"<{priority(record.levelno)}>"

    def format(self, record: logging.LogRecord) -> str:
        return self.continued(record) + super().format(record)


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


def formatter(relayed: bool, environ: Mapping[str, str] = os.environ) -> logging.Formatter:
    """Under the controller, its relay format; on the journal's stream, journald's; else full."""
    if relayed:
        return RelayedFormatter()
    if journald_stream(environ):
        return JournalFormatter()
    return logging.Formatter(FULL_FORMAT)


def setup(name: str, level: str, *, relayed: bool = False, secrets: tuple[str, ...] = ()) -> logging.Logger:
    """Configure the root logger on stderr and return the process's own logger. Every line,
    from any logger, goes through ``RedactingFilter``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(relayed))
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
