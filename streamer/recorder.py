"""Recorder: H.264 MP4 chunks and one JPEG a second from the recorder socket, under SSD_PATH.

Run on its own with ``python -m streamer.recorder`` (the feeder must be running). Each start
records into a new session folder (see ``streamer.storage``). After every finished chunk or
snapshot, ``drone_temp/latest_video.mp4`` / ``latest_image.jpg`` are repointed at it.

On SIGTERM, and when the feeder goes away ("Control socket has closed"), the recorder sends
end-of-stream through its pipeline so the open chunk is finalised before it exits.
"""

from __future__ import annotations

import logging
import threading

from streamer import gst, pipelines, storage
from streamer.config import Settings
from streamer.status import StatusWriter
from streamer.worker import EXIT_OK, run_worker

NAME = "recorder"
PROGRESS_INTERVAL_S = 1.0
FRAGMENT_CLOSED = "splitmuxsink-fragment-closed"
SNAPSHOT_WRITTEN = "GstMultiFileSink"


class Recording:
    """Keeps count of what has been recorded and repoints the latest_* links."""

    def __init__(self, settings: Settings, status: StatusWriter, log: logging.Logger) -> None:
        self.links = storage.LatestLinks(settings.ssd_path)
        self.frames = 0
        self.chunks = 0
        self.snapshots = 0
        self._status = status
        self._log = log
        self._lock = threading.Lock()
        self._links_broken = False

    def on_frame(self, _buffer: object) -> None:  # streaming thread
        with self._lock:
            self.frames += 1
            first = self.frames == 1
        if first:
            self._log.info("receiving frames")
            self._status.ready()

    def on_element_message(self, message: gst.Gst.Message) -> None:  # main loop
        structure = message.get_structure()
        if structure is None:
            return
        if structure.get_name() == FRAGMENT_CLOSED:
            self.chunks += 1
            self._repoint(storage.LATEST_VIDEO, structure.get_string("location"))
        elif structure.get_name() == SNAPSHOT_WRITTEN:
            self.snapshots += 1
            self._repoint(storage.LATEST_IMAGE, structure.get_string("filename"))

    def _repoint(self, link_name: str, target: str) -> None:
        self._log.debug("finished %s", target)
        try:
            self.links.point(link_name, target)
        except OSError as err:  # e.g. a FAT/exFAT SSD cannot hold symlinks: keep recording
            if not self._links_broken:
                self._log.warning("cannot update %s/%s: %s", self.links.directory, link_name, err)
                self._links_broken = True

    def report(self) -> bool:  # main loop, every PROGRESS_INTERVAL_S
        self._status.progress(frames=self.frames, chunks=self.chunks, snapshots=self.snapshots)
        return True


def run(settings: Settings, status: StatusWriter, log: logging.Logger) -> int:
    if not (settings.enable_video or settings.enable_images):
        log.info("ENABLE_VIDEO and ENABLE_IMAGES are both off: nothing to record")
        return EXIT_OK
    session = storage.create_session_dir(settings.ssd_path)
    recording = Recording(settings, status, log)
    what = " and ".join(
        name for name, on in (("video", settings.enable_video), ("images", settings.enable_images)) if on
    )
    log.info("recording %s into %s", what, session)

    # Finalising must finish before the controller's SIGKILL deadline.
    runner = gst.PipelineRunner(
        pipelines.recorder(settings, str(session)),
        log,
        send_eos=True,
        eos_timeout_s=max(0.5, settings.stop_grace_s - 1.0),
    )
    shm_input = runner.element(pipelines.SHM_INPUT_ELEMENT)

    def on_error(message: gst.Gst.Message) -> bool:
        if message.src is not shm_input:
            return False
        log.warning("lost the feeder: finalising the open chunk")
        runner.finish_after(shm_input)
        return True

    runner.on_error = on_error
    runner.on_element_message = recording.on_element_message
    gst.add_buffer_probe(runner.element(pipelines.RECORDER_TEE_ELEMENT), "sink", recording.on_frame)
    gst.GLib.timeout_add(int(PROGRESS_INTERVAL_S * 1000), recording.report)
    exit_code = runner.run()
    log.info(
        "stopped: %d chunks and %d snapshots finished in %s", recording.chunks, recording.snapshots, session
    )
    return exit_code


def main() -> int:
    return run_worker(NAME, run)


if __name__ == "__main__":
    raise SystemExit(main())
