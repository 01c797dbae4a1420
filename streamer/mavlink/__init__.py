"""The MAVLink camera component (``python -m streamer.mavlink``): a camera that ground stations
such as QGroundControl find by themselves on the vehicle's MAVLink link. It advertises the RTSP
stream, starts and stops the recorder's video, and takes geotagged photos (docs/mavlink.md).

- ``link``: the transports (UDP out/in, TCP, serial), pymavlink's encoder and robust parser,
  the reconnect backoff.
- ``messages``: every message's fields, pure functions of the settings and what is observed.
- ``component``: the protocol: which commands are ours and what to do with each (pure), the
  vehicle's and our ids, the image captures, the recorder commands in flight.
- ``position``: the vehicle's position and attitude, and the fix rule for geotags.
- ``urls``: the stream's URI and the photos' URLs, at an address the ground can reach.
- ``worker``: the loop (heartbeats, reading, what is due), its threads and its status.

A worker like the web worker: it reads the controller's published state and commands the
recorder over its command channel; it imports no other worker and never loads GStreamer.
"""
