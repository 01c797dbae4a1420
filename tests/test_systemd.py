"""systemd: the sd_notify client against a real datagram socket, the controller's notifications on
the real stack, and the shipped unit and its installer (``systemd-analyze verify``; no systemd
needs to run as PID 1)."""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from streamer import config
from streamer.control.systemd import Notifier
from streamer.runtime import state
from streamer.testing import stack_state
from tests.harness import ROOT, short_tempdir

DEPLOY = ROOT / "deploy"
_UCRED = struct.Struct("3i")  # pid, uid, gid of SCM_CREDENTIALS


class NotifySocket:
    """What systemd listens on: a datagram socket that also learns each sender's pid."""

    def __init__(self, address: str, bind_to: str | None = None) -> None:
        self.address = address  # as NOTIFY_SOCKET says it
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.bind(bind_to or address)
        self.received: list[tuple[int, str]] = []  # (sender pid, message)

    def messages(self) -> list[str]:
        return [text for _pid, text in self.received]

    def receive(self, timeout: float) -> tuple[int, str] | None:
        self.sock.settimeout(timeout)
        try:
            message, ancillary, _flags, _address = self.sock.recvmsg(4096, socket.CMSG_SPACE(_UCRED.size))
        except TimeoutError:
            return None
        credentials = [data for _level, kind, data in ancillary if kind == socket.SCM_CREDENTIALS]
        pid = _UCRED.unpack(credentials[0][: _UCRED.size])[0] if credentials else -1
        self.received.append((pid, message.decode()))
        return self.received[-1]

    def wait_for(self, condition: Callable[[list[str]], bool], timeout: float, what: str) -> list[str]:
        """Receive until ``condition(every message so far)`` holds; fail naming ``what``."""
        deadline = time.monotonic() + timeout
        while not condition(self.messages()):
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}: {self.messages()}")
            self.receive(min(left, 0.5))
        return self.messages()

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def notify_dir() -> Iterator[Path]:
    path = short_tempdir()
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def receiver(notify_dir: Path) -> Iterator[NotifySocket]:
    listener = NotifySocket(str(notify_dir / "notify.sock"))
    yield listener
    listener.close()


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


# --- the client


def test_without_notify_socket_nothing_is_sent_and_nothing_fails():
    notifier = Notifier.from_environ({"WATCHDOG_USEC": "2000000"})
    assert not notifier.enabled
    notifier.ready()
    notifier.status("up")
    notifier.watchdog()
    notifier.stopping()


def test_messages_reach_a_path_socket(receiver: NotifySocket):
    notifier = Notifier.from_environ({"NOTIFY_SOCKET": receiver.address})
    notifier.status("starting:\ncamera test")
    notifier.ready()
    notifier.ready()  # once only
    notifier.status("starting: camera test")  # unchanged: not sent again
    notifier.watchdog()  # no watchdog configured: nothing
    notifier.stopping()
    notifier.close()
    assert receiver.wait_for(lambda m: "STOPPING=1" in m, 5, "STOPPING=1") == [
        "STATUS=starting: camera test",
        "READY=1",
        "STOPPING=1",
    ]
    assert {pid for pid, _text in receiver.received} == {os.getpid()}


def test_messages_reach_an_abstract_socket():
    name = f"streamer-test-{os.getpid()}"
    listener = NotifySocket(f"@{name}", bind_to=f"\0{name}")
    try:
        Notifier.from_environ({"NOTIFY_SOCKET": listener.address}).ready()
        assert listener.wait_for(lambda m: bool(m), 5, "READY=1") == ["READY=1"]
    finally:
        listener.close()


def test_the_keepalive_is_rate_limited_to_half_the_watchdog_timeout(receiver: NotifySocket):
    clock = Clock()
    notifier = Notifier(receiver.address, watchdog_usec=2_000_000, clock=clock)
    for step in range(12):  # every 0.25 s for 3 s
        notifier.watchdog()
        if step == 5:
            notifier.ready()
        clock.now += 0.25
    notifier.close()
    messages = receiver.wait_for(lambda m: len(m) >= 5, 5, "keep-alives")
    # Before READY=1 systemd's watchdog is not armed: the start timeout is extended instead;
    # after it, the first call pings at once, then every second (half of 2 s).
    assert messages == [
        "EXTEND_TIMEOUT_USEC=2000000",  # 100.0
        "EXTEND_TIMEOUT_USEC=2000000",  # 101.0
        "READY=1",  # 101.25
        "WATCHDOG=1",  # 101.5
        "WATCHDOG=1",  # 102.5
    ]
    assert receiver.receive(0.2) is None


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"WATCHDOG_USEC": "4000000"}, 2.0),
        ({"WATCHDOG_USEC": "4000000", "WATCHDOG_PID": str(os.getpid())}, 2.0),
        ({"WATCHDOG_USEC": "4000000", "WATCHDOG_PID": "1"}, None),  # meant for another process
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({}, None),
    ],
)
def test_the_watchdog_is_ours_only_when_systemd_says_so(environ, expected):
    notifier = Notifier.from_environ({"NOTIFY_SOCKET": "/run/nothing-here.sock", **environ})
    assert notifier.keepalive_interval_s == expected


def test_a_socket_that_is_gone_is_logged_once_and_never_raises(notify_dir: Path, caplog):
    notifier = Notifier.from_environ({"NOTIFY_SOCKET": str(notify_dir / "gone.sock"), "WATCHDOG_USEC": "1"})
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            notifier.ready()
            notifier.status("x")
            notifier.watchdog()
            notifier.stopping()
    assert len(caplog.records) == 1
    assert "cannot notify systemd" in caplog.records[0].getMessage()


# --- the controller (the real stack)


def test_the_stack_notifies_ready_keepalives_and_stopping(env, start, receiver: NotifySocket):
    env.update(NOTIFY_SOCKET=receiver.address, WATCHDOG_USEC="2000000")
    drone = start("streamer.drone", env)
    receiver.wait_for(lambda m: "READY=1" in m, 30, "READY=1")
    current = stack_state(env)
    assert current is not None and current.state == state.UP, "READY=1 before the stack was up"
    ready_at = receiver.messages().index("READY=1")
    receiver.wait_for(lambda m: m[ready_at:].count("WATCHDOG=1") >= 3, 15, "3 keep-alives after READY=1")
    drone.signal(signal.SIGTERM)
    receiver.wait_for(lambda m: "STOPPING=1" in m, 20, "STOPPING=1")
    assert drone.wait() == 0, drone.output
    assert any(m.startswith("STATUS=") for m in receiver.messages())
    # NotifyAccess=main: systemd only listens to the controller, so only the controller may send.
    assert {pid for pid, _text in receiver.received} == {drone.pid}


def test_a_stack_that_cannot_come_up_stays_starting_but_alive(env, start, receiver: NotifySocket):
    """A missing camera: no READY=1, but the start timeout is extended while the controller
    retries, so systemd neither kills it for a slow start nor takes it for wedged."""
    env.update(NOTIFY_SOCKET=receiver.address, WATCHDOG_USEC="2000000", CAMERA="/dev/video77")
    drone = start("streamer.drone", env)
    drone.wait_for(r"restarting the stack in", timeout=30)  # a retry loop, not a slow start
    receiver.wait_for(lambda m: m.count("EXTEND_TIMEOUT_USEC=2000000") >= 3, 15, "3 start-timeout extensions")
    drone.signal(signal.SIGTERM)
    receiver.wait_for(lambda m: "STOPPING=1" in m, 20, "STOPPING=1")
    assert drone.wait() == 0, drone.output
    assert "READY=1" not in receiver.messages()


# --- the unit and its installer


def install(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(DEPLOY / "install"), "--root", str(root), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_installed_unit_passes_systemd_analyze_verify(tmp_path: Path):
    result = install(tmp_path)
    assert result.returncode == 0, result.stderr
    unit = tmp_path / "etc/systemd/system/streamer.service"
    text = unit.read_text()
    assert f"ExecStart={ROOT}/.venv/bin/python -m streamer.drone" in text
    assert f"WorkingDirectory={ROOT}" in text
    # verify reads the unit file itself (and checks that ExecStart's program exists); a copy
    # outside /etc keeps it from looking at the machine's own units of that name.
    checked = tmp_path / "verify" / "streamer.service"
    checked.parent.mkdir()
    shutil.copy(unit, checked)
    verify = subprocess.run(
        ["systemd-analyze", "verify", str(checked)], capture_output=True, text=True, timeout=60, check=False
    )
    assert verify.returncode == 0, verify.stderr
    assert verify.stderr.strip() == "", verify.stderr  # no warning either (unknown keys, typos)


def test_the_unit_gives_the_stack_time_to_stop_and_the_watchdog_room(tmp_path: Path):
    unit = (DEPLOY / "streamer.service").read_text()
    keys = dict(re.findall(r"^(\w+)=(.*)$", unit, re.MULTILINE))
    assert keys["Type"] == "notify" and keys["NotifyAccess"] == "main"
    assert keys["Restart"] == "on-failure"
    assert keys["RestartPreventExitStatus"] == str(config.EXIT_CONFIG)  # a bad setting would only loop
    assert keys["KillMode"] == "mixed"  # SIGTERM to the controller only: it stops the workers in order
    grace_s = float(dict(config.variables())["STOP_GRACE_S"])
    # consumers, then the feeder, each up to STOP_GRACE_S after SIGTERM
    assert float(keys["TimeoutStopSec"]) > 2 * grace_s
    # keep-alives go every half timeout; a stop of the stack between two is the longest pause
    assert float(keys["WatchdogSec"]) / 2 > 2 * grace_s


def test_the_installer_is_idempotent_and_keeps_the_operators_settings(tmp_path: Path):
    assert install(tmp_path).returncode == 0
    env_file = tmp_path / "etc/streamer/streamer.env"
    assert env_file.read_text() == (DEPLOY / "streamer.env").read_text()
    assert oct(env_file.stat().st_mode & 0o777) == "0o640"  # may hold RTSP_PASSWORD
    env_file.write_text("CAMERA=/dev/video2\n")
    unit = tmp_path / "etc/systemd/system/streamer.service"
    before = unit.read_text()
    again = install(tmp_path)
    assert again.returncode == 0, again.stderr
    assert env_file.read_text() == "CAMERA=/dev/video2\n"
    assert unit.read_text() == before
    # With --root nothing touches this machine's users or systemd: those steps are only shown.
    assert "useradd" in again.stdout or "usermod" in again.stdout
    assert "systemctl daemon-reload" in again.stdout


def test_a_dry_run_changes_nothing(tmp_path: Path):
    result = install(tmp_path, "--dry-run")
    assert result.returncode == 0, result.stderr
    assert list(tmp_path.iterdir()) == []
    assert "streamer.service" in result.stdout


def test_every_variable_of_the_example_environment_file_is_a_setting_with_its_default():
    """The example file lists every setting, commented out at its default, so uncommenting one
    line changes exactly one thing."""
    text = (DEPLOY / "streamer.env").read_text()
    listed = re.findall(r"^#? ?([A-Z][A-Z0-9_]*)=(.*)$", text, re.MULTILINE)
    declared = dict(config.variables())
    assert [name for name, _ in listed if name not in declared] == []
    assert sorted(declared) == sorted({name for name, _ in listed})
    for name, value in listed:
        if "$HOME" not in declared[name]:
            assert value == declared[name], name
