"""``streamer.media.rtsp_client.RtspClient`` as a process, for tests that need a viewer in
another network namespace:

    python -m tests.rtsp_viewer URL [--protocols tcp] [--frames N] [--timeout S]
                                    [--user U] [--password-env VAR]

Every rtspsrc setting not given stays at rtspsrc's default (protocols, and its 2000 ms jitter
buffer), as QGroundControl uses it. Prints one JSON object: the client's report.
"""

from __future__ import annotations

import argparse
import json
import os

from streamer.media.rtsp_client import RtspClient


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.rtsp_viewer")
    parser.add_argument("url")
    parser.add_argument("--protocols", default=None, help="rtspsrc protocols (default: rtspsrc's own)")
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--timeout", type=float, default=30)
    parser.add_argument("--user", default=None, help="rtspsrc user-id")
    parser.add_argument("--password-env", default=None, help="environment variable holding user-pw")
    args = parser.parse_args()
    password = os.environ.get(args.password_env) if args.password_env else None
    viewer = RtspClient(
        args.url, args.protocols, latency_ms=None, user=args.user, password=password, read_stamps=False
    ).start()
    viewer.wait_frames(args.frames, args.timeout)
    viewer.stop()
    print(json.dumps(viewer.report()), flush=True)


if __name__ == "__main__":
    main()
