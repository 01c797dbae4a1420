"""The web worker (``python -m streamer.web``): the stack's HTTP API, health and metrics.

- ``server``: the aiohttp application, access control (RTSP's credentials, HTTP Basic; HTTPS
  with RTSP's TLS pair), limits, the run loop and its heartbeats.
- ``snapshot``: what the stack looks like now (the controller's published state, the workers'
  CPU and memory, SSD_PATH's free space, the recorder's write rate), read once per request.
- ``health``: /health's verdict, a pure function of the state.
- ``status``: /api/v1/status's JSON. ``metrics``: /metrics, Prometheus text.
- ``recordings``: listing and serving recordings. ``controls``: recording on/off, snapshots
  (through the recorder's command channel).

No GStreamer here: nothing in this package loads it, and it imports no other worker.
"""
