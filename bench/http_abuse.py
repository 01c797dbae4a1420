"""Hostile HTTP clients for the web worker: slow connections that never finish their request
(slowloris), and malformed requests. Used by ``tests/test_web_hostile.py`` and
``bench.operations``; raw sockets on purpose, so that nothing normalises what is sent.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import socket
import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

log = logging.getLogger("bench")

# Requests no HTTP server should accept: broken request lines and headers, absurd sizes,
# binary noise, a TLS hello on the plain port, path tricks. Each is sent on its own connection.
MALFORMED: tuple[bytes, ...] = (
    b"GARBAGE\r\n\r\n",
    b"GET / HTTP/9.9\r\n\r\n",
    b"GET " + b"/a" * 40_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /health HTTP/1.1\r\nHost: x\r\n" + b"X-Long: " + b"b" * 100_000 + b"\r\n\r\n",
    b"GET /health HTTP/1.1\r\n" + b"".join(b"X-%d: y\r\n" % n for n in range(500)) + b"\r\n",
    b"\x00\xff\xfe\x01" * 64,
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64,  # a TLS ClientHello's start
    b"GET /health HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
    b"GET /health HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"POST /api/v1/recording HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\n{",
    b'POST /api/v1/recording HTTP/1.1\r\nHost: x\r\nContent-Length: 9\r\n\r\n{"video":',
    b"POST /api/v1/recording HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nnull",
    b"GET /recordings/../../etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /recordings/%2e%2e/%2e%2e/etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /health\x00 HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /health HTTP/1.1\r\nHost: x\r\nX-Bad\x7f: 1\r\n\r\n",
    b"GET /health HTTP/1.1\r\nHost: x\r\n Folded: header\r\n\r\n",
    b"BREW /health HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET http://[::1 HTTP/1.1\r\n\r\n",
)


def status_of(answer: bytes) -> int | None:
    """The status code of an HTTP answer's first line, or None (no answer, or not HTTP)."""
    first = answer.split(b"\r\n", 1)[0].split()
    if len(first) >= 2 and first[0].startswith(b"HTTP/") and first[1].isdigit():
        return int(first[1])
    return None


def send_one(address: tuple[str, int], payload: bytes, timeout_s: float = 10.0) -> int | None:
    """Send ``payload`` on a new connection; the status the server answered, or None if it
    closed the connection (or waited ``timeout_s``) without an HTTP answer."""
    with socket.create_connection(address, timeout=timeout_s) as connection:
        with contextlib.suppress(OSError):  # the server may close before taking it all
            connection.sendall(payload)
        answer = b""
        with contextlib.suppress(OSError):  # a reset, or the timeout
            while b"\r\n\r\n" not in answer and len(answer) < 4096 and (data := connection.recv(4096)):
                answer += data
    return status_of(answer)


def send_malformed(address: tuple[str, int], count: int, threads: int = 8) -> Counter[int | None]:
    """``count`` malformed requests (``MALFORMED``, cycled) from ``threads`` threads; how many
    got each status (None: closed without an answer)."""
    payloads = itertools.islice(itertools.cycle(MALFORMED), count)
    with ThreadPoolExecutor(threads, thread_name_prefix="malformed") as pool:
        return Counter(pool.map(lambda payload: send_one(address, payload), payloads))


class SlowClients:
    """``count`` connections that each send the start of a request and then one more header
    byte every ``interval_s``, never finishing it (slowloris). A context manager: the
    connections are held open until it exits. ``open`` tells how many the server has not closed."""

    def __init__(self, address: tuple[str, int], count: int, interval_s: float = 1.0) -> None:
        self.address = address
        self.count = count
        self.interval_s = interval_s
        self._connections: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._trickle, name="slowloris", daemon=True)

    def __enter__(self) -> SlowClients:
        for _ in range(self.count):
            connection = socket.create_connection(self.address, timeout=5)
            connection.sendall(b"GET /api/v1/status HTTP/1.1\r\nHost: x\r\n")
            self._connections.append(connection)
        self._thread.start()
        return self

    @property
    def open(self) -> int:
        return len(self._connections)

    def _trickle(self) -> None:
        for byte in itertools.cycle(b"X-Slow: a\r\n"):
            if self._stop.wait(self.interval_s):
                return
            for connection in list(self._connections):
                try:
                    connection.send(bytes([byte]))
                except OSError:  # closed by the server: that is allowed
                    self._connections.remove(connection)
                    connection.close()

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()
        for connection in self._connections:
            connection.close()
        self._connections.clear()


@contextlib.contextmanager
def abused(address: tuple[str, int], slow: int = 200, malformed: int = 1000) -> Iterator[dict[str, object]]:
    """``slow`` slow connections held open and, from a thread, ``malformed`` malformed requests
    sent over and over while the block runs. Yields a dict that gets the answers' statuses
    (``statuses``, a Counter) and the rounds sent (``rounds``)."""
    outcome: dict[str, object] = {"statuses": Counter(), "rounds": 0}
    stop = threading.Event()

    def keep_sending() -> None:
        while not stop.is_set():
            statuses = send_malformed(address, malformed)
            outcome["statuses"].update(statuses)  # type: ignore[union-attr]
            outcome["rounds"] = int(outcome["rounds"]) + 1  # type: ignore[call-overload]

    with SlowClients(address, slow) as clients:
        sender = threading.Thread(target=keep_sending, name="malformed-rounds", daemon=True)
        sender.start()
        try:
            yield outcome
        finally:
            stop.set()
            sender.join()
            outcome["slow_open"] = clients.open
