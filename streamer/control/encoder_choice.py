"""Which H.264 encoder the stack will use, asked before it starts. No GStreamer here.

The controller never loads GStreamer, so it asks a child: ``python -m
streamer.media.encoder_check`` with the stack's environment, which checks the elements, runs the
self-tests and prints ``{"chosen": kind, "reasons": {kind: why}, "available": [kinds]}``, or
exits 2 with one line when the requested encoder is missing or fails (a configuration error:
do not start, do not retry). ``EncoderCheck`` runs it with a deadline (its process group is
killed past it) while the caller's loop goes on, ``run_encoder_check`` waits for it, and
``parse_encoder_check`` reads its answer (pure).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import IO

from streamer.config import ENCODER_KINDS, EXIT_CONFIG
from streamer.control.children import _die_with_parent
from streamer.runtime import logs

ENCODER_CHECK_MODULE = "streamer.media.encoder_check"
# The child runs one self-test per hardware candidate present (each at most 8 s, see
# encoder_check.SELF_TEST_DEADLINE_S): four candidates and the interpreter's start fit in this.
ENCODER_CHECK_TIMEOUT_S = 45.0


@dataclass(frozen=True)
class EncoderChoice:
    """The encoder to use (``chosen``, a kind of ``config.ENCODER_KINDS``), why each kind was or
    was not chosen, and the kinds this machine has."""

    chosen: str
    reasons: dict[str, str]
    available: tuple[str, ...]


class EncoderCheckError(RuntimeError):
    """The check found no encoder to use. ``config_error``: the settings ask for one this
    machine cannot give (exit status 2; the message is the child's one line, e.g.
    ``ENCODER='v4l2': no v4l2h264enc on this machine (it has: x264, openh264)``): starting again
    will not help. Otherwise the check itself failed (crashed, timed out, answered nonsense)."""

    def __init__(self, message: str, *, config_error: bool = False) -> None:
        super().__init__(message)
        self.config_error = config_error


def encoder_check_command(python: str = sys.executable) -> list[str]:
    """The check, logging in the relay format (a level name, then the message)."""
    return [python, "-m", ENCODER_CHECK_MODULE, "--relayed"]


def _config_line(stderr: str) -> str | None:
    """The child's configuration error without its program prefix, if it printed one."""
    for line in reversed(stderr.strip().splitlines()):
        _program, marker, message = line.partition(": configuration error: ")
        if marker:
            return message
    return None


def parse_encoder_check(returncode: int, stdout: str, stderr: str) -> EncoderChoice:
    """The choice the check printed (its last line of stdout), or EncoderCheckError."""
    if returncode == EXIT_CONFIG:
        message = _config_line(stderr) or "the encoder check refused the settings"
        raise EncoderCheckError(message, config_error=True)
    if returncode != 0:
        last = (stderr.strip().splitlines() or ["no message"])[-1]
        raise EncoderCheckError(f"the encoder check failed (exit status {returncode}): {last}")
    try:
        answer = json.loads((stdout.strip().splitlines() or [""])[-1])
        chosen, reasons, available = answer["chosen"], answer["reasons"], answer["available"]
    except (ValueError, KeyError, TypeError):
        raise EncoderCheckError(f"the encoder check answered nonsense: {stdout.strip()[:200]!r}") from None
    if chosen not in ENCODER_KINDS or not isinstance(reasons, dict) or not isinstance(available, list):
        raise EncoderCheckError(f"the encoder check answered nonsense: {stdout.strip()[:200]!r}")
    return EncoderChoice(chosen, {str(k): str(v) for k, v in reasons.items()}, tuple(map(str, available)))


class EncoderCheck:
    """The encoder check as a child process, for a caller that goes on with its own loop
    meanwhile (the controller tends its services and systemd's watchdog while a hardware
    encoder's self-tests run, up to ``timeout_s``): ``start``, then ``poll`` until it returns
    the choice (or raises EncoderCheckError). Its output goes to temporary files, so a chatty
    check can never block on a full pipe. ``cancel`` kills its process group."""

    def __init__(
        self,
        environ: Mapping[str, str] | None = None,
        *,
        timeout_s: float = ENCODER_CHECK_TIMEOUT_S,
        python: str = sys.executable,
        log: logging.Logger | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.environ = dict(os.environ if environ is None else environ)
        self.timeout_s = timeout_s
        self.python = python
        self.log = log or logging.getLogger("encoders")
        self._clock = clock
        self._process: subprocess.Popen[bytes] | None = None
        self._stdout: IO[bytes] | None = None
        self._stderr: IO[bytes] | None = None
        self._deadline = 0.0

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def start(self) -> EncoderCheck:
        # Closed once the check has ended (``_output``).
        self._stdout, self._stderr = tempfile.TemporaryFile(), tempfile.TemporaryFile()  # noqa: SIM115
        try:
            self._process = subprocess.Popen(
                encoder_check_command(self.python),
                stdin=subprocess.DEVNULL,
                stdout=self._stdout,
                stderr=self._stderr,
                env=self.environ,
                start_new_session=True,  # its own process group, self-tests included: killed together
                preexec_fn=_die_with_parent,
            )
        except BaseException:
            self._output()
            raise
        self._deadline = self._clock() + self.timeout_s
        return self

    def poll(self) -> EncoderChoice | None:
        """None while the check runs; then its choice, or EncoderCheckError (also past its
        deadline: its process group is killed). What it logged is relayed on ``log``, line by
        line at its level, once it has ended."""
        assert self._process is not None, "start() first"
        if self._process.poll() is None:
            if self._clock() < self._deadline:
                return None
            self.cancel()
            raise EncoderCheckError(f"the encoder check did not answer within {self.timeout_s:g} s")
        stdout, stderr = self._output()
        for line in stderr.splitlines():
            if line.strip() and ": configuration error: " not in line:
                self.log.log(*logs.parse_relayed(line))
        return parse_encoder_check(self._process.returncode, stdout, stderr)

    def cancel(self) -> None:
        """Kill the check's process group (a self-test child still running dies with it: it has
        PR_SET_PDEATHSIG) and reap it."""
        if self._process is None or self._process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._process.wait(2)
        self._output()

    def _output(self) -> tuple[str, str]:
        texts = []
        for stream in (self._stdout, self._stderr):
            if stream is None:
                texts.append("")
                continue
            stream.seek(0)
            texts.append(stream.read().decode(errors="replace"))
            stream.close()
        self._stdout = self._stderr = None
        return texts[0], texts[1]


def run_encoder_check(
    environ: Mapping[str, str] | None = None,
    *,
    timeout_s: float = ENCODER_CHECK_TIMEOUT_S,
    python: str = sys.executable,
    log: logging.Logger | None = None,
) -> EncoderChoice:
    """Run the encoder check with ``environ`` (the stack's environment; default ours) and return
    its choice, waiting for it (``EncoderCheck`` for a caller with a loop of its own). What it
    logs is relayed on ``log`` line by line, at its level. Past ``timeout_s`` its process group
    is killed and EncoderCheckError raised."""
    check = EncoderCheck(environ, timeout_s=timeout_s, python=python, log=log).start()
    while (choice := check.poll()) is None:
        time.sleep(0.05)
    return choice
