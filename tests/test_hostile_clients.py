"""The RTSP server fuzzed by hostile clients while a viewer watches: malformed requests of
every kind (generated reproducibly, one per connection) and half-open connections held to the
end must neither stall the viewer's stream nor stop the server answering properly."""

from __future__ import annotations

import collections
import random
import re
import secrets
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from streamer.media.rtsp_client import RtspClient
from tests.harness import USER, start_stack, stop_stack, url, watch
from tests.media import ffprobe

FUZZ_CONNECTIONS = 1200  # one malformed request (or burst) per connection
FUZZ_HALF_OPEN = 200  # connections opened, sent a partial request and held to the end
FUZZ_BUDGET_S = 25.0


BAD_CSEQ = ["", "CSeq: -1\r\n", "CSeq: abc\r\n", "CSeq: 99999999999999999999999\r\n", "CSeq:\r\n"]
BAD_CSEQ += ["CSeq: 1\r\nCSeq: 2\r\n"]
UNKNOWN_METHODS = ["FOO", "describe", "G" * 300, "PLAY\x00", "RECORD", "ANNOUNCE", "REDIRECT"]
ABSURD_LENGTHS = ["99999999999999999999", "-5", "abc", "2147483648", "4294967295", "1000000"]
TRAVERSALS = ["/../../etc/passwd", "/live/../../../etc/shadow", "/%2e%2e/%2e%2e/etc/passwd"]
BAD_AUTHORIZATION = [
    "Digest",
    "Digest username=",
    'Digest username="pilot", realm="x", nonce="1", uri="/live", response="00"',
    "Basic !!!not-base64!!!",
    "Basic " + "QUFB" * 5000,
    "Digest " + ",".join(f"a{i}=b" for i in range(500)),
    "Bearer x",
]
BAD_TRANSPORTS = [
    "Transport: RTP/AVP;unicast;client_port=0-0\r\n",
    "Transport: RTP/AVP/TCP;interleaved=999-1000\r\n",
    "Transport: \r\n",
    "Session: 12345\r\nTransport: RTP/AVP;multicast\r\n",
]


def hostile_requests(port: int, rng: random.Random) -> list[tuple[str, bytes]]:
    """(kind, bytes to send) for each fuzz connection: every kind, shuffled, reproducible."""
    base = f"rtsp://127.0.0.1:{port}/live"
    root = f"rtsp://127.0.0.1:{port}"

    def req(
        method: str = "DESCRIBE", target: str = base, headers: str = "CSeq: 1\r\n", body: bytes = b""
    ) -> bytes:
        return f"{method} {target} RTSP/1.0\r\n{headers}\r\n".encode() + body

    def truncated() -> bytes:
        full = req(headers="CSeq: 2\r\nAccept: application/sdp\r\n")
        return full[: rng.randint(1, len(full) - 1)]

    makers = {
        "random bytes": lambda: rng.randbytes(rng.randint(1, 4096)),
        "random tokens": lambda: bytes(rng.choice(b" :\r\nABCRTSP/1.0") for _ in range(rng.randint(1, 600))),
        "truncated": truncated,
        "oversized header": lambda: req(
            headers=f"CSeq: 3\r\nX-Big: {'A' * rng.choice([8192, 65536, 262144])}\r\n"
        ),
        "many headers": lambda: req(headers="CSeq: 4\r\n" + "".join(f"X-H{i}: {i}\r\n" for i in range(3000))),
        "long request line": lambda: req(target=base + "/" + "x" * rng.choice([4096, 65536])),
        "bad CSeq": lambda: req(headers=rng.choice(BAD_CSEQ)),
        "unknown method": lambda: req(method=rng.choice(UNKNOWN_METHODS)),
        "absurd Content-Length": lambda: req(
            "SET_PARAMETER",
            headers=f"CSeq: 5\r\nContent-Length: {rng.choice(ABSURD_LENGTHS)}\r\n",
            body=b"x" * 100,
        ),
        "path traversal": lambda: req(
            target=rng.choice([root + t for t in TRAVERSALS] + [*TRAVERSALS, "*", "file:///etc/passwd"])
        ),
        "bad Authorization": lambda: req(
            headers=f"CSeq: 6\r\nAuthorization: {rng.choice(BAD_AUTHORIZATION)}\r\n"
        ),
        "bad SETUP": lambda: req(
            "SETUP", base + "/stream=0", headers="CSeq: 7\r\n" + rng.choice(BAD_TRANSPORTS)
        ),
        "bad version": lambda: f"DESCRIBE {base} RTSP/9.9\r\nCSeq: 8\r\n\r\n".encode(),
        "HTTP tunnel": lambda: (
            b"GET /live HTTP/1.0\r\nx-sessioncookie: "
            + rng.randbytes(40).hex().encode()
            + b"\r\nAccept: application/x-rtsp-tunnelled\r\n\r\n"
        ),
        "pipelined": lambda: b"".join(req("OPTIONS", headers=f"CSeq: {i}\r\n") for i in range(50)),
    }
    kinds = list(makers)
    chosen = [kinds[i % len(kinds)] for i in range(FUZZ_CONNECTIONS)]
    rng.shuffle(chosen)
    return [(kind, makers[kind]()) for kind in chosen]


def send_hostile(port: int, payload: bytes) -> str:
    """Send one payload on a fresh connection; what came back: a status code or how it ended."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as conn:
            conn.settimeout(0.25)
            try:
                conn.sendall(payload)
                reply = conn.recv(256)
            except TimeoutError:
                return "no reply"
            except OSError:
                return "reset"
    except OSError as err:
        return f"connect failed: {err.strerror}"
    match = re.match(rb"(RTSP|HTTP)/\d\.\d (\d{3})", reply)
    return match.group(2).decode() if match else ("closed" if not reply else "other reply")


def test_hostile_clients_do_not_disturb_a_viewer(env, start, capsys):
    password = f"pw-{secrets.token_hex(8)}"
    drone = start_stack(start, env, RTSP_USER=USER, RTSP_PASSWORD=password)
    port = int(env["RTSP_PORT"])
    half_open: list[socket.socket] = []
    viewer = RtspClient(url(env), "tcp", user=USER, password=password).start()
    try:
        assert viewer.wait_frames(30, 20), viewer.report()
        began = time.monotonic()
        for _ in range(FUZZ_HALF_OPEN):
            conn = socket.create_connection(("127.0.0.1", port), timeout=2)
            conn.sendall(b"DESCRIBE rtsp://127.0.0.1/live RTSP/1.0\r\nCSeq: 1\r\n")  # never finished
            half_open.append(conn)
        payloads = hostile_requests(port, random.Random(7))
        outcomes: collections.Counter[str] = collections.Counter()
        lock = threading.Lock()

        def one(item: tuple[str, bytes]) -> None:
            if time.monotonic() - began > FUZZ_BUDGET_S:
                return
            outcome = send_hostile(port, item[1])
            with lock:
                outcomes[outcome] += 1

        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(one, payloads))
        fuzz_end = time.monotonic()
        sent = sum(outcomes.values())

        # The server is up and answers properly; the viewer kept its frames all along.
        assert drone.popen.poll() is None
        assert "401 Unauthorized" in ffprobe(url(env)).stderr
        late = watch(RtspClient(url(env), "udp", user=USER, password=password).start())
        assert not late.errors
        window = [t for t in list(viewer.frame_times) if began <= t <= fuzz_end]
        gaps = [b - a for a, b in zip([began, *window], [*window, fuzz_end], strict=True)]
        with capsys.disabled():
            print(
                f"\nfuzz: {sent} hostile connections + {FUZZ_HALF_OPEN} half-open "
                f"in {fuzz_end - began:.1f} s; "
                f"outcomes {dict(outcomes.most_common())}; viewer got {len(window)} frames meanwhile, "
                f"longest gap {max(gaps):.3f} s"
            )
        assert sent >= 1000, f"only {sent} hostile requests within {FUZZ_BUDGET_S:.0f} s"
        assert max(gaps) < 1.0, f"the viewer's stream stalled for {max(gaps):.2f} s"
        assert not viewer.errors, viewer.errors
        assert not drone.matches(r"stopping the stack|stalled|restarting")
    finally:
        viewer.stop()
        for conn in half_open:
            conn.close()
        stop_stack(drone)
