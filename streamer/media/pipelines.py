"""GStreamer launch descriptions: pure functions of the frozen Settings, no GStreamer import.

Every value spliced in here was validated by ``streamer.config`` to a character set that cannot
alter a pipeline's structure; paths are additionally quoted.
"""

from __future__ import annotations

from streamer.config import Settings
from streamer.config.parsers import PublishDestination
from streamer.media import camera, capture_time, encoders
from streamer.media.camera import raw_caps
from streamer.media.encoders import EncoderKind, Purpose
from streamer.storage import layout

# The shared-memory area must hold every frame a reader may still reference: a queue plus an
# encoder's look-ahead. Too small an area starves the reader at 0 fps (see field notes).
SHM_AREA_FRAMES = 32

# Frames a feeder branch may buffer in front of a slow reader before it drops the oldest one.
SHM_BRANCH_QUEUE_FRAMES = 2

# Recorder: chunk length, and how much of an open chunk a crash can lose (fragment length).
RECORD_CHUNK_S = 5.5
RECORD_FRAGMENT_MS = 500
# Encoded video the recorder may buffer while the disk is slow, before its raw input leaks.
RECORD_WRITE_BUFFER_NS = 3_000_000_000
# Raw frames the recorder's encoder branch buffers in front of its encoder (taken from the shm
# area).
RECORD_RAW_QUEUE_FRAMES = 6

# RTSP: the stream's keyframe interval, and the frames queued in front of its encoder (one:
# a late frame is dropped rather than delayed).
STREAM_KEYFRAME_INTERVAL_S = 1
STREAM_QUEUE_FRAMES = 1
RTP_PAYLOAD_TYPE = 96

# Element names the workers look up by name.
CAMERA_OUT_ELEMENT = "camera_out"
STAMPED_FRAMES_ELEMENT = "stamped_frames"
TEE_ELEMENT = "split"
# The feeder's branches, by the consumer they feed: each is a leaky queue ``<name>_queue`` in
# front of the shmsink ``<name>``.
FEEDER_BRANCHES = {"recorder": "to_recorder", "stream": "to_stream"}
SHM_INPUT_ELEMENT = "shm_input"
RECORDER_TEE_ELEMENT = "record"
VIDEO_QUEUE_ELEMENT = "video_queue"
IMAGE_QUEUE_ELEMENT = "image_queue"
VIDEO_ENCODER_ELEMENT = "video_encoder"
VIDEO_SINK_ELEMENT = "video_chunks"
RECORD_STREAM_SOURCE_ELEMENT = "record_stream"  # RECORD_SOURCE=stream: our RTSP stream, recorded
RECORD_STREAM_DEPAY_ELEMENT = "record_depay"
STREAM_QUEUE_ELEMENT = "stream_queue"
STREAM_ENCODER_ELEMENT = "stream_encoder"
PAYLOADER_ELEMENT = "pay0"  # the name gst-rtsp-server looks for
IMAGE_SINK_ELEMENT = "snapshots"
FRAME_QUEUE_ELEMENT = "frame_queue"
FRAME_SINK_ELEMENT = "latest_frame"


# The oldest GStreamer the stack runs on (doctor checks it): what a description assumes when it
# is not told the version the worker runs (``recorder``'s ``gst_version``).
OLDEST_GSTREAMER = (1, 22)


def encoder_kind(s: Settings) -> EncoderKind:
    """The H.264 encoder of the stream and the recording. Under the controller, ENCODER is
    always a kind: the controller runs the encoder check before the stack starts and gives the
    workers its choice (``ENCODER=<kind>`` in their environment), so ``auto`` never reaches a
    pipeline there. A worker run on its own with ``ENCODER=auto``, and a description built
    from the bare settings (tests, bench), get x264, the fallback, as before encoders could be
    chosen; ``python -m streamer.media.encoder_check`` says what ``auto`` would pick."""
    return encoders.FALLBACK if s.encoder == encoders.AUTO else EncoderKind(s.encoder)


def describe_encoder(s: Settings) -> str:
    """``encoder_kind`` for a worker's log: ``x264``, or ``x264 (ENCODER=auto outside the
    controller: the fallback)``."""
    kind = encoder_kind(s)
    return (
        f"{kind} (ENCODER=auto outside the controller: the fallback)" if s.encoder == encoders.AUTO else kind
    )


def shm_frame_bytes(s: Settings) -> int:
    """A frame as it lies in shared memory: the raw frame, then its capture time."""
    return s.frame_bytes + capture_time.TRAILER_BYTES


def shm_area_bytes(s: Settings) -> int:
    return shm_frame_bytes(s) * SHM_AREA_FRAMES


def _leaky_queue(name: str, frames: int) -> str:
    return f"queue name={name} leaky=downstream max-size-buffers={frames} max-size-bytes=0 max-size-time=0"


def branch_queue(branch: str) -> str:
    """The name of the leaky queue of a feeder branch (``FEEDER_BRANCHES``)."""
    return f"{FEEDER_BRANCHES[branch]}_queue"


def _shm_branch(s: Settings, socket_path: str, name: str) -> str:
    # The leaky queue is what keeps a slow or stopped reader from stalling the tee: shmsink
    # blocks when its area is full, the queue then drops the oldest frame instead of backing up.
    # ``perms``: the socket and the /dev/shm segment for the stack's own user only (shmsink's
    # default, 0640, would let the files' group read every frame), or also for SHM_GROUP (the
    # feeder gives the files that group once they exist).
    perms = 0o640 if s.shm_group is not None else 0o600
    return (
        f"{_leaky_queue(f'{name}_queue', SHM_BRANCH_QUEUE_FRAMES)} "
        f'! shmsink name={name} socket-path="{socket_path}" shm-size={shm_area_bytes(s)} '
        f"perms={perms} wait-for-connection=false sync=false async=false enable-last-sample=false"
    )


def camera_frames(s: Settings, camera_format: str | None = None) -> str:
    """Camera → JPEG decode (MJPEG) → I420 at the configured size and rate. ``camera_format``:
    what the feeder settled CAMERA_FORMAT on (``camera.Camera.check``); default: CAMERA_FORMAT,
    ``auto`` taken as MJPEG.

    ``videorate drop-only=true`` enforces the frame rate without holding a frame back (plain
    videorate keeps one frame to decide on duplicates: +1 frame of latency).
    """
    source = camera.camera_for(s)
    if camera_format is not None:
        source.format = camera_format
    return f"{source.source()} ! {source.decoder()}videoconvert ! videorate drop-only=true ! {raw_caps(s)}"


def feeder(s: Settings, camera_format: str | None = None) -> str:
    """The camera's frames, each with its capture time appended, tee'd into two shared-memory
    sockets: ``feeder_camera`` and ``feeder_output`` in one description (the feeder runs them
    as two pipelines; the doctor and the tests read them together).

    The frames leave the camera's chain through an appsink and come back through an appsrc,
    where the feeder appends each frame's capture time (``streamer.media.capture_time``; the
    trailer is a second memory of the buffer, the pixels are not copied). The appsrc drops its
    oldest frame rather than grow, though the leaky branch queues after it never hold it up.
    """
    return f"{feeder_camera(s, camera_format)} {feeder_output(s)}"


def feeder_camera(s: Settings, camera_format: str | None = None) -> str:
    """The feeder's camera side: the camera's frames, decoded, into an appsink. A pipeline of
    its own, so that a camera that is unplugged and comes back can be closed and opened again
    while the output side keeps its shared-memory sockets (``RESTART_SCOPE=worker``)."""
    return (
        f"{camera_frames(s, camera_format)} ! appsink name={CAMERA_OUT_ELEMENT} emit-signals=true sync=false "
        "max-buffers=2 drop=false wait-on-eos=false enable-last-sample=false"
    )


def feeder_output(s: Settings) -> str:
    """The feeder's output side: the frames with their capture times (an appsrc) tee'd into
    the two shared-memory sockets, each behind a leaky queue."""
    stamped_bytes = shm_frame_bytes(s)
    return (
        f'appsrc name={STAMPED_FRAMES_ELEMENT} caps="{raw_caps(s)}" is-live=true format=time '
        f"leaky-type=downstream max-buffers=2 max-bytes={2 * stamped_bytes} max-time=0 "
        f"! tee name={TEE_ELEMENT} "
        f"{TEE_ELEMENT}. ! {_shm_branch(s, s.shm_recorder_socket, FEEDER_BRANCHES['recorder'])} "
        f"{TEE_ELEMENT}. ! {_shm_branch(s, s.shm_stream_socket, FEEDER_BRANCHES['stream'])}"
    )


def shm_reader_source(s: Settings, socket_path: str) -> str:
    """The start of every consumer: live raw frames with the feeder's exact caps. Each frame's
    time is its capture time, set from its trailer by the reader (``gst.time_by_capture``)."""
    return (
        f'shmsrc name={SHM_INPUT_ELEMENT} socket-path="{socket_path}" is-live=true do-timestamp=true '
        f"! {raw_caps(s)}"
    )


def record_keyframes(fps: int) -> tuple[int, int]:
    """(frames per GOP, GOPs per chunk) for chunks as close to RECORD_CHUNK_S as whole GOPs of
    0.5 to 1 s allow: splitmuxsink can only split on a keyframe, and a crash loses at most the
    open fragment. 30 fps: 15 x 11 = 165 frames = 5.500 s; 25 fps: 23 x 6 = 138 frames = 5.52 s;
    15 fps: 14 x 6 = 5.6 s. Ties go to the longer GOP, which compresses better.
    """
    target = RECORD_CHUNK_S * fps

    def error(gop: int) -> float:
        return abs(max(1, round(target / gop)) * gop - target)

    gop = min(range(fps, (fps - 1) // 2, -1), key=error)  # min keeps the first (longest) of equal errors
    return gop, max(1, round(target / gop))


def record_gop_ns(fps: int) -> int:
    """How long one GOP of the recording lasts: its frames at the nominal rate (0.5 s at 30
    fps, 0.92 s at 25 fps). Keyframes are placed by this time, not by a count of frames, so
    frames the recorder drops do not stretch a GOP (see ``record_gop_index``)."""
    gop, _ = record_keyframes(fps)
    return round(gop * 1_000_000_000 / fps)


def record_gop_index(offset_ns: int, fps: int) -> int:
    """The GOP a frame ``offset_ns`` after the recording's first frame belongs to: GOP k starts
    with the first frame at or after k GOP durations less half a frame. (Frames stamped on
    arrival land a little before or after the nominal instant: the half frame keeps the frame
    due at a boundary from losing its keyframe to the next one when it comes early.)"""
    half_frame_ns = 500_000_000 // fps
    return max(0, offset_ns + half_frame_ns) // record_gop_ns(fps)


def record_max_chunk_ns(fps: int) -> int:
    """splitmuxsink's max-size-time: half a GOP past the chunk's last GOP. A keyframe lands on
    the frame nearest its instant, so a chunk's whole GOPs may end a frame or a few late or
    early: the half GOP keeps the split at the right keyframe all the same."""
    _, gops = record_keyframes(fps)
    return gops * record_gop_ns(fps) + record_gop_ns(fps) // 2


def record_encoder_key_int_max(
    fps: int, kind: EncoderKind | str = EncoderKind.X264, gst_version: tuple[int, int] = OLDEST_GSTREAMER
) -> int:
    """The recording encoder's own keyframe interval, in frames. Where forced keyframes give
    IDR frames (x264, openh264, ...: ``encoders.honours_forced_keyframes``), twice a GOP: the
    forced keyframes come a GOP's time apart, which holds a GOP of frames or fewer (when frames
    are dropped), so the encoder adds none of its own; should forcing fail, GOPs still stay
    bounded. Where they do not (v4l2h264enc before 1.24, nvv4l2h264enc: its ``force-IDR``
    signal is emitted instead but its timing is not checked here, vah264enc before 1.26), the
    GOP itself, so chunks can still split near their length
    (``encoders.record_keyframe_interval``)."""
    gop, _ = record_keyframes(fps)
    return encoders.record_keyframe_interval(kind, gop, gst_version)


def recorder(
    s: Settings,
    session_dir: str | None,
    first_chunk: int = 0,
    first_image: int = 0,
    *,
    video: bool | None = None,
    images: bool | None = None,
    gst_version: tuple[int, int] = OLDEST_GSTREAMER,
) -> str:
    """Recorder socket → the latest frame, for snapshots on demand, and H.264 MP4 chunks and/or
    one JPEG per second into ``session_dir`` (``video`` / ``images``: which of these to record,
    by default as ENABLE_VIDEO / ENABLE_IMAGES say; neither: ``session_dir`` may be None).

    The latest frame: the tee's first branch, always there, a one-frame leaky queue into an
    appsink that keeps only the newest frame (it drops the older one, never blocks, and does
    not hold end-of-stream back for a frame nobody pulled). The recording branches hang off
    the tee by name after it.

    Video: the encoder ``encoder_kind`` names (x264 by default; its recording settings:
    ``encoders.encoder_chain`` with ``Purpose.RECORD``) with keyframes at fixed times (GOPs of
    ``record_gop_ns``, chosen by ``record_keyframes`` so that whole GOPs make up a 5.5 s
    chunk), forced by the recorder from the frames' timestamps (``gst.force_keyframes``), not
    counted in frames: frames the leaky queue drops would otherwise stretch the GOPs and end a
    chunk one GOP early. The encoder's own interval (``record_encoder_key_int_max``, for the
    GStreamer ``gst_version`` the recorder runs on) is only a backstop where forced keyframes
    work, and it adds no scene-cut keyframes. splitmuxsink measures each chunk from its own
    first frame. (Its ``send-keyframe-requests`` aims at running time from 0, which cuts the
    first chunk of a live source short.)

    The chunks: ``video_chunks`` (fragmented MP4, crash-safe). A leaky queue in front of the
    encoder drops raw frames while the disk is too slow; encoded frames are never dropped,
    which would corrupt the stream.

    RECORD_SOURCE=stream: the video is the stream's, taken from our RTSP server
    (``record_stream_video``), not encoded here; the tee then feeds only the latest frame and
    the images.

    ``session_dir`` is made by ``streamer.storage`` from the validated SSD_PATH; numbering
    starts at ``first_chunk`` / ``first_image`` (a recording resumed in the same session).
    """
    video = s.enable_video if video is None else video
    images = s.enable_images if images is None else images
    if (video or images) and session_dir is None:
        raise ValueError("recording needs a session folder")
    branches = []
    stream_video = ""
    if video and records_the_stream(s):
        stream_video = f" {record_stream_video(s, video_chunks(s, session_dir, first_chunk))}"
    elif video:
        branches.append(
            f"{_leaky_queue(VIDEO_QUEUE_ELEMENT, RECORD_RAW_QUEUE_FRAMES)} "
            f"! {record_encoder(s, gst_version)} "
            "! h264parse "
            f"! queue name=video_write_queue max-size-time={RECORD_WRITE_BUFFER_NS} max-size-bytes=0 "
            "max-size-buffers=0 "
            f"! {video_chunks(s, session_dir, first_chunk)}"
        )
    if images:
        branches.append(
            f"{_leaky_queue(IMAGE_QUEUE_ELEMENT, 2)} ! videorate drop-only=true max-rate=1 "
            "! jpegenc quality=90 "
            f'! multifilesink name={IMAGE_SINK_ELEMENT} location="{session_dir}/{layout.IMAGE_PATTERN}" '
            f"index={first_image} post-messages=true"
        )
    latest_frame = (
        f"{_leaky_queue(FRAME_QUEUE_ELEMENT, 1)} "
        f"! appsink name={FRAME_SINK_ELEMENT} max-buffers=1 drop=true sync=false wait-on-eos=false "
        "enable-last-sample=false"
    )
    return (
        f"{shm_reader_source(s, s.shm_recorder_socket)} ! tee name={RECORDER_TEE_ELEMENT} ! {latest_frame}"
        + "".join(f" {RECORDER_TEE_ELEMENT}. ! {branch}" for branch in branches)
        + stream_video
    )


def records_the_stream(s: Settings) -> bool:
    """RECORD_SOURCE=stream: the recording is the stream encoder's output, not its own."""
    return s.record_source == "stream"


def video_chunks(s: Settings, session_dir: str | None, first_chunk: int) -> str:
    """The chunk writer (``VIDEO_SINK_ELEMENT``) of H.264 that comes through ``h264parse``.

    The muxer writes fragmented MP4, index first, and finalises it into a plain MP4 on EOS: a
    chunk cut short by SIGKILL still plays up to its last 0.5 s fragment. The file sink is
    unbuffered so finished fragments reach the kernel at once. (``muxer`` and ``sink`` are set
    in the description: setting them later from Python is silently ignored.) splitmuxsink
    splits on keyframes, before the GOP that would take the chunk past its ``max-size-time``.
    """
    max_chunk_ns = RECORD_STREAM_CHUNK_NS if records_the_stream(s) else record_max_chunk_ns(s.video_fps)
    return (
        f'splitmuxsink name={VIDEO_SINK_ELEMENT} location="{session_dir}/{layout.VIDEO_PATTERN}" '
        f"start-index={first_chunk} max-size-time={max_chunk_ns} max-size-bytes=0 "
        f'muxer="mp4mux fragment-duration={RECORD_FRAGMENT_MS} fragment-mode=first-moov-then-finalise" '
        'sink="filesink buffer-mode=unbuffered"'
    )


# RECORD_SOURCE=stream: a chunk is the stream's whole GOPs (a keyframe every
# STREAM_KEYFRAME_INTERVAL_S, and one forced for each new viewer) up to RECORD_CHUNK_S.
RECORD_STREAM_CHUNK_NS = round(RECORD_CHUNK_S * 1_000_000_000)


def record_stream_video(s: Settings, chunks: str) -> str:
    """RECORD_SOURCE=stream: our RTSP stream's H.264, as it is (no decoder, no encoder), into
    ``chunks``.

    ``rtspsrc`` as the live worker's (TCP, interleaved, ``latency=0``; the RTSP server forces a
    keyframe for the new client, so the recording starts with one), but with the frames timed
    by their RTP timestamps alone (``buffer-mode=none``): those are the stream encoder's frame
    times, the camera's capture times, so the chunks get even frame durations as the recorder's
    own encoder gives them. A leaky queue holds up to RECORD_WRITE_BUFFER_NS while the disk is
    slow and then drops the oldest frames, so a stuck disk never holds up the RTSP server; the
    recorder lets nothing through after a gap up to the next keyframe
    (``gst.drop_to_keyframe_after_gap``). The credentials of an RTSP server with access
    control are set on ``RECORD_STREAM_SOURCE_ELEMENT`` as properties.
    """
    return (
        f"{own_rtsp_source(RECORD_STREAM_SOURCE_ELEMENT, live_rtsp_url(s), ' buffer-mode=none')} "
        f"! rtph264depay name={RECORD_STREAM_DEPAY_ELEMENT} ! h264parse "
        f"! queue name={VIDEO_QUEUE_ELEMENT} leaky=downstream max-size-time={RECORD_WRITE_BUFFER_NS} "
        "max-size-bytes=0 max-size-buffers=0 "
        f"! {chunks}"
    )


def record_encoder(s: Settings, gst_version: tuple[int, int] = OLDEST_GSTREAMER) -> str:
    """The recording's encoder chain (``VIDEO_ENCODER_ELEMENT``): ``encoder_kind``'s element
    at RECORD_BITRATE, for quality per bit. x264: ``x264enc speed-preset=superfast bitrate=…
    key-int-max=… bframes=0 sliced-threads=true option-string=scenecut=0:…`` (no frame delay)."""
    return encoders.encoder_chain(
        encoder_kind(s),
        name=VIDEO_ENCODER_ELEMENT,
        bitrate_bps=s.record_bitrate,
        keyframe_interval=record_encoder_key_int_max(s.video_fps, encoder_kind(s), gst_version),
        purpose=Purpose.RECORD,
    )


def stream_encoder(s: Settings) -> str:
    """The stream's encoder chain (``STREAM_ENCODER_ELEMENT``): ``encoder_kind``'s element at
    VIDEO_BITRATE, for low latency, a keyframe every STREAM_KEYFRAME_INTERVAL_S. x264:
    ``x264enc tune=zerolatency speed-preset=ultrafast bframes=0 key-int-max=… bitrate=…``
    (kbit/s; the settings are in bit/s: ``encoders`` converts for each element)."""
    return encoders.encoder_chain(
        encoder_kind(s),
        name=STREAM_ENCODER_ELEMENT,
        bitrate_bps=s.video_bitrate,
        keyframe_interval=s.video_fps * STREAM_KEYFRAME_INTERVAL_S,
        purpose=Purpose.STREAM,
    )


def rtsp_media(s: Settings) -> str:
    """Stream socket → low-latency H.264 → RTP, the media of the shared RTSP factory.

    The encoder (``stream_encoder``; x264 by default): no look-ahead, no B-frames (x264's
    zerolatency: its delay is zero frames). A keyframe every second, and on demand for each
    new viewer (forced from the worker, ``gst.force_keyframe``); h264parse puts SPS/PPS in
    front of every IDR so a viewer can start decoding at any keyframe, and the payloader sends
    them with the IDR in one packet (STAP-A) without waiting.
    """
    return (
        f"{shm_reader_source(s, s.shm_stream_socket)} "
        f"! {_leaky_queue(STREAM_QUEUE_ELEMENT, STREAM_QUEUE_FRAMES)} "
        f"! {stream_encoder(s)} "
        "! h264parse config-interval=-1 "
        f"! rtph264pay name={PAYLOADER_ELEMENT} pt={RTP_PAYLOAD_TYPE} aggregate-mode=zero-latency"
    )


# Live view (the live worker): one pipeline per browser, an RTSP client of our own server.
LIVE_SOURCE_ELEMENT = "rtsp_in"
LIVE_PAYLOADER_ELEMENT = "live_pay"
LIVE_WEBRTC_ELEMENT = "webrtc"
# RTP payload types an SDP offer may give H.264: the dynamic range, and the one browsers add
# below it when the dynamic range is full (35-63).
LIVE_PAYLOAD_TYPES = (*range(35, 64), *range(96, 128))


def local_rtsp_host(s: Settings) -> str:
    """Where our own RTSP server is reached on this machine: loopback when it listens on every
    address, else the one address it listens on."""
    return {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(s.rtsp_bind, s.rtsp_bind)


def live_rtsp_url(s: Settings) -> str:
    """Our own RTSP stream as the live worker, the publisher and the recorder
    (RECORD_SOURCE=stream) reach it on this machine (``local_rtsp_host``)."""
    host = local_rtsp_host(s)
    scheme = "rtsps" if s.rtsp_tls else "rtsp"
    return f"{scheme}://{f'[{host}]' if ':' in host else host}:{s.rtsp_port}{s.rtsp_path}"


def own_rtsp_source(name: str, rtsp_url: str, options: str = "") -> str:
    """An ``rtspsrc`` of our own RTSP server (``rtsp_url`` from ``live_rtsp_url``), as the live
    worker, the publisher and the recorder (RECORD_SOURCE=stream) use it: over TCP, interleaved
    (no UDP ports per client, no loss on loopback), with no jitter buffer delay (``latency=0``),
    and ``options`` of the caller's. Over RTSPS the server's certificate is not checked: it is
    our own, on this machine. Credentials are set as properties (``gst.sign_in``)."""
    tls = " tls-validation-flags=0" if rtsp_url.startswith("rtsps://") else ""
    return f'rtspsrc name={name} location="{rtsp_url}" protocols=tcp latency=0{options}{tls}'


def live_session(s: Settings, rtsp_url: str, payload_type: int = RTP_PAYLOAD_TYPE) -> str:
    """One browser's live view: our RTSP stream, its H.264 passed through unchanged (no second
    encoder) into WebRTC.

    ``rtspsrc`` over TCP (interleaved: no UDP ports per viewer, no loss on loopback) with no
    jitter buffer delay (``latency=0``); the RTSP server forces a keyframe for each new viewer,
    so the browser's first picture comes at once. h264parse and the payloader put SPS/PPS in
    front of every keyframe; the payloader sends each frame at once (``aggregate-mode``), with
    the browser's payload type for H.264 (``payload_type``, from its offer: webrtcbin answers
    with the offer's meaning of a payload type number). ``webrtcbin`` bundles everything on
    one transport. The credentials for an RTSP server with access control are set on
    ``LIVE_SOURCE_ELEMENT`` as properties (``user-id``, ``user-pw``), never spliced in here;
    ``rtsp_url`` comes from ``live_rtsp_url`` (validated settings only). Over RTSPS the
    server's certificate is not checked: it is our own, on this machine.
    """
    if payload_type not in LIVE_PAYLOAD_TYPES:
        raise ValueError(f"not a dynamic RTP payload type: {payload_type!r}")
    return (
        f"{own_rtsp_source(LIVE_SOURCE_ELEMENT, rtsp_url)} "
        "! rtph264depay ! h264parse config-interval=-1 "
        f"! rtph264pay name={LIVE_PAYLOADER_ELEMENT} config-interval=-1 aggregate-mode=zero-latency "
        f"pt={payload_type} "
        f"! webrtcbin name={LIVE_WEBRTC_ELEMENT} bundle-policy=max-bundle"
    )


# Publishing (the publish worker): one pipeline per destination, an RTSP client of our own server
# whose H.264 goes out unchanged (no decoder, no encoder).
PUBLISH_SOURCE_ELEMENT = "publish_in"
PUBLISH_QUEUE_ELEMENT = "publish_queue"
PUBLISH_SINK_ELEMENT = "publish_out"
# Encoded video a destination may fall behind by before its queue drops the oldest frames (and
# the frames after them up to the next keyframe): a slow or stalled server never backs up into
# our RTSP server, and what is sent stays this close to live.
PUBLISH_QUEUE_S = 1
# What follows the queue, by kind of destination. RTMP: FLV, streamable (no index, no duration).
# SRT: MPEG-TS; plain h264parse in front of the muxer (``config-interval=-1`` there inserts
# SPS/PPS between the slices of x264's IDR frames and corrupts them; the stream repeats them
# at every keyframe anyway), and 7 TS packets a buffer (1316 bytes, one SRT packet each):
# srtsink skips buffers marked as headers once it has the caps' stream headers, and with the
# muxer's default packing those held the SPS/PPS: measured here, no SPS/PPS reached the
# receiver and nothing decoded; with 7 a buffer every keyframe arrived with them.
# The depayloader hands SRT's muxer byte-stream: from AVC (its default), h264parse's conversion
# left the SPS/PPS out of the first keyframe the receiver got (measured: the first GOP did not
# decode); from byte-stream, every keyframe came with them.
# RTSP: rtspclientsink payloads it itself (ANNOUNCE/RECORD, TCP).
# Sinks push as soon as they have data (``sync=false``: live input, no clock to wait for);
# srtsink does not reconnect by itself (the worker does, with its backoff).
_PUBLISH_OUTPUTS = {
    "rtmp": f"flvmux streamable=true ! rtmp2sink name={PUBLISH_SINK_ELEMENT} sync=false",
    "srt": (
        f"mpegtsmux alignment=7 ! srtsink name={PUBLISH_SINK_ELEMENT} mode=caller auto-reconnect=false "
        "sync=false"
    ),
    "rtsp": f"rtspclientsink name={PUBLISH_SINK_ELEMENT} protocols=tcp",
}
# What the depayloader is asked for, by kind (nothing: whatever the muxer or sink prefers).
_PUBLISH_DEPAYLOADED = {"srt": " ! video/x-h264,stream-format=byte-stream,alignment=au"}
# The elements each kind needs (besides the source's rtspsrc, rtph264depay, h264parse, queue).
PUBLISH_ELEMENTS = {
    "rtmp": ("flvmux", "rtmp2sink"),
    "srt": ("mpegtsmux", "srtsink"),
    "rtsp": ("rtspclientsink",),
}


def publish_queue_frames(s: Settings) -> int:
    return max(2, s.video_fps * PUBLISH_QUEUE_S)


def publish(s: Settings, kind: str) -> str:
    """One destination's pipeline: our RTSP stream → its H.264 as it is → a leaky queue → the
    muxer and sink for ``kind`` (``rtmp``, ``srt`` or ``rtsp``).

    ``rtspsrc`` as the live worker's: over TCP, interleaved, with no jitter buffer delay
    (``latency=0``); the RTSP server forces a keyframe for each new client, so a destination
    starts with one. The queue holds whole frames (h264parse in front of it makes one buffer
    of each) and drops the oldest when full; the worker then drops the frames after a gap up to
    the next keyframe (``gst.drop_to_keyframe_after_gap``). Nothing of the destination is in
    the description: its address, key, streamid, passphrase and credentials are set as
    properties of ``PUBLISH_SINK_ELEMENT`` (``publish_sink_properties``), the RTSP credentials
    on ``PUBLISH_SOURCE_ELEMENT``, as the live worker does.
    """
    if kind not in _PUBLISH_OUTPUTS:
        raise ValueError(f"no such kind of destination: {kind!r}")
    return (
        f"{own_rtsp_source(PUBLISH_SOURCE_ELEMENT, live_rtsp_url(s))} "
        f"! rtph264depay{_PUBLISH_DEPAYLOADED.get(kind, '')} ! h264parse "
        f"! {_leaky_queue(PUBLISH_QUEUE_ELEMENT, publish_queue_frames(s))} "
        f"! {_PUBLISH_OUTPUTS[kind]}"
    )


def publish_sink_properties(destination: PublishDestination) -> dict[str, str | int]:
    """The properties of ``PUBLISH_SINK_ELEMENT`` that point it at ``destination``, set from
    Python (never spliced into a description). Secrets among them: set, never logged.

    RTMP: rtmp2sink's parts of a location (as its own ``location`` parser splits one: the
    application is what lies between the host and the last '/', the stream the rest). SRT: the
    server's ``srt://host:port`` and the query's settings. RTSP: the URL without its
    credentials, which go to ``user-id``/``user-pw``.
    """
    d = destination
    properties: dict[str, str | int]
    if d.kind == "rtmp":
        properties = {"scheme": d.scheme, "host": d.host, "port": d.port}
        properties |= {"application": d.application, "stream": d.key}
        if d.user:
            properties |= {"username": d.user, "password": d.password}
    elif d.kind == "srt":
        properties = {"uri": f"srt://{d.address}"}
        if d.latency_ms is not None:
            properties["latency"] = d.latency_ms
        if d.streamid:
            properties["streamid"] = d.streamid
        if d.passphrase:
            properties["passphrase"] = d.passphrase
    elif d.kind == "rtsp":
        properties = {"location": f"rtsp://{d.address}{d.path}"}
        if d.user:
            properties |= {"user-id": d.user, "user-pw": d.password}
    else:
        raise ValueError(f"no such kind of destination: {d.kind!r}")
    return properties
