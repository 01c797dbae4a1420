"""``python -m streamer.mavlink``: the MAVLink camera component (see ``streamer.mavlink.worker``)."""

from streamer.mavlink.worker import NAME, run
from streamer.runtime.worker import run_worker

if __name__ == "__main__":
    raise SystemExit(run_worker(NAME, run))
