"""The publish worker: the stream pushed to every destination of PUBLISH_URL, each on its own.

Run on its own with ``python -m streamer.publish`` (the RTSP worker must be running for there to
be anything to publish); under the controller it is a service, started before the stack, kept
across its restarts and restarted alone: a destination that is down, slow or refusing touches
neither the camera, the recording nor local viewers, and never restarts the stack.

Each destination is its own pipeline (``streamer.publish.destination``), an RTSP client of our
own server whose H.264 goes out as it is (the stream encoder's: no second encoder), and its own
retry loop: it is torn down when it fails and built again after 1, 2, 4 … 30 s
(``streamer.publish.retry``). Under a controller, no destination tries while the stack's
RTSP worker is not ready (the stack starting or restarting: ``StreamWatch``, from the published
state), and those that lost the stream try again as soon as it is back. A line is logged when
a destination connects and when it disconnects or cannot connect, with its URL redacted and the
reason; no key, streamid, passphrase or password ever reaches a log line or the status.

Progress, every second: ``frames`` (buffers handed to the destinations' sinks, all told: it
grows while any destination is connected), ``idle`` (no destination is connected: a server that
is down is not a stall), ``connected`` (how many are), ``dropped`` (frames not sent because they
would not decode: before an attempt's first keyframe, and after a gap in front of a slow
server up to the next keyframe) and ``destinations`` (``retry.DestinationReport``: ``url``, ``kind``,
``connected``, ``since``, ``bytes_sent``, ``reconnects``, ``last_error``,
``next_attempt_in_s``). A destination connecting or disconnecting is reported at once.

Everything runs in one GLib main loop; the streaming threads only bump counters.
"""

from __future__ import annotations

import logging
import time

from streamer.config import Settings
from streamer.media import gst, pipelines
from streamer.media.gst import GLib
from streamer.publish.destination import Destination
from streamer.runtime import state
from streamer.runtime.status import StatusWriter
from streamer.runtime.worker import EXIT_OK

NAME = "publish"
PROGRESS_INTERVAL_S = 1.0
CHECK_INTERVAL_S = 0.25  # attempts that are due, data that stopped flowing
REPORT_SOON_CHECK_S = 0.1
STATE_EVERY_S = 0.5  # the controller publishes at most twice a second
# The elements every destination needs, and the Debian package of each (``pipelines.PUBLISH_ELEMENTS``
# adds each kind's muxer and sink).
PACKAGES = {
    "rtspsrc": "gstreamer1.0-plugins-good",
    "rtph264depay": "gstreamer1.0-plugins-good",
    "flvmux": "gstreamer1.0-plugins-good",
    "h264parse": "gstreamer1.0-plugins-bad",
    "rtmp2sink": "gstreamer1.0-plugins-bad",
    "mpegtsmux": "gstreamer1.0-plugins-bad",
    "srtsink": "gstreamer1.0-plugins-bad",
    "rtspclientsink": "gstreamer1.0-rtsp",
}
COMMON_ELEMENTS = ("rtspsrc", "rtph264depay", "h264parse", "queue")


class StreamWatch:
    """Whether our RTSP stream is there, from the stack's published state (``runtime.state``):
    under a controller, while its RTSP worker is not ready (the stack starting or restarting)
    no destination tries, and when it is ready again those that lost the stream try at once.
    Without a controller (the worker run on its own), the stream is taken to be there."""

    def __init__(self, settings: Settings, log: logging.Logger, every_s: float = STATE_EVERY_S) -> None:
        self._state = state.StateReader(state.state_file(settings.shm_recorder_socket + ".lock"), log)
        self.every_s = every_s
        self._looked_at: float | None = None
        self._up = True

    def up(self, now: float) -> bool:
        if self._looked_at is None or now - self._looked_at >= self.every_s:
            self._looked_at = now
            self._up = self._look()
        return self._up

    def _look(self) -> bool:
        stack = self._state.read_running()
        if stack is None:
            return True  # no controller (or no readable state): the worker runs on its own
        rtsp = stack.workers.get("rtsp")
        return rtsp is not None and rtsp.state == state.READY


class Publisher:
    """The destinations and the reports (main loop)."""

    def __init__(self, settings: Settings, status: StatusWriter, log: logging.Logger) -> None:
        self.settings = settings
        self.log = log
        self._status = status
        self._report_soon = False
        self.stream = StreamWatch(settings, log)
        self._stream_was_up = True
        self.destinations = [Destination(settings, d, log, self._changed) for d in settings.publish_urls]
        for destination in self.destinations:
            needed = COMMON_ELEMENTS + pipelines.PUBLISH_ELEMENTS[destination.destination.kind]
            missing = gst.missing_elements(needed)
            if missing:
                # Like live view: the worker stays up and says what to install, rather than
                # restarting forever.
                named = ", ".join(f"{name} ({PACKAGES.get(name, 'GStreamer')})" for name in missing)
                destination.unavailable(f"this machine cannot publish there: missing {named}")
                log.error("%s: %s", destination, destination.last_error)

    def _changed(self) -> None:
        self._report_soon = True

    def check(self) -> bool:
        now = time.monotonic()
        stream_up = self.stream.up(now)
        for destination in self.destinations:
            if stream_up and not self._stream_was_up:
                destination.stream_back(now)
            destination.check(now, stream_up)
        self._stream_was_up = stream_up
        return GLib.SOURCE_CONTINUE

    def tick(self) -> bool:
        self.report()
        return GLib.SOURCE_CONTINUE

    def report_soon(self) -> bool:
        if self._report_soon:
            self.report()
        return GLib.SOURCE_CONTINUE

    def report(self) -> None:
        self._report_soon = False
        now = time.monotonic()
        self._status.progress(
            frames=sum(d.buffers for d in self.destinations),
            idle=not any(d.connected for d in self.destinations),
            connected=sum(1 for d in self.destinations if d.connected),
            dropped=sum(d.dropped for d in self.destinations),
            destinations=[d.report(now).as_dict() for d in self.destinations],
        )

    def stop(self) -> None:
        for destination in self.destinations:
            destination.stop()


def run(settings: Settings, status: StatusWriter, log: logging.Logger) -> int:
    if not settings.publish_urls:
        log.info("PUBLISH_URL names no destination: nothing to publish")
        return EXIT_OK
    publisher = Publisher(settings, status, log)
    loop = GLib.MainLoop()

    def stop() -> None:
        publisher.stop()
        loop.quit()

    sources = gst.on_stop_signals(stop, log)
    sources.append(GLib.timeout_add(round(CHECK_INTERVAL_S * 1000), publisher.check))
    sources.append(GLib.timeout_add(round(PROGRESS_INTERVAL_S * 1000), publisher.tick))
    sources.append(GLib.timeout_add(round(REPORT_SOON_CHECK_S * 1000), publisher.report_soon))
    log.info(
        "publishing %s (H.264 passed through) to %s",
        pipelines.live_rtsp_url(settings),
        ", ".join(str(d) for d in settings.publish_urls),
    )
    publisher.check()  # the first attempts, at once
    status.ready()
    publisher.report()
    try:
        loop.run()
    finally:
        publisher.stop()
        gst.remove_sources(sources)
    log.info("stopped")
    return EXIT_OK
