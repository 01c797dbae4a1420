"""The page for the ground (``GET /``, streamer/web/page.py and streamer/web/static/) in a real
browser, Debian's chromium driven by Playwright (``bench/browser.py``), against the real stack:
it loads with no console errors and shows the stack; the live view plays at the configured size
and comes back by itself after the RTSP worker is killed; a chunk plays and seeks; the buttons
show what the API answers; API errors reach the banner; with credentials everything needs them.
Marked ``browser`` (``pytest -m browser`` runs them alone).

Without a browser: how the page and its files are served (hashed names cached for good, the
page revalidated, gzip, 304), and that the files are package data a built wheel carries.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import hashlib
import itertools
import json
import logging
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import Response
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from bench.browser import Browser, chromium
from streamer.config import Settings
from streamer.testing import Proc
from streamer.web import page, server
from streamer.web.snapshot import Observer
from tests.harness import (
    EDGE_FRAMES,
    ROOT,
    TEST_FPS,
    TEST_HEIGHT,
    TEST_WIDTH,
    USER,
    rtsp_reports_during,
    settings_for,
    url,
    wait_until,
)
from tests.test_web_api import api_status, healthy, request

LIVE_TIMEOUT_S = 30  # a new page's first live picture, on a loaded machine
RECOVERY_DEADLINE_S = 5  # SIGKILL of the RTSP worker → the live view back (the figure)

browser = pytest.mark.browser


# --- the stack and the page


def start_page_stack(start: Callable[..., Proc], env: dict[str, str], **settings: str) -> Proc:
    """The stack with the web worker (and so the live worker), recording as by default."""
    env.update(ENABLE_HTTP="1", **settings)
    drone = start("streamer.drone", env)
    drone.wait_up(60)
    wait_until(lambda: healthy(env), 30, "/health to answer 200")
    return drone


def frames_shown_at(timeline: list[dict[str, float]], at: float) -> float:
    """The page's frame count at wall-clock time ``at``, interpolated between its samples."""
    for before, after in itertools.pairwise(timeline):
        if before["at"] <= at <= after["at"]:
            share = (at - before["at"]) / max(after["at"] - before["at"], 1e-9)
            return before["frames"] + share * (after["frames"] - before["frames"])
    raise ValueError(f"{at} is outside the page's samples")


def page_url(env: dict[str, str]) -> str:
    return f"http://127.0.0.1:{env['HTTP_PORT']}/"


def wait_in_page(view: Browser, expression: str, timeout_s: float, what: str, arg: Any = None) -> Any:
    """Wait until ``expression`` (a JavaScript function of ``arg``) returns something truthy in
    the page, and return it; at the deadline fail naming ``what``, with the console's lines."""
    try:
        handle = view.page.wait_for_function(expression, arg=arg, timeout=timeout_s * 1000, polling=100)
    except PlaywrightTimeout:
        raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}\n{view.report()}") from None
    return handle.json_value()


def text(view: Browser, selector: str) -> str:
    return view.page.locator(selector).inner_text()


def wait_text(view: Browser, selector: str, expected: str, timeout_s: float) -> None:
    wait_in_page(
        view,
        "([selector, expected]) => document.querySelector(selector)?.textContent === expected",
        timeout_s,
        f"{selector} to read {expected!r}",
        arg=[selector, expected],
    )


def wait_attribute(view: Browser, selector: str, name: str, expected: str, timeout_s: float) -> None:
    wait_in_page(
        view,
        "([selector, name, expected]) => document.querySelector(selector)?.getAttribute(name) === expected",
        timeout_s,
        f"{selector}'s {name} to be {expected!r}",
        arg=[selector, name, expected],
    )


def loaded_width(view: Browser, selector: str, timeout_s: float) -> int:
    """The natural width of the image ``selector`` once it has loaded."""
    return wait_in_page(
        view,
        "(selector) => document.querySelector(selector)?.naturalWidth",
        timeout_s,
        f"{selector} loaded",
        selector,
    )


def count(view: Browser, selector: str) -> int:
    return view.page.locator(selector).count()


def next_status(view: Browser) -> None:
    """Wait until the page has shown another status poll."""
    shown = text(view, "#updated")
    wait_in_page(
        view, "(shown) => document.getElementById('updated').textContent !== shown", 5, "a poll", shown
    )


def api_recording(env: dict[str, str], holds: Callable[[dict[str, Any]], bool], what: str) -> dict[str, Any]:
    """The status API's ``recording`` once it satisfies ``holds`` (the recorder reports every
    second: the status follows a command's answer within about that)."""

    def now() -> dict[str, Any] | None:
        recording = api_status(env)["recording"]
        return recording if holds(recording) else None

    return wait_until(now, 10, what)


def no_banner(view: Browser) -> None:
    assert view.page.locator("#banner").is_hidden(), text(view, "#banner")


LIVE = "() => document.getElementById('live-state').dataset.state === 'live'"
LIVE_SESSION = "() => Number(document.getElementById('live-state').dataset.session)"
LIVE_AGAIN = """(before) => {
  const overlay = document.getElementById('live-state');
  return overlay.dataset.state === 'live' && Number(overlay.dataset.session) > before;
}"""
VIEWERS = """() => {
  const shown = document.getElementById('viewers').textContent;
  return /^[1-9]\\d* on RTSP/.test(shown) && / 1 in browsers$/.test(shown) && shown;
}"""
# VIDEO_BITRATE's default, and the page's viewer's loss once its receiver has reported.
BITRATE = """() => {
  const shown = document.getElementById('bitrate').textContent;
  return /^2000 kbit\\/s · fixed( · worst loss \\d+\\.\\d % \\(viewer \\d+\\))?$/.test(shown) && shown;
}"""
WORKERS_READY = """() => {
  const rows = [...document.querySelectorAll('#workers tbody tr[data-worker]')];
  const ready = rows.length >= 5 && rows.every((r) => r.cells[1].textContent === 'ready');
  return ready && rows.map((r) => r.dataset.worker);
}"""
WORKERS_SHOWN = """(names) => {
  const rows = [...document.querySelectorAll('#workers tbody tr[data-worker]')];
  return JSON.stringify(rows.map((r) => r.dataset.worker)) === JSON.stringify(names);
}"""
PLAYING_PAST = """(seconds) => {
  const player = document.getElementById('player');
  return !player.paused && player.currentTime > seconds;
}"""
NEW_SESSION_FIRST = """([name, before]) => {
  const sessions = document.querySelectorAll('#sessions details.session');
  return sessions.length === before + 1 && sessions[0].dataset.session === name;
}"""
PHOTOS_NOTED = """(session) => {
  const notes = document.querySelector(session).querySelectorAll('.pictures-note');
  return [...notes].some((note) => note.textContent === '1 photo');
}"""
BAD_BADGE = """() => {
  const badge = document.getElementById('health');
  return badge.dataset.level === 'bad' && badge.textContent;
}"""

# Decoded frames and media time of the live <video> over a window of ``ms`` in the page.
# The live view over ``ms``: its frame count sampled every 50 ms with the wall-clock time (the
# system clock the controller also times the RTSP worker's reports with), and how it played.
PLAYBACK_TIMELINE = """async (ms) => {
  const video = document.getElementById('live');
  const sample = () => ({ at: Date.now() / 1000, frames: video.getVideoPlaybackQuality().totalVideoFrames });
  const [time0, timeline] = [video.currentTime, [sample()]];
  while (timeline.at(-1).at - timeline[0].at < ms / 1000) {
    await new Promise((resolve) => setTimeout(resolve, 50));
    timeline.push(sample());
  }
  return {
    timeline,
    advanced_s: video.currentTime - time0,
    window_s: timeline.at(-1).at - timeline[0].at,
    width: video.videoWidth,
    height: video.videoHeight,
    paused: video.paused,
  };
}"""

# Seek the player to ``target`` seconds; its currentTime once 'seeked' fired (null after 10 s).
SEEK = """async (target) => {
  const player = document.getElementById('player');
  const seeked = new Promise((resolve) => player.addEventListener('seeked', resolve, { once: true }));
  const late = new Promise((resolve) => setTimeout(() => resolve(false), 10000));
  player.currentTime = target;
  return (await Promise.race([seeked.then(() => true), late])) ? player.currentTime : null;
}"""


def turned_away(view: Browser, address: str) -> str:
    """How the browser fared asking for ``address``: the status it got, or the network error
    (headless, it cannot ask for a password and gives up on the challenge)."""
    try:
        answer = view.page.goto(address)
    except PlaywrightError as err:
        found = re.search(r"net::(ERR_\w+)", str(err))
        return found.group(1) if found else str(err)
    return str(answer.status) if answer is not None else "no answer"


def wait_live(view: Browser, timeout_s: float = LIVE_TIMEOUT_S) -> None:
    wait_in_page(view, LIVE, timeout_s, "the live view to play")


# --- in a browser, on the real stack


@browser
def test_the_page_loads_with_no_console_errors_and_shows_the_stack(env, start):
    start_page_stack(start, env)
    with chromium() as view:
        response = view.page.goto(page_url(env))
        assert response is not None and response.status == 200
        assert view.page.title() == "streamer"
        wait_attribute(view, "#health", "data-level", "good", 10)
        mode = f"{TEST_WIDTH}x{TEST_HEIGHT}@{TEST_FPS}"
        wait_in_page(
            view, "(mode) => document.getElementById('camera').textContent.includes(mode)", 10, mode, mode
        )
        wait_text(view, "#rec-state", "recording video + images", 10)
        workers = wait_in_page(view, WORKERS_READY, 20, "every worker ready in the table")
        assert workers == ["feeder", "recorder", "rtsp", "live", "web"]
        urls = view.page.locator("#rtsp-urls input").evaluate_all("(inputs) => inputs.map((i) => i.value)")
        assert url(env) in urls, urls
        copy = view.page.locator("#rtsp-urls button").first
        copy.click()  # to the clipboard, or selected for Ctrl+C where the browser refuses
        wait_in_page(
            view, "(b) => b.textContent !== 'copy' && b.textContent", 5, "the copy", copy.element_handle()
        )
        assert copy.inner_text() in ("copied", "selected: press Ctrl+C")
        wait_live(view)
        # The page's own live session is an RTSP viewer of the stack (the live worker's client).
        wait_in_page(view, VIEWERS, 10, "this page counted as a viewer (RTSP and browsers)")
        wait_in_page(view, BITRATE, 10, "the stream's bitrate (VIDEO_BITRATE, fixed)")
        wait_in_page(view, "() => document.querySelector('#sessions .chunk')", 20, "a chunk listed")
        assert loaded_width(view, "#latest-image", 20) == TEST_WIDTH
        no_banner(view)
        assert view.errors == [], view.report()


@browser
def test_the_live_view_plays_at_the_configured_size_at_full_rate(env, start):
    start_page_stack(start, env)
    with chromium() as view:
        view.page.goto(page_url(env))
        wait_live(view)
        # Full rate is the stream's: on a loaded machine the stream itself drops frames by design
        # (the one-frame queue in front of its encoder), so the page is held to what the RTSP
        # worker sent between two of its reports, both within the page's samples.
        played, reports = rtsp_reports_during(env, lambda: view.page.evaluate(PLAYBACK_TIMELINE, 4000))
        timeline = played.pop("timeline")
        assert (played["width"], played["height"]) == (TEST_WIDTH, TEST_HEIGHT), played
        assert not played["paused"] and played["advanced_s"] > 0.5 * played["window_s"], played
        inside = [r for r in reports if timeline[0]["at"] <= r.at <= timeline[-1]["at"]]
        assert len(inside) >= 2, (reports, timeline[0], timeline[-1])
        first, last = inside[0], inside[-1]
        sent = last.frames - first.frames
        shown = frames_shown_at(timeline, last.at) - frames_shown_at(timeline, first.at)
        assert sent > TEST_FPS / 2 * (last.at - first.at), (first, last)  # a stream to measure against
        assert shown >= sent - EDGE_FRAMES, (shown, sent, first, last)
        overlay = text(view, "#live-state")
        assert overlay.startswith(f"live · {TEST_WIDTH}\N{MULTIPLICATION SIGN}{TEST_HEIGHT}"), overlay
        assert view.errors == [], view.report()


@browser
def test_a_chunk_plays_from_the_list_and_seeks(env, start):
    start_page_stack(start, env)
    with chromium() as view:
        fetched: list[tuple[str, int, str | None]] = []

        def seen(response: Response) -> None:
            if "/recordings/" in response.url and response.url.endswith(".mp4"):
                fetched.append((response.url, response.status, response.request.headers.get("range")))

        view.page.on("response", seen)
        view.page.goto(page_url(env))
        finished = ".chunk[data-open='false']"
        wait_in_page(view, "(s) => document.querySelector(s)", 30, "a finished chunk listed", finished)
        chunk_url = view.page.locator(finished).first.get_attribute("data-url")
        assert chunk_url is not None
        view.page.locator(f"{finished} .play").first.click()
        wait_in_page(view, PLAYING_PAST, 15, "the chunk to play", 0.3)
        assert view.page.locator(f".chunk[data-url='{chunk_url}']").get_attribute("aria-current") == "true"
        assert chunk_url.rsplit("/", 1)[1] in text(view, "#player-caption")
        duration = view.page.evaluate("() => document.getElementById('player').duration")
        assert duration > 5, duration
        target = 3.0
        landed = view.page.evaluate(SEEK, target)
        assert landed is not None and abs(landed - target) < 0.5, landed
        wait_in_page(view, PLAYING_PAST, 10, "playing on after the seek", target + 0.3)
        # The browser fetched the chunk in ranges and the server answered 206.
        partial = [(u, status) for u, status, asked in fetched if u.endswith(chunk_url) and asked]
        assert partial and all(status == 206 for _, status in partial), fetched
        assert view.errors == [], view.report()


@browser
def test_the_buttons_show_what_the_api_answers(env, start):
    drone = start_page_stack(start, env)
    sessions = "#sessions details.session"
    with chromium() as view:
        view.page.goto(page_url(env))
        record = view.page.locator("#record")
        wait_text(view, "#record", "Stop recording", 10)
        first = wait_in_page(
            view, "(s) => document.querySelector(s)?.dataset.session", 20, "a session", sessions
        )
        before = count(view, sessions)

        record.click()
        wait_text(view, "#record", "Start recording", 20)
        assert text(view, "#rec-state") == "off"
        assert view.page.locator("#rec-video").get_attribute("aria-pressed") == "false"
        api_recording(env, lambda r: r["on"] is False, "the status API to say recording is off")
        next_status(view)  # the page's next poll agrees: it still says stopped
        assert (text(view, "#record"), text(view, "#rec-state")) == ("Start recording", "off")

        record.click()
        wait_text(view, "#record", "Stop recording", 20)
        recording = api_recording(env, lambda r: r["on"] is True, "the status API to say recording is on")
        new_session = Path(recording["session"]).name
        assert new_session != first
        next_status(view)
        assert (text(view, "#record"), text(view, "#rec-state")) == (
            "Stop recording",
            "recording video + images",
        )
        wait_in_page(view, NEW_SESSION_FIRST, 20, "the new session listed first", [new_session, before])
        assert "recording" in view.page.locator(sessions).first.locator("summary").inner_text()

        # Video off alone: the toggle shows the answer, images go on in the same session.
        view.page.locator("#rec-video").click()
        wait_attribute(view, "#rec-video", "aria-pressed", "false", 20)
        assert text(view, "#rec-state") == "recording images"
        recording = api_recording(env, lambda r: r["video"] is False, "the status API to say video is off")
        assert recording["images"] is True and Path(recording["session"]).name == new_session
        next_status(view)
        assert text(view, "#rec-state") == "recording images"

        view.page.locator("#photo").click()
        assert loaded_width(view, "#photo-image", 20) == TEST_WIDTH
        link = view.page.locator("#photo-download").get_attribute("href") or ""
        assert re.fullmatch(rf"/recordings/{new_session}/snapshot_\d{{5}}\.jpg", link), link
        saved = request(env, link)
        assert saved.status == 200 and saved.body.startswith(b"\xff\xd8")
        wait_in_page(
            view,
            PHOTOS_NOTED,
            20,
            "the photo listed",
            sessions,
        )
        no_banner(view)
        assert view.errors == [], view.report()
    drone.signal(signal.SIGTERM)
    assert drone.wait(30) == 0, drone.output


@browser
def test_api_errors_are_shown_in_the_banner(env, start, workdir):
    """Waiting for its SSD (RECORD_REQUIRE_MOUNT=1, SSD_PATH on the root file system) the
    recorder refuses a photo: the page says so, and why, as the API did."""
    if os.stat(workdir).st_dev != os.stat("/").st_dev:
        pytest.skip(f"{workdir.parent} is not on the root file system here")
    env.update(ENABLE_HTTP="1", RECORD_REQUIRE_MOUNT="1")
    drone = start("streamer.drone", env)
    drone.wait_up(60)
    with chromium() as view:
        view.page.goto(page_url(env))
        assert (
            wait_in_page(view, BAD_BADGE, 15, "the health badge") == "recording paused: SSD_PATH not mounted"
        )
        wait_text(view, "#rec-state", "paused: SSD not mounted", 10)
        view.page.locator("#photo").click()
        message = wait_in_page(
            view,
            "() => document.querySelector('#banner-list li[data-source=photo]')?.textContent",
            20,
            "the error in the banner",
        )
        assert message.startswith("Photo: 409: ") and "not a mounted disk" in message, message
        assert view.page.locator("#banner").is_visible()
        assert view.page.locator("#photo-result").is_hidden()
        view.page.locator("#banner-list li[data-source=photo] button").click()
        assert view.page.locator("#banner").is_hidden()
        # The only console errors are the browser's line about the refused request.
        assert all("status of 409" in line for line in view.errors), view.report()


@browser
def test_without_rtsp_the_page_says_there_is_no_live_view(env, start):
    """ENABLE_RTSP=0: no live worker, no offer sent; the picture says why, the rest works."""
    start_page_stack(start, env, ENABLE_RTSP="0")
    with chromium() as view:
        offers: list[str] = []
        view.page.on("request", lambda r: offers.append(r.url) if r.url.endswith("/api/v1/live") else None)
        view.page.goto(page_url(env))
        wait_text(view, "#live-state", "no live view: the RTSP stream is off (ENABLE_RTSP=0)", 10)
        wait_attribute(view, "#live-state", "data-state", "unavailable", 1)
        assert text(view, "#rtsp-urls") == "RTSP is off"
        assert text(view, "#bitrate") == "RTSP off"
        wait_text(view, "#rec-state", "recording video + images", 10)
        wait_in_page(view, WORKERS_SHOWN, 10, "the workers", ["feeder", "recorder", "web"])
        next_status(view)
        assert offers == [] and view.errors == [], (offers, view.report())


@browser
def test_the_live_view_comes_back_by_itself_after_the_rtsp_worker_is_killed(env, start):
    drone = start_page_stack(start, env)
    with chromium() as view:
        view.page.goto(page_url(env))
        wait_live(view)
        session = view.page.evaluate(LIVE_SESSION)
        killed_at = time.monotonic()
        os.kill(drone.worker_pid("rtsp"), signal.SIGKILL)
        left = RECOVERY_DEADLINE_S - (time.monotonic() - killed_at)
        what = f"the live view back within {RECOVERY_DEADLINE_S} s of the SIGKILL"
        wait_in_page(view, LIVE_AGAIN, left, what, session)
        back_s = time.monotonic() - killed_at
        played = view.page.evaluate(PLAYBACK_TIMELINE, 1000)
        timeline = played.pop("timeline")
        assert timeline[-1]["frames"] > timeline[0]["frames"] and played["advanced_s"] > 0, played
        logging.getLogger(__name__).info("live view back %.2f s after the SIGKILL", back_s)


@browser
def test_with_credentials_the_page_and_its_files_need_them(env, start):
    password = secrets.token_urlsafe(12)
    start_page_stack(start, env, RTSP_USER=USER, RTSP_PASSWORD=password)
    pair = (USER, password)
    for given in (None, (USER, "wrong")):
        with chromium(credentials=given) as view:
            refused = turned_away(view, page_url(env))
            assert refused in ("401", "ERR_INVALID_AUTH_CREDENTIALS"), (given, refused)
            assert view.page.locator("#live").count() == 0
    index = request(env, "/", credentials=pair)
    assert index.status == 200
    files = re.findall(r'(?:src|href)="(static/[^"]+)"', index.body.decode())
    assert len(files) == 3, files  # the icon, the style sheet, the script
    for path in ("/", *(f"/{f}" for f in files), "/static/app.js", "/api/v1/status", "/api/v1/recordings"):
        assert request(env, path).status == 401, path
        assert request(env, path, credentials=(USER, "wrong")).status == 401, path
        assert request(env, path, credentials=pair).status == 200, path
    with chromium(credentials=pair) as view:
        answer = view.page.goto(page_url(env))
        assert answer is not None and answer.status == 200
        wait_attribute(view, "#health", "data-level", "good", 10)
        wait_live(view)
        assert loaded_width(view, "#sessions .chunk img.thumb", 30) == TEST_WIDTH
        no_banner(view)
        assert view.errors == [], view.report()


@browser
def test_the_browser_latency_bench_runs_end_to_end_on_a_short_setting(env, start, workdir: Path):
    out = workdir / "results"
    size = ("--width", str(TEST_WIDTH), "--height", str(TEST_HEIGHT))
    bench = start(
        "bench.browser_latency", env, "--short", *size, "--out", str(out), "--workdir", str(workdir)
    )
    assert bench.wait(120) == 0, bench.output
    data = json.loads((out / "browser_latency.json").read_text())
    assert not data["errors"] and data["short"] and data["console_errors"] == []
    assert data["settings"]["camera"] == "test-stamped" and data["sizes"] == [f"{TEST_WIDTH}x{TEST_HEIGHT}"]
    assert data["frames"] > 0 and data["stamps_unread"] == 0
    shown = data["summary_ms"]["shown"]
    assert shown["frames"] == data["frames"] == len(data["latencies_ms"]["shown"])
    assert 0 < shown["p50"] <= shown["p95"]
    assert data["http"]["paths"]["/api/v1/status"]["requests"] >= 2
    assert "| shown (expectedDisplayTime) |" in (out / "browser_latency.md").read_text()
    assert not (workdir / "ssd").exists()


# --- how the page is served (no browser)


RAW: dict[str, Any] = {"auto_decompress": False}


def serve_page(scenario: Callable[[TestClient], Any]) -> Any:
    async def run() -> Any:
        app = web.Application()
        app.add_routes(page.routes(settings_for({"HOME": "/tmp"})))
        async with TestClient(TestServer(app)) as client:
            return await scenario(client)

    return asyncio.run(run())


def test_the_page_names_its_files_by_hash_and_they_are_kept_for_good():
    async def scenario(client: TestClient) -> None:
        index = await client.get("/", headers={"Accept-Encoding": "identity"})
        assert index.status == 200 and index.headers["Content-Type"] == "text/html; charset=utf-8"
        assert index.headers["Cache-Control"] == "no-cache"
        assert "script-src 'self'" in index.headers["Content-Security-Policy"]
        html = await index.text()
        references = dict(re.findall(r'"static/([\w.-]+)\?v=([0-9a-f]{16})"', html))
        assert set(references) == {"app.js", "style.css", "icon.svg"}, html
        for name, version in references.items():
            kept = await client.get(f"/static/{name}?v={version}")
            assert kept.status == 200 and kept.headers["Cache-Control"] == page.IMMUTABLE, name
            body = await kept.read()
            assert hashlib.sha256(body).hexdigest()[:16] == version
            # Without the hash, or with an old one: revalidated, like the page.
            for stale in (f"/static/{name}", f"/static/{name}?v=0000000000000000"):
                answer = await client.get(stale)
                assert answer.status == 200 and answer.headers["Cache-Control"] == "no-cache", stale
        script = await client.get("/static/app.js")
        assert script.headers["Content-Type"] == "text/javascript; charset=utf-8"
        assert (await client.get("/static/nothing.js")).status == 404
        assert (await client.get("/static/index.html")).status == 404
        assert (await client.head("/")).status == 200

    serve_page(scenario)


def test_the_page_is_gzipped_and_revalidated_with_a_304():
    async def scenario(client: TestClient) -> None:
        plain = await client.get("/static/app.js", headers={"Accept-Encoding": "identity"}, **RAW)
        packed = await client.get("/static/app.js", headers={"Accept-Encoding": "gzip, br"}, **RAW)
        assert "Content-Encoding" not in plain.headers and packed.headers["Content-Encoding"] == "gzip"
        assert plain.headers["Vary"] == packed.headers["Vary"] == "Accept-Encoding"
        body, squeezed = await plain.read(), await packed.read()
        assert gzip.decompress(squeezed) == body and len(squeezed) < len(body) / 2
        assert plain.headers["ETag"] != packed.headers["ETag"]
        refused = await client.get("/", headers={"Accept-Encoding": "gzip;q=0"}, auto_decompress=False)
        assert "Content-Encoding" not in refused.headers
        for encoding in ("identity", "gzip"):
            first = await client.get("/", headers={"Accept-Encoding": encoding}, auto_decompress=False)
            again = await client.get(
                "/", headers={"Accept-Encoding": encoding, "If-None-Match": first.headers["ETag"]}
            )
            assert again.status == 304 and await again.read() == b""
            assert again.headers["Cache-Control"] == "no-cache"
            other = await client.get("/", headers={"Accept-Encoding": encoding, "If-None-Match": '"other"'})
            assert other.status == 200

    serve_page(scenario)


def test_a_reference_to_a_missing_file_is_an_error_at_start():
    assets = {"app.js": page.Asset.of(b"x", "text/javascript")}
    assert page.versioned('<script src="static/app.js">', assets) == (
        f'<script src="static/app.js?v={assets["app.js"].version}">'
    )
    with pytest.raises(FileNotFoundError, match=r"static/gone\.css"):
        page.versioned('<link href="static/gone.css">', assets)


def test_the_page_files_are_package_data(tmp_path: Path):
    """Found through importlib.resources in the source tree, and carried by a wheel built from
    the project (pyproject's package data), so an installed stack serves the page too."""
    names = {entry.name for entry in page.static_root().iterdir()}
    assert {"index.html", "app.js", "style.css", "icon.svg"} <= names
    assert set(page.load_assets(page.static_root())) == names
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "streamer", source / "streamer", ignore=shutil.ignore_patterns("__pycache__"))
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "-q",
            "-w",
            str(tmp_path / "dist"),
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = (tmp_path / "dist").glob("streamer-*.whl")
    packed = set(zipfile.ZipFile(wheel).namelist())
    assert {f"streamer/web/static/{name}" for name in names} <= packed, sorted(packed)


def test_the_server_serves_the_page_behind_its_credentials(tmp_path: Path):
    """The web worker's own app: / and /static/ are among what needs credentials."""
    settings: Settings = settings_for({"HOME": str(tmp_path), "RTSP_USER": USER, "RTSP_PASSWORD": "pw"})
    log = logging.getLogger("test")

    async def run() -> None:
        observer = Observer(settings, log)
        try:
            async with TestClient(TestServer(server.make_app(settings, observer, log))) as client:
                for path in ("/", "/static/app.js", "/static/style.css", "/static/icon.svg", "/static/x"):
                    refused = await client.get(path)
                    assert refused.status == 401 and "Basic" in refused.headers["WWW-Authenticate"], path
                token = base64.b64encode(f"{USER}:pw".encode()).decode()
                allowed = await client.get("/", headers={"Authorization": f"Basic {token}"})
                assert allowed.status == 200
        finally:
            observer.close()

    asyncio.run(run())


def test_an_sdp_offer_may_be_larger_than_other_bodies(tmp_path: Path):
    """The web worker's body limit is per path: a browser's offer (a few KiB, up to the live
    view's limit) gets through; anything else over CLIENT_MAX_SIZE is 413, also when it is sent
    without a length (chunked)."""
    settings: Settings = settings_for({"HOME": str(tmp_path), "SHM_STREAM_SOCKET": str(tmp_path / "s.sock")})
    log = logging.getLogger("test")
    offer = b"v=0\r\n" + b"a=x\r\n" * 2000  # 10 KB
    too_much = b"x" * (server.CLIENT_MAX_SIZE + 1)

    async def chunks() -> Any:
        yield too_much

    async def run() -> None:
        observer = Observer(settings, log)
        try:
            async with TestClient(TestServer(server.make_app(settings, observer, log))) as client:
                sdp = {"Content-Type": "application/sdp"}
                passed = await client.post("/api/v1/live", data=offer, headers=sdp)
                assert passed.status == 503, await passed.text()  # to the live worker: not running
                huge = await client.post("/api/v1/live", data=b"v=0\r\n" * 20000, headers=sdp)
                assert huge.status == 413
                for body in (too_much, chunks()):
                    refused = await client.post("/api/v1/recording", data=body)
                    assert refused.status == 413 and "error" in await refused.json()
        finally:
            observer.close()

    asyncio.run(run())
