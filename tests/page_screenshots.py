"""The page's screenshots in docs/, from a real run: ``python -m tests.page_screenshots``.

Starts the stack (synthetic camera, 1280x720@30, recorder on, web and live workers) in a
private directory, records two sessions (one stopped after a few chunks, one running) and takes
a photo from the page, then shoots the page as a laptop (1280x800) and a phone (390x844) see
it, live view playing, and the recordings part of the laptop's page with a chunk playing:

    docs/page-1280x800.png  docs/page-390x844.png  docs/page-recordings.png

Not part of the test suite (it takes about a minute); run it after changing the page. Options:
``--out DIR`` (default docs/), ``--echo`` (the stack's log).
"""

from __future__ import annotations

import argparse
import http.client
import json
import shutil
import sys
from pathlib import Path
from typing import Any

from bench.browser import Browser, chromium
from streamer.testing import Proc, port_open, wait_until
from tests.harness import ROOT, free_port, short_tempdir, stack_env

SHOTS = {"page-1280x800.png": (1280, 800), "page-390x844.png": (390, 844)}
RECORDINGS_SHOT = "page-recordings.png"


def call(port: int, method: str, path: str, body: dict[str, bool] | None = None) -> Any:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        payload = None if body is None else json.dumps(body)
        connection.request(method, path, body=payload, headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        data = response.read()
        if response.status != 200:
            raise RuntimeError(f"{method} {path}: {response.status} {data!r}")
        return json.loads(data)
    finally:
        connection.close()


def finished_chunks(port: int, count: int) -> bool:
    sessions = call(port, "GET", "/api/v1/recordings")["sessions"]
    return bool(sessions) and sum(not c["open"] for c in sessions[0]["chunks"]) >= count


def settle(view: Browser) -> None:
    """The page with its live view playing, its status and recordings shown, the photo taken."""
    page = view.page
    page.wait_for_function(
        "() => document.getElementById('live-state').dataset.state === 'live'", timeout=30_000
    )
    page.wait_for_function(
        "() => /fps$/.test(document.getElementById('live-state').textContent)", timeout=10_000
    )
    page.wait_for_function("() => document.querySelector('#sessions .chunk img.thumb')?.naturalWidth > 0")
    page.wait_for_function("() => document.getElementById('latest-image').naturalWidth > 0")
    page.wait_for_function("() => document.getElementById('camera').textContent.includes('fps measured')")


def shoot(port: int, out: Path) -> None:
    address = f"http://127.0.0.1:{port}/"
    for name, viewport in SHOTS.items():
        with chromium(viewport=viewport) as view:
            view.page.goto(address)
            settle(view)
            view.page.locator("#photo").click()
            view.page.wait_for_function("() => document.getElementById('photo-image').naturalWidth > 0")
            view.page.wait_for_timeout(1500)  # one more status poll and live fps figure
            view.page.screenshot(path=str(out / name))
            if viewport[0] >= 900:
                view.page.locator(".chunk[data-open='false'] .play").nth(1).click()
                view.page.wait_for_function("() => document.getElementById('player').currentTime > 1")
                view.page.locator(".recordings-card").screenshot(path=str(out / RECORDINGS_SHOT))
            if view.errors:
                raise RuntimeError(view.report())
            print(f"{out / name}: {viewport[0]}x{viewport[1]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.page_screenshots", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--out", type=Path, default=ROOT / "docs")
    parser.add_argument("--echo", action="store_true")
    args = parser.parse_args(argv)
    workdir = short_tempdir()
    env = stack_env(
        workdir,
        ENABLE_HTTP="1",
        VIDEO_WIDTH="1280",
        VIDEO_HEIGHT="720",
        HTTP_PORT=str(free_port()),
        LOG_LEVEL="INFO",
    )
    port = int(env["HTTP_PORT"])
    drone = Proc("streamer.drone", env, echo=args.echo)
    try:
        drone.wait_up(60)
        wait_until(lambda: port_open(port), 20, "the web worker")
        wait_until(lambda: finished_chunks(port, 2), 40, "a first session of two chunks")
        call(port, "POST", "/api/v1/recording", {"video": False, "images": False})
        call(port, "POST", "/api/v1/recording", {"video": True, "images": True})
        wait_until(lambda: finished_chunks(port, 2), 40, "two chunks of the second session")
        args.out.mkdir(parents=True, exist_ok=True)
        shoot(port, args.out)
    finally:
        drone.stop(20)
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
