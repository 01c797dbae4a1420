"""Pipeline descriptions as strings: pure functions of the settings."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from streamer import config
from streamer.media import camera, pipelines


@pytest.fixture
def settings(tmp_path: Path) -> config.Settings:
    return config.load({"HOME": str(tmp_path), "CAMERA": "/dev/video2", "VIDEO_FPS": "25"})


def test_feeder_starts_with_the_cameras_source(settings):
    """The source itself is the camera module's (tests/test_camera.py)."""
    assert pipelines.feeder(settings).startswith(camera.camera_for(settings).source() + " ! jpegdec ")


def test_feeder_decodes_once_and_fixes_format_without_holding_a_frame(settings):
    frames = pipelines.camera_frames(settings)
    assert frames.endswith(
        "! jpegdec ! videoconvert ! videorate drop-only=true "
        "! video/x-raw,format=I420,width=1280,height=720,framerate=25/1"
    )
    description = pipelines.feeder(settings)
    assert description.startswith(frames + " ! appsink name=camera_out ")
    _, _, branches = description.partition(" ! tee name=split ")
    assert branches.count("split. ! queue") == 2


def test_feeder_hands_frames_over_with_their_capture_time_and_never_backs_up(settings):
    """Out through an appsink that keeps every frame, back in through a live appsrc with the
    frames' caps that drops its oldest frame rather than grow (``gst.hand_over_with_capture_time``)."""
    description = pipelines.feeder(settings)
    appsink = description.split("appsink name=camera_out ")[1].split(" appsrc ")[0]
    assert "emit-signals=true sync=false" in appsink and "drop=false" in appsink
    appsrc = description.split("appsrc name=stamped_frames ")[1].split(" ! tee ")[0]
    assert appsrc == (
        'caps="video/x-raw,format=I420,width=1280,height=720,framerate=25/1" is-live=true format=time '
        f"leaky-type=downstream max-buffers=2 max-bytes={2 * (1_382_400 + 8)} max-time=0"
    )


@pytest.mark.parametrize(
    ("name", "socket"), [("to_recorder", "/tmp/drone_cam_rec.sock"), ("to_stream", "/tmp/drone_cam_str.sock")]
)
def test_each_branch_drops_instead_of_blocking(settings, name, socket):
    description = pipelines.feeder(settings)
    branch = description.split(f"queue name={name}_queue ")[1].split(" split.")[0]
    assert "leaky=downstream max-size-buffers=2 max-size-bytes=0 max-size-time=0" in branch
    assert f'shmsink name={name} socket-path="{socket}"' in branch
    assert "wait-for-connection=false" in branch
    assert "sync=false" in branch


def test_shm_area_holds_many_frames_with_their_capture_times(settings):
    assert pipelines.shm_frame_bytes(settings) == 1_382_400 + 8
    assert pipelines.shm_area_bytes(settings) == 32 * (1_382_400 + 8)
    assert f"shm-size={32 * (1_382_400 + 8)}" in pipelines.feeder(settings)


def test_reader_source_restores_caps_and_timestamps(settings):
    assert pipelines.shm_reader_source(settings, "/tmp/x.sock") == (
        'shmsrc name=shm_input socket-path="/tmp/x.sock" is-live=true do-timestamp=true '
        "! video/x-raw,format=I420,width=1280,height=720,framerate=25/1"
    )


def named_elements(s: config.Settings) -> list[tuple[str, dict[str, str]]]:
    """Each description, with the elements the workers (and bench, tests) look up by name in it
    and the factory each must be made by."""
    cam = camera.camera_for(s)
    source = {camera.CAMERA_ELEMENT: "v4l2src" if isinstance(cam, camera.V4l2Camera) else "videotestsrc"}
    if cam.stamped:
        source[camera.STAMP_ELEMENT] = "identity"
    reader = {pipelines.SHM_INPUT_ELEMENT: "shmsrc"}
    return [
        (
            pipelines.feeder(s),
            {
                **source,
                pipelines.CAMERA_OUT_ELEMENT: "appsink",
                pipelines.STAMPED_FRAMES_ELEMENT: "appsrc",
                pipelines.TEE_ELEMENT: "tee",
                "to_recorder": "shmsink",
                "to_stream": "shmsink",
            },
        ),
        (pipelines.shm_reader_source(s, "/tmp/x.sock") + " ! fakesink", reader),
        (
            pipelines.recorder(s, "/tmp/session"),
            {
                **reader,
                pipelines.RECORDER_TEE_ELEMENT: "tee",
                pipelines.VIDEO_QUEUE_ELEMENT: "queue",
                pipelines.VIDEO_ENCODER_ELEMENT: "x264enc",
                pipelines.VIDEO_SINK_ELEMENT: "splitmuxsink",
                pipelines.IMAGE_QUEUE_ELEMENT: "queue",
                pipelines.IMAGE_SINK_ELEMENT: "multifilesink",
                pipelines.FRAME_QUEUE_ELEMENT: "queue",
                pipelines.FRAME_SINK_ELEMENT: "appsink",
            },
        ),
        (
            pipelines.rtsp_media(s),
            {
                **reader,
                pipelines.STREAM_ENCODER_ELEMENT: "x264enc",
                pipelines.PAYLOADER_ELEMENT: "rtph264pay",
            },
        ),
    ]


@pytest.mark.parametrize("camera_setting", ["/dev/video2", "test", "test-stamped"])
def test_descriptions_parse_into_the_named_elements(tmp_path, camera_setting):
    """Every description is valid launch syntax for the installed GStreamer (parse_launch raises
    otherwise), and holds each element the workers look up by name, made by the right factory."""
    from streamer.media.gst import Gst

    s = config.load({"HOME": str(tmp_path), "CAMERA": camera_setting})
    for description, named in named_elements(s):
        pipeline = Gst.parse_launch(description)
        assert isinstance(pipeline, Gst.Pipeline), description
        found = {
            name: element.get_factory().get_name()
            for name in named
            if (element := pipeline.get_by_name(name)) is not None
        }
        assert found == named, description


def test_recorder_encodes_chunks_and_snapshots(settings):
    description = pipelines.recorder(settings, "/ssd/00001_x")
    assert description.startswith('shmsrc name=shm_input socket-path="/tmp/drone_cam_rec.sock" ')
    latest_frame, video, images = description.split(" record. ! ")
    assert video.startswith("queue name=video_queue leaky=downstream max-size-buffers=6 ")
    # keyframes are forced every 23 frames' time by the recorder; x264's own interval is a backstop
    assert "x264enc name=video_encoder speed-preset=superfast bitrate=4000 key-int-max=46 " in video
    assert "option-string=scenecut=0:" in video  # no extra keyframes: chunk lengths stay exact
    # No frame delay: forced keyframes are kept when a slow camera makes GOPs a few frames long.
    assert "bframes=0 sliced-threads=true" in video and "rc-lookahead=0:sync-lookahead=0" in video
    assert 'location="/ssd/00001_x/video_%05d.mp4" start-index=0 max-size-time=5980000000 ' in video
    assert 'muxer="mp4mux fragment-duration=500 fragment-mode=first-moov-then-finalise"' in video
    assert 'sink="filesink buffer-mode=unbuffered"' in video
    assert "videorate drop-only=true max-rate=1 ! jpegenc" in images
    assert 'location="/ssd/00001_x/image_%06d.jpg" index=0 post-messages=true' in images
    assert latest_frame.endswith(
        "! tee name=record ! queue name=frame_queue leaky=downstream max-size-buffers=1 max-size-bytes=0 "
        "max-size-time=0 ! appsink name=latest_frame max-buffers=1 drop=true sync=false wait-on-eos=false "
        "enable-last-sample=false"
    )
    resumed = pipelines.recorder(settings, "/ssd/00001_x", first_chunk=7, first_image=40)
    assert "start-index=7 " in resumed and "index=40 " in resumed


def test_recorder_gops_last_a_fixed_time():
    assert pipelines.record_gop_ns(30) == 500_000_000  # 15 frames
    assert pipelines.record_gop_ns(25) == 920_000_000  # 23 frames
    assert pipelines.record_gop_ns(15) == 933_333_333  # 14 frames


FPS_RANGE = range(1, 121)


def frame_ns(i: int, fps: int) -> int:
    return i * 1_000_000_000 // fps


def test_each_gop_starts_at_the_frame_due_at_its_time():
    """At 30 fps: frames 0-14 are GOP 0, 15-29 GOP 1, whether a frame comes a little early or
    late (stamped on arrival); frames dropped in front of the encoder do not shift the GOPs."""
    index = pipelines.record_gop_index
    assert [index(frame_ns(i, 30), 30) for i in (0, 14, 15, 29, 30, 164, 165)] == [0, 0, 1, 1, 2, 10, 11]
    assert index(frame_ns(15, 30) - 10_000_000, 30) == 1  # due at 0.5 s, 10 ms early
    assert index(frame_ns(14, 30) + 10_000_000, 30) == 0  # 10 ms late
    assert index(frame_ns(16, 30), 30) == 1  # frame 15 dropped: the next one starts GOP 1
    assert index(3_210_000_000, 30) == 6  # after a 3 s gap: the grid holds, GOPs 1-5 are skipped
    assert [index(frame_ns(i, 25), 25) for i in (22, 23, 137, 138)] == [0, 1, 5, 6]  # 23-frame GOPs


def test_at_every_rate_the_frames_of_a_gop_are_the_ones_record_keyframes_counts():
    for fps in FPS_RANGE:
        gop, gops = pipelines.record_keyframes(fps)
        frames = range(gop * gops + 1)
        indices = [pipelines.record_gop_index(frame_ns(i, fps), fps) for i in frames]
        assert indices == [i // gop for i in frames], fps


def test_split_time_lies_half_a_gop_past_the_chunks_last_keyframe():
    """splitmuxsink closes a chunk before the GOP that would take it past max-size-time: half a
    GOP of slack either way lets keyframes land a few frames off their times."""
    assert pipelines.record_max_chunk_ns(30) == 5_750_000_000
    assert pipelines.record_max_chunk_ns(25) == 5_980_000_000
    for fps in FPS_RANGE:
        _, gops = pipelines.record_keyframes(fps)
        gop_ns = pipelines.record_gop_ns(fps)
        assert pipelines.record_max_chunk_ns(fps) == gops * gop_ns + gop_ns // 2, fps


def test_x264_adds_no_keyframes_of_its_own_between_the_forced_ones():
    assert pipelines.record_encoder_key_int_max(30) == 30
    for fps in FPS_RANGE:
        gop, _ = pipelines.record_keyframes(fps)
        assert pipelines.record_encoder_key_int_max(fps) == 2 * gop, fps


@pytest.mark.parametrize(("video", "images", "branches"), [("1", "0", 1), ("0", "1", 1), ("0", "0", 0)])
def test_recorder_branches_follow_the_settings(tmp_path, video, images, branches):
    s = config.load({"HOME": str(tmp_path), "ENABLE_VIDEO": video, "ENABLE_IMAGES": images})
    description = pipelines.recorder(s, "/ssd/x")
    assert description.count("record. ! ") == branches
    assert ("x264enc" in description) == (video == "1")
    assert ("jpegenc" in description) == (images == "1")
    assert "appsink name=latest_frame" in description  # snapshots can be taken whatever is recorded


@pytest.mark.parametrize(("video", "images"), [(True, False), (False, True), (True, True), (False, False)])
def test_recorder_branches_can_be_chosen_at_runtime(video, images):
    """What the recorder is asked to record overrides the settings (both on here)."""
    s = config.load({"HOME": "/tmp", "ENABLE_VIDEO": "1", "ENABLE_IMAGES": "1"})
    description = pipelines.recorder(s, "/ssd/x" if video or images else None, video=video, images=images)
    assert ("x264enc" in description) == video
    assert ("jpegenc" in description) == images
    assert description.count("record. ! ") == video + images


def test_recorder_records_the_stream_with_record_source_stream(tmp_path):
    """RECORD_SOURCE=stream: the video is our RTSP stream's H.264, not encoded again, timed by its
    RTP timestamps, through a leaky write buffer into the same chunk writer; the tee feeds only
    the latest frame and the images. Valid launch syntax with the elements the recorder looks up."""
    from streamer.media.gst import Gst

    s = config.load({"HOME": str(tmp_path), "RECORD_SOURCE": "stream", "ENABLE_IMAGES": "1"})
    description = pipelines.recorder(s, "/ssd/00001_x", first_chunk=3)
    assert "x264enc" not in description and "user" not in description  # credentials: properties
    assert description.count(" record. ! ") == 1  # the images; the video has its own source
    shm_part, stream_part = description.split(" rtspsrc ", 1)
    assert "jpegenc" in shm_part and "splitmuxsink" not in shm_part
    assert ("rtspsrc " + stream_part) == (
        'rtspsrc name=record_stream location="rtsp://127.0.0.1:8554/live" protocols=tcp latency=0 '
        "buffer-mode=none ! rtph264depay name=record_depay ! h264parse "
        "! queue name=video_queue leaky=downstream max-size-time=3000000000 max-size-bytes=0 "
        "max-size-buffers=0 "
        '! splitmuxsink name=video_chunks location="/ssd/00001_x/video_%05d.mp4" start-index=3 '
        "max-size-time=5500000000 max-size-bytes=0 "
        'muxer="mp4mux fragment-duration=500 fragment-mode=first-moov-then-finalise" '
        'sink="filesink buffer-mode=unbuffered"'
    )
    assert s.recorded_bitrate == s.video_bitrate != s.record_bitrate
    pipeline = Gst.parse_launch(description)
    named = {
        pipelines.RECORD_STREAM_SOURCE_ELEMENT: "rtspsrc",
        pipelines.RECORD_STREAM_DEPAY_ELEMENT: "rtph264depay",
        pipelines.VIDEO_QUEUE_ELEMENT: "queue",
        pipelines.VIDEO_SINK_ELEMENT: "splitmuxsink",
        pipelines.IMAGE_SINK_ELEMENT: "multifilesink",
    }
    assert {name: pipeline.get_by_name(name).get_factory().get_name() for name in named} == named
    images_only = pipelines.recorder(s, "/ssd/00001_x", video=False, images=True)
    assert "rtspsrc" not in images_only  # no video: no connection to the stream
    tls = dataclasses.replace(s, rtsp_tls_cert=tmp_path / "c.pem", rtsp_tls_key=tmp_path / "k.pem")
    assert (
        'location="rtsps://127.0.0.1:8554/live" protocols=tcp latency=0 buffer-mode=none '
        "tls-validation-flags=0 !" in pipelines.recorder(tls, "/ssd/x")
    )


def test_recording_needs_a_session_folder(tmp_path):
    s = config.load({"HOME": str(tmp_path)})
    with pytest.raises(ValueError, match="needs a session folder"):
        pipelines.recorder(s, None, video=True, images=False)


def test_rtsp_media_is_low_latency_h264_for_a_shared_factory(settings):
    description = pipelines.rtsp_media(settings)
    assert description.startswith('shmsrc name=shm_input socket-path="/tmp/drone_cam_str.sock" ')
    assert "! queue name=stream_queue leaky=downstream max-size-buffers=1 " in description
    assert (
        "! x264enc name=stream_encoder tune=zerolatency speed-preset=ultrafast bframes=0 "
        "key-int-max=25 bitrate=2000 "  # one keyframe a second at 25 fps; 2,000,000 bit/s in kbit/s
    ) in description
    assert "! h264parse config-interval=-1 " in description  # SPS/PPS before every IDR
    assert description.endswith("! rtph264pay name=pay0 pt=96 aggregate-mode=zero-latency")


@pytest.mark.parametrize(
    ("environment", "url"),
    [
        ({}, "rtsp://127.0.0.1:8554/live"),
        ({"RTSP_BIND": "::", "RTSP_PORT": "9000", "RTSP_PATH": "/cam"}, "rtsp://[::1]:9000/cam"),
        ({"RTSP_BIND": "192.0.2.7"}, "rtsp://192.0.2.7:8554/live"),
    ],
)
def test_live_session_passes_our_own_rtsp_stream_into_webrtc(tmp_path, environment, url):
    """One browser's pipeline: an RTSP client of our own server on this machine, TCP and no
    jitter buffer, the H.264 re-payloaded (no second encoder) with the browser's payload type,
    into a bundled webrtcbin; valid launch syntax with the elements the live worker looks up."""
    from streamer.media.gst import Gst

    s = config.load({"HOME": str(tmp_path), **environment})
    assert pipelines.live_rtsp_url(s) == url
    description = pipelines.live_session(s, pipelines.live_rtsp_url(s), payload_type=108)
    assert description == (
        f'rtspsrc name=rtsp_in location="{url}" protocols=tcp latency=0 '
        "! rtph264depay ! h264parse config-interval=-1 "
        "! rtph264pay name=live_pay config-interval=-1 aggregate-mode=zero-latency pt=108 "
        "! webrtcbin name=webrtc bundle-policy=max-bundle"
    )
    assert "x264enc" not in description and "user" not in description  # credentials: properties
    pipeline = Gst.parse_launch(description)
    named = {
        pipelines.LIVE_SOURCE_ELEMENT: "rtspsrc",
        pipelines.LIVE_PAYLOADER_ELEMENT: "rtph264pay",
        pipelines.LIVE_WEBRTC_ELEMENT: "webrtcbin",
    }
    assert {name: pipeline.get_by_name(name).get_factory().get_name() for name in named} == named
    assert pipelines.live_session(s, url).endswith("pt=96 ! webrtcbin name=webrtc bundle-policy=max-bundle")
    for payload_type in (0, 34, 64, 95, 128, "96 ! fakesink"):
        with pytest.raises(ValueError):
            pipelines.live_session(s, url, payload_type=payload_type)


def test_live_session_speaks_rtsps_to_our_own_tls_server(tmp_path):
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    s = config.load({"HOME": str(tmp_path)})
    s = dataclasses.replace(s, rtsp_tls_cert=cert, rtsp_tls_key=key)
    url = pipelines.live_rtsp_url(s)
    assert url == "rtsps://127.0.0.1:8554/live"
    assert f'location="{url}" protocols=tcp latency=0 tls-validation-flags=0 !' in pipelines.live_session(
        s, url
    )
