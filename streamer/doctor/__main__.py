"""``python -m streamer.doctor`` (see ``streamer.doctor``)."""

from streamer.doctor.checkup import main

if __name__ == "__main__":
    raise SystemExit(main())
