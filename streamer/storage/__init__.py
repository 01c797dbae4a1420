"""Recordings under SSD_PATH: their layout and ``latest_*`` links, and retention. No GStreamer."""
