"""RTSP worker: serves the stream socket at rtsp://<host>:RTSP_PORT/RTSP_PATH.

Run on its own with ``python -m streamer.rtsp`` (the feeder must be running for viewers to get
video). One shared media factory: a single encoder, started with the first viewer, feeds every
viewer. RTP over UDP by default, interleaved in the RTSP connection over TCP for clients that
ask for it or whose UDP is blocked (multicast is not offered).

A viewer joining mid-stream gets a keyframe forced for it at PLAY, so its first picture comes
in tens of milliseconds instead of up to a keyframe interval later; ``KeyframePacer`` keeps a
crowd of joiners from flooding the stream with keyframes. When the feeder goes away, the
viewers are disconnected and the media dropped, so the next viewer gets a fresh pipeline on the
feeder's next run.

Its progress reports name the viewers playing (address, transport, since when; the first
CLIENTS_REPORTED of them) and count those that have played; a viewer starting to play or
leaving is reported at once, not only with the report every second (a crowd coming or going
is reported at most every REPORT_SOON_INTERVAL_S: the controller reads every line).

The stream's bitrate (``streamer.rtsp.links``): each second the worker reads every viewer's
link (UDP: its RTCP receiver reports; TCP: the video queued unsent in its connection) and
reports it; with ``VIDEO_BITRATE_MODE=adaptive`` the worst link sets the encoder's bitrate,
changed in place (``gst.set_bitrate``), viewers never disconnected. An operator sets the bitrate
(fixed) or its ceiling (adaptive) through the command socket (``commands.rtsp_socket_path``),
which ``POST /api/v1/stream`` uses.

Access control is gst-rtsp-server's own (``RTSPAuth``, see ``make_auth``): with credentials
configured every request needs them (digest by default, basic only when asked for); with a
certificate and key the server speaks RTSP over TLS and the media is sent only interleaved in
that connection (TCP), never as clear-text UDP.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from streamer.config import Settings
from streamer.media import encoders, gst, pipelines
from streamer.media.gst import GLib, Gst, GstRtsp, GstRtspServer
from streamer.rtsp.access import AccessError, describe_access, make_auth
from streamer.rtsp.keyframes import FORCED_KEYFRAME_MIN_INTERVAL_S, KeyframePacer
from streamer.rtsp.links import (
    CLIMB_REASON,
    TICK_S,
    BitrateChange,
    BitrateLaw,
    CleanReport,
    ReceiverReport,
    SentBytes,
    ViewerLink,
)
from streamer.runtime import commands
from streamer.runtime.status import StatusWriter
from streamer.runtime.worker import EXIT_CONFIG, EXIT_FAILURE, EXIT_OK

NAME = "rtsp"
PROGRESS_INTERVAL_S = 1.0
LISTEN_BACKLOG = 128
CLIENTS_REPORTED = 64  # viewers named in a progress report (``viewers`` counts them all)
REPORT_SOON_INTERVAL_S = 0.1  # reports for viewers coming and going, at most this often
COMMAND_WAIT_S = 2.0  # for the main loop to take a command (it never blocks for long)


def _url_host(address: str) -> str:
    return f"[{address}]" if ":" in address else address


# Lower transports as reported (``clients``) and as logged ("playing over TCP").
UDP, TCP, MULTICAST, UNKNOWN = "udp", "tcp", "udp-multicast", "unknown"
TRANSPORT_LABELS = {UDP: "UDP", TCP: "TCP", MULTICAST: "multicast", UNKNOWN: "?"}


@dataclass
class Viewer:
    number: int
    address: str
    transport: str = UNKNOWN
    playing: bool = False
    since: float | None = None  # wall clock (time.time()) when it started playing
    # Where its RTCP comes from ("ip:port", its RTCP port from SETUP): how its receiver reports
    # are told from the other viewers'.
    rtcp_from: str | None = None
    link: ViewerLink = field(init=False)

    def __post_init__(self) -> None:
        self.link = ViewerLink(self.number)

    def __str__(self) -> str:
        return f"viewer {self.number} ({self.address})"

    def as_client(self) -> dict[str, object]:
        """The viewer in the progress report's ``clients``."""
        return {
            "number": self.number,
            "address": self.address,
            "transport": self.transport,
            "since": self.since,
            **self.link.as_fields(),
        }


def _lower_transport(ctx: GstRtspServer.RTSPContext) -> tuple[str, int | None]:
    """UDP, TCP or multicast, as negotiated in SETUP for the session's first stream, and the
    client's port its RTCP comes from (gst-rtsp-server's rtpsession names each receiver by it)."""
    try:
        transport = ctx.sessmedia.get_transport(0).get_transport()
    except (AttributeError, TypeError):
        return UNKNOWN, None
    lower = transport.lower_transport
    rtcp_port = transport.client_port.max or None
    if lower & GstRtsp.RTSPLowerTrans.TCP:
        return TCP, rtcp_port
    if lower & GstRtsp.RTSPLowerTrans.UDP_MCAST:
        return MULTICAST, None
    return UDP, rtcp_port


class StreamServer:
    def __init__(self, settings: Settings, status: StatusWriter, log: logging.Logger) -> None:
        self.settings = settings
        self.log = log
        self._status = status
        self.server = GstRtspServer.RTSPServer()
        self.server.set_address(settings.rtsp_bind)
        # gst-rtsp-server's default listen backlog (5) fills in a burst of connections (a
        # hostile client, or a crowd reconnecting): further SYNs are dropped and every viewer,
        # honest or not, waits a second or more per retry to connect.
        self.server.set_backlog(LISTEN_BACKLOG)
        self.server.set_service(str(settings.rtsp_port))
        self.encoder_kind = pipelines.encoder_kind(settings)
        self.factory = GstRtspServer.RTSPMediaFactory()
        self.factory.set_launch(f"( {pipelines.rtsp_media(settings)} )")
        self.factory.set_shared(True)  # one media, one encoder, for every viewer
        if settings.rtsp_tls:
            # Only inside the TLS connection: UDP would carry the video in clear text.
            self.factory.set_protocols(GstRtsp.RTSPLowerTrans.TCP)
        else:
            self.factory.set_protocols(GstRtsp.RTSPLowerTrans.UDP | GstRtsp.RTSPLowerTrans.TCP)
        access = make_auth(settings)  # raises AccessError
        if access is not None:
            self.auth, permissions = access
            self.factory.set_permissions(permissions)
            self.server.set_auth(self.auth)
        self.factory.connect("media-configure", self._on_media_configure)
        self.server.get_mount_points().add_factory(settings.rtsp_path, self.factory)
        self.server.connect("client-connected", self._on_client_connected)

        # Python must hold these: gst-rtsp-server objects dropped by Python crash the server.
        self.viewers: dict[GstRtspServer.RTSPClient, Viewer] = {}
        self.media: GstRtspServer.RTSPMedia | None = None
        self.encoder: Gst.Element | None = None
        self.medias_created = 0
        self.frames_sent = 0
        self._frames_lock = threading.Lock()
        self.viewers_seen = 0
        self.sessions_total = 0  # viewers that have played
        self._reported_at = float("-inf")  # monotonic
        self._report_scheduled = False
        self._pacer = KeyframePacer(FORCED_KEYFRAME_MIN_INTERVAL_S)
        self.bytes_sent = 0  # the encoded stream, counted where it is packetised
        self._sent = SentBytes()
        self.bitrate_changes = 0
        self.bitrate_reason: str | None = None
        self.law = BitrateLaw(
            minimum=settings.video_bitrate_min,
            maximum=settings.video_bitrate,
            bitrate=settings.video_bitrate,
            adaptive=settings.video_bitrate_mode == "adaptive",
        )
        # v4l2h264enc takes its bitrate only when it starts (encoders.runtime_bitrate).
        self.bitrate_changeable = (
            encoders.runtime_bitrate(self.encoder_kind, settings.video_bitrate) is not None
        )

    @property
    def playing(self) -> int:
        return sum(viewer.playing for viewer in self.viewers.values())

    def start(self) -> bool:
        if self.server.attach(None) == 0:
            problem = (
                f"cannot listen on RTSP port {self.settings.rtsp_port} at {self.settings.rtsp_bind} "
                "(in use, or not an address of this machine?)"
            )
            self.log.error("%s", problem)
            self._status.problem(problem)
            return False
        self.log.info(
            "serving %s://%s:%d%s (%s)",
            "rtsps" if self.settings.rtsp_tls else "rtsp",
            _url_host(self.settings.rtsp_bind),
            self.settings.rtsp_port,
            self.settings.rtsp_path,
            describe_access(self.settings),
        )
        self.log.info("encoder: %s", pipelines.describe_encoder(self.settings))
        if self.law.adaptive and not self.bitrate_changeable:
            self.law.adaptive = False
            self.log.warning(
                "VIDEO_BITRATE_MODE=adaptive: the %s encoder cannot change its bitrate while it plays; "
                "the stream keeps VIDEO_BITRATE=%d",
                self.encoder_kind,
                self.settings.video_bitrate,
            )
        elif self.law.adaptive:
            self.log.info(
                "bitrate: adaptive, %d to %d kbit/s, following the worst viewer's link",
                self.law.minimum // 1000,
                self.law.maximum // 1000,
            )
        self._status.ready()
        return True

    # --- media: one at a time, shared by every viewer

    def _on_media_configure(self, _factory: object, media: GstRtspServer.RTSPMedia) -> None:
        self.media = media
        self.medias_created += 1
        pipeline = media.get_element()
        self.encoder = pipeline.get_by_name(pipelines.STREAM_ENCODER_ELEMENT)
        if self.encoder is not None and self.law.bitrate != self.settings.video_bitrate:
            gst.set_bitrate(self.encoder, self.encoder_kind, self.law.bitrate)  # set while it was idle
        # Send each packet as soon as it is encoded. The media's sinks sync to the clock and
        # would otherwise hold every packet for the pipeline latency: the sinks' default 20 ms
        # processing deadline (shmsrc and zerolatency x264 add none). Frames carry their capture
        # time, already past when they arrive from shared memory, so once encoded they are due.
        top = pipeline.get_parent()
        if isinstance(top, Gst.Pipeline):
            top.set_latency(0)
        # The camera's frame times, not the arrival times, which wobble with the machine's load
        # (players and ffprobe would see a frame rate of hundreds after a starved moment).
        shm_input = pipeline.get_by_name(pipelines.SHM_INPUT_ELEMENT)
        if shm_input is not None:  # (bench.floor serves the camera's chain itself, no shared memory)
            gst.time_by_capture(shm_input, pipelines.shm_frame_bytes(self.settings), self.log)
        gst.add_buffer_probe(pipeline.get_by_name(pipelines.PAYLOADER_ELEMENT), "sink", self._on_frame)
        media.connect("handle-message", self._on_media_message)
        media.connect("unprepared", self._on_media_unprepared)
        self.log.info("stream started (encoder %d): one encoder for every viewer", self.medias_created)

    def _on_frame(self, buffer: Gst.Buffer) -> None:  # streaming thread
        with self._frames_lock:
            self.frames_sent += 1
            self.bytes_sent += buffer.get_size()

    def _on_media_message(self, media: GstRtspServer.RTSPMedia, message: Gst.Message) -> bool:
        if message.type == Gst.MessageType.ERROR:
            error, _debug = message.parse_error()
            self.log.warning(
                "stream failed (%s: %s): disconnecting viewers", message.src.get_name(), error.message
            )
            GLib.idle_add(self._drop_media, media)
        return False

    def _drop_media(self, media: GstRtspServer.RTSPMedia) -> bool:
        """Close every viewer of a failed media, so the next viewer gets a fresh pipeline."""
        for client in list(self.viewers):
            client.close()
        media.unprepare()
        return GLib.SOURCE_REMOVE

    def _on_media_unprepared(self, media: GstRtspServer.RTSPMedia) -> None:
        if media is self.media:
            self.media = None
            self.encoder = None
            self.log.info("stream stopped (no viewers)")

    # --- viewers

    def _on_client_connected(self, _server: object, client: GstRtspServer.RTSPClient) -> None:
        self.viewers_seen += 1
        viewer = Viewer(self.viewers_seen, client.get_connection().get_ip())
        self.viewers[client] = viewer
        client.connect("play-request", self._on_play_request)
        client.connect("closed", self._on_closed)
        self.log.debug("%s connected", viewer)  # INFO once it plays: strangers cannot flood the log

    def _on_play_request(self, client: GstRtspServer.RTSPClient, ctx: GstRtspServer.RTSPContext) -> None:
        viewer = self.viewers.get(client)
        if viewer is None or viewer.playing:
            return
        viewer.playing = True
        viewer.since = time.time()
        viewer.transport, rtcp_port = _lower_transport(ctx)
        viewer.rtcp_from = f"{viewer.address}:{rtcp_port}" if rtcp_port else None
        self.sessions_total += 1
        self.log.info(
            "%s playing over %s (%d watching)", viewer, TRANSPORT_LABELS[viewer.transport], self.playing
        )
        self._keyframe_for_new_viewer()
        self._report_soon()  # the API shows a new viewer within about a second

    def _on_closed(self, client: GstRtspServer.RTSPClient) -> None:
        viewer = self.viewers.pop(client, None)
        if viewer is not None:
            level = logging.INFO if viewer.playing else logging.DEBUG
            self.log.log(level, "%s disconnected (%d watching)", viewer, self.playing)
            if viewer.playing:
                self._report_soon()

    def _keyframe_for_new_viewer(self) -> None:
        delay = self._pacer.request()
        if delay is None:
            self.log.debug("keyframe already scheduled for new viewers")
        elif delay == 0:
            self._force_keyframe()
        else:
            GLib.timeout_add(max(1, round(delay * 1000)), self._force_keyframe)

    def _force_keyframe(self) -> bool:
        self._pacer.forced()
        if self.encoder is not None:
            gst.force_keyframe(self.encoder, self.encoder_kind)
            self.log.info("forced a keyframe for new viewers")
        return GLib.SOURCE_REMOVE

    def _report_soon(self) -> None:
        """Report now, or as soon as REPORT_SOON_INTERVAL_S has passed since the last report."""
        if self._report_scheduled:
            return
        self._report_scheduled = True
        delay_s = max(0.0, self._reported_at + REPORT_SOON_INTERVAL_S - time.monotonic())
        GLib.timeout_add(round(delay_s * 1000), self._scheduled_report)

    def _scheduled_report(self) -> bool:
        self._report_scheduled = False
        self.report()
        return GLib.SOURCE_REMOVE

    # --- the viewers' links and the bitrate

    def follow_links(self) -> bool:  # main loop, every TICK_S
        """Read every playing viewer's link; with the adaptive law, let the worst one (and the
        clean seconds) set the bitrate."""
        now = time.monotonic()
        with self._frames_lock:
            self._sent.add(now, self.bytes_sent)
        media = self.media
        reports = gst.receiver_reports(media) if media is not None else {}
        for client, viewer in list(self.viewers.items()):
            if not viewer.playing:
                continue
            congestion = None
            stats = reports.get(viewer.rtcp_from) if viewer.rtcp_from else None
            report = ReceiverReport.from_stats(stats) if stats else None
            if report is not None:
                outcome = viewer.link.report(report, now, self._sent)
                if isinstance(outcome, CleanReport):
                    self.law.clean(outcome)
                else:
                    congestion = outcome
            if viewer.transport == TCP:
                unsent = gst.unsent_bytes(client.get_connection())
                if unsent is not None:
                    congestion = viewer.link.queued(unsent, now, self.law.bitrate, self._sent) or congestion
            if congestion is not None:
                self._apply(self.law.congested(congestion, now))
        if any(viewer.playing for viewer in self.viewers.values()):
            self._apply(self.law.tick(now))
        return GLib.SOURCE_CONTINUE

    def _apply(self, change: BitrateChange | None) -> None:
        if change is None:
            return
        if self.encoder is not None:
            gst.set_bitrate(self.encoder, self.encoder_kind, change.bitrate)
        climbing = self.bitrate_reason is not None and self.bitrate_reason.startswith(CLIMB_REASON)
        self.bitrate_changes += 1
        self.bitrate_reason = change.reason
        # Every change is logged; a climb's steps (one a second) at INFO only when it starts and
        # when it reaches the ceiling, so hours over a varying link do not flood the log.
        steady_climb = (
            climbing and change.reason.startswith(CLIMB_REASON) and change.bitrate < self.law.ceiling
        )
        self.log.log(
            logging.DEBUG if steady_climb else logging.INFO,
            "bitrate %d → %d kbit/s: %s",
            change.previous // 1000,
            change.bitrate // 1000,
            change.reason,
        )

    def handle_command(self, request: dict[str, Any]) -> dict[str, Any]:  # the command thread
        """``commands.rtsp_socket_path``'s commands, run in the main loop (GStreamer's and the
        law's state are the main loop's)."""
        if request.get("command") != "bitrate":
            return {"ok": False, "error": f"unknown command {request.get('command')!r} (known: bitrate)"}
        unknown = sorted(set(request) - {"command", "bitrate"})
        if unknown:
            return {"ok": False, "error": f"unknown field {', '.join(map(repr, unknown))} (allowed: bitrate)"}
        bitrate = request.get("bitrate")
        if (
            not isinstance(bitrate, int)
            or isinstance(bitrate, bool)
            or not (self.law.minimum <= bitrate <= self.law.maximum)
        ):
            return {
                "ok": False,
                "reason": "out_of_range",
                "error": f"bitrate must be a whole number of bit/s from VIDEO_BITRATE_MIN={self.law.minimum} "
                f"to VIDEO_BITRATE={self.law.maximum}, not {bitrate!r}",
            }
        if not self.bitrate_changeable:
            return {
                "ok": False,
                "reason": "unsupported",
                "error": f"the {self.encoder_kind} encoder cannot change its bitrate while it plays "
                "(set VIDEO_BITRATE and restart)",
            }
        answer: dict[str, Any] = {}
        done = threading.Event()

        def in_main_loop() -> bool:
            self._apply(self.law.set_ceiling(bitrate))
            answer.update(self.bitrate_fields(), ok=True, applied=self.encoder is not None)
            self._report_soon()
            done.set()
            return GLib.SOURCE_REMOVE

        GLib.idle_add(in_main_loop)
        if not done.wait(COMMAND_WAIT_S):
            return {"ok": False, "reason": "busy", "error": "the RTSP worker is busy; try again"}
        return answer

    def bitrate_fields(self) -> dict[str, Any]:
        return {
            "bitrate": self.law.bitrate,
            "ceiling": self.law.ceiling,
            "mode": self.law.mode,
            "minimum": self.law.minimum,
            "maximum": self.law.maximum,
        }

    def report(self) -> bool:  # main loop, every PROGRESS_INTERVAL_S and when a viewer comes or goes
        # Idle without viewers: no frames are expected then (the media is not even running).
        self._reported_at = time.monotonic()
        playing = [viewer for viewer in self.viewers.values() if viewer.playing]
        self._status.progress(
            frames=self.frames_sent,
            idle=not playing,
            viewers=len(playing),
            clients=[viewer.as_client() for viewer in playing[:CLIENTS_REPORTED]],
            sessions_total=self.sessions_total,
            medias=self.medias_created,
            bitrate=self.law.bitrate,
            bitrate_mode=self.law.mode,
            bitrate_minimum=self.law.minimum,
            bitrate_maximum=self.law.maximum,
            bitrate_ceiling=self.law.ceiling,
            bitrate_changes=self.bitrate_changes,
            bitrate_reason=self.bitrate_reason,
        )
        return GLib.SOURCE_CONTINUE


def run(settings: Settings, status: StatusWriter, log: logging.Logger) -> int:
    try:
        server = StreamServer(settings, status, log)
    except AccessError as err:
        log.error("%s", err)
        return EXIT_CONFIG
    if not server.start():
        return EXIT_FAILURE
    try:
        commands_server = commands.CommandServer(
            commands.rtsp_socket_path(settings), server.handle_command, log
        )
    except OSError as err:
        problem = f"cannot listen on {commands.rtsp_socket_path(settings)}: {err.strerror or err}"
        log.error("%s", problem)
        status.problem(problem)
        return EXIT_FAILURE
    loop = GLib.MainLoop()
    gst.on_stop_signals(loop.quit, log)
    GLib.timeout_add(int(PROGRESS_INTERVAL_S * 1000), server.report)
    GLib.timeout_add(int(TICK_S * 1000), server.follow_links)
    commands_server.start()
    try:
        loop.run()
    finally:
        commands_server.close()
    for client in list(server.viewers):
        client.close()
    log.info("stopped; %d viewers connected in all", server.viewers_seen)
    return EXIT_OK
