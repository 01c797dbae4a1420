"""streamer: one camera in; a local recorder and a live RTSP stream out (see README.md)."""
