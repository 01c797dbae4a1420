"""Live view over WebRTC on the real stack: the web worker takes a browser's SDP offer
(``POST /api/v1/live``) and the live worker answers it with a session of its own, an RTSP
client of our own server passed into webrtcbin.

Browsers are real: Debian's Chromium driven by Playwright (tests marked ``browser``), on a test
page served at the stack's own origin (Playwright answers for that one URL; every request to
/api/v1/live reaches the real web worker). Without a browser: offers checked (what is refused,
and how), the answer's content, DELETE, and a session nobody connects to ending by itself; the
offer's reading as a pure function.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from bench.browser import chromium
from streamer.live import offer as offers
from streamer.live.offer import OfferError, check_answer, read_offer
from streamer.live.server import MAX_SESSIONS
from streamer.live.session import CONNECT_TIMEOUT_S, PEER_SILENT_S
from streamer.runtime.state import StackState
from streamer.testing import Proc, wait_state
from tests.harness import TEST_FPS, TEST_HEIGHT, TEST_WIDTH, wait_until
from tests.http_client import Answer, http_request

TEST_PAGE = "/live-test-page"  # answered by Playwright, at the stack's own origin
MIN_FPS = 25  # of TEST_FPS (30) frames a second, over a few seconds, on a loaded machine

# An offer as a browser sends it (trimmed): VP8 as 96, H.264 without and with
# packetization-mode=1 as 102 and 103 (the one to answer with), ICE credentials, a fingerprint.
OFFER = "\r\n".join(
    [
        "v=0",
        "o=- 4611731400430051336 2 IN IP4 127.0.0.1",
        "s=-",
        "t=0 0",
        "a=group:BUNDLE 0",
        "a=msid-semantic: WMS",
        "m=video 9 UDP/TLS/RTP/SAVPF 96 102 103",
        "c=IN IP4 0.0.0.0",
        "a=rtcp:9 IN IP4 0.0.0.0",
        "a=ice-ufrag:Xk3q",
        "a=ice-pwd:3uQ2dlZ6mZ6qJ8m3xTQm5cXb",
        "a=ice-options:trickle",
        "a=fingerprint:sha-256 6B:8B:5D:EA:59:04:20:23:29:C8:87:1C:CC:87:32:BE:DD:8C:66:A5:8E:50:55:EA:8C:D3"
        ":B6:5F:09:37:A8:99",
        "a=setup:actpass",
        "a=mid:0",
        "a=recvonly",
        "a=rtcp-mux",
        "a=rtcp-rsize",
        "a=rtpmap:96 VP8/90000",
        "a=rtcp-fb:96 nack pli",
        "a=rtpmap:102 H264/90000",
        "a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=0;profile-level-id=42e01f",
        "a=rtpmap:103 H264/90000",
        "a=rtcp-fb:103 nack pli",
        "a=fmtp:103 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f",
        "",
    ]
)


def variant(old: str, new: str, sdp: str = OFFER) -> str:
    assert old in sdp, old
    return sdp.replace(old, new)


# --- the offer, read before anything of it reaches GStreamer


def test_the_offers_h264_with_packetization_mode_1_is_chosen():
    assert read_offer(OFFER).payload_type == 103
    # Constrained baseline (what our encoder makes) before high profile, whatever the order.
    old = "a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=0;profile-level-id=42e01f"
    high_first = variant(old, "a=fmtp:102 packetization-mode=1;profile-level-id=64001f")
    assert read_offer(high_first).payload_type == 103
    high_last = variant(
        "packetization-mode=1;profile-level-id=42e01f", "packetization-mode=1;profile-level-id=64001f"
    )
    high_last = variant(old, "a=fmtp:102 packetization-mode=1;profile-level-id=42e01f", high_last)
    assert read_offer(high_last).payload_type == 102
    listed_low = variant(" 96 102 103", " 96 102 39").replace(":103 ", ":39 ")
    assert read_offer(listed_low).payload_type == 39  # browsers' second dynamic range


@pytest.mark.parametrize(
    ("sdp", "why"),
    [
        (None, "must be SDP text"),
        ("hello", 'must start with "v=0"'),
        ("v=0\r\n" + "a=x\r\n" * 20000, "larger than 64 KiB"),
        (variant("a=rtpmap:103 H264/90000", "a=rtpmap:103 VP9/90000"), "no H.264 with packetization-mode=1"),
        (variant("packetization-mode=1", "packetization-mode=0"), "no H.264 with packetization-mode=1"),
        (variant(" 96 102 103", " 96 102"), "no H.264 with packetization-mode=1"),  # 103 not listed
        (variant("m=video", "m=audio"), "one video stream only (it has: audio)"),
        (OFFER + "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n", "one video stream only (it has: video, audio)"),
        (variant("a=recvonly", "a=sendonly"), "does not ask to receive video (it is sendonly)"),
        (variant("m=video 9 ", "m=video 0 "), "disabled"),
        (variant("UDP/TLS/RTP/SAVPF", "RTP/AVP"), "not WebRTC"),
        (variant("m=video 9 UDP/TLS/RTP/SAVPF 96 102 103", "m=video 9"), "malformed media line"),
    ],
)
def test_offers_that_cannot_be_answered_are_refused_saying_why(sdp, why):
    with pytest.raises(OfferError, match=why.replace("(", r"\(").replace(")", r"\)")):
        read_offer(sdp)


def test_an_answer_must_send_h264_as_the_offers_payload_type():
    answer = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 103\r\na=rtpmap:103 H264/90000\r\n"
    check_answer(answer, 103)
    for wrong, payload_type in [
        (answer, 102),
        (answer.replace("H264", "VP8"), 103),
        (answer.replace("m=video 9", "m=video 0"), 103),
        ("v=0\r\n", 103),
    ]:
        with pytest.raises(OfferError):
            check_answer(wrong, payload_type)
    assert offers.MAX_OFFER_BYTES == 64 * 1024


# --- the stack


def request(
    env: dict[str, str],
    method: str,
    path: str,
    body: bytes | None = None,
    content_type: str | None = "application/sdp",
) -> Answer:
    headers = {"Content-Type": content_type} if content_type and body is not None else {}
    return http_request(env, path, method, body, headers)


def post_offer(env: dict[str, str], sdp: str = OFFER, **options: Any) -> Answer:
    return request(env, "POST", "/api/v1/live", sdp.encode(), **options)


def start_live_stack(start, env: dict[str, str], **settings: str) -> Proc:
    env.update(ENABLE_HTTP="1", ENABLE_VIDEO="0", ENABLE_IMAGES="0", LOG_LEVEL="DEBUG", **settings)
    drone = start("streamer.drone", env)
    drone.wait_up()
    drone.wait_worker_ready("web")
    drone.wait_worker_ready("live")
    return drone


def live_progress(env: dict[str, str], holds, what: str, drone: Proc, timeout: float = 20) -> dict[str, Any]:
    """Wait until the live worker's latest progress report satisfies ``holds``."""

    def condition(current: StackState) -> bool:
        live = current.workers.get("live")
        return live is not None and bool(live.progress) and bool(holds(live.progress))

    return wait_state(env, condition, timeout, what, drone).workers["live"].progress


def test_offers_are_checked_answered_and_closed(env, start):
    """No browser: what the web worker refuses itself, what the live worker refuses, an answer
    (H.264 as the offer's payload type, with our ICE candidates), DELETE, and a session nobody
    connects to ending by itself."""
    drone = start_live_stack(start, env)

    refused = post_offer(env, content_type="text/plain")
    assert refused.status == 415 and "application/sdp" in refused.json()["error"]
    refused = post_offer(env, "hello")
    assert refused.status == 400 and refused.json() == {
        "error": 'the offer is not SDP (it must start with "v=0")'
    }
    refused = post_offer(env, "v=0\r\n" + "a=x\r\n" * 14000)
    assert refused.status == 413, refused
    refused = post_offer(env, variant("a=rtpmap:103 H264/90000", "a=rtpmap:103 VP9/90000"))
    assert refused.status == 400
    assert refused.json() == {"error": "the offer lists no H.264 with packetization-mode=1 for video"}
    refused = post_offer(env, variant("m=video", "m=audio"))
    assert refused.status == 400 and "one video stream only" in refused.json()["error"]
    refused = request(
        env, "PATCH", "/api/v1/live/" + "0" * 32, b"a=candidate:1", "application/trickle-ice-sdpfrag"
    )
    assert refused.status == 405  # no trickle ICE
    for path in ("/api/v1/live/" + "0" * 32, "/api/v1/live/nonsense"):
        gone = request(env, "DELETE", path)
        assert gone.status == 404 and gone.json()["error"].startswith("no such live session"), path

    answered = post_offer(env)
    assert answered.status == 201, answered
    assert answered.headers.get_content_type() == "application/sdp"
    assert answered.headers["Cache-Control"] == "no-store"
    location = answered.headers["Location"]
    assert location.startswith("/api/v1/live/") and len(location) == len("/api/v1/live/") + 32
    answer = answered.body.decode()
    assert "\r\nm=video 9 UDP/TLS/RTP/SAVPF 103\r\n" in answer and "a=rtpmap:103 H264/90000" in answer
    assert "a=setup:active" in answer and "a=sendonly" in answer
    assert "typ host" in answer  # non-trickle: the candidates are in the answer
    live_progress(env, lambda p: p["sessions"] == 1 and p["playing"] == 0, "a session connecting", drone)
    gone = request(env, "DELETE", location)
    assert gone.status == 204 and gone.body == b""
    live_progress(env, lambda p: p["sessions"] == 0 and p["idle"], "the session closed", drone)
    assert request(env, "DELETE", location).status == 404

    # Nobody connects: the session ends by itself, its RTSP connection with it.
    assert post_offer(env).status == 201
    live_progress(env, lambda p: p["sessions"] == 1, "a session connecting", drone)
    drone.wait_for(r"live: session \w+ ended: the browser did not connect within", CONNECT_TIMEOUT_S + 10)
    report = live_progress(env, lambda p: p["sessions"] == 0, "the session ended", drone)
    assert report["sessions_total"] == 2 and report["refused"] == 0
    assert drone.stop() == 0


def test_without_the_live_worker_offers_get_503(env, start):
    """ENABLE_RTSP=0: no stream to pass on, so no live worker is started."""
    drone = start_live_stack_without_rtsp(start, env)
    refused = post_offer(env)
    assert refused.status == 503 and refused.json() == {
        "error": "live view needs the RTSP stream (ENABLE_RTSP=1)"
    }
    assert "live" not in drone.worker_pids()
    assert drone.stop() == 0


def test_without_a_stream_offers_get_503(env, start):
    """The web and live workers on their own, no RTSP server: an offer is refused as "no
    stream" (the RTSP worker restarting looks the same), to be tried again."""
    env.update(ENABLE_HTTP="1", LOG_LEVEL="DEBUG")
    web, live = start("streamer.web", env), start("streamer.live", env)
    web.wait_for("serving http://")
    live.wait_for("live view of rtsp://")
    refused = post_offer(env)
    assert refused.status == 503 and refused.headers["Retry-After"] == "1", refused
    assert refused.json()["error"].startswith("the RTSP stream is not available: "), refused.json()
    live.wait_for(r"session \w+ ended: the RTSP stream is not available")
    for worker in (live, web):
        worker.signal(signal.SIGTERM)
        assert worker.wait() == 0, worker.output


def start_live_stack_without_rtsp(start, env: dict[str, str]) -> Proc:
    env.update(ENABLE_HTTP="1", ENABLE_RTSP="0", ENABLE_VIDEO="0", ENABLE_IMAGES="0")
    drone = start("streamer.drone", env)
    drone.wait_up()
    drone.wait_worker_ready("web")
    return drone


# --- browsers

PAGE = """<!doctype html>
<meta charset="utf-8">
<title>live test</title>
<body>
<script>
// A minimal WHEP client: one RTCPeerConnection per viewer, non-trickle (the offer carries the
// browser's candidates; the answer the server's).
const viewers = [];
function gathered(pc, timeoutMs) {
  return new Promise(resolve => {
    if (pc.iceGatheringState === 'complete') return resolve();
    pc.addEventListener('icegatheringstatechange', () => {
      if (pc.iceGatheringState === 'complete') resolve();
    });
    setTimeout(resolve, timeoutMs);
  });
}
window.live = {
  async open() {
    const video = document.createElement('video');
    video.muted = true; video.autoplay = true; video.playsInline = true;
    document.body.append(video);
    const pc = new RTCPeerConnection();
    pc.addTransceiver('video', {direction: 'recvonly'});
    pc.ontrack = event => { video.srcObject = new MediaStream([event.track]); };
    await pc.setLocalDescription(await pc.createOffer());
    await gathered(pc, 2000);
    const started = performance.now();
    const response = await fetch('/api/v1/live', {
      method: 'POST', headers: {'Content-Type': 'application/sdp'}, body: pc.localDescription.sdp});
    const body = await response.text();
    if (response.status !== 201) {
      pc.close(); video.remove();
      return {status: response.status, body, retryAfter: response.headers.get('Retry-After')};
    }
    const viewer = {pc, video, location: response.headers.get('Location'), firstFrameMs: null};
    video.requestVideoFrameCallback(() => { viewer.firstFrameMs = performance.now() - started; });
    await pc.setRemoteDescription({type: 'answer', sdp: body});
    viewers.push(viewer);
    return {status: 201, index: viewers.length - 1, location: viewer.location};
  },
  state(index) {
    const {pc, video, firstFrameMs} = viewers[index];
    const quality = video.getVideoPlaybackQuality();
    return {connection: pc.connectionState, width: video.videoWidth, height: video.videoHeight,
            time: video.currentTime, frames: quality.totalVideoFrames, now: performance.now(), firstFrameMs};
  },
  async close(index) {
    const {pc, location} = viewers[index];
    const response = await fetch(location, {method: 'DELETE'});
    pc.close();
    return response.status;
  },
  drop(index) { viewers[index].pc.close(); },  // gone without a word (a tab closed)
};
</script>
"""


@dataclass
class Page:
    page: Any
    errors: list[str]

    def open(self) -> dict[str, Any]:
        return self.page.evaluate("() => live.open()")

    def state(self, index: int) -> dict[str, Any]:
        return self.page.evaluate("(index) => live.state(index)", index)

    def close(self, index: int) -> int:
        return self.page.evaluate("(index) => live.close(index)", index)

    def drop(self, index: int) -> None:
        self.page.evaluate("(index) => live.drop(index)", index)

    def playing(self, index: int, timeout: float = 15) -> dict[str, Any]:
        """Wait until viewer ``index`` shows frames of the stream's size and its time advances."""
        first = wait_until(
            lambda: (s := self.state(index))["frames"] > 0 and s["width"] > 0 and s,
            timeout,
            f"viewer {index} to show a frame",
        )
        return wait_until(
            lambda: (s := self.state(index))["time"] > first["time"] and s,
            timeout,
            f"viewer {index}'s video time to advance",
        )

    def rate(self, index: int, seconds: float = 3.0) -> float:
        """Frames a second viewer ``index`` shows, over ``seconds``."""
        before = self.state(index)
        time.sleep(seconds)  # a measurement window, not a wait for a condition
        after = self.state(index)
        return (after["frames"] - before["frames"]) * 1000 / (after["now"] - before["now"])


@pytest.fixture
def browser(env) -> Iterator[Page]:
    with chromium() as view:
        view.page.set_default_timeout(30_000)
        origin = f"http://127.0.0.1:{env['HTTP_PORT']}"
        view.page.route(origin + TEST_PAGE, lambda route: route.fulfill(content_type="text/html", body=PAGE))
        yield Page(view.page, view.errors)


def open_page(browser: Page, env: dict[str, str]) -> None:
    browser.page.goto(f"http://127.0.0.1:{env['HTTP_PORT']}{TEST_PAGE}")


@pytest.mark.browser
def test_a_browser_plays_the_live_view(env, start, browser):
    """The stream's size, its time advancing, at the camera's rate; the live worker reports the
    session playing. DELETE ends it; a browser gone without a DELETE is noticed."""
    drone = start_live_stack(start, env)
    open_page(browser, env)
    opened = browser.open()
    assert opened["status"] == 201, opened
    shown = browser.playing(0)
    assert (shown["width"], shown["height"]) == (TEST_WIDTH, TEST_HEIGHT)
    assert shown["connection"] == "connected"
    fps = browser.rate(0)
    assert fps >= MIN_FPS, f"{fps:.1f} frames a second shown (the camera makes {TEST_FPS})"
    report = live_progress(env, lambda p: p["playing"] == 1 and p["frames"] > 0, "the session playing", drone)
    assert report["clients"][0]["state"] == "playing" and not report["idle"]

    assert browser.close(0) == 204
    live_progress(env, lambda p: p["sessions"] == 0 and p["idle"], "the session closed", drone)

    # A tab closed without a DELETE: the browser falls silent, the session ends.
    assert browser.open()["status"] == 201
    browser.playing(1)
    live_progress(env, lambda p: p["playing"] == 1, "the second session playing", drone)
    browser.drop(1)
    drone.wait_for(r"live: session \w+ ended: ", PEER_SILENT_S + 10)
    live_progress(env, lambda p: p["sessions"] == 0, "the silent session ended", drone)
    assert browser.errors == []
    assert drone.stop() == 0


@pytest.mark.browser
def test_a_session_ends_with_its_rtsp_stream_and_a_new_offer_plays_again(env, start, browser):
    """The RTSP worker killed (the whole stack restarts): the live worker ends the browser's
    session, and a new offer plays within 5 s of the stack being up again."""
    drone = start_live_stack(start, env)
    open_page(browser, env)
    assert browser.open()["status"] == 201
    browser.playing(0)
    up = live_progress(env, lambda p: p["playing"] == 1, "the session playing", drone)
    before = drone.wait_up()
    live_pid = drone.worker_pid("live")

    os.kill(drone.worker_pid("rtsp"), signal.SIGKILL)
    live_progress(env, lambda p: p["sessions"] == 0, "the dead stream's session ended", drone)
    # The log line comes through another pipe than the report: it may follow it.
    drone.wait_for(r"live: session \w+ ended: ", timeout=10)

    drone.wait_up(after=before)
    back = time.monotonic()
    replayed = wait_until(
        lambda: (opened := browser.open())["status"] == 201 and opened, 5, "an offer answered again"
    )
    browser.playing(replayed["index"], timeout=max(0.5, 5 - (time.monotonic() - back)))
    assert drone.worker_pid("live") == live_pid  # a service: it went on through the restart
    report = live_progress(env, lambda p: p["playing"] == 1, "the new session playing", drone)
    assert report["sessions_total"] >= up["sessions_total"] + 1
    assert browser.errors == []
    assert drone.stop() == 0


@pytest.mark.browser
def test_sessions_are_capped(env, start, browser):
    """MAX_SESSIONS browsers play at once; one more is refused (503, Retry-After) until one
    closes."""
    drone = start_live_stack(start, env)
    open_page(browser, env)
    for index in range(MAX_SESSIONS):
        opened = browser.open()
        assert opened["status"] == 201 and opened["index"] == index, opened
    for index in range(MAX_SESSIONS):
        browser.playing(index, timeout=30)
    refused = browser.open()
    assert refused["status"] == 503 and refused["retryAfter"] == "1", refused
    assert "too many live viewers" in json.loads(refused["body"])["error"]
    report = live_progress(
        env, lambda p: p["playing"] == MAX_SESSIONS and p["refused"] == 1, "every session playing", drone
    )
    assert len(report["clients"]) == MAX_SESSIONS
    assert browser.close(0) == 204
    live_progress(env, lambda p: p["sessions"] == MAX_SESSIONS - 1, "one session closed", drone)
    opened = browser.open()
    assert opened["status"] == 201, opened
    browser.playing(opened["index"], timeout=30)
    # The one refusal is logged by the browser as a failed load; nothing else went wrong.
    assert [error for error in browser.errors if "status of 503" not in error] == []
    assert drone.stop() == 0


def test_offers_in_flight_at_once_are_each_answered(env, start):
    """Offers come in side by side (a crowd reconnecting after a restart): each gets its own
    session and answer; closing them leaves the live worker idle."""
    drone = start_live_stack(start, env)
    answers: list[Answer] = []
    lock = threading.Lock()

    def offer() -> None:
        answer = post_offer(env)
        with lock:
            answers.append(answer)

    threads = [threading.Thread(target=offer) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert [a.status for a in answers] == [201] * 6, [a.body for a in answers]
    locations = {a.headers["Location"] for a in answers}
    assert len(locations) == 6
    for location in locations:
        assert request(env, "DELETE", location).status == 204
    live_progress(env, lambda p: p["sessions"] == 0, "every session closed", drone)
    assert drone.stop() == 0
