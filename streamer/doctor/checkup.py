"""The doctor's run: settings, every check in order, the table, the exit status."""

from __future__ import annotations

import argparse
import dataclasses
import getpass
import os
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from streamer import config
from streamer.config import Settings
from streamer.doctor import camera, gstreamer, machine, stack
from streamer.doctor.report import Check, summary, table

EXIT_OK, EXIT_PROBLEMS = 0, 1
PROGRAM = "doctor"


def load_settings(environ: Mapping[str, str]) -> Settings:
    """The settings as the stack would load them (a bad one: one line and exit status 2), except
    that an SSD_PATH that exists but cannot be written passes: checking it is the doctor's job.
    A writable stand-in lets the other settings load; the real path is put back afterwards."""
    try:
        return config.load(environ)
    except config.ConfigError as err:
        home = environ.get("HOME") or str(Path.home())
        raw = environ.get("SSD_PATH", dict(config.variables())["SSD_PATH"].replace("$HOME", home))
        if not str(err).startswith("SSD_PATH=") or not Path(raw).is_absolute():
            return config.load_or_exit(environ, program=PROGRAM)
    settings = config.load_or_exit({**environ, "SSD_PATH": tempfile.gettempdir()}, program=PROGRAM)
    return dataclasses.replace(settings, ssd_path=Path(raw))


def run(settings: Settings) -> list[Check]:
    current = stack.running(settings)
    bindings = gstreamer.bindings()
    checks = [bindings]
    if bindings.ok:
        checks += gstreamer.checks(settings)
    checks.append(camera.check(settings, gstreamer_usable=bindings.ok))
    checks += machine.ssd_path(settings)
    checks.append(machine.disk_space(settings))
    checks += machine.ports(settings, stack.processes(current))
    if (link := machine.mavlink_link(settings, stack.processes(current))) is not None:
        checks.append(link)
    checks.append(machine.clock())
    checks.append(machine.sockets(settings, running=current is not None))
    checks.append(machine.video_group())
    checks += stack.checks(settings, current)
    return checks


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m streamer.doctor",
        description="Check this machine against the settings in the environment (exit status 0: all well).",
    )
    parser.parse_args(argv)
    s = load_settings(os.environ)
    sys.stdout.write(
        f"streamer doctor: CAMERA={s.camera} {s.video_width}x{s.video_height}@{s.video_fps}, "
        f"SSD_PATH={s.ssd_path}, as user {getpass.getuser()}\n"
    )
    checks = run(s)
    sys.stdout.write(table(checks) + summary(checks))
    return EXIT_OK if all(check.ok for check in checks) else EXIT_PROBLEMS
