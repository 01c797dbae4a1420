"""``python -m streamer.drone``: the whole stack under its controller (see ``streamer.control``)."""

from streamer.control.controller import main

if __name__ == "__main__":
    raise SystemExit(main())
