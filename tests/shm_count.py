"""A separate reader process for tests: prints one line per frame read from a feeder socket.

python -m tests.shm_count SOCKET_PATH      (settings from the environment)
"""

from __future__ import annotations

import os
import sys
import time

from streamer import config
from tests.harness import ShmReader


def main() -> None:
    reader = ShmReader(config.load(os.environ), sys.argv[1])
    reader.arrivals = _Printer()  # type: ignore[assignment]
    reader.start()
    while not reader.errors:
        time.sleep(0.1)
    print("error:", *reader.errors, flush=True)
    raise SystemExit(1)


class _Printer(list):
    def append(self, arrival: float) -> None:
        print("frame", len(self), flush=True)
        super().append(arrival)


if __name__ == "__main__":
    main()
