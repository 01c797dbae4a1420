"""``python -m streamer.live``: the live worker (see ``streamer.live.server``)."""

from streamer.live.server import NAME, run
from streamer.runtime.worker import run_worker

if __name__ == "__main__":
    raise SystemExit(run_worker(NAME, run))
