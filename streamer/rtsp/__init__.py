"""The RTSP worker (``python -m streamer.rtsp``): the server, who may watch, keyframe pacing."""
