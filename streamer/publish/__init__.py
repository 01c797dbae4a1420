"""The publish worker (``python -m streamer.publish``): the stream pushed to media servers that
fan it out (nginx-rtmp, an SRT gateway, MediaMTX, a cloud ingest), as PUBLISH_URL names them.

- ``retry``: the pauses between attempts (1, 2, 4 … 30 s; reset once a destination has held),
  and what the worker reports of a destination (pure).
- ``destination``: one destination's pipeline (``pipelines.publish``: an RTSP client of our own
  server, its H.264 passed through, muxed and sent), from an attempt to its end, and its
  counters.
- ``worker``: the destinations, the main loop, the progress reports.

A service like the live worker: an RTSP client of our own server; it imports no other worker.
"""
