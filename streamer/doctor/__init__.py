"""``python -m streamer.doctor``: this machine against the current settings, one ✓ or ✗ a line,
with the fix under each ✗. Exit status 0 when all is well, 1 otherwise, 2 for bad settings.

- ``gstreamer``: the Python bindings and typelibs, the version, the elements the pipelines need
- ``camera``: the V4L2 device and whether it offers the configured MJPEG mode
- ``machine``: SSD_PATH (writable, symlinks, space), ports, clock, socket folders, video group
- ``stack``: a running stack's state and its ``/health``

The settings are loaded as the stack loads them, but SSD_PATH is the doctor's to check: one
that cannot be written is a ✗ here, not a configuration error.
"""

from streamer.doctor.checkup import load_settings, run

__all__ = ["load_settings", "run"]
