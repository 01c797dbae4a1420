"""What every worker process does before its real work: arguments, settings, logging, status.

Each worker module has ``main()`` that calls ``run_worker(name, body)``. A worker can be run on
its own (``python -m streamer.feeder``) or under the controller, which passes ``--status-fd``.

Every worker creates its files with ``config.PRIVATE_UMASK`` (nothing world-readable or
writable by others: recordings, sockets) and logs through ``logs.RedactingFilter`` (no password,
no credentials in a URL), whoever started it and with whatever umask.
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Callable, Sequence

from streamer import config
from streamer.config import EXIT_CONFIG, Settings
from streamer.runtime import logs
from streamer.runtime.status import StatusWriter

EXIT_OK = 0
EXIT_FAILURE = 1
# A worker's exit statuses: EXIT_CONFIG (a bad setting) is the configuration's own.
__all__ = ["EXIT_CONFIG", "EXIT_FAILURE", "EXIT_OK", "WorkerBody", "run_worker"]

WorkerBody = Callable[[Settings, StatusWriter, logging.Logger], int]


def run_worker(name: str, body: WorkerBody, argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m streamer.{name}")
    parser.add_argument(
        "--status-fd",
        type=int,
        metavar="FD",
        help="file descriptor to report status on (set by the controller)",
    )
    args = parser.parse_args(argv)
    os.umask(config.PRIVATE_UMASK)  # before anything is created, settings' checks included
    settings = config.load_or_exit(os.environ, program=name)
    log = logs.setup(name, settings.log_level, relayed=args.status_fd is not None, secrets=settings.secrets)
    return body(settings, StatusWriter(args.status_fd), log)
