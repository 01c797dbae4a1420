"""Which H.264 encoder this machine can use: the elements it has, a self-test through the real
element, the choice ENCODER asks for, and the command the controller runs before the stack
starts (``python -m streamer.media.encoder_check``).

- ``available_encoders()``: each kind, "ok" or why not (the element missing, and the package or
  device that brings it).
- ``encoder_self_test(chain, ...)``: a few test frames at the configured size through ``chain``
  (``encoders.encoder_chain``) into ``h264parse``, in a child process of its own process group.
  A hardware encoder can hang inside a driver call, where no timeout of GStreamer's reaches it:
  at the deadline the whole group gets SIGTERM, then SIGKILL. None when every frame came out as
  H.264 with a keyframe first, else why not.
- ``choose_encoder(requested, ...)``: ``auto`` takes the first of ``encoders.AUTO_ORDER`` that
  exists and passes its self-test, else x264; a named encoder must exist (and pass). Every kind
  gets a reason, logged and returned.
- ``main()``: prints ``{"chosen": kind, "reasons": {kind: why}, "available": [kinds]}`` for the
  settings in the environment (ENCODER, VIDEO_WIDTH/HEIGHT/FPS/BITRATE) and exits 0, or exits 2
  with one line (``ENCODER='v4l2': no v4l2h264enc on this machine (it has: x264, openh264)``)
  when the requested encoder is missing or fails, or nothing can encode.

The controller, which never loads GStreamer, runs this as a subprocess
(``streamer.control.encoder_choice``).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streamer import config
from streamer.config import EXIT_CONFIG
from streamer.media import encoders, pipelines
from streamer.media.encoders import AUTO, AUTO_ORDER, ENCODERS, FALLBACK, EncoderKind, Purpose
from streamer.media.gst import GLib, Gst, missing_elements
from streamer.runtime import logs

PROGRAM = "encoder_check"
MODULE = "streamer.media.encoder_check"
# How long a self-test may take, child start included (Python and GStreamer load in ~0.5 s here,
# longer on a Pi), before its process group is killed: a stalled encoder fails the test.
SELF_TEST_DEADLINE_S = 8.0
# After SIGTERM at the deadline, how long before SIGKILL; after SIGKILL, how long to wait for the
# child to go (a process stuck in a driver call may never go: it is then left behind).
SELF_TEST_TERM_GRACE_S = 1.0
SELF_TEST_KILL_WAIT_S = 2.0
OK = "ok"
# The element name of the encoder in a self-test chain.
SELF_TEST_ENCODER = "self_test_encoder"

SelfTest = Callable[..., "str | None"]

_PR_SET_PDEATHSIG = 1
_PACKAGE_ROOT = Path(__file__).resolve().parents[2]


def _missing_element(kind: EncoderKind) -> str | None:
    """The first element of ``kind``'s chain this machine lacks, the encoder itself first."""
    spec = ENCODERS[kind]
    missing = missing_elements((spec.factory, *(e for e in spec.elements if e != spec.factory)))
    return missing[0] if missing else None


def available_encoders() -> dict[str, str]:
    """Every kind, "ok" when all the elements of its chain exist here, else why not."""
    found = {}
    for kind in EncoderKind:
        element = _missing_element(kind)
        found[kind.value] = (
            OK if element is None else f"no {element} on this machine ({encoders.ELEMENT_PACKAGES[element]})"
        )
    return found


# --- The self-test, run in a child process


def _die_with_parent() -> None:
    """In the self-test child before exec: SIGKILL if the process that started it dies."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _child_env() -> dict[str, str]:
    """The environment of the self-test child: ours, with this copy of ``streamer`` first on the
    path (the child must test with the same code)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_PACKAGE_ROOT), env.get("PYTHONPATH")) if p)
    return env


def encoder_self_test(
    chain: str,
    width: int,
    height: int,
    fps: int,
    frames: int = encoders.SELF_TEST_FRAMES,
    deadline_s: float = SELF_TEST_DEADLINE_S,
) -> str | None:
    """Encode ``frames`` test frames of ``width``x``height``@``fps`` through ``chain`` in a child
    process (its own process group); None when every frame came out as H.264 with a keyframe
    first, else why not. At ``deadline_s`` the child's group gets SIGTERM, then SIGKILL."""
    command = [
        sys.executable,
        "-m",
        MODULE,
        "--self-test",
        chain,
        "--width",
        str(width),
        "--height",
        str(height),
        "--fps",
        str(fps),
        "--frames",
        str(frames),
    ]
    process = subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_child_env(),
        start_new_session=True,  # its own process group: the deadline kills all of it
        preexec_fn=_die_with_parent,
    )
    try:
        out, err = process.communicate(timeout=deadline_s)
    except subprocess.TimeoutExpired:
        return _kill_stalled(process, deadline_s)
    if process.returncode != 0:
        last = (err.strip().splitlines() or ["no message"])[-1]
        return f"the self-test process failed (exit status {process.returncode}): {last}"
    try:
        answer = json.loads(out.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return "the self-test process gave no answer"
    return encoders.self_test_verdict(answer, frames)


def _kill_stalled(process: subprocess.Popen[str], deadline_s: float) -> str:
    """SIGTERM, then SIGKILL, to the stalled child's process group; why the test failed."""
    why = f"no answer within {deadline_s:g} s: stalled"
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(SELF_TEST_TERM_GRACE_S)
        why += " (stopped with SIGTERM)"
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        try:
            process.wait(SELF_TEST_KILL_WAIT_S)
            why += " (killed with SIGKILL)"
        except subprocess.TimeoutExpired:
            why += f" (pid {process.pid} did not exit even after SIGKILL: stuck in the driver?)"
    with contextlib.suppress(subprocess.TimeoutExpired, ValueError, OSError):
        process.communicate(timeout=0.5)
    return why


def run_self_test_here(chain: str, width: int, height: int, fps: int, frames: int) -> dict[str, Any]:
    """The child's side: run the self-test pipeline in this process until end-of-stream or an
    error (a stall is the parent's to end). What came out: ``frames``, ``keyframe_first`` and
    ``caps``, or ``error``."""
    try:
        pipeline = Gst.parse_launch(encoders.self_test_description(chain, width, height, fps, frames))
    except GLib.Error as err:
        return {"error": f"cannot build the pipeline: {err.message}"}
    sink = pipeline.get_by_name(encoders.SELF_TEST_SINK)
    bus = pipeline.get_bus()
    keyframes: list[bool] = []
    caps = None
    try:
        if pipeline.set_state(Gst.State.PLAYING) == Gst.StateChangeReturn.FAILURE:
            return {"error": _bus_error(bus) or "the pipeline does not start"}
        while True:
            error = _bus_error(bus)
            if error:
                return {"error": error}
            sample = sink.emit("try-pull-sample", 100 * Gst.MSECOND)
            if sample is None:
                if sink.get_property("eos"):
                    break
                continue
            if caps is None:
                caps = sample.get_caps().to_string()
            keyframes.append(not sample.get_buffer().has_flags(Gst.BufferFlags.DELTA_UNIT))
    finally:
        pipeline.set_state(Gst.State.NULL)
    return {"frames": len(keyframes), "keyframe_first": bool(keyframes and keyframes[0]), "caps": caps}


def _bus_error(bus: Gst.Bus) -> str | None:
    message = bus.pop_filtered(Gst.MessageType.ERROR)
    if message is None:
        return None
    err, _debug = message.parse_error()
    return f"{message.src.get_name()}: {err.message}"


# --- The choice


@dataclass(frozen=True)
class EncoderChoice:
    """``chosen``: the kind to use (None: none can be, ``error`` says why in one line).
    ``reasons``: every kind, why it was or was not chosen. ``available``: the kinds whose
    elements exist here."""

    chosen: str | None
    reasons: dict[str, str]
    available: list[str]
    error: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {"chosen": self.chosen, "reasons": self.reasons, "available": self.available}


def choose_encoder(
    requested: str,
    *,
    width: int,
    height: int,
    fps: int,
    bitrate_bps: int,
    keyframe_interval: int | None = None,
    deadline_s: float = SELF_TEST_DEADLINE_S,
    chains: Mapping[str, str] | None = None,
    present: Mapping[str, str] | None = None,
    self_test: SelfTest = encoder_self_test,
    log: logging.Logger | None = None,
) -> EncoderChoice:
    """The encoder ENCODER=``requested`` comes to on this machine, at the stream's settings.

    ``auto``: the first of ``AUTO_ORDER`` whose elements exist and that passes its self-test
    (``self_test``, within ``deadline_s``); else x264, the software fallback, which is not
    self-tested (it is what the stack has always run). openh264 is never chosen by ``auto``. A
    named encoder must exist and pass its self-test.

    ``chains`` replaces the chain a kind is tested with (and makes that kind count as present):
    a test double, e.g. a chain that never outputs. ``present`` replaces what
    ``available_encoders`` finds. Each reason is logged on ``log``.
    """
    log = log or logging.getLogger(PROGRAM)
    chains = dict(chains or {})
    found = dict(available_encoders() if present is None else present)
    found.update(dict.fromkeys(chains, OK))
    available = [kind.value for kind in EncoderKind if found.get(kind.value) == OK]
    reasons = {kind.value: found.get(kind.value, "unknown") for kind in EncoderKind}
    interval = keyframe_interval or fps * pipelines.STREAM_KEYFRAME_INTERVAL_S
    where = f"{width}x{height}@{fps}"

    def passes(kind: EncoderKind) -> bool:
        chain = chains.get(kind.value) or encoders.encoder_chain(
            kind,
            name=SELF_TEST_ENCODER,
            bitrate_bps=bitrate_bps,
            keyframe_interval=interval,
            purpose=Purpose.STREAM,
        )
        started = time.monotonic()
        why = self_test(chain, width, height, fps, deadline_s=deadline_s)
        took = time.monotonic() - started
        if why is None:
            reasons[kind.value] = f"ok: self-test passed at {where} in {took:.1f} s"
            return True
        reasons[kind.value] = f"self-test failed at {where}: {why}"
        log.warning("encoder %s skipped: %s", kind.value, reasons[kind.value])
        return False

    if requested != AUTO:
        kind = EncoderKind(requested)
        for other in available:
            if other != kind.value:
                reasons[other] = "present, not requested"
        if found.get(kind.value) != OK:
            element = _missing_element(kind) or ENCODERS[kind].factory
            return EncoderChoice(
                None, reasons, available, encoders.missing_message(requested, element, available)
            )
        if not passes(kind):
            error = f"ENCODER={requested!r}: {ENCODERS[kind].factory} {reasons[kind.value]}"
            return EncoderChoice(None, reasons, available, error)
        log.info("encoder: %s (requested; %s)", kind.value, reasons[kind.value])
        return EncoderChoice(kind.value, reasons, available)

    chosen: EncoderKind | None = None
    for kind in AUTO_ORDER:
        if found.get(kind.value) != OK:
            continue
        if chosen is not None:
            reasons[kind.value] = f"present, not tried: {chosen.value} comes first"
        elif kind is FALLBACK and kind.value not in chains:
            chosen = kind
            reasons[kind.value] = "ok: the software fallback (not self-tested)"
        elif passes(kind):
            chosen = kind
    for kind in EncoderKind:
        if kind not in AUTO_ORDER and found.get(kind.value) == OK:
            reasons[kind.value] = f"present, never chosen by auto (ENCODER={kind.value} to use it)"
    summary = "; ".join(
        f"{kind}: {why}" for kind, why in reasons.items() if kind != getattr(chosen, "value", None)
    )
    if chosen is None:
        error = f"ENCODER='auto': no encoder can be used on this machine ({summary})"
        return EncoderChoice(None, reasons, available, error)
    log.info("encoder: %s, chosen by auto (%s; %s)", chosen.value, reasons[chosen.value], summary)
    return EncoderChoice(chosen.value, reasons, available)


# --- The command


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m {MODULE}", description=__doc__.splitlines()[0])
    parser.add_argument("--deadline", type=float, default=SELF_TEST_DEADLINE_S, help="self-test deadline, s")
    parser.add_argument(
        "--relayed", action="store_true", help="log in the controller's relay format (set by the controller)"
    )
    # The self-test child (internal): run one chain here and print what came out.
    parser.add_argument("--self-test", metavar="CHAIN", help=argparse.SUPPRESS)
    parser.add_argument("--width", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--height", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--fps", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--frames", type=int, default=encoders.SELF_TEST_FRAMES, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.self_test is not None:
        answer = run_self_test_here(args.self_test, args.width, args.height, args.fps, args.frames)
        print(json.dumps(answer), flush=True)
        return 0

    settings = config.load_or_exit(os.environ, program=PROGRAM)
    log = logs.setup(PROGRAM, settings.log_level, relayed=args.relayed, secrets=settings.secrets)
    choice = choose_encoder(
        settings.encoder,
        width=settings.video_width,
        height=settings.video_height,
        fps=settings.video_fps,
        bitrate_bps=settings.video_bitrate,
        deadline_s=args.deadline,
        log=log,
    )
    print(json.dumps(choice.as_json()), flush=True)
    if choice.error is not None:
        print(f"{PROGRAM}: configuration error: {choice.error}", file=sys.stderr, flush=True)
        return EXIT_CONFIG
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
