"""The settings, each declared once: the fields of the frozen ``Settings`` dataclass.

Every field is made by ``setting(VARIABLE, default, parser, help)``: the environment variable,
its default as raw text (``$HOME`` stands for the user's home), the parser that validates it
(``parsers``) and its help in markdown. ``load`` walks the fields in order; README's settings
table is generated from them (``python -m streamer.config``). Settings made of several variables
(the RTSP credentials) are properties.
"""

# The help texts are README's, typography included (RUF001); `setting` returns a dataclasses.field
# (RUF009 only knows `field` itself).
# ruff: noqa: RUF001, RUF009

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from streamer.config import parsers

RTSP_AUTH_METHODS = ("digest", "basic")
RESTART_SCOPES = ("stack", "worker")
# The H.264 encoders (streamer.media.encoders.EncoderKind, which config may not import: a test
# keeps the two equal), and ENCODER's values. The software ones (no driver, no device), and the
# one ``auto`` falls back to, also after a hardware encoder stalled again and again (the
# controller's ``EncoderFallback``): tests keep these equal to the encoders' specs too.
ENCODER_KINDS = ("x264", "openh264", "v4l2", "nvv4l2", "va", "vaapi")
ENCODER_AUTO = "auto"
ENCODERS = (ENCODER_AUTO, *ENCODER_KINDS)
ENCODER_SOFTWARE = ("x264", "openh264")
ENCODER_FALLBACK = "x264"
RECORD_SOURCES = ("own", "stream")
BITRATE_MODES = ("fixed", "adaptive")
# What a V4L2 camera is asked for: ``auto`` takes MJPEG where the camera offers it at the mode,
# else raw YUYV (cheap cameras offer only raw at small sizes).
CAMERA_FORMATS = ("auto", "mjpeg", "yuyv")
# Workers report progress once a second: a stall limit spans at least two reports, so a report
# that comes a moment late is not taken for a stall.
STALL_MIN_S = 2.0
# Files and folders the stack creates are never writable by others, nor readable by the world
# (recordings, lock files): set by every worker and by the controller before anything is made.
PRIVATE_UMASK = 0o027
_KEY = "setting"


@dataclass(frozen=True)
class Declaration:
    """One setting: the variable that holds it, its default, its parser and its help."""

    variable: str
    default: str  # raw text, as it would be in the environment; "$HOME" is the user's home
    parse: Callable[[str], Any]  # raw text -> typed value, or ValueError saying what is allowed
    help: str  # markdown, README's "Meaning" column


def setting(
    variable: str, default: str, parse: Callable[[str], Any], help: str, *, secret: bool = False
) -> Any:
    """A ``Settings`` field read from ``variable`` (``Declaration``). A secret's value is left out
    of the repr."""
    return field(repr=not secret, metadata={_KEY: Declaration(variable, default, parse, help)})


@dataclass(frozen=True)
class Settings:
    """The whole configuration of the stack. Built by ``load``; never read from os.environ again."""

    ssd_path: Path = setting(
        "SSD_PATH",
        "$HOME/capture",
        parsers.ssd_path,
        "Absolute directory for recordings; created if missing, must be writable.",
    )
    enable_rtsp: bool = setting(
        "ENABLE_RTSP", "1", parsers.boolean, "Serve the live RTSP stream. Booleans: `1 0 true false yes no`."
    )
    enable_video: bool = setting("ENABLE_VIDEO", "1", parsers.boolean, "Record H.264 MP4 chunks.")
    enable_images: bool = setting("ENABLE_IMAGES", "1", parsers.boolean, "Record one JPEG per second.")
    camera: str = setting(
        "CAMERA",
        "/dev/video0",
        parsers.camera,
        "V4L2 device (`/dev/...`, e.g. `/dev/v4l/by-id/...`), `test` for the synthetic camera, or "
        "`test-stamped` for the synthetic camera with each frame's capture time in its pixels (for the "
        "latency probe, see `bench/`). See [Cameras](docs/cameras.md).",
    )
    camera_format: str = setting(
        "CAMERA_FORMAT",
        "auto",
        parsers.choice(CAMERA_FORMATS),
        "What the V4L2 camera sends at the mode: `auto` (MJPEG when it offers MJPEG at VIDEO_WIDTH x "
        "VIDEO_HEIGHT @ VIDEO_FPS, else raw YUYV; the choice is logged and `doctor` shows it), `mjpeg` "
        "or `yuyv`. Raw frames need no decoding but far more USB bandwidth: cameras offer them at small "
        "sizes or low rates only. The synthetic camera sends MJPEG, or YUYV when asked.",
    )
    camera_wait_s: float = setting(
        "CAMERA_WAIT_S",
        "10",
        parsers.seconds(0, 14),
        "V4L2 camera: how long a feeder started without its device node (unplugged) waits for it, "
        "looking every 0.1 s, before it fails and the controller retries after a pause; a replugged "
        "camera (by path, or by its `/dev/v4l/by-id/...` name) is opened as soon as it is back. 0–14 s "
        "(the controller gives a worker 15 s to be ready).",
    )
    camera_unplug_file: Path | None = setting(
        "CAMERA_UNPLUG_FILE",
        "",
        parsers.optional_file,
        "Synthetic camera only, for fault-injection tests: while this file exists the camera behaves as "
        "unplugged (the feeder fails to open it, or loses it within half a second).",
    )
    video_fps: int = setting(
        "VIDEO_FPS",
        "30",
        parsers.int_range(1, 120),
        "Frame rate, 1–120. The camera must offer exactly this rate and size (`CAMERA_FORMAT`).",
    )
    video_width: int = setting(
        "VIDEO_WIDTH", "1280", parsers.even_range(16, 7680), "Frame width, even, 16–7680."
    )
    video_height: int = setting(
        "VIDEO_HEIGHT", "720", parsers.even_range(16, 4320), "Frame height, even, 16–4320."
    )
    video_bitrate: int = setting(
        "VIDEO_BITRATE",
        "2000000",
        parsers.int_range(10_000, 100_000_000),
        "RTSP stream bitrate in bit/s, 10000–100000000; with `VIDEO_BITRATE_MODE=adaptive` the most "
        "the stream is given. Changeable while streaming (`POST /api/v1/stream`, see "
        "[Streaming](docs/streaming.md#bitrate)).",
    )
    video_bitrate_mode: str = setting(
        "VIDEO_BITRATE_MODE",
        "fixed",
        parsers.choice(BITRATE_MODES),
        "`fixed`: the stream keeps `VIDEO_BITRATE` (or what the API last set). `adaptive`: the RTSP "
        "worker follows the viewers' links, between `VIDEO_BITRATE_MIN` and `VIDEO_BITRATE`: it cuts the "
        "bitrate when a UDP viewer's receiver reports show loss, or a TCP viewer's video queues up "
        "unsent, and raises it again slowly while every link is clean. Also the recording's bitrate "
        "with `RECORD_SOURCE=stream`, and the published stream's.",
    )
    video_bitrate_min: int = setting(
        "VIDEO_BITRATE_MIN",
        "200000",
        parsers.int_range(10_000, 100_000_000),
        "The least bitrate, bit/s, that `VIDEO_BITRATE_MODE=adaptive` (or the API) may set; at most "
        "`VIDEO_BITRATE`.",
    )
    record_bitrate: int = setting(
        "RECORD_BITRATE",
        "4000000",
        parsers.int_range(10_000, 100_000_000),
        "Recorded video bitrate in bit/s (`RECORD_SOURCE=own`), 10000–100000000. 4 Mbit/s ≈ 1.8 GB per hour.",
    )
    encoder: str = setting(
        "ENCODER",
        "auto",
        parsers.choice(ENCODERS),
        "H.264 encoder of the stream and the recording: `auto` (the board's hardware encoder when it "
        "exists and passes a short self-test at start, else `x264`), `x264`, `openh264`, `v4l2` "
        "(`v4l2h264enc`: Raspberry Pi 4, other V4L2 M2M encoders), `nvv4l2` (`nvv4l2h264enc`: Jetson), "
        "`va` / `vaapi` (`vah264enc` / `vaapih264enc`: Intel, AMD). A requested encoder this machine "
        "lacks, or one that fails its self-test, stops the start (exit status 2) naming the ones it has. "
        "None of the hardware encoders has been run on real hardware yet: see [Encoders](docs/encoders.md).",
    )
    record_source: str = setting(
        "RECORD_SOURCE",
        "own",
        parsers.choice(RECORD_SOURCES),
        "`own`: the recorder encodes the frames itself (`RECORD_BITRATE`). `stream`: it records the "
        "stream encoder's output instead, one encode for both: the recording then has `VIDEO_BITRATE` and "
        "the stream's keyframes, and depends on the RTSP worker, whose encoder runs whether or not anyone "
        "watches; needs `ENABLE_RTSP=1`.",
    )
    record_min_free: tuple[int, float] = setting(
        "RECORD_MIN_FREE",
        "5%",
        parsers.free_space,
        "Free space to keep on SSD_PATH's file system: a percentage of the disk (`5%`) or a size (`2G`, "
        "`500M`). The oldest recordings are deleted to keep it (see "
        "[Retention](docs/recordings.md#retention)). `0` turns deleting for space off.",
    )
    record_max_age_s: float | None = setting(
        "RECORD_MAX_AGE",
        "",
        parsers.optional_duration,
        "Delete recordings older than this (`7d`, `12h`, `30m`, `90s`); empty keeps them until space is "
        "needed.",
    )
    record_require_mount: bool = setting(
        "RECORD_REQUIRE_MOUNT",
        "0",
        parsers.boolean,
        "`1`: record only when SSD_PATH lies on a file system other than the root one (the SSD is "
        "mounted); until then the recorder waits and the stream runs (see [What happens "
        "when…](docs/faults.md)).",
    )
    shm_recorder_socket: str = setting(
        "SHM_RECORDER_SOCKET",
        "/tmp/drone_cam_rec.sock",
        parsers.socket_path,
        "Shared-memory socket the recorder reads.",
    )
    shm_group: int | None = setting(
        "SHM_GROUP",
        "",
        parsers.group,
        "A group (name or id) that may read the shared-memory sockets and segments too (mode 640); empty: "
        "the stack's user only (mode 600).",
    )
    shm_stream_socket: str = setting(
        "SHM_STREAM_SOCKET",
        "/tmp/drone_cam_str.sock",
        parsers.socket_path,
        "Shared-memory socket the RTSP worker reads.",
    )
    rtsp_port: int = setting("RTSP_PORT", "8554", parsers.int_range(1, 65535), "RTSP server port.")
    rtsp_path: str = setting("RTSP_PATH", "/live", parsers.rtsp_path, "RTSP mount path.")
    rtsp_bind: str = setting(
        "RTSP_BIND",
        "0.0.0.0",
        parsers.bind_address,
        "Address the RTSP server listens on: an IPv4 or IPv6 address of this machine (`0.0.0.0` all IPv4, "
        "`::` all, `127.0.0.1` local only, or the radio interface's address). See [Access "
        "control](docs/access-control.md).",
    )
    rtsp_user: str = setting(
        "RTSP_USER",
        "",
        parsers.rtsp_user,
        "With `RTSP_PASSWORD`: the one user allowed to watch (letters, digits and `_ . @ + -`). Empty with "
        "no password file: no authentication.",
    )
    rtsp_password: str = setting(
        "RTSP_PASSWORD",
        "",
        parsers.password,
        "That user's password. Never logged, never shown in an error message.",
        secret=True,
    )
    rtsp_file_users: tuple[tuple[str, str], ...] = setting(
        "RTSP_PASSWORD_FILE",
        "",
        parsers.password_file,
        "Absolute path of a file of `user:password` lines, for several users (`#` comments and blank lines "
        "ignored; not writable by group or others).",
        secret=True,
    )
    rtsp_auth_method: str = setting(
        "RTSP_AUTH_METHOD",
        "digest",
        parsers.choice(RTSP_AUTH_METHODS),
        "`digest`, or `basic` (sends the password in the clear on plain RTSP: only with RTSPS, or for "
        "clients without digest).",
    )
    rtsp_tls_cert: Path | None = setting(
        "RTSP_TLS_CERT",
        "",
        parsers.tls_cert,
        "PEM certificate (chain); with `RTSP_TLS_KEY` the server speaks RTSPS (`rtsps://`, TCP only). Must "
        "exist and be readable.",
    )
    rtsp_tls_key: Path | None = setting(
        "RTSP_TLS_KEY",
        "",
        parsers.tls_key,
        "PEM private key of `RTSP_TLS_CERT`, unencrypted; checked at start to be that certificate's key.",
    )
    enable_http: bool = setting(
        "ENABLE_HTTP",
        "1",
        parsers.boolean,
        "Serve the HTTP API: `/health`, `/api/v1/...`, `/metrics`, recordings. See "
        "[Operations](docs/operations.md).",
    )
    http_port: int = setting("HTTP_PORT", "8080", parsers.int_range(1, 65535), "HTTP API port.")
    http_bind: str = setting(
        "HTTP_BIND",
        "0.0.0.0",
        parsers.bind_address,
        "Address the HTTP API listens on, as `RTSP_BIND`. It takes the RTSP credentials (all but `/health`) "
        "and, with `RTSP_TLS_CERT`/`RTSP_TLS_KEY`, serves HTTPS.",
    )
    mavlink_url: parsers.MavlinkEndpoint | None = setting(
        "MAVLINK_URL",
        "",
        parsers.mavlink_url,
        "Run the MAVLink camera component on this link: `udpout:HOST:PORT` (towards mavlink-router or the "
        "autopilot), `udpin:ADDRESS:PORT`, `tcp:HOST:PORT`, or a serial device `/dev/NAME[:BAUD]` (57600). "
        "Empty: none. See [MAVLink](docs/mavlink.md).",
    )
    mavlink_system_id: int | None = setting(
        "MAVLINK_SYSTEM_ID",
        "",
        parsers.optional_int_range(1, 255),
        "The component's MAVLink system id. Empty: the vehicle's, learnt from its heartbeat (1 until then).",
    )
    mavlink_component_id: int = setting(
        "MAVLINK_COMPONENT_ID",
        "100",
        parsers.int_range(1, 255),
        "The component's MAVLink component id (100 is `MAV_COMP_ID_CAMERA`; 101-105 for more cameras).",
    )
    mavlink_stream_host: str = setting(
        "MAVLINK_STREAM_HOST",
        "",
        parsers.optional_host,
        "The address (or name) ground stations reach the RTSP stream at, for the URI the component "
        "advertises. Empty: the address of the interface that reaches the MAVLink peer, or, when that "
        "is this machine, the one holding the default route.",
    )
    publish_urls: tuple[parsers.PublishDestination, ...] = setting(
        "PUBLISH_URL",
        "",
        parsers.publish_urls,
        "Publish the stream to media servers, up to 8, separated by spaces: "
        "`rtmp://HOST[:PORT]/APP/KEY` or `rtmps://…` (nginx-rtmp, cloud ingest), "
        "`srt://HOST:PORT[?streamid=…&latency=MS&passphrase=…]` (SRT caller, MPEG-TS), "
        "`rtsp://[USER:PASSWORD@]HOST:PORT/PATH` (RTSP RECORD over TCP, e.g. MediaMTX). The stream's own "
        "H.264, not encoded again; needs `ENABLE_RTSP=1`. Each destination reconnects by itself after 1, "
        "2, 4 … 30 s. Keys, passphrases, streamids and passwords are never logged or shown. Empty: none. "
        "See [Publishing](docs/publishing.md).",
    )
    log_level: str = setting("LOG_LEVEL", "INFO", parsers.log_level, "`DEBUG`, `INFO`, `WARNING` or `ERROR`.")
    restart_delay_min_s: float = setting(
        "RESTART_DELAY_MIN_S",
        "1",
        parsers.seconds(0.05, 600),
        "Pause before a restart after a lone failure, or the first of a crash loop, seconds.",
    )
    restart_delay_max_s: float = setting(
        "RESTART_DELAY_MAX_S",
        "30",
        parsers.seconds(0.05, 3600),
        "Cap of the pause, which doubles with each failure of a crash loop.",
    )
    restart_scope: str = setting(
        "RESTART_SCOPE",
        "stack",
        parsers.choice(RESTART_SCOPES),
        "`stack`: any failed worker restarts the whole stack. `worker`: a failed recorder or RTSP worker is"
        " restarted alone while the camera and the other path run on (the feeder's failure always restarts "
        "the stack), and an unplugged V4L2 camera restarts only the feeder's camera side, viewers and "
        "recording kept, while it comes back within `CAMERA_WAIT_S` ([Cameras](docs/cameras.md)).",
    )
    stop_grace_s: float = setting(
        "STOP_GRACE_S",
        "5",
        parsers.seconds(0.1, 120),
        "How long a worker gets after SIGTERM before SIGKILL, seconds.",
    )
    stall_feeder_s: float = setting(
        "STALL_FEEDER_S",
        "3",
        parsers.seconds(STALL_MIN_S, 600),
        "The feeder counts as stalled after this long without a frame from the camera, seconds (2 at "
        "least: workers report once a second).",
    )
    stall_recorder_s: float = setting(
        "STALL_RECORDER_S",
        "20",
        parsers.seconds(STALL_MIN_S, 600),
        "The recorder counts as stalled after this long without receiving a frame (a slow disk is allowed "
        "for), seconds (2 at least: workers report once a second).",
    )
    stall_rtsp_s: float = setting(
        "STALL_RTSP_S",
        "5",
        parsers.seconds(STALL_MIN_S, 600),
        "The RTSP worker counts as stalled after this long with viewers but nothing sent, seconds (2 at "
        "least: workers report once a second).",
    )

    @property
    def rtsp_credentials(self) -> tuple[tuple[str, str], ...]:
        """(user, password) pairs allowed to watch: RTSP_USER's, then the password file's. Empty:
        no authentication."""
        own = ((self.rtsp_user, self.rtsp_password),) if self.rtsp_user else ()
        return own + self.rtsp_file_users

    @property
    def recorded_bitrate(self) -> int:
        """The recorded video's bitrate, bit/s: RECORD_BITRATE, or VIDEO_BITRATE when the recording
        is the stream's (RECORD_SOURCE=stream)."""
        return self.video_bitrate if self.record_source == "stream" else self.record_bitrate

    @property
    def frame_bytes(self) -> int:
        """Size of one raw I420 frame (full-size luma plane plus two quarter-size chroma planes)."""
        return self.video_width * self.video_height * 3 // 2

    @property
    def shm_sockets(self) -> tuple[str, str]:
        return (self.shm_recorder_socket, self.shm_stream_socket)

    @property
    def rtsp_auth(self) -> bool:
        return bool(self.rtsp_credentials)

    @property
    def rtsp_tls(self) -> bool:
        return self.rtsp_tls_cert is not None

    @property
    def secrets(self) -> tuple[str, ...]:
        """Strings that must never be logged (``redact``): the RTSP passwords, and every secret of
        the publish destinations (stream keys, streamids, passphrases, passwords)."""
        passwords = tuple(password for _user, password in self.rtsp_credentials)
        return passwords + tuple(secret for d in self.publish_urls for secret in d.secrets)


def declarations() -> tuple[tuple[str, Declaration], ...]:
    """(field name, declaration) of every setting, in declaration order."""
    return tuple((f.name, f.metadata[_KEY]) for f in fields(Settings))
