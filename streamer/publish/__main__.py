"""``python -m streamer.publish``: the publish worker (see ``streamer.publish.worker``)."""

from streamer.publish.worker import NAME, run
from streamer.runtime.worker import run_worker

if __name__ == "__main__":
    raise SystemExit(run_worker(NAME, run))
