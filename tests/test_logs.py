"""Log lines: under journald, a syslog priority on every line (the workers' relayed ones too) and
no timestamp of ours; under the controller, the level on every line of a worker's record."""

from __future__ import annotations

import logging
import os
import re
import signal
import socket
import sys

import pytest

from streamer.runtime import logs


def record(level: int, message: str, exc_info=None) -> logging.LogRecord:
    return logging.LogRecord("drone", level, __file__, 1, message, None, exc_info)


def failure() -> tuple:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        return sys.exc_info()


@pytest.mark.parametrize(
    ("level", "expected"),
    [
        (logging.DEBUG, 7),
        (logging.INFO, 6),
        (25, 4),  # between INFO and WARNING: the more severe
        (logging.WARNING, 4),
        (logging.ERROR, 3),
        (logging.CRITICAL, 2),
    ],
)
def test_levels_map_to_syslog_priorities(level, expected):
    assert logs.priority(level) == expected


def test_the_journal_is_recognised_by_its_stream_not_by_the_variable_alone():
    journal, _other_end = socket.socketpair()
    pipe_read, pipe_write = os.pipe()
    try:
        info = os.fstat(journal.fileno())
        named = {"JOURNAL_STREAM": f"{info.st_dev}:{info.st_ino}"}
        assert logs.journald_stream(named, journal.fileno())
        assert not logs.journald_stream(named, pipe_write)  # inherited, but output goes elsewhere
        assert not logs.journald_stream({}, journal.fileno())
        assert not logs.journald_stream({"JOURNAL_STREAM": "garbage"}, journal.fileno())
    finally:
        journal.close()
        _other_end.close()
        os.close(pipe_read)
        os.close(pipe_write)


def test_journal_lines_carry_the_priority_on_every_line_and_no_timestamp():
    formatter = logs.JournalFormatter()
    assert (
        formatter.format(record(logging.WARNING, "recorder stalled")) == "<4>WARNING drone: recorder stalled"
    )
    assert formatter.format(record(logging.DEBUG, "x")) == "<7>DEBUG   drone: x"
    lines = formatter.format(record(logging.ERROR, "cannot start", failure())).splitlines()
    assert lines[0] == "<3>ERROR   drone: cannot start"
    assert lines[1] == "<3>Traceback (most recent call last):"
    assert lines[-1] == "<3>RuntimeError: boom"
    assert all(line.startswith("<3>") for line in lines)


def test_every_line_of_a_workers_record_is_relayed_at_its_level():
    text = logs.RelayedFormatter().format(record(logging.ERROR, "pipeline failed", failure()))
    relayed = [logs.parse_relayed(line) for line in text.splitlines()]
    assert {level for level, _message in relayed} == {logging.ERROR}
    assert relayed[0][1] == "pipeline failed"
    assert relayed[-1][1] == "RuntimeError: boom"
    assert any(message.startswith("  File ") for _level, message in relayed)  # indentation kept


def test_without_the_journal_lines_keep_their_timestamp(monkeypatch):
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    formatter = logs.formatter(relayed=False)
    assert not isinstance(formatter, logs.JournalFormatter)
    assert formatter._fmt == logs.FULL_FORMAT
    assert isinstance(logs.formatter(relayed=True), logs.RelayedFormatter)


# Starts a program as systemd starts a service logging to the journal: JOURNAL_STREAM names the
# stream its stderr is (here the test's pipe instead of journald's socket).
AS_UNDER_JOURNALD = (
    sys.executable,
    "-c",
    "import os, sys; s = os.fstat(2); os.environ['JOURNAL_STREAM'] = f'{s.st_dev}:{s.st_ino}'; "
    "os.execv(sys.argv[1], sys.argv[1:])",
)


def test_the_stack_under_journald_gives_every_line_its_priority(env, start):
    """The controller's own lines and the feeder's relayed ones: info, warning, error."""
    env.update(CAMERA="/dev/video77", RESTART_DELAY_MIN_S="0.5")
    drone = start("streamer.drone", env, prefix=AS_UNDER_JOURNALD)
    drone.wait_for(r"^<3>ERROR   feeder: camera /dev/video77 does not exist")
    drone.wait_for(r"^<4>WARNING drone: restarting the stack in")
    drone.wait_for(r"^<6>INFO    drone: started feeder")
    drone.signal(signal.SIGTERM)
    assert drone.wait() == 0, drone.output
    # priority, level, name: nothing else (no timestamp of ours)
    pattern = re.compile(r"<([2-7])>(DEBUG|INFO|WARNING|ERROR|CRITICAL) +[a-z_]+: ")
    assert [line for line in drone.output.splitlines() if not pattern.match(line)] == []
