"""The stream's bitrate in the web worker (streamer/web/stream.py, status.py, metrics.py):
``POST /api/v1/stream``'s checks and answers, ``GET /api/v1/stream``, ``rtsp.bitrate`` and the
viewers' links in ``/api/v1/status``, and the bitrate metrics.

The web worker's application runs in process behind a real aiohttp client. The stack's state
is a real state file read by the real Observer. On the command path, the RTSP worker is played
by a real ``CommandServer`` on its socket answering as the RTSP worker's protocol says
(streamer/runtime/commands.py); that worker itself, and the bitrate at a viewer, are the
stack test's. No stack runs here.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

from streamer.config import Settings
from streamer.runtime import commands, state
from streamer.runtime.state import StackState, WorkerState
from streamer.web import stream
from tests.harness import settings_for
from tests.http_client import serve_in_process

MIN, MAX = 300_000, 2_500_000
LIMITS = f"an integer from {MIN} to {MAX} bit/s (VIDEO_BITRATE_MIN..VIDEO_BITRATE)"


@pytest.fixture
def bitrate_env(env: dict[str, str]) -> dict[str, str]:
    env.update(ENABLE_HTTP="1", VIDEO_BITRATE=str(MAX), VIDEO_BITRATE_MIN=str(MIN))
    return env


async def post(client: TestClient, body: Any, *, raw: bytes | None = None) -> tuple[int, dict[str, Any]]:
    data = raw if raw is not None else json.dumps(body).encode()
    response = await client.post(stream.PATH, data=data)
    return response.status, await response.json()


# --- an RTSP worker's command socket, answering as the protocol says


class FakeRtspWorker:
    """A ``CommandServer`` on the RTSP worker's socket: answers ``bitrate`` as the contract says
    (``fixed`` mode, no viewer), or refuses with ``refusal``, or holds the answer until
    ``release`` is set (a wedged worker). Records what it was sent."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.received: list[dict[str, Any]] = []
        self.refusal: tuple[str, str] | None = None  # (error, reason)
        self.hold = False
        self.release = threading.Event()
        self.bitrate = settings.video_bitrate
        self.server = commands.CommandServer(
            commands.rtsp_socket_path(settings), self.answer, logging.getLogger("fake-rtsp")
        )

    def answer(self, message: dict[str, Any]) -> dict[str, Any]:
        self.received.append(message)
        if self.hold:
            self.release.wait(10)
        if message.get("command") != "bitrate":
            return {"ok": False, "error": f"unknown command {message.get('command')!r}"}
        if self.refusal is not None:
            error, reason = self.refusal
            return {"ok": False, "error": error, "reason": reason}
        self.bitrate = message["bitrate"]
        return {
            "ok": True,
            "bitrate": self.bitrate,
            "ceiling": self.bitrate,
            "mode": "fixed",
            "minimum": self.settings.video_bitrate_min,
            "maximum": self.settings.video_bitrate,
            "applied": False,
        }


@pytest.fixture
def rtsp_worker(bitrate_env: dict[str, str]) -> Iterator[FakeRtspWorker]:
    worker = FakeRtspWorker(settings_for(bitrate_env))
    worker.server.start()
    try:
        yield worker
    finally:
        worker.release.set()
        worker.server.close()


# --- POST /api/v1/stream


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (None, f'give the bitrate: {{"bitrate": N}}, N {LIMITS}'),
        ({}, f'give the bitrate: {{"bitrate": N}}, N {LIMITS}'),
        (
            {"bitrate": "1000000"},
            f'bitrate must be {LIMITS}, not "1000000"',
        ),
        (
            {"bitrate": True},
            f"bitrate must be {LIMITS}, not true",
        ),
        (
            {"bitrate": 1e6},
            f"bitrate must be {LIMITS}, not 1000000.0",
        ),
        (
            {"bitrate": None},
            f"bitrate must be {LIMITS}, not null",
        ),
        (
            {"bitrate": MIN - 1},
            f"bitrate must be {LIMITS}, not {MIN - 1}",
        ),
        (
            {"bitrate": MAX + 1},
            f"bitrate must be {LIMITS}, not {MAX + 1}",
        ),
        ({"bitrate": 1_000_000, "fps": 10}, "unknown field 'fps' (allowed: bitrate)"),
        ([1_000_000], "the body must be a JSON object"),
    ],
)
def test_a_bad_bitrate_is_400_naming_the_limits_and_the_worker_is_not_asked(
    rtsp_worker: FakeRtspWorker, bitrate_env: dict[str, str], body: Any, expected: str
):
    async def check(client: TestClient) -> None:
        assert await post(client, body, raw=b"" if body is None else None) == (400, {"error": expected})
        status, answer = await post(client, None, raw=b"bitrate=1000000")
        assert status == 400 and answer["error"].startswith("the body is not JSON"), answer

    serve_in_process(settings_for(bitrate_env), check)
    assert rtsp_worker.received == []


def test_a_bitrate_within_the_limits_is_passed_on_and_the_workers_answer_returned(
    rtsp_worker: FakeRtspWorker, bitrate_env: dict[str, str]
):
    async def check(client: TestClient) -> None:
        for bitrate in (MIN, 1_000_000, MAX):
            assert await post(client, {"bitrate": bitrate}) == (
                200,
                {
                    "bitrate": bitrate,
                    "ceiling": bitrate,
                    "mode": "fixed",
                    "minimum": MIN,
                    "maximum": MAX,
                    "applied": False,
                },
            )

    serve_in_process(settings_for(bitrate_env), check)
    assert rtsp_worker.received == [
        {"command": "bitrate", "bitrate": bitrate} for bitrate in (MIN, 1_000_000, MAX)
    ]


@pytest.mark.parametrize(
    ("reason", "status"),
    [("unsupported", 409), ("out_of_range", 400), ("busy", 503), (None, 409)],
)
def test_a_refusal_by_the_rtsp_worker_is_passed_on_with_its_status(
    rtsp_worker: FakeRtspWorker, bitrate_env: dict[str, str], reason: str | None, status: int
):
    error = "v4l2h264enc cannot change its bitrate while playing: restart with VIDEO_BITRATE"
    rtsp_worker.refusal = (error, reason)  # type: ignore[assignment]

    async def check(client: TestClient) -> None:
        assert await post(client, {"bitrate": 1_000_000}) == (status, {"error": error})

    serve_in_process(settings_for(bitrate_env), check)


def test_503_when_no_rtsp_worker_listens(bitrate_env: dict[str, str]):
    settings = settings_for(bitrate_env)
    assert not os.path.exists(commands.rtsp_socket_path(settings))

    async def check(client: TestClient) -> None:
        assert await post(client, {"bitrate": 1_000_000}) == (
            503,
            {"error": "the RTSP worker is not running"},
        )

    serve_in_process(settings, check)


def test_a_wedged_rtsp_worker_costs_seconds_not_a_hang(
    rtsp_worker: FakeRtspWorker, bitrate_env: dict[str, str]
):
    """The first command waits its COMMAND_TIMEOUT_S; the one sent behind it its QUEUE_WAIT_S."""
    rtsp_worker.hold = True

    async def check(client: TestClient) -> None:
        first = asyncio.create_task(post(client, {"bitrate": 1_000_000}))
        while not rtsp_worker.received:  # the first holds the channel before the second is sent
            await asyncio.sleep(0.01)
        second = asyncio.create_task(post(client, {"bitrate": 900_000}))
        assert await first == (503, {"error": "the RTSP worker did not answer within 2.5 s"})
        assert await second == (
            503,
            {"error": "the RTSP worker is busy with other commands (waited 0.5 s): try again"},
        )

    serve_in_process(settings_for(bitrate_env), check)
    assert rtsp_worker.received == [{"command": "bitrate", "bitrate": 1_000_000}]


def test_409_when_the_rtsp_stream_is_disabled(rtsp_worker: FakeRtspWorker, bitrate_env: dict[str, str]):
    bitrate_env.update(ENABLE_RTSP="0")

    async def check(client: TestClient) -> None:
        expected = (409, {"error": "the RTSP stream is disabled (ENABLE_RTSP=0)"})
        assert await post(client, {"bitrate": 1_000_000}) == expected
        answer = await client.get(stream.PATH)
        assert answer.status == 200 and (await answer.json())["enabled"] is False

    serve_in_process(settings_for(bitrate_env), check)
    assert rtsp_worker.received == []


# --- what the RTSP worker reports: GET /api/v1/stream, status and metrics

UDP_VIEWER = {
    "address": "192.168.1.20",
    "transport": "udp",
    "since": 1_796_031_739.572,
    "number": 3,
    "fraction_lost": 0.125,
    "jitter_ms": 4.5,
    "packets_lost": 812,
    "backlog_s": None,
}
TCP_VIEWER = {
    "address": "192.168.1.21",
    "transport": "tcp",
    "since": 1_796_031_740.1,
    "number": 4,
    "fraction_lost": None,
    "jitter_ms": None,
    "packets_lost": None,
    "backlog_s": 0.25,
}
NEW_UDP_VIEWER = {  # no receiver report yet
    "address": "127.0.0.1",
    "transport": "udp",
    "since": 1_796_031_741.0,
    "number": 5,
    "fraction_lost": None,
    "jitter_ms": None,
    "packets_lost": None,
    "backlog_s": None,
}
RTSP_PROGRESS = {
    "frames": 900,
    "idle": False,
    "viewers": 3,
    "clients": [UDP_VIEWER, TCP_VIEWER, NEW_UDP_VIEWER],
    "sessions_total": 5,
    "bitrate": 1_200_000,
    "bitrate_mode": "adaptive",
    "bitrate_minimum": MIN,
    "bitrate_maximum": MAX,
    "bitrate_ceiling": 2_000_000,
    "bitrate_changes": 7,
    "bitrate_reason": "viewer 3 lost 12% (delivering about 1050 kbit/s)",
}


def publish(settings: Settings, rtsp_progress: dict[str, Any] | None) -> None:
    """Publish a stack state, as the controller does, with the RTSP worker's report (if any)."""
    now = time.time()
    stack = StackState(state=state.UP, up_since=now - 10)  # this process is its "controller"
    if rtsp_progress is not None:
        stack.workers["rtsp"] = WorkerState(
            "rtsp", state.READY, os.getpid(), now - 10, now - 9, now, dict(rtsp_progress)
        )
    path = state.state_file(settings.shm_recorder_socket + ".lock")
    state.write(path, stack)


@pytest.fixture
def published(bitrate_env: dict[str, str]) -> Iterator[Callable[[dict[str, Any] | None], None]]:
    settings = settings_for(bitrate_env)
    path = state.state_file(settings.shm_recorder_socket + ".lock")

    def publish_now(progress: dict[str, Any] | None) -> None:
        publish(settings, progress)

    try:
        yield publish_now
    finally:
        state.remove(path)


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


async def get_json(client: TestClient, path: str) -> dict[str, Any]:
    response = await client.get(path)
    assert response.status == 200, await response.text()
    return await response.json()


def test_status_stream_and_metrics_show_the_bitrate_and_each_viewers_link(
    bitrate_env: dict[str, str], published: Callable[[dict[str, Any] | None], None]
):
    published(RTSP_PROGRESS)

    async def check(client: TestClient) -> None:
        rtsp = (await get_json(client, "/api/v1/status"))["rtsp"]
        assert rtsp["bitrate"] == {
            "current": 1_200_000,
            "mode": "adaptive",
            "minimum": MIN,
            "maximum": MAX,
            "ceiling": 2_000_000,
            "changes": 7,
            "reason": "viewer 3 lost 12% (delivering about 1050 kbit/s)",
        }
        assert rtsp["viewers"] == [UDP_VIEWER, TCP_VIEWER, NEW_UDP_VIEWER]

        assert await get_json(client, stream.PATH) == {
            "enabled": True,
            "bitrate": 1_200_000,
            "ceiling": 2_000_000,
            "mode": "adaptive",
            "minimum": MIN,
            "maximum": MAX,
            "changes": 7,
            "reason": "viewer 3 lost 12% (delivering about 1050 kbit/s)",
            "watching": 3,
            "viewers": [UDP_VIEWER, TCP_VIEWER, NEW_UDP_VIEWER],
        }

        response = await client.get("/metrics")
        assert response.status == 200
        found = samples(await response.text())
        viewer_series = {
            key: value for key, value in found.items() if key[0].startswith("streamer_rtsp_viewer_")
        }
        udp = (("transport", "udp"), ("viewer", "3"))
        tcp = (("transport", "tcp"), ("viewer", "4"))
        # The new UDP viewer has no figure yet, the TCP one only its backlog: nothing else is shown.
        assert viewer_series == {
            ("streamer_rtsp_viewer_fraction_lost", udp): 0.125,
            ("streamer_rtsp_viewer_jitter_seconds", udp): 0.0045,
            ("streamer_rtsp_viewer_packets_lost_total", udp): 812.0,
            ("streamer_rtsp_viewer_backlog_seconds", tcp): 0.25,
        }
        assert found[("streamer_rtsp_bitrate_bits_per_second", ())] == 1_200_000
        assert found[("streamer_rtsp_bitrate_changes_total", ())] == 7
        assert found[("streamer_rtsp_viewers", ())] == 3

    serve_in_process(settings_for(bitrate_env), check)


def test_before_the_rtsp_workers_report_the_settings_and_nulls(
    bitrate_env: dict[str, str], published: Callable[[dict[str, Any] | None], None]
):
    """Mode and limits are the settings'; what only the worker knows is null, and left out of
    the metrics (a viewer reported by an RTSP worker of before this feature has no figure)."""
    bitrate_env.update(VIDEO_BITRATE_MODE="adaptive")
    nulls = {"current": None, "ceiling": None, "changes": None, "reason": None}

    async def check(client: TestClient) -> None:
        published(None)  # the stack is starting: no RTSP worker yet
        rtsp = (await get_json(client, "/api/v1/status"))["rtsp"]
        assert rtsp["bitrate"] == {"mode": "adaptive", "minimum": MIN, "maximum": MAX, **nulls}
        state_now = await get_json(client, stream.PATH)
        assert state_now == {
            "enabled": True,
            "bitrate": None,
            "ceiling": None,
            "mode": "adaptive",
            "minimum": MIN,
            "maximum": MAX,
            "changes": None,
            "reason": None,
            "watching": None,
            "viewers": [],
        }
        published(
            {"frames": 0, "idle": True, "viewers": 1, "clients": [{"address": "::1", "transport": "udp"}]}
        )
        text = await (await client.get("/metrics")).text()
        assert "streamer_rtsp_bitrate" not in text and "streamer_rtsp_viewer_" not in text, text

    serve_in_process(settings_for(bitrate_env), check)
