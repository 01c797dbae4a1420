"""Access control in the real stack: RTSP authentication (digest and basic, users from the
settings or a password file, no password in any log line), RTSPS, and the bind address.

Private sockets, segments and recordings are in test_private_plumbing.py; the server fuzzed by
hostile clients is in test_hostile_clients.py."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest

from streamer.media.rtsp_client import RtspClient
from tests.harness import USER, openssl_pair, start_stack, stop_stack, url, wait_until, watch
from tests.media import ffprobe


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
    return openssl_pair(workdir, "drone")


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
