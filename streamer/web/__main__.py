"""``python -m streamer.web``: the web worker (see ``streamer.web.server``)."""

from streamer.runtime.worker import run_worker
from streamer.web.server import NAME, run

if __name__ == "__main__":
    raise SystemExit(run_worker(NAME, run))
