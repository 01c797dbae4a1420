"""Media: the one GStreamer glue module (``gst``), pure launch descriptions, the camera, the
shared-memory transport's hygiene, the capture-time stamp, and an RTSP client.
"""
