"""GStreamer launch descriptions: pure functions of the frozen Settings, no GStreamer import.

Every value spliced in here was validated by ``streamer.config`` to a character set that cannot
alter a pipeline's structure; paths are additionally quoted.
"""

from __future__ import annotations

from streamer.config import Settings

# The shared-memory area must hold every frame a reader may still reference: a queue plus an
# encoder's look-ahead. Too small an area starves the reader at 0 fps (see field notes).
SHM_AREA_FRAMES = 32

# Frames a feeder branch may buffer in front of a slow reader before it drops the oldest one.
SHM_BRANCH_QUEUE_FRAMES = 2

# Element names the workers look up by name.
CAMERA_ELEMENT = "camera"
TEE_ELEMENT = "split"


def raw_caps(s: Settings) -> str:
    """The exact raw format the feeder writes into shared memory (which carries no caps)."""
    return f"video/x-raw,format=I420,width={s.video_width},height={s.video_height},framerate={s.video_fps}/1"


def jpeg_caps(s: Settings) -> str:
    """The camera mode the feeder asks for: MJPEG at exactly the configured size and rate."""
    return f"image/jpeg,width={s.video_width},height={s.video_height},framerate={s.video_fps}/1"


def shm_area_bytes(s: Settings) -> int:
    return s.frame_bytes * SHM_AREA_FRAMES


def camera_source(s: Settings) -> str:
    """A live MJPEG source: the V4L2 device, or the synthetic camera standing in for one.

    The synthetic camera paces itself at the frame rate (``is-live``), moves, and produces JPEG
    frames, so everything after this point runs exactly as it would with a real camera.
    """
    if s.synthetic_camera:
        return (
            f"videotestsrc name={CAMERA_ELEMENT} is-live=true pattern=smpte horizontal-speed=4 "
            f"! {raw_caps(s)} ! jpegenc quality=85 ! {jpeg_caps(s)}"
        )
    return f'v4l2src name={CAMERA_ELEMENT} device="{s.camera}" ! {jpeg_caps(s)}'


def _shm_branch(s: Settings, socket_path: str, name: str) -> str:
    # The leaky queue is what keeps a slow or stopped reader from stalling the tee: shmsink
    # blocks when its area is full, the queue then drops the oldest frame instead of backing up.
    return (
        f"queue name={name}_queue leaky=downstream max-size-buffers={SHM_BRANCH_QUEUE_FRAMES} "
        "max-size-bytes=0 max-size-time=0 "
        f'! shmsink name={name} socket-path="{socket_path}" shm-size={shm_area_bytes(s)} '
        "wait-for-connection=false sync=false async=false enable-last-sample=false"
    )


def feeder(s: Settings) -> str:
    """Camera → JPEG decode → I420 at the configured size and rate → two shared-memory sockets.

    ``videorate drop-only=true`` enforces the frame rate without holding a frame back (plain
    videorate keeps one frame to decide on duplicates: +1 frame of latency).
    """
    return (
        f"{camera_source(s)} ! jpegdec ! videoconvert ! videorate drop-only=true ! {raw_caps(s)} "
        f"! tee name={TEE_ELEMENT} "
        f"{TEE_ELEMENT}. ! {_shm_branch(s, s.shm_recorder_socket, 'to_recorder')} "
        f"{TEE_ELEMENT}. ! {_shm_branch(s, s.shm_stream_socket, 'to_stream')}"
    )


def shm_reader_source(s: Settings, socket_path: str) -> str:
    """The start of every consumer: live, timestamped raw frames with the feeder's exact caps."""
    return f'shmsrc socket-path="{socket_path}" is-live=true do-timestamp=true ! {raw_caps(s)}'
