"""Helpers for driving the real stack from tests and benchmarks (never imported by the product).

- ``Proc``: ``python -m <module>`` in its own session, every line it prints collected by a thread
  (and echoed if asked); read with ``matches``/``wait_for``, stopped with SIGTERM, then SIGKILL of
  the whole session.
- ``wait_until``: a condition polled up to a deadline; at the deadline it raises ``WaitTimeout``
  naming what was awaited (both an ``AssertionError``, for tests, and a ``TimeoutError``).
- The controller's published state (``streamer.runtime.state``) instead of its log text:
  ``stack_state``, ``worker_pids``, ``worker_pid``, ``wait_state``, ``wait_stack_up``,
  ``wait_worker_ready``.
- ``free_port``, ``udp_port_pair``, ``port_open``, ``alive``.
- ``policed``: a thin link on loopback (an nftables policer on some packets), for the tests and
  the benchmark of the adaptive bitrate; ``rtsp_progress``: the RTSP worker's last report.

No GStreamer here: the benchmark's harness process stays light.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from streamer import config
from streamer.runtime import state
from streamer.runtime.state import StackState

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_RECORDER_SOCKET = dict(config.variables())["SHM_RECORDER_SOCKET"]

T = TypeVar("T")


class WaitTimeout(AssertionError, TimeoutError):
    """A condition did not hold by its deadline: a failed test, and a timeout to a benchmark."""


def wait_until(condition: Callable[[], T], timeout: float, what: str, interval: float = 0.05) -> T:
    """Poll ``condition`` until it returns something truthy and return that; raise
    ``WaitTimeout`` naming ``what`` once ``timeout`` seconds have passed."""
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        if time.monotonic() > deadline:
            raise WaitTimeout(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)
    return result


# Ports for the servers tests start: below the kernel's ephemeral range, which it hands out to
# every client connection. A port taken from that range (bind to port 0, then close) can become
# some client's local port before the server binds it: beside another test run, "RTSP port …
# is in use by another process" (seen once in 30 loaded runs).
SERVER_PORTS_FROM = 10_000
_handed_out: set[int] = set()  # never the same port twice in one run (two servers of one test)


def _ephemeral_ports_from() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768  # Linux's default


def _bindable(port: int, kind: socket.SocketKind) -> bool:
    with socket.socket(socket.AF_INET, kind) as probe:
        try:
            probe.bind(("0.0.0.0", port))
        except OSError:
            return False
        return True


def free_port() -> int:
    """A TCP and UDP port nothing holds on any address, for a server a test starts: random,
    below the ephemeral range (``SERVER_PORTS_FROM``)."""
    upper = max(SERVER_PORTS_FROM + 1_000, _ephemeral_ports_from())
    for _ in range(1_000):
        port = random.randrange(SERVER_PORTS_FROM, upper)
        if port in _handed_out:
            continue
        if _bindable(port, socket.SOCK_STREAM) and _bindable(port, socket.SOCK_DGRAM):
            _handed_out.add(port)
            return port
    raise RuntimeError(f"no free port between {SERVER_PORTS_FROM} and {upper}")


def udp_port_pair() -> tuple[int, int]:
    """An even port and the next one, both free: a viewer's RTP and RTCP ports, known to the
    test that shapes its link."""
    for _ in range(100):
        port = free_port()
        if port % 2 == 0 and _bindable(port + 1, socket.SOCK_DGRAM):
            return port, port + 1
    raise RuntimeError("no free UDP port pair")


@contextlib.contextmanager
def policed(match: str, rate_bps: int, burst_bytes: int = 16_000) -> Iterator[None]:
    """Packets this machine sends that nftables' ``match`` selects (``udp dport 5000``: a UDP
    viewer's RTP; ``tcp sport 8554``: an RTSP server's side of every TCP connection) are dropped
    beyond ``rate_bps``, with a burst of ``burst_bytes`` allowed (a radio's buffer), until the
    block ends; its table is removed whatever happens. Needs root and ``nft``."""
    table = f"streamer_link_{os.getpid()}_{next(_tables)}"
    rules = (
        f"table inet {table} {{\n"
        "  chain output {\n"
        "    type filter hook output priority 0;\n"
        f"    {match} limit rate over {rate_bps // 8000} kbytes/second "
        f"burst {burst_bytes // 1000} kbytes drop\n"
        "  }\n"
        "}\n"
    )
    subprocess.run(["nft", "-f", "-"], input=rules, text=True, check=True, timeout=10)
    try:
        yield
    finally:
        subprocess.run(["nft", "delete", "table", "inet", table], check=False, timeout=10)


_tables = itertools.count()


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    """Something listens on the port (a bare connect, closed at once)."""
    with socket.socket() as probe:
        probe.settimeout(0.2)
        return probe.connect_ex((host, port)) == 0


def process_state(stat_text: str) -> str:
    """The state letter of /proc/<pid>/stat's text (the command name may hold spaces and
    parentheses, so fields are counted from the last ')')."""
    return stat_text.rsplit(")", 1)[1].split()[0]


def alive(pid: int) -> bool:
    """Running (not gone, not a zombie waiting to be reaped)."""
    try:
        return process_state(Path(f"/proc/{pid}/stat").read_text()) != "Z"
    except (OSError, IndexError):
        return False


# --- the controller's state


def state_path(env: Mapping[str, str]) -> str:
    """Where the controller run with ``env`` publishes its state."""
    return state.state_file(env.get("SHM_RECORDER_SOCKET", DEFAULT_RECORDER_SOCKET) + ".lock")


def stack_state(env: Mapping[str, str]) -> StackState | None:
    """The state the controller run with ``env`` publishes; None while there is none."""
    return state.read(state_path(env))


def rtsp_progress(env: Mapping[str, str]) -> dict[str, Any]:
    """The RTSP worker's last progress report ({} before it has reported)."""
    current = stack_state(env)
    worker = current.workers.get("rtsp") if current is not None else None
    return worker.progress if worker is not None else {}


def worker_pids(env: Mapping[str, str]) -> dict[str, int]:
    """The latest pid of each worker the controller has started (none before it publishes)."""
    current = stack_state(env)
    if current is None:
        return {}
    return {name: worker.pid for name, worker in current.workers.items() if worker.pid is not None}


def worker_pid(env: Mapping[str, str], name: str) -> int:
    """The pid of the running ``name`` worker; fails when the controller has none."""
    pid = worker_pids(env).get(name)
    if pid is None:
        raise AssertionError(f"the controller's state has no pid for {name}: {stack_state(env)}")
    return pid


def wait_state(
    env: Mapping[str, str],
    condition: Callable[[StackState], object],
    timeout: float,
    what: str,
    proc: Proc | None = None,
) -> StackState:
    """Wait until the published state satisfies ``condition`` and return that state. With
    ``proc`` (the controller), only its own state counts (not one a killed controller left
    behind), and its exit ends the wait at once, with its output."""

    def holds() -> StackState | None:
        current = stack_state(env)
        if proc is not None:
            proc.check_running(what)
            if current is not None and current.controller_pid != proc.pid:
                return None
        return current if current is not None and condition(current) else None

    try:
        return wait_until(holds, timeout, what)
    except WaitTimeout as err:
        detail = f"\n--- state: {stack_state(env)}"
        if proc is not None:
            detail += f"\n--- output so far:\n{proc.output}"
        raise WaitTimeout(f"{err}{detail}") from None


def wait_stack_up(
    env: Mapping[str, str], timeout: float = 30, after: StackState | None = None, proc: Proc | None = None
) -> StackState:
    """Wait until every enabled worker is ready; with ``after`` (a state read earlier), until
    the stack is up in a later run than that one (it was restarted since)."""
    since = after.up_since if after is not None and after.up_since is not None else None

    def up(current: StackState) -> bool:
        return current.state == state.UP and (
            since is None or (current.up_since is not None and current.up_since > since)
        )

    return wait_state(env, up, timeout, "the stack to be up" + (" again" if after else ""), proc)


def wait_worker_ready(
    env: Mapping[str, str],
    name: str,
    timeout: float = 30,
    replacing: int | None = None,
    proc: Proc | None = None,
) -> int:
    """Wait until the ``name`` worker is ready (with ``replacing``: a new process in place of
    that pid) and return its pid."""

    def ready(current: StackState) -> bool:
        worker = current.workers.get(name)
        return (
            worker is not None
            and worker.state == state.READY
            and worker.pid is not None
            and worker.pid != replacing
        )

    what = f"{name} to be ready" + (f" in place of pid {replacing}" if replacing else "")
    pid = wait_state(env, ready, timeout, what, proc).workers[name].pid
    assert pid is not None
    return pid


# --- processes


class Proc:
    """``python -m <module>`` in its own session, its output collected (and echoed if asked)."""

    def __init__(
        self,
        module: str,
        env: Mapping[str, str],
        args: Sequence[str] = (),
        prefix: Sequence[str] = (),
        *,
        echo: bool = False,
        python: str = sys.executable,
    ) -> None:
        self.module = module
        self.env = dict(env)
        self.lines: list[str] = []
        self._echo = echo
        self._lock = threading.Lock()
        self.started_at = time.monotonic()
        self.popen = subprocess.Popen(
            [*prefix, python, "-m", module, *args],
            cwd=ROOT,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            with self._lock:
                self.lines.append(line.rstrip("\n"))
            if self._echo:
                print(f"    | {line.rstrip()}", file=sys.stderr, flush=True)

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def output(self) -> str:
        with self._lock:
            return "\n".join(self.lines)

    def tail(self, lines: int = 30) -> str:
        with self._lock:
            return "\n".join(self.lines[-lines:])

    def matches(self, pattern: str | re.Pattern[str]) -> list[re.Match[str]]:
        with self._lock:
            lines = list(self.lines)
        return [m for line in lines if (m := re.search(pattern, line))]

    def check_running(self, awaited: str = "") -> None:
        """Raise (with the output) if the process has exited."""
        if self.popen.poll() is not None:
            self._reader.join(2)
            before = f" before {awaited}" if awaited else ""
            raise ProcessExited(f"{self.module} exited ({self.popen.returncode}){before}:\n{self.output}")

    def wait_for(
        self, pattern: str | re.Pattern[str], timeout: float = 20, count: int = 1
    ) -> list[re.Match[str]]:
        """Wait until ``count`` lines match ``pattern``; return every match so far."""
        awaited = f"{count} x {pattern!r} from {self.module}"

        def enough() -> list[re.Match[str]] | None:
            if self.popen.poll() is not None and len(self.matches(pattern)) < count:
                self.check_running(f"logging {pattern!r}")
            found = self.matches(pattern)
            return found if len(found) >= count else None

        try:
            return wait_until(enough, timeout, awaited)
        except WaitTimeout as err:
            raise WaitTimeout(f"{err}\n--- output so far:\n{self.output}") from None

    # The controller's state, for a Proc running ``streamer.drone``.

    def worker_pids(self) -> dict[str, int]:
        return worker_pids(self.env)

    def worker_pid(self, name: str) -> int:
        return worker_pid(self.env, name)

    def wait_up(self, timeout: float = 30, after: StackState | None = None) -> StackState:
        return wait_stack_up(self.env, timeout, after, proc=self)

    def wait_worker_ready(self, name: str, timeout: float = 30, replacing: int | None = None) -> int:
        return wait_worker_ready(self.env, name, timeout, replacing, proc=self)

    # Signals and stopping.

    def signal(self, signum: int) -> None:
        os.kill(self.popen.pid, signum)

    def wait(self, timeout: float = 20) -> int:
        code = self.popen.wait(timeout)
        self._reader.join(5)
        return code

    def kill_group(self) -> None:
        """Last resort: SIGKILL the whole session's process group."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait(10)
        self._reader.join(5)

    def stop(self, grace_s: float = 20.0, also: Sequence[int] = ()) -> int | None:
        """SIGTERM, wait up to ``grace_s``, then SIGKILL the session; then make sure the pids in
        ``also`` (e.g. workers in sessions of their own) are gone too."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(grace_s)
            except subprocess.TimeoutExpired:
                self.kill_group()
        for pid in also:
            try:
                wait_until(lambda p=pid: not alive(p), 10, f"pid {pid} to end")
            except WaitTimeout:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        self._reader.join(5)
        return self.popen.returncode


class ProcessExited(AssertionError, RuntimeError):
    """A process under test exited while something was awaited from it (a failed test, and a
    runtime error to a benchmark)."""
