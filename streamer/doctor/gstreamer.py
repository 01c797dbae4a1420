"""GStreamer: the Python bindings and typelibs, the version, the H.264 encoder ENCODER comes to
on this machine, and every element the settings' pipelines need.

The bindings are checked in a child interpreter first: importing ``streamer.media.gst`` with one
of them missing would fail on the first, and the doctor should name them all. Only when they
load is GStreamer imported here (through ``streamer.media.gst``, the one module importing gi).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shlex
import subprocess
import sys
from typing import TYPE_CHECKING

from streamer.config import Settings
from streamer.doctor.report import Check
from streamer.media import encoders, pipelines

if TYPE_CHECKING:
    from streamer.media.gst import Gst

MIN_VERSION = (1, 22)
# The typelibs streamer.media.gst requires, and the Debian package of each.
TYPELIBS = {
    "Gst": "gir1.2-gstreamer-1.0",
    "GstVideo": "gir1.2-gst-plugins-base-1.0",
    "GstPbutils": "gir1.2-gst-plugins-base-1.0",
    "GstRtsp": "gir1.2-gst-plugins-base-1.0",
    "GstRtspServer": "gir1.2-gst-rtsp-server-1.0",
}
BASE, GOOD, BAD, UGLY = (f"gstreamer1.0-plugins-{kind}" for kind in ("base", "good", "bad", "ugly"))
# The Debian package of each element the pipelines use (a missing element has no plugin to ask).
ELEMENT_PACKAGES = {
    **dict.fromkeys(("tee", "queue", "filesink", "identity"), "libgstreamer1.0-0"),
    **dict.fromkeys(("videotestsrc", "videoconvert", "videorate", "appsink"), BASE),
    **dict.fromkeys(
        ("v4l2src", "jpegdec", "jpegenc", "splitmuxsink", "mp4mux", "qtdemux", "multifilesink", "rtph264pay"),
        GOOD,
    ),
    **dict.fromkeys(("shmsink", "shmsrc", "h264parse", "rtmp2sink", "srtsink", "mpegtsmux"), BAD),
    **dict.fromkeys(("rtspsrc", "rtph264depay", "flvmux"), GOOD),
    "rtspclientsink": "gstreamer1.0-rtsp",
    "x264enc": UGLY,
    **encoders.ELEMENT_PACKAGES,  # every encoder's elements (x264enc's among them)
}
# Properties whose value is itself an element description (splitmuxsink's muxer and sink).
_ELEMENT_PROPERTIES = ("muxer=", "sink=")
# Elements used besides the launch descriptions: the recorder checks a killed run's last chunk
# with GStreamer's discoverer, which needs the MP4 demuxer.
_RECORDER_EXTRA = ("qtdemux",)
_SETUP = "scripts/setup (or apt install"

# Run in a child interpreter: which typelibs load, and whether GStreamer's Python overrides do.
_BINDINGS_PROBE = """
import importlib, json, sys
try:
    import gi
except ImportError as err:
    print(json.dumps({"gi": str(err)}))
    raise SystemExit
found = {}
for namespace in sys.argv[1:]:
    try:
        gi.require_version(namespace, "1.0")
        importlib.import_module("gi.repository." + namespace)
        found[namespace] = None
    except (ImportError, ValueError) as err:
        found[namespace] = str(err)
print(json.dumps({"gi": None, "typelibs": found, "overrides": "gi.overrides.Gst" in sys.modules}))
"""


def bindings() -> Check:
    """PyGObject, GStreamer's Python overrides, and each typelib, in this interpreter."""
    name = "Python bindings"
    result = subprocess.run(
        [sys.executable, *_interpreter_flags(), "-c", _BINDINGS_PROBE, *TYPELIBS],
        capture_output=True,
        text=True,
        timeout=60,
    )
    try:
        found = json.loads(result.stdout)
    except ValueError:
        return Check.failed(name, f"{sys.executable} cannot load them: {result.stderr.strip()}", _fix_venv())
    if found["gi"]:
        return Check.failed(name, f"{sys.executable}: {found['gi']}", _fix_venv())
    missing = {ns: error for ns, error in found["typelibs"].items() if error}
    if missing:
        packages = sorted({TYPELIBS[ns] for ns in missing})
        return Check.failed(
            name,
            "missing typelibs: " + ", ".join(missing),
            f"{_SETUP} {' '.join(packages)})",
        )
    if not found["overrides"]:
        return Check.failed(
            name,
            "GStreamer's Python overrides are missing (a PyGObject from PyPI?)",
            _fix_venv(),
        )
    try:
        from streamer.media import gst  # noqa: F401  (what the workers import)
    except (ImportError, ValueError) as err:
        return Check.failed(name, f"{sys.executable}: {err}", _fix_venv())
    return Check.passed(name, f"PyGObject with GStreamer's overrides; {', '.join(TYPELIBS)}")


def _interpreter_flags() -> list[str]:
    """The flags that change where this interpreter finds modules, for the probe to see what
    we see."""
    flags = sys.flags
    chosen = (("-I", flags.isolated), ("-E", flags.ignore_environment), ("-s", flags.no_user_site))
    return [flag for flag, on in (*chosen, ("-S", flags.no_site)) if on]


def _fix_venv() -> str:
    return (
        "run with the project's .venv/bin/python, made by scripts/setup from Debian's python3 with "
        "--system-site-packages (apt install python3-gi python3-gst-1.0)"
    )


def checks(settings: Settings) -> list[Check]:
    """Version, the encoder, elements and pipelines (call only once ``bindings`` passed). The
    pipelines are checked with the encoder the stack would use here."""
    from streamer.media.gst import Gst

    encoder_row, kind = encoder(settings)
    with_encoder = dataclasses.replace(settings, encoder=kind)
    found = [version(Gst), encoder_row, *elements(with_encoder, Gst)]
    if settings.enable_http and settings.enable_rtsp:
        found.append(live_view())
    return found


def live_view() -> Check:
    """What the page's live view (WebRTC, ``streamer.live``) needs beyond the stream itself."""
    from streamer.media import gst

    missing = gst.webrtc_missing()
    if missing:
        packages = " ".join(sorted({*gst.WEBRTC_ELEMENTS.values(), gst.WEBRTC_BINDINGS_PACKAGE}))
        return Check.failed("live view (WebRTC)", f"missing: {missing}", f"{_SETUP} {packages})")
    return Check.passed("live view (WebRTC)", "webrtcbin, libnice and GStreamer's WebRTC bindings")


def encoder(settings: Settings) -> tuple[Check, str]:
    """The encoder ENCODER comes to on this machine, by the controller's own choice
    (``encoder_check.choose_encoder``: the elements present, and the self-test of each
    candidate tried), what ``auto`` would pick when ENCODER names one, and the kind to check
    the pipelines with (x264 when none can be used)."""
    from streamer.media import encoder_check

    quiet = logging.getLogger("streamer.doctor.encoder")  # the reasons go into the row instead
    quiet.addHandler(logging.NullHandler())
    quiet.propagate = False

    def choose(requested: str) -> encoder_check.EncoderChoice:
        return encoder_check.choose_encoder(
            requested,
            width=settings.video_width,
            height=settings.video_height,
            fps=settings.video_fps,
            bitrate_bps=settings.video_bitrate,
            log=quiet,
        )

    choice = choose(settings.encoder)
    has = ", ".join(choice.available) or "none"
    auto = choice if settings.encoder == encoders.AUTO else choose(encoders.AUTO)
    auto_picks = (
        f"; auto would pick {auto.chosen}" if settings.encoder != encoders.AUTO and auto.chosen else ""
    )
    if choice.chosen is None:
        fix = (
            f"set ENCODER to one this machine has ({has}) or to auto, or install what the one asked "
            "for needs (docs/encoders.md)"
        )
        return Check.failed("encoder", f"{choice.error}{auto_picks}", fix), encoders.FALLBACK
    skipped = [
        f"{kind} ({why})"
        for kind, why in auto.reasons.items()
        if kind in auto.available and kind != auto.chosen and why.startswith("self-test failed")
    ]
    why = choice.reasons[choice.chosen]
    detail = f"ENCODER={settings.encoder} → {choice.chosen} ({why}); this machine has: {has}{auto_picks}"
    if skipped:
        detail += "; auto skipped: " + ", ".join(skipped)
    return Check.passed("encoder", detail), choice.chosen


def version(gst: type[Gst]) -> Check:
    major, minor, micro, _nano = gst.version()
    found = f"{major}.{minor}.{micro}"
    if (major, minor) >= MIN_VERSION:
        return Check.passed("GStreamer", found)
    return Check.failed(
        "GStreamer",
        f"{found} is too old (1.22 or newer needed)",
        "use Debian 12, Ubuntu 24.04 or Raspberry Pi OS bookworm or newer",
    )


def descriptions(settings: Settings) -> dict[str, str]:
    """The launch description of each pipeline the settings run, by worker. The recorder's with
    video and images both: recording can be turned on at runtime."""
    found = {
        "feeder": pipelines.feeder(settings),
        "recorder": pipelines.recorder(settings, "/nonexistent", video=True, images=True),
    }
    if settings.enable_rtsp:
        found["rtsp"] = pipelines.rtsp_media(settings)
    for kind in sorted({destination.kind for destination in settings.publish_urls}):
        found[f"publisher ({kind})"] = pipelines.publish(settings, kind)
    return found


def element_names(description: str) -> list[str]:
    """The element factories a launch description names, in order: the first word after each
    ``!`` (or at the start) that is not caps, and the first word of element-valued properties."""
    names: list[str] = []
    expect_element = True
    for token in shlex.split(description):
        if token == "!":
            expect_element = True
            continue
        if expect_element and "/" not in token and "," not in token:
            names.append(token)
        elif token.startswith(_ELEMENT_PROPERTIES):
            names.append(token.split("=", 1)[1].split()[0])
        expect_element = False
    return list(dict.fromkeys(names))


def elements(settings: Settings, gst: type[Gst]) -> list[Check]:
    """Each element present, then each pipeline built (catches properties this version lacks)."""
    wanted = {worker: element_names(text) for worker, text in descriptions(settings).items()}
    wanted["recorder"] += _RECORDER_EXTRA
    names = list(dict.fromkeys(name for found in wanted.values() for name in found))
    missing = [name for name in names if gst.ElementFactory.find(name) is None]
    if missing:
        packages = sorted({ELEMENT_PACKAGES.get(name, f"the plugin with {name}") for name in missing})
        users = sorted(worker for worker, found in wanted.items() if set(found) & set(missing))
        return [
            Check.failed(
                "GStreamer elements",
                f"missing: {', '.join(missing)} (needed by the {', '.join(users)})",
                f"{_SETUP} {' '.join(packages)})",
            )
        ]
    result = [Check.passed("GStreamer elements", ", ".join(names))]
    for worker, text in descriptions(settings).items():
        problem = _unbuildable(text, gst)
        if problem:
            result.append(
                Check.failed(
                    f"{worker} pipeline",
                    f"cannot be built: {problem}",
                    "GStreamer 1.22 or newer with the packages scripts/setup installs",
                )
            )
    return result


def _unbuildable(description: str, gst: type[Gst]) -> str | None:
    from streamer.media.gst import GLib

    try:
        pipeline = gst.parse_launch(description)
    except GLib.Error as err:
        return err.message
    pipeline.set_state(gst.State.NULL)
    return None
