"""Capture → shown in Chromium: the page's live view, as late as a person sees it.

    .venv/bin/python -m bench.browser_latency               # 1280x720@30, 30 s
    .venv/bin/python -m bench.browser_latency --short       # a smoke run (3 s)

The stack runs at the suite's settings (``bench.plan``: ``CAMERA=test-stamped``, 1280x720@30,
2 Mbit/s, recorder on) with the web worker, and so the live worker. Debian's chromium
(headless, ``bench/browser.py``) opens the page (``GET /``), whose live view plays our stream
over WebRTC. In the page, ``requestVideoFrameCallback`` runs for every frame the ``<video>``
presents; it draws the stamp band (the top rows, where the synthetic camera wrote the frame's
capture time, ``streamer.media.stamp``) onto a canvas and averages the inner part of each
stamp block exactly as ``stamp.read`` samples it (as video-range luma: the blocks are grey, so
R = G = B whatever the colour matrix). Python reads the bits from those averages with the
stamp's own thresholds and check value, and compares the capture time with:

- **shown**: ``performance.timeOrigin + metadata.expectedDisplayTime``, when the browser
  expects the frame to be on screen: the figure the issue asks for (goal ≤ 150 ms p50);
- **callback**: ``Date.now()`` in the callback (the frame is being composited);
- **received**: ``metadata.receiveTime``, when its last packet arrived (WebRTC only): the rest
  is the browser's jitter buffer, decoding and compositing.

Same machine, same clock (Chromium's ``timeOrigin`` is the wall clock at navigation). The
first ``warmup`` seconds after the first frame are left out. Writes
``browser_latency.json`` (with every sample) and ``browser_latency.md`` to ``bench/results/``.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from playwright.sync_api import Response

from bench import report
from bench.browser import chromium
from bench.plan import Plan, add_stack_options, finish, new_results, stream_settings, write_results
from bench.stack import FAILURES, stack_alone
from streamer import testing
from streamer.media import stamp
from streamer.media.latency import LatencySummary

log = logging.getLogger("bench")

GOAL_P50_MS = 150.0
VIEWPORT = (1280, 800)
LIVE_TIMEOUT_S = 30.0
PULL_EVERY_S = 0.5

# Installed in the page once its live view plays: for each presented frame, the stamp blocks'
# averages and the frame's times. ``geometry``: [block, inset, span, lines, rows, columns].
PROBE = """([block, inset, span, lines, rows, columns]) => {
  const video = document.getElementById('live');
  const width = columns * block, height = rows * block;
  const canvas = document.createElement('canvas');
  canvas.width = width;
  canvas.height = height;
  const context = canvas.getContext('2d', { willReadFrequently: true });
  const samples = [];
  window.__stampSamples = samples;
  const onFrame = (now, meta) => {
    const called = Date.now();
    let means = null;
    if (meta.width >= width && meta.height >= height) {
      context.drawImage(video, 0, 0, width, height, 0, 0, width, height);
      const pixels = context.getImageData(0, 0, width, height).data;
      means = [];
      for (let row = 0; row < rows; row++) {
        for (let column = 0; column < columns; column++) {
          let total = 0;
          for (const line of lines) {
            const start = ((row * block + line) * width + column * block + inset) * 4;
            for (let i = 0; i < span; i++) total += pixels[start + i * 4];  // red = green = blue: grey
          }
          means.push(16 + (total / (span * lines.length)) * 219 / 255);  // full range → video range
        }
      }
    }
    samples.push({
      shown: performance.timeOrigin + meta.expectedDisplayTime,
      called: called,
      frame_time: performance.timeOrigin + now,
      received: typeof meta.receiveTime === 'number' ? performance.timeOrigin + meta.receiveTime : null,
      presented: meta.presentedFrames,
      width: meta.width,
      height: meta.height,
      means: means,
    });
    video.requestVideoFrameCallback(onFrame);
  };
  video.requestVideoFrameCallback(onFrame);
}"""


def geometry(width: int, height: int) -> list[Any]:
    """Where ``stamp.read`` samples each block: [block, inset, span, lines, rows, columns]."""
    block = stamp.block_size(width, height)
    inset = block // 4
    span = max(1, block - 2 * inset)
    lines = sorted({inset, block // 2, block - 1 - inset})
    return [block, inset, span, lines, stamp.ROWS, stamp.COLUMNS]


def stamp_value(means: list[float] | None) -> int | None:
    """The stamp the block averages carry, read with ``stamp``'s thresholds and check value."""
    if not means or len(means) != stamp.ROWS * stamp.COLUMNS:
        return None
    bits = []
    for mean in means:
        if mean < stamp.DARK_MAX:
            bits.append(0)
        elif mean > stamp.LIGHT_MIN:
            bits.append(1)
        else:
            return None
    return stamp.decode_bits(bits)


def latencies(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Each figure's latencies (ms) over the samples whose stamp reads, what did not read, and
    how far Date.now() and the performance clock (timeOrigin + the callback's time) are apart."""
    figures: dict[str, list[float]] = {"shown": [], "callback": [], "received": []}
    unread = 0
    offsets = sorted(s["called"] - s["frame_time"] for s in samples)
    for sample in samples:
        value = stamp_value(sample["means"])
        if value is None:
            unread += 1
            continue
        figures["shown"].append(round(stamp.age_ms(value, sample["shown"] / 1000), 2))
        figures["callback"].append(round(stamp.age_ms(value, sample["called"] / 1000), 2))
        if sample["received"] is not None:
            figures["received"].append(round(stamp.age_ms(value, sample["received"] / 1000), 2))
    return {
        "latencies_ms": figures,
        "frames": len(samples),
        "stamps_unread": unread,
        "clock_offset_ms": round(offsets[len(offsets) // 2], 2) if offsets else None,
    }


def measure(address: str, plan: Plan, warmup_s: float) -> dict[str, Any]:
    """Open the page, wait for its live view, collect the probe's samples for ``plan.seconds``."""
    with chromium(viewport=VIEWPORT) as view:
        page = view.page
        page.goto(address)
        opened = time.monotonic()
        page.wait_for_function(
            "() => document.getElementById('live-state').dataset.state === 'live'",
            timeout=LIVE_TIMEOUT_S * 1000,
            polling=100,
        )
        first_picture_s = time.monotonic() - opened
        page.evaluate(PROBE, geometry(plan.width, plan.height))
        time.sleep(warmup_s)  # left out: the first second of a new WebRTC session
        page.evaluate("() => window.__stampSamples.splice(0)")
        quality_before = page.evaluate(QUALITY)
        responses: list[Response] = []
        page.on("response", lambda response: responses.append(response))
        samples: list[dict[str, Any]] = []
        began = time.monotonic()
        ends = began + plan.seconds
        while time.monotonic() < ends:
            time.sleep(PULL_EVERY_S)  # the measurement window, pulled in slices
            samples += page.evaluate("() => window.__stampSamples.splice(0)")
        quality_after = page.evaluate(QUALITY)
        window_s = time.monotonic() - began
        traffic = http_traffic(responses, window_s)
        overlay = page.locator("#live-state").inner_text()
        errors = list(view.errors)
    measured = latencies(samples)
    measured.update(
        http=traffic,
        first_picture_s=round(first_picture_s, 3),
        overlay=overlay,
        console_errors=errors,
        playback={key: quality_after[key] - quality_before[key] for key in quality_after},
        sizes=sorted({f"{s['width']}x{s['height']}" for s in samples}),
    )
    return measured


def http_traffic(responses: list[Response], window_s: float) -> dict[str, Any]:
    """What the page asked over HTTP during the window, by path (the live video itself goes
    over WebRTC, not counted here): requests, bytes down (headers and body as sent, gzip
    included) and up (request headers and bodies), and per second over the window."""
    paths: dict[str, dict[str, int]] = {}
    for response in responses:
        sizes = response.request.sizes()
        path = urlsplit(response.url).path
        if path.startswith("/recordings/") and not path.startswith("/recordings/latest/"):
            path = "/recordings/<session>/<file>"
        entry = paths.setdefault(path, {"requests": 0, "down": 0, "up": 0})
        entry["requests"] += 1
        entry["down"] += sizes["responseHeadersSize"] + max(0, sizes["responseBodySize"])
        entry["up"] += sizes["requestHeadersSize"] + max(0, sizes["requestBodySize"])
    down = sum(e["down"] for e in paths.values())
    up = sum(e["up"] for e in paths.values())
    return {
        "window_s": round(window_s, 2),
        "paths": dict(sorted(paths.items())),
        "down_bytes_per_s": round(down / window_s),
        "up_bytes_per_s": round(up / window_s),
    }


QUALITY = """() => {
  const q = document.getElementById('live').getVideoPlaybackQuality();
  return { decoded: q.totalVideoFrames, dropped: q.droppedVideoFrames };
}"""


def run(plan: Plan, warmup_s: float, out: Path, workdir: Path | None, echo: bool) -> dict[str, Any]:
    began = time.monotonic()
    results = new_results({**stream_settings(plan), "seconds": plan.seconds, "warmup_s": warmup_s})
    results.update(errors=[], goal_p50_ms=GOAL_P50_MS, short=plan.short)
    try:
        with stack_alone(plan, workdir, echo) as served:
            port = int(served.service.env["HTTP_PORT"])
            testing.wait_until(lambda: testing.port_open(port), 20, "the HTTP API to listen")
            served.service.wait_up(60)
            address = f"http://127.0.0.1:{port}/"
            log.info("chromium: %s, live view for %g s after %g s warm-up", address, plan.seconds, warmup_s)
            measured = measure(address, plan, warmup_s)
            results.update(measured)
            results["summary_ms"] = {
                name: LatencySummary.of(values).as_dict() for name, values in measured["latencies_ms"].items()
            }
            shown = results["summary_ms"]["shown"]
            log.info(
                "capture → shown: p50 %s ms, p95 %s ms over %d frames (%d stamps unread)",
                shown["p50"],
                shown["p95"],
                shown["frames"],
                measured["stamps_unread"],
            )
            if not shown["frames"]:
                results["errors"].append("no frame with a readable stamp was shown")
    except FAILURES as err:
        results["errors"].append(f"stack: {err}")
    except Exception as err:  # Playwright's errors: the page or the browser failed
        results["errors"].append(f"browser: {type(err).__name__}: {err}")
    results["duration_s"] = round(time.monotonic() - began, 1)
    write_results(out, "browser_latency", results, markdown(results))
    return results


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def markdown(results: dict[str, Any]) -> str:
    s = results["settings"]
    lines = [
        *report.heading("Capture → shown in Chromium (the page's live view, WebRTC)", results),
        f"Run: {results['started_utc']}, {s['seconds']:g} s measured after {s['warmup_s']:g} s warm-up"
        + (" (**short run**: a smoke test, not a measurement)" if results.get("short") else "")
        + ".",
        "",
    ]
    summary = results.get("summary_ms")
    if summary:
        goal = results["goal_p50_ms"]
        http = results["http"]
        p50 = summary["shown"]["p50"]
        met = "-" if p50 is None else ("yes" if p50 <= goal else "**no**")
        rows = [
            ("shown", "shown (expectedDisplayTime)", f"≤ {goal:g} ms", met),
            ("callback", "frame callback (Date.now)", "", ""),
            ("received", "last packet received", "", ""),
        ]
        lines += [
            "| capture → | frames | p50 ms | p95 ms | p99 ms | max ms | goal p50 | met |",
            "|---|---:|---:|---:|---:|---:|---|---|",
            *(
                f"| {label} | {summary[key]['frames']} | "
                + " | ".join(_ms(summary[key][q]) for q in ("p50", "p95", "p99", "max"))
                + f" | {target} | {verdict} |"
                for key, label, target, verdict in rows
                if summary[key]["frames"]
            ),
            "",
            f"Frames presented: {results['frames']} ({results['stamps_unread']} stamps unread); "
            f"decoded {results['playback']['decoded']}, dropped {results['playback']['dropped']} "
            f"(getVideoPlaybackQuality); sizes {', '.join(results['sizes'])}; page open → first picture "
            f"{results['first_picture_s']:.2f} s; console errors: {len(results['console_errors'])}; "
            f"Date.now() - (timeOrigin + callback time): {_ms(results['clock_offset_ms'])} ms (median).",
            "",
            f"The page's own HTTP traffic meanwhile (the video goes over WebRTC, not counted): "
            f"{http['down_bytes_per_s']} B/s down, {http['up_bytes_per_s']} B/s up.",
            "",
            "| path | requests | bytes down | bytes up |",
            "|---|---:|---:|---:|",
            *(
                f"| `{path}` | {e['requests']} | {e['down']} | {e['up']} |"
                for path, e in http["paths"].items()
            ),
        ]
    lines += [f"\n**error**: {error}" for error in results["errors"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.browser_latency", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--seconds", type=float, default=30.0, help="seconds measured (30)")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds left out first (2)")
    parser.add_argument("--short", action="store_true", help="3 s after 1 s: a smoke run")
    add_stack_options(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    seconds, warmup = (3.0, 1.0) if args.short else (args.seconds, args.warmup)
    plan = Plan(width=args.width, height=args.height, seconds=seconds, short=args.short)
    results = run(plan, warmup, args.out, args.workdir, args.echo)
    return finish(results, markdown(results), args.out, "browser_latency.json, browser_latency.md")


if __name__ == "__main__":
    raise SystemExit(main())
