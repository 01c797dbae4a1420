"""Recordings over HTTP on the real stack (web worker started by the controller): the listing
against the disk and ffprobe, Range requests, traversal and symbolic-link attempts, the
``latest`` redirects, and recording control (stop, start, snapshot) with its errors; in process,
that commands are served one at a time.

The client is http.client with the exact request-target written on the wire (urllib and aiohttp
normalise ``..``; a traversal test must send it as an attacker would). Files are checked with
FFmpeg's tools (tests/media.py)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from streamer import config
from streamer.runtime import commands
from streamer.storage import layout
from streamer.testing import Proc, port_open
from streamer.web import controls
from tests.harness import (
    TEST_HEIGHT,
    TEST_WIDTH,
    assert_no_segments_left,
    shm_segments,
    short_tempdir,
    stack_env,
    wait_until,
)
from tests.http_client import Answer, http_request
from tests.media import decodes_cleanly, jpeg_size, video_info

# Finished chunks that are not the last of their run are the plan's length; the last one of a run
# is estimated from file times (see docs/operations.md, "Recordings").
PLANNED_TOLERANCE_S = 0.1
LAST_TOLERANCE_S = 0.6
# Planted session folders: numbered 0, so the recorder's next session is numbered as without them.
HOSTILE_SESSION = "00000_2000-01-01T00-00-00Z"
LINKED_SESSION = "00000_2000-01-02T00-00-00Z"
OUTSIDE_MARKER = b"outside SSD_PATH: must never be served"


def fetch(
    env: dict[str, str], target: str, method: str = "GET", body: bytes | None = None, **headers: str
) -> Answer:
    """One request with ``target`` sent exactly as given (no normalisation, no encoding)."""
    named = {name.replace("_", "-"): value for name, value in headers.items()}
    return http_request(env, target, method, body if body is not None else b"", named)


def post(env: dict[str, str], target: str, payload: Any = None, raw: bytes | None = None) -> Answer:
    body = raw if raw is not None else (b"" if payload is None else json.dumps(payload).encode())
    return fetch(env, target, "POST", body, Content_Type="application/json")


def listing(env: dict[str, str]) -> dict[str, Any]:
    answer = fetch(env, "/api/v1/recordings")
    assert answer.status == 200, answer
    return answer.json()


def session_of(env: dict[str, str], name: str) -> dict[str, Any] | None:
    return next((s for s in listing(env)["sessions"] if s["name"] == name), None)


def chunk_file(ssd: Path, session: dict[str, Any], chunk: dict[str, Any]) -> Path:
    return ssd / session["name"] / chunk["name"]


def check_durations(ssd: Path, session: dict[str, Any]) -> None:
    """Listed durations against ffprobe's: the plan's length for a chunk followed by another,
    an estimate for the last one (see the tolerances above)."""
    finished = [c for c in session["chunks"] if not c["open"]]
    for i, chunk in enumerate(finished):
        measured = video_info(chunk_file(ssd, session, chunk))[3]
        tolerance = PLANNED_TOLERANCE_S if i + 1 < len(session["chunks"]) else LAST_TOLERANCE_S
        assert abs(chunk["duration_s"] - measured) <= tolerance, (chunk, measured)


def start_web_stack(start, env: dict[str, str]) -> Proc:
    env.update(ENABLE_HTTP="1", ENABLE_RTSP="0")
    drone = start("streamer.drone", env)
    drone.wait_for("stack is up", 60)
    wait_until(lambda: port_open(int(env["HTTP_PORT"])), 20, "the web worker to listen")
    return drone


# --- one recording stack for the read-only tests


@dataclass
class Stack:
    env: dict[str, str]
    ssd: Path
    session: str  # the one being recorded
    outside: Path


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    """The stack recording, with the web worker, until two chunks are finished; plus a session
    folder of symbolic links and a session folder that is one, planted beside the real one."""
    workdir = short_tempdir()
    segments_before = shm_segments()
    env = stack_env(workdir)
    started: list[Proc] = []

    def launch(module: str, env: dict[str, str]) -> Proc:
        started.append(Proc(module, env))
        return started[-1]

    try:
        drone = start_web_stack(launch, env)
        ssd = Path(env["SSD_PATH"])

        def two_finished() -> dict[str, Any] | None:
            sessions = listing(env)["sessions"]
            done = sessions and [c for c in sessions[0]["chunks"] if not c["open"]]
            return sessions[0] if done and len(done) >= 2 else None

        session = wait_until(two_finished, 40, "two finished chunks in the listing")
        outside = workdir / "outside"
        outside.mkdir()
        (outside / "video_00000.mp4").write_bytes(OUTSIDE_MARKER)
        hostile = ssd / HOSTILE_SESSION
        hostile.mkdir()
        (hostile / "video_99999.mp4").symlink_to("/etc/passwd")
        (hostile / "image_000000.jpg").symlink_to("/etc/passwd")
        (hostile / "video_99998.mp4").symlink_to(ssd / session["name"] / session["chunks"][0]["name"])
        (ssd / LINKED_SESSION).symlink_to(outside)
        yield Stack(env, ssd, session["name"], outside)
        drone.signal(signal.SIGTERM)
        assert drone.wait(30) == 0, drone.output
    finally:
        for proc in started:
            proc.stop(15)
        assert_no_segments_left(segments_before)
        shutil.rmtree(workdir, ignore_errors=True)


def test_the_listing_is_what_is_on_disk(stack: Stack):
    body = listing(stack.env)
    by_name = {s["name"]: s for s in body["sessions"]}
    assert [s["name"] for s in body["sessions"]] == [stack.session, HOSTILE_SESSION]  # newest first
    assert LINKED_SESSION not in by_name  # a link is never listed
    assert by_name[HOSTILE_SESSION]["chunks"] == [] and by_name[HOSTILE_SESSION]["snapshots"] == []

    session = by_name[stack.session]
    day, clock = stack.session.split("_", 1)[1].split("T")
    assert session["started"] == f"{day}T{clock.replace('-', ':')}"
    on_disk = sorted(p.name for p in (stack.ssd / stack.session).glob("video_*.mp4"))
    listed = [c["name"] for c in session["chunks"]]
    assert listed == on_disk[: len(listed)]
    # One chunk is open: the newest, the one being written.
    assert [c["open"] for c in session["chunks"]] == [False] * (len(listed) - 1) + [True]
    for chunk in session["chunks"]:
        assert chunk["url"] == f"/recordings/{stack.session}/{chunk['name']}"
        if not chunk["open"]:
            assert chunk["size"] == (stack.ssd / stack.session / chunk["name"]).stat().st_size
    check_durations(stack.ssd, session)
    first, second = session["chunks"][:2]
    assert first["start"] < second["start"]
    for picture in session["snapshots"]:
        assert picture["kind"] == "image"
        assert picture["size"] == (stack.ssd / stack.session / picture["name"]).stat().st_size
    assert session["totals"]["chunks"] == len(listed)
    assert session["totals"]["snapshots"] == len(session["snapshots"])
    assert body["totals"]["sessions"] == len(body["sessions"])

    one = fetch(stack.env, f"/api/v1/recordings?session={stack.session}").json()
    assert [s["name"] for s in one["sessions"]] == [stack.session]
    assert fetch(stack.env, "/api/v1/recordings?session=nope").status == 404


def test_range_requests_return_the_bytes_asked(stack: Stack, tmp_path: Path):
    chunk = stack.ssd / stack.session / "video_00000.mp4"
    data = chunk.read_bytes()
    url = f"/recordings/{stack.session}/video_00000.mp4"

    part = fetch(stack.env, url, Range="bytes=100-199")
    assert part.status == 206
    assert part.body == data[100:200]
    assert part.headers["Content-Range"] == f"bytes 100-199/{len(data)}"
    assert part.headers["Content-Type"] == "video/mp4"

    whole = fetch(stack.env, url)
    assert whole.status == 200 and whole.headers["Accept-Ranges"] == "bytes"
    assert whole.body == data
    copy = tmp_path / "copy.mp4"
    copy.write_bytes(whole.body)
    assert video_info(copy)[:3] == ("h264", TEST_WIDTH, TEST_HEIGHT)

    # `curl -C -`: the rest from where a download stopped.
    rest = fetch(stack.env, url, Range=f"bytes={len(data) // 2}-")
    assert rest.status == 206 and rest.body == data[len(data) // 2 :]
    beyond = fetch(stack.env, url, Range=f"bytes={len(data)}-")
    assert beyond.status == 416 and beyond.headers["Content-Range"] == f"bytes */{len(data)}"

    image = fetch(stack.env, f"/recordings/{stack.session}/image_000000.jpg")
    assert image.status == 200 and image.headers["Content-Type"] == "image/jpeg"
    assert image.body == (stack.ssd / stack.session / "image_000000.jpg").read_bytes()


def traversal_targets(stack: Stack) -> list[str]:
    session = stack.session
    return [
        "/recordings/../etc/passwd",
        "/recordings/../../../../../etc/passwd",
        "/recordings/%2e%2e/%2e%2e/etc/passwd",
        "/recordings/%2e%2e%2f%2e%2e%2fetc%2fpasswd/x",
        "/recordings/..%2f..%2f..%2f..%2fetc/passwd",
        f"/recordings/{session}/..%2f..%2f..%2f..%2fetc%2fpasswd",
        f"/recordings/{session}/%2e%2e%2f%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        f"/recordings/{session}/%252e%252e%252f%252e%252e%252fetc%252fpasswd",
        f"/recordings/{session}/..%5c..%5c..%5cetc%5cpasswd",
        f"/recordings/{session}/video_00000.mp4%00/../../../etc/passwd",
        "/recordings//etc/passwd",
        "/recordings/%2fetc/passwd",
        f"/recordings/{session}/%2fetc%2fpasswd",
        f"/recordings{stack.ssd}/{session}/video_00000.mp4",
        f"/recordings/{session}{stack.outside}/video_00000.mp4",
        "/recordings/latest/..%2f..%2fetc%2fpasswd",
        "/recordings/latest/../../etc/passwd",
        "http://127.0.0.1/etc/passwd",
        "/etc/passwd",
        f"/recordings/{LINKED_SESSION}/passwd",
    ]


def test_traversal_and_links_get_403_or_404_and_never_the_content(stack: Stack):
    secrets = [Path("/etc/passwd").read_bytes()[:32], OUTSIDE_MARKER]
    attempts = {target: fetch(stack.env, target) for target in traversal_targets(stack)}
    links = {
        target: fetch(stack.env, target)
        for target in [
            f"/recordings/{HOSTILE_SESSION}/video_99999.mp4",  # named like a chunk, a link to /etc/passwd
            f"/recordings/{HOSTILE_SESSION}/image_000000.jpg",
            f"/recordings/{HOSTILE_SESSION}/video_99998.mp4",  # a link to a real chunk: no links at all
            f"/recordings/{LINKED_SESSION}/video_00000.mp4",  # a session folder that is a link
        ]
    }
    for target, answer in {**attempts, **links}.items():
        assert answer.status in (403, 404), (target, answer)
        assert "error" in answer.json(), target
        assert not any(secret in answer.body for secret in secrets), target
    assert all(answer.status == 403 for answer in links.values()), links


def test_latest_redirects_to_the_file_it_points_at(stack: Stack):
    target = os.readlink(stack.ssd / layout.LATEST_DIR / layout.LATEST_VIDEO)
    answer = fetch(stack.env, "/recordings/latest/video")
    assert answer.status == 302
    session, name = Path(target).parts[-2:]
    assert answer.headers["Location"] == f"/recordings/{session}/{name}"
    followed = fetch(stack.env, answer.headers["Location"])
    assert followed.status == 200 and followed.body == (stack.ssd / session / name).read_bytes()
    assert fetch(stack.env, "/recordings/latest/image").status == 302
    assert fetch(stack.env, "/recordings/latest/passwd").status == 404


@pytest.mark.parametrize(
    ("raw", "status", "message"),
    [
        (b"video", 400, "not JSON"),
        (b'{"video": true', 400, "not JSON"),
        (b"[true]", 400, "JSON object"),
        (b'{"video": true, "audio": true}', 400, "unknown field 'audio' (allowed: video, images)"),
        (b'{"video": "yes"}', 400, 'video must be true or false, not "yes"'),
        (b'{"images": 1}', 400, "images must be true or false, not 1"),
        (b"\xff\xfe", 400, "not JSON"),
        (b'{"video": ' + b" " * 5000 + b"true}", 413, ""),
    ],
)
def test_bad_recording_requests_are_refused(stack: Stack, raw: bytes, status: int, message: str):
    answer = post(stack.env, "/api/v1/recording", raw=raw)
    assert answer.status == status, answer
    assert message in answer.json()["error"]


def test_a_snapshot_takes_no_fields(stack: Stack):
    answer = post(stack.env, "/api/v1/snapshot", {"width": 100})
    assert answer.status == 400 and "unknown field 'width'" in answer.json()["error"]
    assert fetch(stack.env, "/api/v1/recording").status == 405


# --- recording control


def test_stop_start_and_snapshot_over_http(env, start, tmp_path: Path):
    drone = start_web_stack(start, env)
    ssd = Path(env["SSD_PATH"])
    first = wait_until(
        lambda: (s := listing(env)["sessions"]) and len(s[0]["chunks"]) >= 2 and s[0],
        40,
        "a finished chunk and an open one",
    )

    stopped = post(env, "/api/v1/recording", {"video": False, "images": False})
    assert stopped.status == 200, stopped
    assert stopped.json() == {"video": False, "images": False, "session": None, "state": "off"}
    # The recorder reports the change within a second or so; until then the chunk may show open.
    session = wait_until(
        lambda: (s := session_of(env, first["name"])) and not s["chunks"][-1]["open"] and s,
        10,
        "the stopped chunk listed as finished",
    )
    last = chunk_file(ssd, session, session["chunks"][-1])
    assert decodes_cleanly(last) == ""
    assert (ssd / layout.LATEST_DIR / layout.LATEST_VIDEO).resolve() == last
    assert [p.name for p in sorted((ssd / first["name"]).glob("video_*.mp4"))] == [
        c["name"] for c in session["chunks"]
    ]
    check_durations(ssd, session)
    latest = fetch(env, "/recordings/latest/video")
    assert latest.headers["Location"] == session["chunks"][-1]["url"]

    restarted = post(env, "/api/v1/recording", {"video": True, "images": True})
    assert restarted.status == 200, restarted
    reply = restarted.json()
    assert (reply["video"], reply["images"], reply["state"]) == (True, True, "recording")
    assert reply["session"] != first["name"]
    newest = listing(env)["sessions"][0]
    assert newest["name"] == reply["session"]  # a start is a new session, listed first
    assert session_of(env, first["name"]) == session  # the stopped one is left as it was

    shot = post(env, "/api/v1/snapshot")
    assert shot.status == 200, shot
    assert shot.headers["Content-Type"] == "image/jpeg"
    location = shot.headers["Content-Location"]
    assert location.startswith(f"/recordings/{reply['session']}/snapshot_")
    saved = ssd / reply["session"] / location.rsplit("/", 1)[1]
    assert saved.read_bytes() == shot.body
    copy = tmp_path / "snapshot.jpg"
    copy.write_bytes(shot.body)
    assert jpeg_size(copy) == (TEST_WIDTH, TEST_HEIGHT)
    assert fetch(env, location).body == shot.body
    listed = session_of(env, reply["session"])
    assert {"name": saved.name, "kind": "snapshot"}.items() <= next(
        p for p in listed["snapshots"] if p["name"] == saved.name
    ).items()

    # Many clients at once: answered one after the other, none refused.
    with ThreadPoolExecutor(30) as pool:
        answers = list(pool.map(lambda _: post(env, "/api/v1/recording", {}), range(30)))
    assert [a.status for a in answers] == [200] * 30
    assert all(a.json()["session"] == reply["session"] for a in answers)

    drone.signal(signal.SIGTERM)
    assert drone.wait() == 0, drone.output


def test_a_refused_command_is_409(env, start):
    """Waiting for the SSD to be mounted (RECORD_REQUIRE_MOUNT=1, SSD_PATH on the root file
    system), the recorder refuses snapshots; recording can still be chosen."""
    if os.stat("/").st_dev != os.stat(Path(env["SSD_PATH"]).parent).st_dev:
        pytest.skip("the test folder is not on the root file system")
    env.update(RECORD_REQUIRE_MOUNT="1")
    drone = start_web_stack(start, env)
    refused = post(env, "/api/v1/snapshot")
    assert refused.status == 409, refused
    assert "not a mounted disk" in refused.json()["error"]
    chosen = post(env, "/api/v1/recording", {"video": False})
    assert chosen.status == 200 and chosen.json()["state"] == "no-disk"
    assert listing(env) == {
        "sessions": [],
        "totals": {"sessions": 0, "chunks": 0, "snapshots": 0, "bytes": 0, "duration_s": 0},
    }
    drone.signal(signal.SIGTERM)
    assert drone.wait() == 0, drone.output


def test_without_a_recorder_commands_are_503(env, start):
    env.update(ENABLE_HTTP="1")
    web = start("streamer.web", env)
    web.wait_for("serving http://")
    for target in ("/api/v1/recording", "/api/v1/snapshot"):
        answer = post(env, target, {})
        assert answer.status == 503, answer
        assert answer.json() == {"error": "the recorder is not running"}
    web.signal(signal.SIGTERM)
    assert web.wait() == 0, web.output


def test_commands_run_one_at_a_time_and_a_long_queue_gets_503(monkeypatch, tmp_path: Path):
    """In process, with a recorder that takes its time: commands never overlap, and those that
    waited QUEUE_WAIT_S for their turn are told to come back."""
    lock, release = threading.Lock(), threading.Event()
    running = {"now": 0, "most": 0}

    def slow_recorder(path: str, command: str, timeout_s: float, **fields: Any) -> dict[str, Any]:
        with lock:
            running["now"] += 1
            running["most"] = max(running["most"], running["now"])
        release.wait(30)
        with lock:
            running["now"] -= 1
        return {"ok": True, "video": True, "images": True, "session": None, "state": "recording"}

    monkeypatch.setattr(commands, "request", slow_recorder)
    monkeypatch.setattr(controls, "QUEUE_WAIT_S", 0.5)
    settings = config.load({"SSD_PATH": str(tmp_path), "SHM_RECORDER_SOCKET": str(tmp_path / "rec.sock")})

    async def scenario() -> list[tuple[int, dict[str, Any]]]:
        app = web.Application()
        app.add_routes(controls.routes(settings))
        async with TestClient(TestServer(app)) as client:

            async def ask() -> tuple[int, dict[str, Any]]:
                async with client.post("/api/v1/recording", json={}) as response:
                    return response.status, await response.json()

            asking = [asyncio.ensure_future(ask()) for _ in range(5)]
            async with asyncio.timeout(20):
                while len([t for t in asking if t.done()]) < 4:  # all but the one being answered
                    await asyncio.sleep(0.05)
                release.set()
                return await asyncio.gather(*asking)

    answers = asyncio.run(scenario())
    assert sorted(status for status, _ in answers) == [200, 503, 503, 503, 503]
    assert all("busy" in body["error"] for status, body in answers if status == 503)
    assert running["most"] == 1
