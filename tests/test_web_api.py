"""The web worker's API on the real stack: /health, /api/v1/status and /metrics reflect what
happens (a missing camera, a killed worker, viewers coming and going), access control like
RTSP's (Basic credentials, HTTPS), JSON errors; and, without a stack, health's verdicts, the
write-rate meter and the server's limits.

Clients are real: http.client for the API, rtspsrc for viewers, prometheus_client's parser for
the metrics. Abuse (slow and malformed clients) is in test_web_hostile.py, a real Prometheus
server in test_prometheus.py."""

from __future__ import annotations

import asyncio
import base64
import http.client
import os
import secrets
import signal
import ssl
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families

from streamer.media.rtsp_client import RtspClient
from streamer.runtime import state
from streamer.runtime.state import Restart, StackState, WorkerState
from streamer.web import health, server
from streamer.web.snapshot import RateMeter
from tests.harness import USER, openssl_pair, settings_for, url, wait_until
from tests.http_client import Answer, http_request, serve_in_process

# --- a client of the API


def http_env(env: dict[str, str], **overrides: str) -> dict[str, str]:
    """The stack's environment with the web worker on (stack_env leaves it off)."""
    env.update(ENABLE_HTTP="1", **overrides)
    return env


def request(
    env: dict[str, str],
    path: str,
    *,
    method: str = "GET",
    credentials: tuple[str, str] | None = None,
    tls: ssl.SSLContext | None = None,
    body: bytes | None = None,
) -> Answer:
    return http_request(env, path, method, body, credentials=credentials, tls=tls, timeout=5)


def answer(env: dict[str, str], path: str, **options: Any) -> Answer | None:
    """The answer, or None while nothing listens yet."""
    try:
        return request(env, path, **options)
    except ConnectionRefusedError:
        return None


def healthy(env: dict[str, str], **options: Any) -> bool:
    reply = answer(env, "/health", **options)
    return reply is not None and reply.status == 200


def api_status(env: dict[str, str], **options: Any) -> dict[str, Any]:
    reply = request(env, "/api/v1/status", **options)
    assert reply.status == 200, reply
    return reply.json()


def metrics(env: dict[str, str], **options: Any) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics by (name, sorted labels), parsed by prometheus_client."""
    reply = request(env, "/metrics", **options)
    assert reply.status == 200, reply
    assert reply.headers["Content-Type"] == CONTENT_TYPE_LATEST, reply.headers
    samples = {}
    for family in text_string_to_metric_families(reply.body.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def start_web_stack(start, env: dict[str, str]):
    drone = start("streamer.drone", env)
    drone.wait_up()
    wait_until(lambda: healthy(env), 20, "/health to answer 200")
    return drone


# --- on the real stack


def test_health_is_503_while_the_camera_is_missing_and_200_once_the_stack_is_up(env, start, workdir):
    unplugged = workdir / "unplugged"
    unplugged.touch()
    http_env(env, CAMERA_UNPLUG_FILE=str(unplugged), ENABLE_VIDEO="0", ENABLE_IMAGES="0")
    drone = start("streamer.drone", env)
    down = wait_until(lambda: answer(env, "/health"), 20, "the web worker to answer")
    assert down.status == 503 and down.json() == {
        "healthy": False,
        "state": down.json()["state"],
        "reason": "camera missing: camera test was unplugged",
        "uptime_s": None,
    }
    assert down.json()["state"] in (state.STARTING, state.RESTARTING)
    metrics_now = metrics(env)
    assert metrics_now[("streamer_healthy", ())] == 0
    assert metrics_now[("streamer_stack_up", ())] == 0

    unplugged.unlink()
    drone.wait_up()
    up = wait_until(lambda: (reply := answer(env, "/health")) and reply.status == 200 and reply, 10, "200")
    assert up.json()["healthy"] is True and up.json()["state"] == state.UP and up.json()["reason"] is None
    assert metrics(env)[("streamer_healthy", ())] == 1
    assert drone.stop() == 0


def test_a_killed_worker_makes_health_503_until_the_stack_is_back_and_counts_in_status_and_metrics(
    env, start
):
    # A 2 s pause before the restart: long enough to see the 503 (polled, not slept through).
    http_env(env, RESTART_DELAY_MIN_S="2", ENABLE_VIDEO="0")
    drone = start_web_stack(start, env)
    before = api_status(env)
    assert before["workers"]["recorder"]["restarts"] == 0 and before["stack"]["restarts"] == []
    recorder = before["workers"]["recorder"]["pid"]

    os.kill(recorder, signal.SIGKILL)
    down = wait_until(
        lambda: (reply := answer(env, "/health")) and reply.status == 503 and reply.json(), 5, "/health 503"
    )
    assert down["reason"] == "restarting after recorder killed by SIGKILL", down
    wait_until(lambda: healthy(env), 30, "/health 200 again")

    after = api_status(env)
    worker = after["workers"]["recorder"]
    assert worker["restarts"] == 1 and worker["restarts_by_cause"] == {state.KILLED: 1}, worker
    assert worker["pid"] != recorder and worker["state"] == state.READY
    assert worker["last_problem"] == "killed by SIGKILL"
    assert after["workers"]["feeder"]["restarts_by_cause"] == {state.STACK: 1}
    restart = after["stack"]["restarts"][0]
    assert (restart["scope"], restart["reason"], restart["cause"]) == (
        "stack",
        "recorder killed by SIGKILL",
        state.KILLED,
    )
    assert restart["delay_s"] >= 2
    assert after["stack"]["state"] == state.UP and after["health"]["healthy"] is True
    samples = metrics(env)
    assert samples[("streamer_worker_restarts_total", (("cause", "killed"), ("worker", "recorder")))] == 1
    assert samples[("streamer_worker_restarts_total", (("cause", "stack"), ("worker", "feeder")))] == 1
    assert samples[("streamer_worker_up", (("worker", "recorder"),))] == 1
    assert drone.stop() == 0


def test_viewers_appear_with_their_transport_within_2_s_and_leave(env, start):
    http_env(env, ENABLE_VIDEO="0", ENABLE_IMAGES="0")
    drone = start_web_stack(start, env)

    def viewers() -> list[dict[str, Any]]:
        return api_status(env)["rtsp"]["viewers"]

    for number, protocols in enumerate(("udp", "tcp"), 1):
        viewer = RtspClient(url(env), protocols).start()
        try:
            assert viewer.wait_frames(1, 15), viewer.report()
            seen = wait_until(viewers, 2, f"the {protocols} viewer in /api/v1/status")
            assert [v["transport"] for v in seen] == [protocols], seen
            assert seen[0]["address"] == "127.0.0.1" and seen[0]["since"] <= time.time()
            assert seen[0]["number"] == number, seen  # as in the RTSP worker's log
            # The bitrate as configured (fixed, VIDEO_BITRATE's default), and nothing changed it.
            bitrate = api_status(env)["rtsp"]["bitrate"]
            assert (bitrate["current"], bitrate["mode"], bitrate["changes"]) == (2_000_000, "fixed", 0)
            samples = metrics(env)
            assert samples[("streamer_rtsp_viewers", ())] == 1
            assert samples[("streamer_rtsp_sessions_total", ())] == number
            assert samples[("streamer_rtsp_bitrate_bits_per_second", ())] == 2_000_000
        finally:
            viewer.stop()
        wait_until(lambda: not viewers(), 10, f"the {protocols} viewer to leave /api/v1/status")
    assert metrics(env)[("streamer_rtsp_viewers", ())] == 0
    assert drone.stop() == 0


def test_status_and_metrics_describe_camera_recording_and_workers(env, start):
    http_env(env)
    drone = start_web_stack(start, env)
    # A few seconds of recording: frames counted, the first chunk written.
    current = wait_until(
        lambda: (s := api_status(env))["recording"]["chunks"] and (s["camera"]["fps"] or 0) > 20 and s,
        30,
        "a chunk and a measured frame rate",
    )
    camera = current["camera"]
    assert (camera["device"], camera["mode"]) == ("test", "320x240@30")
    assert camera["frames"] > 0 and camera["dropped"] == 0 and camera["corrupt"] == 0
    assert set(camera["branches"]) == {"recorder", "stream"}
    recording = current["recording"]
    assert recording["on"] and recording["state"] == "recording" and not recording["paused"]
    assert recording["disk_free_bytes"] > 0 and recording["disk_total_bytes"] >= recording["disk_free_bytes"]
    assert recording["hours_left"] > 0 and recording["rate_bytes_per_s"] > 0
    assert current["stack"]["state"] == state.UP and current["stack"]["uptime_s"] > 0
    assert set(current["workers"]) == {"feeder", "recorder", "rtsp", "web", "live"}
    for name, worker in current["workers"].items():
        assert worker["state"] == state.READY, (name, worker)
        assert worker["cpu_seconds"] > 0 and worker["rss_bytes"] > 1 << 20, (name, worker)
        assert worker["uptime_s"] > 0 and worker["last_progress_at"] <= time.time()
    rtsp = current["rtsp"]
    assert rtsp["urls"][-1] == f"rtsp://127.0.0.1:{env['RTSP_PORT']}/live"  # loopback last
    assert current["http"] == {"bind": "127.0.0.1", "port": int(env["HTTP_PORT"]), "tls": False, "auth": None}
    assert current["settings"]["VIDEO_WIDTH"] == 320 and current["settings"]["RTSP_PASSWORD"] == ""

    samples = metrics(env)
    for name in (
        "streamer_camera_frames_total",
        "streamer_camera_dropped_frames_total",
        "streamer_camera_corrupt_frames_total",
        "streamer_camera_fps",
        "streamer_recorder_chunks_total",
        "streamer_recorder_snapshots_total",
        "streamer_retention_deleted_files_total",
        "streamer_retention_deleted_bytes_total",
        "streamer_disk_free_bytes",
        "streamer_disk_total_bytes",
        "streamer_stack_up",
        "streamer_healthy",
    ):
        assert (name, ()) in samples, name
    assert samples[("streamer_camera_frames_total", ())] >= camera["frames"]
    assert samples[("streamer_branch_frames_total", (("branch", "stream"),))] > 0
    assert samples[("streamer_recording_active", (("kind", "video"),))] == 1
    for worker in ("feeder", "recorder", "rtsp", "web"):
        assert samples[("streamer_worker_up", (("worker", worker),))] == 1
        assert samples[("streamer_worker_cpu_seconds_total", (("worker", worker),))] > 0
        assert samples[("streamer_worker_resident_memory_bytes", (("worker", worker),))] > 1 << 20
    assert drone.stop() == 0


def test_with_credentials_every_endpoint_but_health_needs_them(env, start):
    password = f"pw-{secrets.token_hex(8)}"
    http_env(env, RTSP_USER=USER, RTSP_PASSWORD=password, ENABLE_VIDEO="0", ENABLE_IMAGES="0")
    drone = start_web_stack(start, env)  # /health answers without credentials
    for path in ("/api/v1/status", "/metrics", "/api/v1/recordings", "/nowhere"):
        for credentials in (None, (USER, "wrong"), ("nobody", password)):
            refused = request(env, path, credentials=credentials)
            assert refused.status == 401, (path, credentials, refused)
            assert refused.headers["WWW-Authenticate"].startswith('Basic realm="streamer"')
            assert refused.json() == {"error": "authentication required"}
    assert request(env, "/api/v1/status", credentials=(USER, password)).status == 200
    assert request(env, "/metrics", credentials=(USER, password)).status == 200
    shown = request(env, "/api/v1/status", credentials=(USER, password))
    assert password.encode() not in shown.body
    settings = shown.json()["settings"]
    assert settings["RTSP_PASSWORD"] == "<redacted>" and settings["RTSP_USER"] == USER
    assert shown.json()["http"]["auth"] == "basic"
    assert drone.stop() == 0
    assert password not in drone.output


def test_https_with_the_tls_pair_and_no_plain_http(env, start, workdir: Path):
    cert, key = openssl_pair(workdir, "drone")
    http_env(env, RTSP_TLS_CERT=str(cert), RTSP_TLS_KEY=str(key), ENABLE_VIDEO="0", ENABLE_IMAGES="0")
    trusting = ssl.create_default_context(cafile=str(cert))
    trusting.check_hostname = False  # the certificate names localhost, the test asks 127.0.0.1
    drone = start("streamer.drone", env)
    drone.wait_up()
    wait_until(lambda: healthy(env, tls=trusting), 20, "/health to answer 200 over HTTPS")
    status = api_status(env, tls=trusting)
    assert status["http"]["tls"] is True and status["rtsp"]["urls"][-1].startswith("rtsps://127.0.0.1:")
    with pytest.raises(ssl.SSLCertVerificationError):  # a client that does not trust it says so
        request(env, "/health", tls=ssl.create_default_context())
    with pytest.raises((http.client.RemoteDisconnected, ConnectionResetError, http.client.BadStatusLine)):
        request(env, "/health")  # plain HTTP gets no HTTP answer
    drone.wait_for(r"web: serving https://127\.0\.0\.1:\d+/")
    assert drone.stop() == 0


def test_errors_are_json(env, start):
    http_env(env, ENABLE_VIDEO="0", ENABLE_IMAGES="0")
    drone = start_web_stack(start, env)
    missing = request(env, "/api/v1/nothing")
    assert (missing.status, missing.json()) == (404, {"error": "not found"})
    wrong = request(env, "/health", method="DELETE")
    assert (wrong.status, wrong.json()) == (405, {"error": "method not allowed"})
    assert "GET" in wrong.headers["Allow"]
    assert request(env, "/health", method="HEAD").status == 200
    assert drone.stop() == 0


def test_the_web_worker_alone_exits_0_when_http_is_off(env, start):
    web = start("streamer.web", env)  # stack_env: ENABLE_HTTP=0
    assert web.wait() == 0, web.output
    assert "HTTP API is off (ENABLE_HTTP=0)" in web.output


# --- the server's own limits, in process (a real aiohttp server, no stack)


def serve_with_echo(env: dict[str, str], check) -> None:
    """Run ``check(client)`` against the web worker's application, with an extra POST route."""

    async def echo(request: web.Request) -> web.Response:
        return web.json_response({"size": len(await request.read())})

    serve_in_process(settings_for(env), check, [web.post("/echo", echo)])


def test_request_bodies_are_small_and_must_arrive_in_time(env, monkeypatch):
    monkeypatch.setattr(server, "BODY_TIMEOUT_S", 0.5)

    async def check(client: TestClient) -> None:
        small = await client.post("/echo", data=b"x" * 100)
        assert (small.status, await small.json()) == (200, {"size": 100})
        large = await client.post("/echo", data=b"x" * (server.CLIENT_MAX_SIZE + 1))
        assert large.status == 413 and "error" in await large.json()

        # A body that never comes: 408 after BODY_TIMEOUT_S, not a handler waiting forever.
        reader, writer = await asyncio.open_connection(client.host, client.port)
        writer.write(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc")
        await writer.drain()
        head = await asyncio.wait_for(reader.readline(), 5)
        assert head.startswith(b"HTTP/1.1 408"), head
        writer.close()

        # No stack: /health says so.
        down = await client.get("/health")
        assert down.status == 503 and (await down.json())["reason"] == health.NOT_RUNNING

    serve_with_echo(env, check)


def test_basic_credentials_are_checked_against_every_user():
    pairs = ((b"pilot", b"secret"), (b"ground", b"other:pw"))

    def header(user: str, password: str) -> str:
        return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

    assert server.authorized(pairs, header("pilot", "secret"))
    assert server.authorized(pairs, header("ground", "other:pw"))
    assert not server.authorized(pairs, header("ground", "secret"))
    assert not server.authorized(pairs, header("pilot", "secret "))
    assert not server.authorized(pairs, None)
    assert not server.authorized(pairs, "Basic !!!")
    assert not server.authorized(pairs, "Digest username=pilot")


# --- health's verdicts (pure)

NOW = 1_000_000.0
UNPLUGGED = "camera /dev/video0 disappeared (unplugged?)"


def worker(name: str, **fields: Any) -> WorkerState:
    defaults: dict[str, Any] = {"state": state.READY, "pid": 10, "last_report_at": NOW - 1}
    return WorkerState(name, **{**defaults, **fields})


def stack(stack_state: str = state.UP, *workers: WorkerState, restarts=()) -> StackState:
    chosen = workers or (worker("feeder"), worker("recorder"), worker("rtsp"))
    return StackState(
        controller_pid=1,
        state=stack_state,
        started_at=NOW - 60,
        up_since=NOW - 30 if stack_state == state.UP else None,
        workers={w.name: w for w in chosen},
        restarts=list(restarts),
    )


@pytest.mark.parametrize(
    ("current", "options", "reason"),
    [
        (stack(), {}, None),
        (None, {}, "stack not running"),
        (stack(), {"controller_alive": False}, "stack not running"),
        (stack(state.STARTING, worker("feeder", state=state.STARTING)), {}, "starting"),
        (
            stack(state.STARTING, worker("feeder", state=state.STARTING)),
            {"camera_problem": "camera /dev/video0 disappeared (unplugged?)"},
            "camera missing: camera /dev/video0 disappeared (unplugged?)",
        ),
        (
            stack(
                state.RESTARTING,
                worker("feeder", state=state.STOPPED),
                worker(
                    "recorder", state=state.STOPPED, last_problem="killed by SIGKILL", failed_with="killed"
                ),
            ),
            {},
            "restarting after recorder killed by SIGKILL",
        ),
        (
            stack(
                state.STARTING,
                worker("feeder", state=state.STARTING),
                restarts=[Restart(NOW - 2, "stack", "rtsp stalled (no report for 5.1 s)", 1.0, "stalled")],
            ),
            {},
            "restarting after rtsp stalled (no report for 5.1 s)",
        ),
        (
            stack(
                state.UP,
                worker("feeder"),
                worker(
                    "recorder", state=state.WAITING, last_problem="exited with status 1", failed_with="exited"
                ),
            ),
            {},
            "restarting after recorder exited with status 1",
        ),
        (
            stack(
                state.UP,
                worker("feeder"),
                worker("rtsp", state=state.STARTING),
                restarts=[Restart(NOW - 1, "rtsp", "rtsp killed by SIGKILL", 1.0, "killed")],
            ),
            {},
            "restarting after rtsp killed by SIGKILL",
        ),
        (stack(state.UP, worker("feeder", last_report_at=NOW - 9)), {}, "no report from feeder for 9 s"),
        (
            stack(state.UP, worker("feeder"), worker("recorder", progress={"state": "disk-full"})),
            {},
            "recording paused: disk full",
        ),
        (
            stack(state.UP, worker("feeder"), worker("recorder", progress={"state": "no-disk"})),
            {},
            "recording paused: SSD_PATH not mounted",
        ),
        (stack(state.UP, worker("feeder"), worker("recorder", progress={"state": "off"})), {}, None),
        (stack(state.STOPPING), {}, "stack stopping"),
        # RESTART_SCOPE=worker: the feeder stays ready while it waits for an unplugged camera.
        (
            stack(
                state.UP,
                worker("feeder", progress={"camera": "away", "camera_problem": UNPLUGGED}),
                worker("recorder"),
            ),
            {},
            f"camera missing: {UNPLUGGED}",
        ),
        (stack(state.UP, worker("feeder", progress={"camera": "streaming"})), {}, None),
        # The web worker answers the request: its own state never counts.
        (
            stack(state.UP, worker("feeder"), worker("web", state=state.STARTING, last_report_at=None)),
            {},
            None,
        ),
    ],
)
def test_health_verdicts(current, options, reason):
    verdict = health.assess(current, NOW, **options)
    assert (verdict.healthy, verdict.reason) == (reason is None, reason)


def test_the_write_rate_is_measured_between_steps_and_restarts_when_the_counter_goes_down():
    meter = RateMeter(window_s=60, min_span_s=5)
    meter.observe(0.0, 500)  # a baseline: when it got there is unknown
    for second in range(1, 6):
        meter.observe(float(second), 500 if second < 5 else 1500)
    assert meter.rate() is None  # one step is no rate
    for second in range(6, 18):  # a 1000-byte chunk every 6 s, seen once a second
        meter.observe(float(second), 1500 + 1000 * ((second - 5) // 6))
    assert meter.rate() == pytest.approx(2000 / 12)  # between the steps at 5 and 17 s, not 0 and 17
    meter.observe(18.0, 100)  # the recorder restarted
    assert meter.rate() is None
    meter.observe(100.0, 200)
    meter.observe(200.0, 300)
    assert meter.rate() is None  # the older change left the window
