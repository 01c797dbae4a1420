"""A fake USB webcam for the tests: ``fakecam.c``, an ``LD_PRELOAD`` library that makes a device
path such as ``/dev/video42`` answer like a UVC MJPEG webcam to the real ``v4l2src``, with
scriptable faults (see ``docs/fakecam.md``).

- ``library()`` builds it once per test session into a cache directory (rebuilt when the source
  or the flags change); ``FakecamUnavailable`` says what is missing when it cannot be built.
- ``fake_camera_env(...)`` is the environment for a child process that should see the camera
  (the test process itself is never preloaded).
- ``Faults`` spells the faults; ``jpeg_info`` and ``frame_number`` read the frame number a frame
  carries (in its JPEG comment, and in its pixels after decoding).
- ``stamp=True`` draws the capture-time stamp of ``streamer.media.stamp`` into every frame (for
  latency measurements); ``stamp_band_rows`` is how many rows it covers.

Pure standard library: the preloaded child (``probe.py``) imports it too.
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

SOURCE = Path(__file__).with_name("fakecam.c")
PROBE = Path(__file__).with_name("probe.py")
CFLAGS = ("-Wall", "-Wextra", "-O2", "-fPIC", "-shared")
LIBS = ("-ljpeg", "-lpthread", "-ldl")
PACKAGES = "gcc libjpeg62-turbo-dev"  # what the build needs (Debian)

DEFAULT_DEVICE = "/dev/video42"
DEFAULT_MODES = ("mjpeg:640x480@30/15", "mjpeg:1280x720@30/15", "mjpeg:320x240@30")
STRIP_BITS = 24  # the frame number's blocks across the top 16 rows (fakecam.c)
# The stamp's geometry (streamer/media/stamp.py, and fakecam.c's STAMP_* constants).
STAMP_COLUMNS, STAMP_ROWS, STAMP_MIN_BLOCK_PX = 24, 2, 6
NICE = ("nice", "-n", "19")  # builds on a shared machine yield to everything else


class FakecamUnavailable(RuntimeError):
    """The fake camera cannot be built here: the compiler or the libjpeg headers are missing."""


def compiler_warnings() -> str:
    """What ``gcc -Wall -Wextra`` says about fakecam.c (a syntax-only pass: quick, builds nothing)."""
    command = [*NICE, shutil.which("gcc") or "gcc", *CFLAGS, "-fsyntax-only", str(SOURCE)]
    return subprocess.run(command, capture_output=True, text=True, timeout=300).stderr.strip()


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "streamer-fakecam"


@functools.cache
def library() -> Path:
    """The built ``libfakecam.so`` (once per process: per test session), named by a digest of the
    source and the flags so an edit rebuilds it and concurrent sessions never mix versions."""
    digest = hashlib.sha256(SOURCE.read_bytes() + " ".join(CFLAGS + LIBS).encode()).hexdigest()[:16]
    target = cache_dir() / f"libfakecam-{digest}.so"
    if target.exists():
        return target
    gcc = shutil.which("gcc")
    if gcc is None:
        raise FakecamUnavailable(f"the fake camera needs a C compiler: apt-get install {PACKAGES}")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        built = Path(tmp) / target.name
        command = [*NICE, gcc, *CFLAGS, "-o", str(built), str(SOURCE), *LIBS]
        result = subprocess.run(command, capture_output=True, text=True, timeout=300)
        if result.returncode != 0:
            if "jpeglib.h" in result.stderr or "cannot find -ljpeg" in result.stderr:
                raise FakecamUnavailable(
                    f"the fake camera needs the libjpeg headers: apt-get install {PACKAGES}"
                )
            raise RuntimeError(f"building the fake camera failed:\n{' '.join(command)}\n{result.stderr}")
        os.replace(built, target)  # atomic: a concurrent session sees the whole file or none
    return target


@dataclass(frozen=True)
class Faults:
    """The faults the camera plays (``FAKECAM_FAULTS``); frames count from 1 in each stream."""

    truncate_every: int | None = None  # every Nth frame cut in half (no end-of-image marker)
    corrupt_every: int | None = None  # every Nth frame loses a quarter of its scan data
    slow_rate: int | None = None  # frames per second delivered whatever the mode says ...
    slow_after: int = 0  # ... after this many frames
    stall_after: int | None = None  # no frame after this many, no error either
    unplug_after: int | None = None  # unplugged after this many frames (ENODEV, then ENOENT)
    replug_after_s: float | None = None  # back this long after the unplug (for new opens)
    replug_node: str | None = None  # ... at this node instead (a new node number)
    dead: tuple[str, ...] = ()  # modes listed but never delivering: "[FORMAT:]WxH[@RATE]"
    error_flag: bool = False  # broken frames carry V4L2_BUF_FLAG_ERROR (GStreamer: CORRUPTED)

    def __str__(self) -> str:
        items = []
        if self.truncate_every:
            items.append(f"truncate={self.truncate_every}")
        if self.corrupt_every:
            items.append(f"corrupt={self.corrupt_every}")
        if self.slow_rate:
            items.append(f"slow={self.slow_rate}@{self.slow_after}")
        if self.stall_after is not None:
            items.append(f"stall={self.stall_after}")
        if self.unplug_after is not None:
            items.append(f"unplug={self.unplug_after}")
        if self.replug_after_s is not None:
            node = f"@{self.replug_node}" if self.replug_node else ""
            items.append(f"replug={self.replug_after_s:g}{node}")
        items.extend(f"dead={mode}" for mode in self.dead)
        if self.error_flag:
            items.append("errorflag=1")
        return ",".join(items)


def fake_camera_env(
    device: str = DEFAULT_DEVICE,
    modes: str | Sequence[str] = DEFAULT_MODES,
    faults: Faults | str | None = None,
    *,
    base: Mapping[str, str] | None = None,
    links: Sequence[str] = (),
    unplug_file: str | os.PathLike[str] | None = None,
    debug: bool = False,
    stamp: bool = False,
) -> dict[str, str]:
    """The environment (``base``, default ``os.environ``, plus the preload and its settings) for a
    process that should see a fake webcam at ``device`` offering ``modes`` (``"mjpeg:640x480@30/15"``
    ...; ``yuyv:`` for raw), playing ``faults``. ``links`` are symlink names for it (e.g.
    ``/dev/v4l/by-id/usb-...-video-index0``); ``unplug_file`` carries the unplugged state across
    processes (a test may also create it to unplug the camera, and remove it to plug it back).
    ``stamp``: every frame carries its capture time (the buffer's timestamp, on the wall clock) as
    ``streamer.media.stamp`` draws it, at the top; the frame number moves below it."""
    env = dict(os.environ if base is None else base)
    env.pop("GST_V4L2_USE_LIBV4L2", None)  # libv4l2's raw system calls would bypass the preload
    preload = [str(library())] + [
        p for p in env.get("LD_PRELOAD", "").split(":") if p and "libfakecam" not in p
    ]
    env["LD_PRELOAD"] = ":".join(preload)
    env["FAKECAM_DEVICE"] = device
    env["FAKECAM_MODES"] = modes if isinstance(modes, str) else ",".join(modes)
    env["FAKECAM_FAULTS"] = str(faults or "")
    env["FAKECAM_LINKS"] = ",".join(links)
    env["FAKECAM_UNPLUG_FILE"] = str(unplug_file or "")
    env["FAKECAM_DEBUG"] = "1" if debug else "0"
    env["FAKECAM_STAMP"] = "1" if stamp else "0"
    return env


def jpeg_info(data: bytes) -> dict[str, object]:
    """What a camera JPEG says about itself: ``complete`` (ends with the end-of-image marker) and,
    from the fake camera's COM marker, its ``frame`` number and ``fault`` (or None)."""
    info: dict[str, object] = {"complete": data.endswith(b"\xff\xd9"), "frame": None, "fault": None}
    at = data.find(b"\xff\xfe", 2, 4096)  # COM: the fake camera writes it right after the header
    if at >= 0 and at + 4 <= len(data):
        length = int.from_bytes(data[at + 2 : at + 4], "big")
        for field in data[at + 4 : at + 2 + length].decode("ascii", "replace").split():
            key, _, value = field.partition("=")
            if key == "frame":
                info["frame"] = int(value)
            elif key == "fault":
                info["fault"] = value
    return info


def stamp_band_rows(width: int, height: int) -> int:
    """Rows the capture-time stamp covers in a stamped frame (0 when the frame is too small to
    carry one): ``streamer.media.stamp.band_height``, repeated here to stay standard library only."""
    block = min(width // STAMP_COLUMNS, height // (3 * STAMP_ROWS))
    return STAMP_ROWS * block if block >= STAMP_MIN_BLOCK_PX else 0


def frame_number(gray: bytes, width: int, height: int, stamped: bool = False) -> int:
    """The frame number drawn in a decoded frame (GRAY8, rows padded to 4 bytes as GStreamer
    lays them out): STRIP_BITS blocks across 16 rows, most significant bit first, at the top or,
    in a ``stamped`` frame, right below the stamp's band."""
    stride = (width + 3) & ~3
    top = stamp_band_rows(width, height) if stamped else 0
    if height < top + 16 or len(gray) < stride * height:
        raise ValueError(f"not a {width}x{height} GRAY8 frame ({len(gray)} bytes)")
    block = width // STRIP_BITS
    row = (top + 8) * stride
    number = 0
    for bit in range(STRIP_BITS):
        number = number << 1 | (gray[row + bit * block + block // 2] > 128)
    return number
