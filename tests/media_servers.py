"""Real media servers on loopback for the publishing tests and bench, each started and stopped by
its user, nothing left behind; and the receivers that decode what reaches them.

- ``Nginx``: Debian's nginx with ``libnginx-mod-rtmp``, its own config, prefix and error log in a
  directory of the caller's, on a free port: ``application live { live on; }``. ``kill`` is a
  crash (SIGKILL of its process group), ``start`` again serves on the same port.
- ``Decoder``: a GStreamer source in this process whose H.264 is decoded
  (``avdec_h264 output-corrupt=false``): frames, their size, and, with the stamped camera, each
  frame's capture→decoded latency (``streamer.media.rtsp_client.StampReader``). Made as
  ``rtmp_viewer`` (``rtmp2src ! flvdemux``, an RTMP viewer of nginx), ``srt_listener``
  (``srtsrc mode=listener ! tsdemux``, the receiver an SRT caller publishes to) and
  ``srt_viewer`` (``srtsrc mode=caller``, a viewer of an SRT relay).
- ``SrtRelay``: ``srtsrc mode=listener ! srtsink mode=listener`` in a process of its own, a
  minimal SRT gateway (``gst-launch-1.0``): a publisher calls one port, viewers the other.
- ``RtspRecordReceiver``: gst-rtsp-server in this process with a RECORD mount (what
  ``rtspclientsink`` publishes to), decoding what it receives, optionally behind basic auth.
- ``CopyingViewers``: many RTMP viewers in one process of their own that only receive
  (``rtmp2src ! flvdemux ! fakesink``): what 50 players cost the server, not the drone.
- ``Publisher``: a plain GStreamer publisher (``videotestsrc ! x264enc ! <mux> ! <sink>``) in a
  process of its own, to prove the servers on their own, without the stack.

Every value that names a server (URL, port, passphrase, credentials) is set as an element
property from Python, never spliced into a launch line. No pytest here: ``bench.publish`` uses
these too.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path

from streamer.media.gst import GLib, Gst, GstRtsp, GstRtspServer
from streamer.media.rtsp_client import StampReader
from streamer.testing import ROOT, Proc, alive, free_port, port_open, wait_until

NGINX = "/usr/sbin/nginx"
RTMP_MODULE = "/usr/lib/nginx/modules/ngx_rtmp_module.so"
RTMP_APPLICATION = "live"
START_TIMEOUT_S = 15.0  # a loaded machine included
STOP_GRACE_S = 10.0
DAEMON_OFF = "daemon off;"  # in the foreground, so the test owns the master process

NGINX_CONFIG = """\
load_module {module};
master_process on;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log info;
events {{
    worker_connections 1024;
}}
rtmp {{
    server {{
        listen 127.0.0.1:{port};
        chunk_size 4096;
        application {application} {{
            live on;
            record off;
        }}
    }}
}}
"""


def stop_group(popen: subprocess.Popen, signum: int = signal.SIGTERM, grace_s: float = STOP_GRACE_S) -> None:
    """``signum`` to the process group ``popen`` leads, SIGKILL if it has not gone within
    ``grace_s``; the leader is reaped."""
    if popen.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(popen.pid, signum)
        with contextlib.suppress(subprocess.TimeoutExpired):
            popen.wait(grace_s)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(popen.pid, signal.SIGKILL)  # the leader's children too, whatever became of it
    popen.wait(grace_s)


def udp_ports_bound() -> set[int]:
    """Local UDP ports bound on this machine (IPv4), from /proc/net/udp."""
    ports = set()
    for line in Path("/proc/net/udp").read_text().splitlines()[1:]:
        local = line.split()[1]
        ports.add(int(local.rsplit(":", 1)[1], 16))
    return ports


def group_pids(leader: int) -> list[int]:
    """Live processes of the process group ``leader`` leads (nginx's master and its worker)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == leader and alive(int(entry.name)):  # field 5: the process group
            pids.append(int(entry.name))
    return sorted(pids)


class Nginx:
    """nginx-rtmp in its own session, its config, pid file and error log under ``directory``,
    listening on 127.0.0.1:``port`` (a free one by default). ``start`` again after ``kill`` or
    ``stop`` serves on the same port."""

    def __init__(self, directory: Path, port: int | None = None) -> None:
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.config = directory / "nginx.conf"
        self.config.write_text(
            NGINX_CONFIG.format(
                module=RTMP_MODULE, prefix=directory, port=self.port, application=RTMP_APPLICATION
            )
        )
        self.log = directory / "error.log"
        self.popen: subprocess.Popen | None = None
        self.starts = 0

    @staticmethod
    def available() -> str | None:
        """Why nginx-rtmp cannot run here, or None."""
        if not Path(NGINX).exists():
            return "Debian's nginx is not installed (apt-get install nginx-light)"
        if not Path(RTMP_MODULE).exists():
            return "the RTMP module is not installed (apt-get install libnginx-mod-rtmp)"
        return None

    def url(self, key: str) -> str:
        return f"rtmp://127.0.0.1:{self.port}/{RTMP_APPLICATION}/{key}"

    def start(self) -> Nginx:
        """Start it and wait until it listens."""
        assert self.popen is None or self.popen.poll() is not None, "nginx is running already"
        self.starts += 1
        with open(self.directory / "stdout.log", "a") as out:
            self.popen = subprocess.Popen(
                # -e: the error log of the start-up itself (before the config is read) is ours too
                [
                    NGINX,
                    "-p",
                    f"{self.directory}/",
                    "-e",
                    str(self.log),
                    "-c",
                    str(self.config),
                    "-g",
                    DAEMON_OFF,
                ],
                cwd=self.directory,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            wait_until(self._listening, START_TIMEOUT_S, f"nginx to listen on port {self.port}")
        except BaseException:
            self.stop()
            raise
        return self

    def _listening(self) -> bool:
        assert self.popen is not None
        if self.popen.poll() is not None:
            raise AssertionError(f"nginx exited ({self.popen.returncode}):\n{self.output()}")
        return port_open(self.port)

    @property
    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def pids(self) -> list[int]:
        """The master and its worker."""
        return group_pids(self.popen.pid) if self.running and self.popen else []

    def kill(self) -> None:
        """A crash: SIGKILL to the master and its worker at once; every connection drops."""
        if self.popen is not None:
            stop_group(self.popen, signal.SIGKILL)
        wait_until(lambda: not port_open(self.port), 10, f"port {self.port} to close")

    def stop(self) -> None:
        """SIGTERM (nginx's fast shutdown), SIGKILL after a grace period."""
        if self.popen is not None:
            stop_group(self.popen)

    def output(self) -> str:
        parts = [
            p.read_text(errors="replace") for p in (self.directory / "stdout.log", self.log) if p.exists()
        ]
        return "\n".join(parts)


# --- receivers decoding in this process


class Decoder:
    """``<source> ! <demux> ! h264parse ! avdec_h264 ! fakesink`` in this process, counting decoded
    frames (``frame_times``, monotonic), their ``size`` and, with ``read_stamps``, each frame's
    capture→decoded latency (``samples``: (seconds since start, ms)). ``properties`` are set on the
    source (named ``src``) from Python. ``first_frame_s``: ``start()`` → the first decoded frame."""

    def __init__(
        self,
        source: str,
        demux: str,
        properties: Mapping[str, object],
        *,
        read_stamps: bool = False,
        decoding: bool = True,
        name: str = "",
    ) -> None:
        self.name = name or source
        self.port: int | None = None  # a listener's
        # False: access units are dropped before the decoder (a receiver kept connected, e.g. an
        # SRT listener its caller must find, without decoding while something else is measured).
        # Decoding resumes cleanly at the next keyframe (output-corrupt=false).
        self.decoding = decoding
        self.pipeline = Gst.parse_launch(
            f"{source} name=src ! {demux} ! h264parse ! avdec_h264 name=decoder output-corrupt=false "
            "! fakesink sync=false async=false"
        )
        self.source = self.pipeline.get_by_name("src")
        for key, value in properties.items():
            if isinstance(value, str):
                Gst.util_set_object_arg(self.source, key, value)  # enums by their nick, e.g. mode
            else:
                self.source.set_property(key, value)
        self.read_stamps = read_stamps
        self.started_at = 0.0
        self.frame_times: list[float] = []
        self.samples: list[tuple[float, float]] = []
        self.stamps_failed = 0
        self.size: tuple[int, int] | None = None
        self.errors: list[str] = []
        self.eos = False
        self._stamps = StampReader()
        self._changed = threading.Condition()
        decoder = self.pipeline.get_by_name("decoder")
        decoder.get_static_pad("src").add_probe(Gst.PadProbeType.BUFFER, self._on_frame)
        decoder.get_static_pad("sink").add_probe(Gst.PadProbeType.BUFFER, self._on_access_unit)
        bus = self.pipeline.get_bus()
        bus.enable_sync_message_emission()
        bus.connect("sync-message::error", self._on_error)
        bus.connect("sync-message::eos", self._on_eos)

    def start(self) -> Decoder:
        self.started_at = time.monotonic()
        if self.pipeline.set_state(Gst.State.PLAYING) == Gst.StateChangeReturn.FAILURE:
            self.errors.append(f"{self.name}: cannot start")
        return self

    def stop(self) -> None:
        self.pipeline.set_state(Gst.State.NULL)

    @property
    def frames(self) -> int:
        return len(self.frame_times)

    @property
    def first_frame_s(self) -> float | None:
        times = self.frame_times
        return times[0] - self.started_at if times else None

    def frames_since(self, moment: float) -> int:
        return sum(1 for t in list(self.frame_times) if t >= moment)

    def latencies_ms(self, after_s: float = 0.0) -> list[float]:
        with self._changed:
            return [ms for at, ms in self.samples if at >= after_s]

    def wait_frames(self, count: int, timeout: float) -> bool:
        """Wait until ``count`` frames have been decoded; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while self.frames < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(left)
            return True

    def report(self) -> dict[str, object]:
        return {
            "name": self.name,
            "frames": self.frames,
            "size": self.size,
            "first_frame_s": self.first_frame_s,
            "stamps_read": len(self.samples),
            "stamps_failed": self.stamps_failed,
            "errors": list(self.errors),
            "eos": self.eos,
        }

    def _on_access_unit(self, _pad: Gst.Pad, _info: Gst.PadProbeInfo) -> Gst.PadProbeReturn:
        return Gst.PadProbeReturn.OK if self.decoding else Gst.PadProbeReturn.DROP

    def _on_frame(self, pad: Gst.Pad, info: Gst.PadProbeInfo) -> Gst.PadProbeReturn:
        decoded_wall, decoded_mono = time.time(), time.monotonic()
        buffer = info.get_buffer()
        age = self._stamps.age_ms(pad, buffer, decoded_wall) if self.read_stamps else None
        size = None
        if self.size is None and (caps := pad.get_current_caps()) is not None:
            structure = caps.get_structure(0)
            size = (structure.get_value("width"), structure.get_value("height"))
        with self._changed:
            self.frame_times.append(decoded_mono)
            if size is not None:
                self.size = size
            if age is not None:
                self.samples.append((decoded_mono - self.started_at, age))
            elif self.read_stamps:
                self.stamps_failed += 1
            self._changed.notify_all()
        return Gst.PadProbeReturn.OK

    def _on_error(self, _bus: Gst.Bus, message: Gst.Message) -> None:
        with self._changed:
            self.errors.append(f"{message.src.get_name()}: {message.parse_error()[0].message}")
            self._changed.notify_all()

    def _on_eos(self, _bus: Gst.Bus, _message: Gst.Message) -> None:
        self.eos = True


def rtmp_viewer(url: str, *, read_stamps: bool = False) -> Decoder:
    """An RTMP viewer (e.g. of nginx): ``rtmp2src ! flvdemux``, decoding."""
    return Decoder("rtmp2src", "flvdemux", {"location": url}, read_stamps=read_stamps, name=f"rtmp {url}")


def _srt_properties(
    mode: str, port: int, latency_ms: int | None, passphrase: str | None
) -> dict[str, object]:
    if mode == "caller":
        properties: dict[str, object] = {"mode": mode, "uri": f"srt://127.0.0.1:{port}"}
    else:
        # keep-listening: a caller that goes and comes back (a publisher reconnecting) is taken
        # again, without an end of stream in between.
        properties = {"mode": mode, "localaddress": "127.0.0.1", "localport": port, "keep-listening": True}
    if latency_ms is not None:
        properties["latency"] = latency_ms
    if passphrase is not None:
        properties["passphrase"] = passphrase
    return properties


def srt_listener(
    port: int | None = None,
    *,
    latency_ms: int | None = None,
    passphrase: str | None = None,
    read_stamps: bool = False,
    decoding: bool = True,
) -> Decoder:
    """The receiver an SRT caller publishes to: ``srtsrc mode=listener`` on 127.0.0.1:``port`` (a
    free one by default; ``.port`` on the result) ``! tsdemux``, decoding. ``latency_ms``: SRT's
    receive latency (srtsrc's default, 125 ms, if None); the larger of both ends' applies.
    (A stream id is not checked: srtsrc 1.22 never emits ``caller-connecting``, the one signal
    that would show it.)"""
    port = port or free_port()
    receiver = Decoder(
        "srtsrc",
        "tsdemux",
        _srt_properties("listener", port, latency_ms, passphrase),
        read_stamps=read_stamps,
        decoding=decoding,
        name=f"srt listener :{port}",
    )
    receiver.port = port
    return receiver


def srt_viewer(port: int, *, latency_ms: int | None = None, read_stamps: bool = False) -> Decoder:
    """A viewer of an SRT relay: ``srtsrc mode=caller`` to 127.0.0.1:``port``, decoding."""
    return Decoder(
        "srtsrc",
        "tsdemux",
        _srt_properties("caller", port, latency_ms, None),
        read_stamps=read_stamps,
        name=f"srt viewer :{port}",
    )


def probe_stream(url: str, timeout_s: float = 10.0) -> tuple[str, int, int] | None:
    """FFmpeg's view of a live stream (e.g. ``rtmp://…``): (codec, width, height) of its first
    video stream, or None when it cannot be read. Probing stops at the first packets
    (``probesize`` 32): an RTMP viewer then needs only the stream's header and its next
    keyframe."""
    try:
        result = subprocess.run(
            [
                *("ffprobe", "-v", "error", "-rw_timeout", str(int(timeout_s * 1_000_000))),
                *("-probesize", "32", "-analyzeduration", "0", "-select_streams", "v:0"),
                *("-show_entries", "stream=codec_name,width,height", "-of", "csv=p=0", url),
            ],
            capture_output=True,
            text=True,
            timeout=timeout_s + 5,
        )
    except subprocess.TimeoutExpired:
        return None
    fields = result.stdout.strip().split(",")
    if result.returncode != 0 or len(fields) != 3 or not fields[1].isdigit():
        return None
    return fields[0], int(fields[1]), int(fields[2])


# --- processes of their own


class SrtRelay:
    """A minimal SRT gateway in a process of its own (``gst-launch-1.0``): a publisher calls
    ``in_port``, viewers call ``out_port`` (several at once, ``srtsink mode=listener``). The ports
    are numbers from ``free_port``, the only values in its launch line."""

    def __init__(self, directory: Path, latency_ms: int | None = None) -> None:
        self.in_port, self.out_port = free_port(), free_port()
        latency = [f"latency={int(latency_ms)}"] if latency_ms is not None else []
        source = ["srtsrc", "mode=listener", "localaddress=127.0.0.1", f"localport={self.in_port}"]
        sink = ["srtsink", "mode=listener", "localaddress=127.0.0.1", f"localport={self.out_port}"]
        self.log = directory / f"srt-relay-{self.in_port}.log"
        with open(self.log, "w") as out:
            self.popen = subprocess.Popen(
                [
                    *("gst-launch-1.0", "-q"),
                    *source,
                    *latency,
                    "keep-listening=true",
                    *("!", "queue", "!"),
                    *sink,
                    *latency,
                    "wait-for-connection=false",
                    "sync=false",
                ],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_until(self._bound, START_TIMEOUT_S, "the SRT relay to listen")

    def _bound(self) -> bool:
        """Both UDP ports are bound (by the relay: they were free)."""
        if self.popen.poll() is not None:
            raise AssertionError(f"the SRT relay exited ({self.popen.returncode}):\n{self.output()}")
        return {self.in_port, self.out_port} <= udp_ports_bound()

    def pids(self) -> list[int]:
        return group_pids(self.popen.pid) if self.popen.poll() is None else []

    def stop(self) -> None:
        stop_group(self.popen, signal.SIGINT)

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def run_copying_viewers(url: str, count: int) -> None:
    """The body of ``CopyingViewers``' process (``python -m tests.media_servers viewers URL N``):
    ``count`` RTMP viewers of ``url``, each ``rtmp2src ! flvdemux ! fakesink`` (received and
    demuxed, not decoded: what a server does per viewer does not depend on what the viewer does
    with the stream). Prints each viewer's video frames so far once a second, as one line of
    numbers, until SIGTERM."""
    counts = [0] * count
    pipelines = []

    def counter(index: int):
        def count_frame(_pad: Gst.Pad, _info: Gst.PadProbeInfo) -> Gst.PadProbeReturn:
            counts[index] += 1
            return Gst.PadProbeReturn.OK

        return count_frame

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    for index in range(count):
        pipeline = Gst.parse_launch(
            "rtmp2src name=src ! flvdemux name=demux demux.video ! fakesink name=sink sync=false async=false"
        )
        pipeline.get_by_name("src").set_property("location", url)
        sink_pad = pipeline.get_by_name("sink").get_static_pad("sink")
        sink_pad.add_probe(Gst.PadProbeType.BUFFER, counter(index))
        pipeline.set_state(Gst.State.PLAYING)
        pipelines.append(pipeline)
    while not stop.wait(1):
        print(" ".join(map(str, counts)), flush=True)
    for pipeline in pipelines:
        pipeline.set_state(Gst.State.NULL)
    print(" ".join(map(str, counts)), flush=True)


class CopyingViewers:
    """``count`` RTMP viewers of ``url`` in one process of their own (``rtmp2src ! flvdemux !
    fakesink`` each: received and demuxed, not decoded). ``counts()``: video frames per viewer."""

    def __init__(self, url: str, count: int) -> None:
        self.count = count
        self.lines: list[str] = []
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "tests.media_servers", "viewers", url, str(count)],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            self.lines.append(line.rstrip("\n"))

    def next_counts(self, timeout: float = 10.0) -> list[int]:
        """The counts of the next line the viewers print (at most a second from now): fresh, so
        that two readings a window apart span the window."""
        seen = len(self.lines)
        wait_until(lambda: len(self.lines) > seen and self.counts(), timeout, "the viewers' next counts")
        counts = self.counts()
        assert counts is not None
        return counts

    def counts(self) -> list[int] | None:
        for line in reversed(self.lines):
            numbers = line.split()
            if len(numbers) == self.count and all(n.isdigit() for n in numbers):
                return [int(n) for n in numbers]
        return None

    def pids(self) -> list[int]:
        return [self.popen.pid] if self.popen.poll() is None else []

    def stop(self) -> list[int] | None:
        """Stop them; each viewer's video frames in total."""
        stop_group(self.popen)
        self._reader.join(5)
        return self.counts()


# --- gst-rtsp-server RECORD mount in this process


class RtspRecordReceiver:
    """gst-rtsp-server in this process, on 127.0.0.1:``port`` (free by default), with a RECORD mount
    at ``path`` that depayloads and decodes what a publisher (``rtspclientsink``) sends. With
    ``user``/``password``, basic auth: only they may publish. Runs its own GLib main context in a
    thread. ``decoder``: the latest publisher's frames (a ``Decoder``-like count: ``frames``,
    ``size``, ``wait_frames``); ``sessions``: publishers seen."""

    def __init__(
        self,
        port: int | None = None,
        path: str = "/publish",
        user: str | None = None,
        password: str | None = None,
    ) -> None:
        self.port = port or free_port()
        self.path = path
        self.frame_times: list[float] = []
        self.size: tuple[int, int] | None = None
        self.sessions = 0
        self.announces = 0
        self._changed = threading.Condition()
        self._medias: list[GstRtspServer.RTSPMedia] = []  # referenced: Python must keep them alive
        self._context = GLib.MainContext()
        self._loop = GLib.MainLoop(self._context)
        self.server = GstRtspServer.RTSPServer()
        self.server.set_address("127.0.0.1")
        self.server.set_service(str(self.port))
        self.factory = GstRtspServer.RTSPMediaFactory()
        self.factory.set_transport_mode(GstRtspServer.RTSPTransportMode.RECORD)
        self.factory.set_launch(
            "( rtph264depay name=depay0 ! h264parse ! avdec_h264 name=decoder output-corrupt=false "
            "! fakesink sync=false async=false )"
        )
        self.factory.set_protocols(GstRtsp.RTSPLowerTrans.TCP)
        self.factory.connect("media-configure", self._on_media_configure)
        if user is not None and password is not None:
            auth = GstRtspServer.RTSPAuth()
            anonymous, publisher = GstRtspServer.RTSPToken(), GstRtspServer.RTSPToken()
            anonymous.set_string(GstRtspServer.RTSP_TOKEN_MEDIA_FACTORY_ROLE, "anonymous")
            publisher.set_string(GstRtspServer.RTSP_TOKEN_MEDIA_FACTORY_ROLE, "publisher")
            auth.set_default_token(anonymous)
            auth.set_supported_methods(GstRtsp.RTSPAuthMethod.BASIC)
            auth.add_basic(GstRtspServer.RTSPAuth.make_basic(user, password), publisher)
            permissions = GstRtspServer.RTSPPermissions()
            for role, allowed in (("publisher", True), ("anonymous", False)):
                permissions.add_permission_for_role(role, GstRtspServer.RTSP_PERM_MEDIA_FACTORY_ACCESS, True)
                permissions.add_permission_for_role(
                    role, GstRtspServer.RTSP_PERM_MEDIA_FACTORY_CONSTRUCT, allowed
                )
            self.factory.set_permissions(permissions)
            self.server.set_auth(auth)
            self._auth = auth
        self.server.get_mount_points().add_factory(path, self.factory)
        self.server.connect("client-connected", self._on_client)
        self._source_id: int | None = None
        self._thread = threading.Thread(target=self._loop.run, name="rtsp-record", daemon=True)

    def url(self, credentials: str = "") -> str:
        return f"rtsp://{credentials}127.0.0.1:{self.port}{self.path}"

    def start(self) -> RtspRecordReceiver:
        self._source_id = self.server.attach(self._context)
        self._thread.start()
        wait_until(lambda: port_open(self.port), START_TIMEOUT_S, f"the RTSP RECORD server on {self.port}")
        return self

    def _on_client(self, _server: GstRtspServer.RTSPServer, client: GstRtspServer.RTSPClient) -> None:
        client.connect("announce-request", self._on_announce)

    def _on_announce(self, _client: GstRtspServer.RTSPClient, _context: object) -> None:
        with self._changed:
            self.announces += 1

    def _on_media_configure(self, _factory: object, media: GstRtspServer.RTSPMedia) -> None:
        self._medias.append(media)
        with self._changed:
            self.sessions += 1
        decoder = media.get_element().get_by_name("decoder")
        decoder.get_static_pad("src").add_probe(Gst.PadProbeType.BUFFER, self._on_frame)

    def _on_frame(self, pad: Gst.Pad, _info: Gst.PadProbeInfo) -> Gst.PadProbeReturn:
        size = None
        if self.size is None and (caps := pad.get_current_caps()) is not None:
            structure = caps.get_structure(0)
            size = (structure.get_value("width"), structure.get_value("height"))
        with self._changed:
            self.frame_times.append(time.monotonic())
            if size is not None:
                self.size = size
            self._changed.notify_all()
        return Gst.PadProbeReturn.OK

    @property
    def frames(self) -> int:
        return len(self.frame_times)

    def frames_since(self, moment: float) -> int:
        return sum(1 for t in list(self.frame_times) if t >= moment)

    def wait_frames(self, count: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._changed:
            while self.frames < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(left)
            return True

    def report(self) -> dict[str, object]:
        return {
            "url": self.url(),
            "frames": self.frames,
            "size": self.size,
            "sessions": self.sessions,
            "announces": self.announces,
        }

    def stop(self) -> None:
        """Close every connection, free the medias, stop the main loop."""
        done = threading.Event()

        def close(*_args: object) -> bool:
            self.server.client_filter(lambda _server, _client: GstRtspServer.RTSPFilterResult.REMOVE)
            pool = self.server.get_session_pool()
            pool.filter(lambda _pool, _session: GstRtspServer.RTSPFilterResult.REMOVE)
            done.set()
            return GLib.SOURCE_REMOVE

        if self._thread.is_alive():
            source = GLib.idle_source_new()
            source.set_callback(close)
            source.attach(self._context)
            done.wait(10)
            self._loop.quit()
            self._thread.join(10)
        if self._source_id is not None:
            attached = self._context.find_source_by_id(self._source_id)
            if attached is not None:
                attached.destroy()
            self._source_id = None
        for media in self._medias:
            media.unprepare()
        self._medias.clear()


# --- a plain publisher, to prove the servers without the stack

PUBLISHER_HEAD = (
    "videotestsrc is-live=true pattern=ball ! video/x-raw,width={width},height={height},framerate={fps}/1 "
    "! x264enc tune=zerolatency speed-preset=ultrafast bitrate=500 key-int-max={fps} "
    # byte-stream: x264 repeats SPS/PPS before every keyframe, as the stack's stream does
    "! video/x-h264,stream-format=byte-stream ! h264parse "
)
PUBLISHER_TAILS = {
    "rtmp": "! flvmux streamable=true ! rtmp2sink name=sink",
    "srt": "! mpegtsmux alignment=7 ! srtsink name=sink mode=caller",  # 7 TS packets: one SRT payload
    "rtsp": "! rtspclientsink name=sink protocols=tcp",
}


class Publisher:
    """``videotestsrc ! x264enc ! h264parse ! <mux> ! <sink>``, ``kind`` one of rtmp, srt,
    rtsp, with ``properties`` of the sink (e.g. location, uri, passphrase) set from Python, in a
    process of its own (``python -m tests.media_servers publish``): in this process, stopping an
    ``rtspclientsink`` whose RTSP server ran in this process too once hung ``set_state(NULL)``
    for good (a loaded CI run); a child that does not stop is killed. The sink's errors, as the
    child reports them, are in ``errors``."""

    def __init__(
        self, kind: str, properties: Mapping[str, object], width: int = 320, height: int = 240, fps: int = 30
    ) -> None:
        if kind not in PUBLISHER_TAILS:
            raise ValueError(f"no such publisher: {kind!r}")
        self._args = [PUBLISH_COMMAND, kind, str(width), str(height), str(fps), json.dumps(dict(properties))]
        self._proc: Proc | None = None

    @property
    def errors(self) -> list[str]:
        if self._proc is None:
            return []
        return [match.group(1) for match in self._proc.matches(rf"^{PUBLISH_ERROR}(.*)$")]

    def start(self) -> Publisher:
        environment = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self._proc = Proc("tests.media_servers", environment, self._args)
        self._proc.wait_for(rf"^{PUBLISH_PLAYING}$|^{PUBLISH_ERROR}", 20)
        return self

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.stop(PUBLISHER_STOP_S)


PUBLISH_COMMAND = "publish"
PUBLISH_PLAYING = "publisher: playing"
PUBLISH_ERROR = "publisher error: "
PUBLISHER_STOP_S = 5.0


def run_publisher(kind: str, width: int, height: int, fps: int, properties: Mapping[str, object]) -> None:
    """The child of ``Publisher``: publish until SIGTERM, printing each error of the pipeline."""
    description = PUBLISHER_HEAD.format(width=width, height=height, fps=fps) + PUBLISHER_TAILS[kind]
    pipeline = Gst.parse_launch(description)
    sink = pipeline.get_by_name("sink")
    for key, value in properties.items():
        if isinstance(value, str):
            Gst.util_set_object_arg(sink, key, value)
        else:
            sink.set_property(key, value)
    loop = GLib.MainLoop()

    def on_message(_bus: Gst.Bus, message: Gst.Message) -> None:
        if message.type == Gst.MessageType.ERROR:
            print(f"{PUBLISH_ERROR}{message.src.get_name()}: {message.parse_error()[0].message}", flush=True)

    def on_stop() -> bool:
        loop.quit()
        return GLib.SOURCE_REMOVE

    bus = pipeline.get_bus()
    bus.add_signal_watch()
    bus.connect("message", on_message)
    GLib.unix_signal_add(GLib.PRIORITY_HIGH, signal.SIGTERM, on_stop)
    pipeline.set_state(Gst.State.PLAYING)
    print(PUBLISH_PLAYING, flush=True)
    loop.run()
    pipeline.set_state(Gst.State.NULL)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "viewers":
        run_copying_viewers(sys.argv[2], int(sys.argv[3]))
    elif len(sys.argv) == 7 and sys.argv[1] == PUBLISH_COMMAND:
        kind, width, height, fps, properties = sys.argv[2:]
        run_publisher(kind, int(width), int(height), int(fps), json.loads(properties))
    else:
        sys.exit(
            "usage: python -m tests.media_servers viewers URL COUNT\n"
            "       python -m tests.media_servers publish KIND WIDTH HEIGHT FPS PROPERTIES_JSON"
        )
