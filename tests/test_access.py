"""Access control in the real stack: RTSP authentication, RTSPS, the bind address, private
sockets, segments and recordings, and a server fuzzed by hostile clients while a viewer watches."""

from __future__ import annotations

import collections
import grp
import os
import random
import re
import secrets
import signal
import socket
import stat
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from streamer.media import shm
from streamer.media.rtsp_client import RtspClient
from tests.harness import wait_until

USER = "pilot"


def url(env: dict[str, str], scheme: str = "rtsp", credentials: str = "", host: str = "127.0.0.1") -> str:
    return f"{scheme}://{credentials}{host}:{env['RTSP_PORT']}/live"


FFPROBE = ("ffprobe", "-v", "error", "-timeout", "10000000")
OPENSSL_SELF_SIGNED = ("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost")


def ffprobe(target: str, *options: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*FFPROBE, *options, "-show_entries", "stream=codec_name", "-of", "csv=p=0", target],
        capture_output=True,
        text=True,
        timeout=30,
    )


def start_stack(start, env: dict[str, str], **settings: str):
    env.update(ENABLE_VIDEO="0", ENABLE_IMAGES="0", LOG_LEVEL="DEBUG")
    env.update(settings)
    drone = start("streamer.drone", env)
    drone.wait_for("stack is up")
    return drone


def stop_stack(drone) -> None:
    drone.signal(signal.SIGTERM)
    assert drone.wait() == 0, drone.output


def watch(viewer: RtspClient, frames: int = 30, timeout: float = 20) -> RtspClient:
    try:
        assert viewer.wait_frames(frames, timeout), viewer.report()
    finally:
        viewer.stop()
    return viewer


def refused(viewer: RtspClient, timeout: float = 15) -> list[str]:
    """Start a viewer that must not get a picture; its errors (it must fail, not hang)."""
    viewer.start()
    try:
        wait_until(lambda: viewer.errors or viewer.frames, timeout, "rtspsrc to give up")
    finally:
        viewer.stop()
    assert not viewer.frames
    return viewer.errors


# --- authentication


def test_digest_auth_401_without_or_with_wrong_credentials_frames_with_right_ones(env, start):
    password = f"pw-{secrets.token_hex(8)}"
    drone = start_stack(start, env, RTSP_USER=USER, RTSP_PASSWORD=password)
    try:
        for transport in ("udp", "tcp"):
            nobody = ffprobe(url(env), "-rtsp_transport", transport)
            assert nobody.returncode != 0 and "401 Unauthorized" in nobody.stderr, nobody.stderr
            wrong = ffprobe(url(env, credentials=f"{USER}:wrong@"), "-rtsp_transport", transport)
            assert wrong.returncode != 0 and "401 Unauthorized" in wrong.stderr, wrong.stderr
            right = ffprobe(url(env, credentials=f"{USER}:{password}@"), "-rtsp_transport", transport)
            assert right.returncode == 0 and right.stdout.strip() == "h264", right.stderr

        assert any("Unauthorized" in e for e in refused(RtspClient(url(env), "tcp")))
        assert any("Unauthorized" in e for e in refused(RtspClient(url(env), "tcp", user=USER, password="x")))
        for protocols in ("udp", "tcp"):
            viewer = watch(RtspClient(url(env), protocols, user=USER, password=password).start())
            assert not viewer.errors
            drone.wait_for(rf"playing over {protocols.upper()}")
        # Credentials in the URL work with rtspsrc too.
        assert not watch(RtspClient(url(env, credentials=f"{USER}:{password}@"), "tcp").start()).errors
        drone.wait_for(r"digest auth, 1 user")
    finally:
        stop_stack(drone)


def test_password_file_with_basic_auth_and_no_password_in_any_log_line(env, start, workdir):
    passwords = {USER: f"pw-{secrets.token_hex(8)}", "ground": f"a:b {secrets.token_hex(6)}"}
    users = workdir / "users"
    users.write_text("# users of the stream\n\n" + "".join(f"{u}:{p}\n" for u, p in passwords.items()))
    users.chmod(0o600)
    drone = start_stack(start, env, RTSP_PASSWORD_FILE=str(users), RTSP_AUTH_METHOD="basic")
    try:
        for user, password in passwords.items():
            viewer = watch(RtspClient(url(env), "tcp", user=user, password=password).start())
            assert not viewer.errors
        wrong = ffprobe(url(env, credentials=f"{USER}:{passwords['ground'].replace(':', '%3A')}@"))
        assert "401 Unauthorized" in wrong.stderr, wrong.stderr
        refused(RtspClient(url(env), "tcp", user="ground", password=passwords[USER]))
        drone.wait_for(r"basic auth, 2 users")
    finally:
        stop_stack(drone)
    lines = drone.lines
    assert len(lines) > 20
    for password in passwords.values():
        leaking = [line for line in lines if password in line or password[-12:] in line]
        assert not leaking, leaking


def test_a_password_in_a_bad_setting_is_not_echoed(env, start):
    password = f"pw-{secrets.token_hex(8)}"
    env.update(RTSP_PASSWORD=password, RTSP_PASSWROD=password)  # a typo of ours: unknown
    drone = start("streamer.drone", env)
    assert drone.wait(20) == 2
    assert password not in drone.output and "RTSP_PASSWROD=<redacted>" in drone.output, drone.output


# --- RTSPS


@pytest.fixture
def self_signed(workdir: Path) -> tuple[Path, Path]:
    cert, key = workdir / "cert.pem", workdir / "key.pem"
    subprocess.run(
        [*OPENSSL_SELF_SIGNED, "-days", "1", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


def test_rtsps_with_a_self_signed_certificate_plays_over_tls_only(env, start, self_signed):
    cert, key = self_signed
    password = f"pw-{secrets.token_hex(8)}"
    drone = start_stack(
        start, env, RTSP_TLS_CERT=str(cert), RTSP_TLS_KEY=str(key), RTSP_USER=USER, RTSP_PASSWORD=password
    )
    try:
        drone.wait_for(r"serving rtsps://0\.0\.0\.0:\d+/live \(digest auth, 1 user; TLS")
        right = ffprobe(url(env, "rtsps", f"{USER}:{password}@"))
        assert right.returncode == 0 and right.stdout.strip() == "h264", right.stderr
        wrong = ffprobe(url(env, "rtsps", f"{USER}:nope@"))
        assert "401 Unauthorized" in wrong.stderr, wrong.stderr
        plain = ffprobe(url(env, "rtsp", f"{USER}:{password}@"))  # no TLS: no answer it understands
        assert plain.returncode != 0
        viewer = watch(RtspClient(url(env, "rtsps"), user=USER, password=password).start())
        assert not viewer.errors
        drone.wait_for(r"playing over TCP")
    finally:
        stop_stack(drone)


def test_a_missing_certificate_stops_the_stack_at_start_with_exit_2(env, start, workdir):
    env.update(RTSP_TLS_CERT=str(workdir / "missing.pem"), RTSP_TLS_KEY=str(workdir / "missing.key"))
    drone = start("streamer.drone", env)
    assert drone.wait(20) == 2
    assert f"RTSP_TLS_CERT='{workdir}/missing.pem': must be a PEM file" in drone.output, drone.output


# --- bind address


def test_bind_address_serves_only_that_address(env, start):
    drone = start_stack(start, env, RTSP_BIND="127.0.0.1")
    try:
        drone.wait_for(rf"serving rtsp://127\.0\.0\.1:{env['RTSP_PORT']}/live")
        assert ffprobe(url(env)).stdout.strip() == "h264"
        other = ffprobe(url(env, host="127.0.0.2"))  # loopback too, but not the bound address
        assert other.returncode != 0 and "Connection refused" in other.stderr, other.stderr
    finally:
        stop_stack(drone)


# --- private plumbing


def mode(path: Path | str) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_sockets_segments_and_recordings_are_private(env, start, workdir):
    segments_before = set(Path("/dev/shm").glob("shmpipe.*"))
    env.update(ENABLE_VIDEO="1", ENABLE_IMAGES="1")
    # A careless umask in whatever starts the stack: the workers set their own.
    drone = start("streamer.drone", env, prefix=("sh", "-c", 'umask 000; exec "$@"', "sh"))
    try:
        drone.wait_for("stack is up")
        ssd = Path(env["SSD_PATH"])
        wait_until(
            lambda: list(ssd.glob("*/image_*.jpg")) and list(ssd.glob("*/video_*.mp4")), 20, "recordings"
        )
        for socket_path in (env["SHM_RECORDER_SOCKET"], env["SHM_STREAM_SOCKET"]):
            assert stat.S_ISSOCK(os.lstat(socket_path).st_mode)
            assert mode(socket_path) == 0o600, f"{socket_path}: {mode(socket_path):o}"
        ours = set(Path("/dev/shm").glob("shmpipe.*")) - segments_before
        assert len(ours) >= 2, ours
        assert {p.name: f"{mode(p):o}" for p in ours} == {p.name: "600" for p in ours}
        made = [ssd, *ssd.rglob("*")]
        assert len(made) >= 4
        for path in made:
            if path.is_symlink():
                continue
            m = mode(path)
            assert not m & 0o022 and not m & 0o007, f"{path}: {m:o}"  # umask 027
    finally:
        stop_stack(drone)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to make a file owned by another user")
@pytest.mark.parametrize("kind", ["file", "link"])
def test_a_socket_path_held_by_another_user_is_refused_not_removed(env, start, workdir, kind):
    path = Path(env["SHM_STREAM_SOCKET"])
    target = workdir / "precious"
    target.write_text("not yours")
    if kind == "file":
        path.write_text("planted")
    else:
        path.symlink_to(target)
    os.lchown(path, 65534, 65534)
    try:
        feeder = start("streamer.feeder", env)
        assert feeder.wait(30) == 1
        assert re.search(rf"{path}: a {kind} owned by uid 65534 is in the way", feeder.output), feeder.output
        assert os.path.lexists(path) and target.read_text() == "not yours"
    finally:
        path.unlink()


def test_socket_checks(tmp_path: Path):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)  # writable by anyone, not sticky
    with pytest.raises(shm.UntrustedPath, match="writable by others without the sticky bit"):
        shm.remove_stale_socket(str(shared / "a.sock"))
    shared.chmod(0o1777)  # as /tmp
    (shared / "a.sock").write_text("")
    assert shm.remove_stale_socket(str(shared / "a.sock"))
    with pytest.raises(shm.UntrustedPath, match="does not exist"):
        shm.check_socket_path(str(tmp_path / "nowhere" / "a.sock"))


# --- hostile clients

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


def test_an_optional_group_may_read_the_shared_memory(env, start):
    env["SHM_GROUP"] = "daemon"
    daemon = grp.getgrnam("daemon").gr_gid
    feeder = start("streamer.feeder", env)
    feeder.wait_for("shared memory readable by group")
    segments = shm.segments_of([feeder.popen.pid])
    assert len(segments) == 2
    for path in (*map(Path, (env["SHM_RECORDER_SOCKET"], env["SHM_STREAM_SOCKET"])), *segments):
        info = os.lstat(path)
        assert (stat.S_IMODE(info.st_mode), info.st_gid) == (0o640, daemon), path
    feeder.signal(signal.SIGTERM)
    assert feeder.wait() == 0
