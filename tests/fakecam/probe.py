"""A small GStreamer program that looks at a V4L2 camera with the real ``v4l2src``: run by the
fake camera's tests in a child process that has the fake camera preloaded (``fake_camera_env``),
never imported by the test process itself. It prints one JSON object on its last line of output.

    probe.py caps DEVICE
        the caps v4l2src offers (it opens the device to READY and asks): {"caps": [...]} or
        {"error": "..."}
    probe.py exists DEVICE
        {"exists": true|false, "is_char_device": ..., "realpath": ...} as this process sees it
    probe.py ioctls DEVICE
        what VIDIOC_QUERYCAP says, and the errno of a control, an ioctl a webcam lacks, a read()
    probe.py stream DEVICE CAPS SECONDS [--reopen-within S] [--decoder "ELEMENT PROPS"] [--stamped]
        streams DEVICE at CAPS (e.g. "image/jpeg,width=320,height=240,framerate=30/1") for SECONDS
        or until an error, and reports each camera buffer (arrival, PTS, size, end-of-image marker,
        the fake camera's COM marker) and each decoded frame (the frame number read from its
        pixels; with --stamped, below the stamp, and the age of the frame's capture-time stamp
        when it was decoded, ``stamp_age_ms``, None if unreadable). With --reopen-within, after
        an error it waits up to S seconds for the device to exist again and streams a second
        phase from a new pipeline. Prints "streaming" on a line of its own when the first frame
        arrives (so a caller can act on a running stream).
"""

from __future__ import annotations

import argparse
import errno
import fcntl
import json
import os
import stat
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the project root: tests.fakecam

import gi

gi.require_version("Gst", "1.0")
from gi.repository import Gst  # noqa: E402

from tests.fakecam import frame_number, jpeg_info  # noqa: E402

Gst.init(None)


def caps(device: str) -> dict:
    src = Gst.ElementFactory.make("v4l2src", None)
    src.set_property("device", device)
    bus = Gst.Bus.new()
    src.set_bus(bus)
    try:
        if src.set_state(Gst.State.READY) == Gst.StateChangeReturn.FAILURE:
            message = bus.pop_filtered(Gst.MessageType.ERROR)
            return {"error": message.parse_error()[0].message if message else "cannot be opened"}
        offered = src.get_static_pad("src").query_caps(None)
        return {"caps": [offered.get_structure(i).to_string() for i in range(offered.get_size())]}
    finally:
        src.set_state(Gst.State.NULL)


def exists(device: str) -> dict:
    """The path as this process sees it: through stat, lstat, realpath and access."""
    try:
        mode = os.stat(device).st_mode
    except FileNotFoundError:
        return {"exists": False, "is_char_device": False, "access": os.access(device, os.R_OK | os.W_OK)}
    return {
        "exists": True,
        "is_char_device": stat.S_ISCHR(mode),
        "is_link": stat.S_ISLNK(os.lstat(device).st_mode),
        "realpath": os.path.realpath(device),
        "access": os.access(device, os.R_OK | os.W_OK),
    }


def _ioc(direction: int, number: int, size: int) -> int:
    """An ioctl request number as the kernel's _IOC('V', number, size) makes it."""
    return direction << 30 | size << 16 | ord("V") << 8 | number


READ, WRITE = 2, 1
VIDIOC_QUERYCAP = _ioc(READ, 0, 104)
VIDIOC_G_CTRL = _ioc(READ | WRITE, 27, 8)
VIDIOC_QUERYCTRL = _ioc(READ | WRITE, 36, 68)
VIDIOC_G_STD = _ioc(READ, 23, 8)  # analogue TV standards: a webcam driver does not have it
V4L2_CID_BRIGHTNESS = 0x00980900


def ioctls(device: str) -> dict:
    """A few ioctls and a read() through the C library, as any V4L2 program makes them: what a
    capability query says, and the errno of what the camera does not have."""

    def errno_of(call) -> str | None:
        try:
            call()
        except OSError as err:
            return errno.errorcode[err.errno]
        return None

    fd = os.open(device, os.O_RDWR)
    try:
        cap = bytearray(104)
        fcntl.ioctl(fd, VIDIOC_QUERYCAP, cap)
        control = bytearray(V4L2_CID_BRIGHTNESS.to_bytes(4, "little") + bytes(4))
        query = bytearray(V4L2_CID_BRIGHTNESS.to_bytes(4, "little") + bytes(64))
        return {
            "driver": cap[0:16].rstrip(b"\0").decode(),
            "card": cap[16:48].rstrip(b"\0").decode(),
            "device_caps": int.from_bytes(cap[88:92], "little"),
            "g_ctrl": errno_of(lambda: fcntl.ioctl(fd, VIDIOC_G_CTRL, control)),
            "queryctrl": errno_of(lambda: fcntl.ioctl(fd, VIDIOC_QUERYCTRL, query)),
            "g_std": errno_of(lambda: fcntl.ioctl(fd, VIDIOC_G_STD, bytearray(8))),
            "read": errno_of(lambda: os.read(fd, 4096)),
        }
    finally:
        os.close(fd)


def stamp_age_ms(gray: bytes, width: int, height: int, now_s: float) -> float | None:
    """How old the capture-time stamp in a GRAY8 frame was at ``now_s`` (wall clock), read with
    the stack's own reader; None if the frame has no readable stamp."""
    from streamer.media import stamp  # the project's reader, pure Python; only --stamped needs it

    luma = stamp.Plane(0, (width + 3) & ~3)  # GStreamer's GRAY8 rows are padded to 4 bytes
    value = stamp.read(gray, stamp.FrameLayout(width, height, luma, luma, luma))  # reads luma only
    return None if value is None else stamp.age_ms(value, now_s)


class Phase:
    """One pipeline from open to error, EOS or the end of its time."""

    def __init__(self, device: str, caps_text: str, decoder: str, stamped: bool = False) -> None:
        jpeg = caps_text.startswith("image/jpeg")
        decode = f"{decoder} ! " if jpeg else ""
        self.pipeline = Gst.parse_launch(
            f'v4l2src name=src device="{device}" ! {caps_text} ! identity name=camera ! {decode}'
            "videoconvert ! video/x-raw,format=GRAY8 ! appsink name=out emit-signals=true sync=false"
        )
        self.jpeg = jpeg
        self.stamped = stamped
        self.buffers: list[dict] = []
        self.decoded: list[dict] = []
        self.errors: list[dict] = []
        self.warnings: list[str] = []
        self.eos = False  # the stream ended by itself (not the EOS drain() sends at the deadline)
        self.drained = False
        self.ended_at: float | None = None  # the deadline (or the error, or EOS), on the "t" clock
        self.started = time.monotonic()
        self.playing = False
        camera_pad = self.pipeline.get_by_name("camera").get_static_pad("src")
        camera_pad.add_probe(Gst.PadProbeType.BUFFER, self._on_camera_buffer)
        self.pipeline.get_by_name("out").connect("new-sample", self._on_decoded)

    def _on_camera_buffer(self, _pad: Gst.Pad, info: Gst.PadProbeInfo) -> Gst.PadProbeReturn:
        buffer = info.get_buffer()
        entry = {
            "t": time.monotonic() - self.started,
            "pts": buffer.pts / Gst.SECOND,
            "size": buffer.get_size(),
            "corrupted": buffer.has_flags(Gst.BufferFlags.CORRUPTED),
        }
        if self.jpeg:
            ok, mapped = buffer.map(Gst.MapFlags.READ)
            if ok:
                try:
                    entry.update(jpeg_info(bytes(mapped.data)))
                finally:
                    buffer.unmap(mapped)
        if not self.buffers:
            print("streaming", flush=True)
        self.buffers.append(entry)
        return Gst.PadProbeReturn.OK

    def _on_decoded(self, sink: Gst.Element) -> Gst.FlowReturn:
        sample = sink.emit("pull-sample")
        structure = sample.get_caps().get_structure(0)
        width, height = structure.get_value("width"), structure.get_value("height")
        buffer = sample.get_buffer()
        decoded_at = time.time()  # wall clock, before anything is read: the stamp's clock
        ok, mapped = buffer.map(Gst.MapFlags.READ)
        if ok:
            try:
                data = bytes(mapped.data)
            finally:
                buffer.unmap(mapped)
            entry = {
                "t": time.monotonic() - self.started,
                "frame": frame_number(data, width, height, self.stamped),
            }
            if self.stamped:
                entry["stamp_age_ms"] = stamp_age_ms(data, width, height, decoded_at)
            self.decoded.append(entry)
        return Gst.FlowReturn.OK

    def run(self, seconds: float) -> None:
        bus = self.pipeline.get_bus()
        if self.pipeline.set_state(Gst.State.PLAYING) != Gst.StateChangeReturn.FAILURE:
            self.playing = True
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            message = bus.timed_pop_filtered(
                int(left * Gst.SECOND), Gst.MessageType.ERROR | Gst.MessageType.WARNING | Gst.MessageType.EOS
            )
            if message is None:
                break
            if message.type == Gst.MessageType.WARNING:
                self.warnings.append(message.parse_warning()[0].message)
                continue
            if message.type == Gst.MessageType.EOS:
                self.eos = True
                break
            err, debug = message.parse_error()
            self.errors.append(
                {
                    "source": message.src.get_name(),
                    "message": err.message,
                    "debug": debug or "",
                    "domain": err.domain,
                    "code": err.code,
                    "t": time.monotonic() - self.started,
                }
            )
            break
        self.ended_at = time.monotonic() - self.started
        if self.playing and not self.errors and not self.eos:
            self.drain(bus)
        self.pipeline.set_state(Gst.State.NULL)

    def drain(self, bus: Gst.Bus, within_s: float = 5.0) -> None:
        """Ends the stream with EOS, as ``gst-launch -e`` does, and waits for it at the sink: every
        frame the camera handed over by now is decoded before the counts are read, so a count
        never differs by a frame still between the camera and the decoder at the deadline."""
        self.pipeline.send_event(Gst.Event.new_eos())
        message = bus.timed_pop_filtered(
            int(within_s * Gst.SECOND), Gst.MessageType.ERROR | Gst.MessageType.EOS
        )
        self.drained = message is not None and message.type == Gst.MessageType.EOS

    def report(self) -> dict:
        return {
            "playing": self.playing,
            "buffers": self.buffers,
            "decoded": self.decoded,
            "errors": self.errors,
            "warnings": self.warnings,
            "eos": self.eos,
            "drained": self.drained,
            "ended_at": self.ended_at,
        }


def stream(
    device: str, caps_text: str, seconds: float, reopen_within: float | None, decoder: str, stamped: bool
) -> dict:
    phase = Phase(device, caps_text, decoder, stamped)
    phase.run(seconds)
    phases = [phase.report()]
    if reopen_within is not None and phase.errors:
        gone_at = time.monotonic()
        deadline = gone_at + reopen_within
        while not os.path.exists(device) and time.monotonic() < deadline:
            time.sleep(0.02)  # polling a condition up to its deadline
        back_after = time.monotonic() - gone_at if os.path.exists(device) else None
        second = Phase(device, caps_text, decoder, stamped)
        if back_after is not None:
            second.run(seconds)
        phases.append({**second.report(), "back_after_s": back_after})
    return {"phases": phases}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=["caps", "exists", "ioctls", "stream"])
    parser.add_argument("device")
    parser.add_argument("caps", nargs="?")
    parser.add_argument("seconds", nargs="?", type=float, default=3.0)
    parser.add_argument("--reopen-within", type=float)
    parser.add_argument("--decoder", default="jpegdec")
    parser.add_argument("--stamped", action="store_true", help="the camera draws the capture-time stamp")
    args = parser.parse_args()
    if args.command == "caps":
        result = caps(args.device)
    elif args.command == "exists":
        result = exists(args.device)
    elif args.command == "ioctls":
        result = ioctls(args.device)
    else:
        result = stream(args.device, args.caps, args.seconds, args.reopen_within, args.decoder, args.stamped)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
