"""The live worker (``python -m streamer.live``): WebRTC live view for browsers.

- ``server``: the worker: its command channel (offers and closes, passed on by the web worker),
  the sessions, the cap on them, progress reports.
- ``session``: one browser's session: its pipeline (an RTSP client of our own server into a
  webrtcbin), from the offer to the answer, and what ends it.
- ``offer``: the browser's SDP offer checked, and H.264's payload type taken from it, before
  anything of it reaches GStreamer (pure).
"""
