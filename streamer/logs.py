"""Logging for the controller and the workers.

A worker run on its own logs ``time LEVEL name: message``. Under the controller it logs bare
``LEVEL message`` lines; the controller relays each one under the worker's name and level, so
the stack's log reads as one stream with one timestamp and one prefix per line.
"""

from __future__ import annotations

import logging
import sys

FULL_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
RELAYED_FORMAT = "%(levelname)s %(message)s"


def setup(name: str, level: str, *, relayed: bool = False) -> logging.Logger:
    """Configure the root logger on stderr and return the process's own logger."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(RELAYED_FORMAT if relayed else FULL_FORMAT))
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
