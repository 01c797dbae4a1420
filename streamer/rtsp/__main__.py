"""``python -m streamer.rtsp``: the RTSP worker (see ``streamer.rtsp.server``)."""

from streamer.rtsp.server import NAME, run
from streamer.runtime.worker import run_worker

if __name__ == "__main__":
    raise SystemExit(run_worker(NAME, run))
