"""The floor: the stack's own chain, from camera to RTP, in a single GStreamer pipeline.

    python -m bench.floor        (settings from the environment, as for the stack; SIGTERM stops it)

What the stack would cost with nothing of its own architecture: no shared memory, no second
process, no recorder. The media is built from the stack's own descriptions, so it can only
differ where the architecture does:

- the feeder's camera chain (``pipelines.camera_frames``): the same stamped synthetic camera,
  JPEG encode and decode, videoconvert, ``videorate drop-only=true``, the exact raw caps;
- the RTSP media after its shared-memory reader: the same leaky queue, x264 settings,
  h264parse and payloader.

It is served by the RTSP worker's own server class (shared factory, the same transports, the
same forced keyframe for every new viewer), so clients see the same server behaviour. One
difference follows from a single pipeline: the camera runs only while someone watches (the
media starts with the first viewer), where the stack's camera runs all the time; the start-up
figure of the floor therefore includes starting the camera, as the stack's does.
"""

from __future__ import annotations

import logging
import os

from streamer import config
from streamer.config import Settings
from streamer.media import gst, pipelines
from streamer.media.camera import CAMERA_ELEMENT, STAMP_ELEMENT, CaptureStamper, camera_for
from streamer.rtsp.server import StreamServer
from streamer.runtime import logs
from streamer.runtime.status import StatusWriter

NAME = "floor"


def floor_media(s: Settings) -> str:
    """The feeder's camera chain, then the RTSP media after its shm reader: one pipeline."""
    reader = pipelines.shm_reader_source(s, s.shm_stream_socket)
    media = pipelines.rtsp_media(s)
    if not media.startswith(reader):
        raise ValueError("the stack's descriptions changed shape: update bench.floor.floor_media")
    return pipelines.camera_frames(s) + media[len(reader) :]


def declare_no_latency(camera: gst.Gst.Element) -> None:
    """Make the live camera declare no latency, as the stack's shared-memory reader declares none.

    gst-rtsp-server's RTP sinks synchronise: each packet waits until its timestamp plus the
    pipeline's latency. In the stack, the shared-memory reader (frames timed by their capture
    time) declares no latency of its own, so the RTSP pipeline's latency is only its sinks' processing
    deadline (20 ms by default). In one pipeline, the live camera's own declared frame of latency
    (33 ms at 30 fps) would be added to that and every packet held that much longer than in the
    stack: the floor would be no floor. Rewriting the answer to the latency query at the
    camera's pad leaves the floor with the same latency budget as the stack's RTSP pipeline.
    """

    def on_query(_pad: gst.Gst.Pad, info: gst.Gst.PadProbeInfo) -> gst.Gst.PadProbeReturn:
        query = info.get_query()
        if query.type == gst.Gst.QueryType.LATENCY:
            live, _min, _max = query.parse_latency()
            query.set_latency(live, 0, gst.Gst.CLOCK_TIME_NONE)
        return gst.Gst.PadProbeReturn.OK

    camera.get_static_pad("src").add_probe(
        gst.Gst.PadProbeType.QUERY_UPSTREAM | gst.Gst.PadProbeType.PULL, on_query
    )


def serve(settings: Settings, log: logging.Logger) -> int:
    server = StreamServer(settings, StatusWriter(None), log)
    server.factory.set_launch(f"( {floor_media(settings)} )")
    stampers: list[CaptureStamper] = []  # held, like everything the media's probes call into

    def on_media_configure(_factory: object, media: gst.GstRtspServer.RTSPMedia) -> None:
        bin_ = media.get_element()
        declare_no_latency(bin_.get_by_name(CAMERA_ELEMENT))
        if camera_for(settings).stamped:
            stampers.append(CaptureStamper.attach(bin_.get_by_name(STAMP_ELEMENT), log))

    server.factory.connect("media-configure", on_media_configure)
    if not server.start():
        return 1
    log.info("floor: camera → JPEG → decode → x264 → RTP in one pipeline")
    loop = gst.GLib.MainLoop()
    gst.on_stop_signals(loop.quit, log)
    loop.run()
    for client in list(server.viewers):
        client.close()
    log.info("stopped; %d viewers connected in all", server.viewers_seen)
    return 0


def main() -> int:
    settings = config.load_or_exit(os.environ, program=NAME)
    return serve(settings, logs.setup(NAME, settings.log_level))


if __name__ == "__main__":
    raise SystemExit(main())
