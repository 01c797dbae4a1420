"""Publishing's pure parts: PUBLISH_URL's destinations as parsed and shown (redacted), the launch
descriptions as strings and the sink properties, the pauses between attempts, what makes an
attempt connected or failed, the worker's report, the web worker's ``publish`` section and
metrics; and, on tiny GStreamer pipelines of their own, the two probes every destination has
(what enters its sink is counted; after a gap nothing goes out until a keyframe).

The publish worker against real servers is in test_publish.py."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from streamer import config
from streamer.config import parsers
from streamer.config.redaction import MASK, redact_url, redact_urls
from streamer.control.workers import PUBLISH, STALL_PUBLISH_S, service_specs, stall_limit
from streamer.media import pipelines
from streamer.publish.retry import Backoff, DestinationReport, FlowWatch
from streamer.runtime.state import READY, StackState, WorkerState
from streamer.web import metrics, status
from streamer.web.health import Health
from streamer.web.snapshot import Snapshot

KEY = "live_8f3kq-Zz91"
PASSPHRASE = "correct-horse-battery"
STREAMID = "#!::r=drone,m=publish"


def load(tmp_path: Path, publish_url: str, **environ: str) -> config.Settings:
    return config.load({"HOME": str(tmp_path), "PUBLISH_URL": publish_url, **environ})


# --- destinations


@pytest.mark.parametrize(
    ("url", "kind", "host", "port", "redacted"),
    [
        (f"rtmp://127.0.0.1/live/{KEY}", "rtmp", "127.0.0.1", 1935, f"rtmp://127.0.0.1/live/{MASK}"),
        (
            f"rtmp://127.0.0.1:19350/live/{KEY}",
            "rtmp",
            "127.0.0.1",
            19350,
            f"rtmp://127.0.0.1:19350/live/{MASK}",
        ),
        (
            f"RTMPS://Live.Example.com/app/inst/{KEY}",
            "rtmp",
            "live.example.com",
            443,
            f"rtmps://live.example.com/app/inst/{MASK}",
        ),
        (f"rtmp://[::1]:1935/live/{KEY}", "rtmp", "::1", 1935, f"rtmp://[::1]:1935/live/{MASK}"),
        ("srt://10.0.0.7:9000", "srt", "10.0.0.7", 9000, "srt://10.0.0.7:9000"),
        (
            f"srt://ingest.local:9000?passphrase={PASSPHRASE}&latency=200&streamid=%23!::r=drone,m=publish",
            "srt",
            "ingest.local",
            9000,
            f"srt://ingest.local:9000?streamid={MASK}&latency=200&passphrase={MASK}",
        ),
        ("rtsp://10.0.0.2:8554/drone", "rtsp", "10.0.0.2", 8554, "rtsp://10.0.0.2:8554/drone"),
        (
            f"rtsp://pilot:{PASSPHRASE}@10.0.0.2:8554/drone/cam?token={KEY}",
            "rtsp",
            "10.0.0.2",
            8554,
            f"rtsp://{MASK}@10.0.0.2:8554/drone/cam?token={MASK}",
        ),
    ],
)
def test_destinations_are_parsed_and_shown_without_their_secrets(tmp_path, url, kind, host, port, redacted):
    s = load(tmp_path, url)
    (d,) = s.publish_urls
    assert (d.kind, d.host, d.port, d.redacted, str(d)) == (kind, host, port, redacted, redacted)
    assert repr(d) == f"PublishDestination({redacted!r})"
    for secret in (KEY, PASSPHRASE, STREAMID, "%23!::r=drone"):
        assert secret not in d.redacted and secret not in repr(s)
    hidden = [secret for secret in (KEY, PASSPHRASE, "%23!::r=drone,m=publish") if secret in url]
    if "%23" in url:
        hidden.append(STREAMID)  # decoded too
    assert set(hidden) <= set(s.secrets)


def test_the_parts_of_each_kind(tmp_path):
    rtmp, srt, rtsp = load(
        tmp_path,
        f"rtmps://u%40x:p%3Ass@a.example/app/inst/{KEY}?x=1 "
        f"srt://[fd00::5]:9000?streamid=%23!::r=drone,m=publish&latency=200&passphrase={PASSPHRASE} "
        "rtsp://pilot:pw@10.0.0.2:8554/record",
    ).publish_urls
    assert (rtmp.scheme, rtmp.application, rtmp.key, rtmp.user, rtmp.password) == (
        "rtmps",
        "app/inst",
        f"{KEY}?x=1",
        "u@x",
        "p:ss",
    )
    assert (srt.host, srt.streamid, srt.latency_ms, srt.passphrase) == ("fd00::5", STREAMID, 200, PASSPHRASE)
    assert (rtsp.path, rtsp.user, rtsp.password) == ("/record", "pilot", "pw")
    # Secrets as written and as decoded: either may turn up in a message.
    assert {"p:ss", "p%3Ass", STREAMID, "%23!::r=drone,m=publish", PASSPHRASE, "pw"} <= set(
        rtmp.secrets + srt.secrets + rtsp.secrets
    )


def test_destinations_that_look_alike_are_told_apart(tmp_path):
    shown = [str(d) for d in load(tmp_path, "rtmp://h/live/a rtmp://h/live/b rtmp://h/live/c").publish_urls]
    assert shown == [f"rtmp://h/live/{MASK}", f"rtmp://h/live/{MASK}#2", f"rtmp://h/live/{MASK}#3"]


def test_empty_publish_url_publishes_nothing(tmp_path):
    assert load(tmp_path, "").publish_urls == () == load(tmp_path, "  ").publish_urls
    assert config.load({"HOME": str(tmp_path)}).publish_urls == ()


BAD_DESTINATIONS = [
    (f"ftp://h/live/{KEY}", "the scheme must be rtmp, rtmps, srt or rtsp (not 'ftp')"),
    (f"live.example.com/app/{KEY}", "not a URL: rtmp://…, rtmps://…, srt://… or rtsp://…"),
    (f"rtmp:///live/{KEY}", "a host is needed"),
    (f"rtmp://0.0.0.0/live/{KEY}", "needs the server's address, not 0.0.0.0"),
    (f"rtmp://h:70000/live/{KEY}", "the port must be 1-65535"),
    (f"rtmp://h/{KEY}", "an RTMP URL needs /APPLICATION/KEY after the host"),
    ("rtmp://h/live/", "an RTMP URL needs /APPLICATION/KEY after the host"),
    (f'rtmp://h/live/{KEY}"', "the stream key may only hold a URL's characters"),
    (f"rtmp://h/live/{KEY}#x", "a URL fragment ('#') is not allowed"),
    ("srt://h", "a port is needed (srt://HOST:PORT…)"),
    ("srt://h:9000/path", "an SRT URL has no path"),
    (f"srt://u:{PASSPHRASE}@h:9000", "SRT takes no user:password@"),
    (f"srt://h:9000?mode=listener&passphrase={PASSPHRASE}", "SRT takes only streamid, latency, passphrase"),
    ("srt://h:9000?latency=fast", "latency must be a whole number of milliseconds from 0 to 60000"),
    ("srt://h:9000?latency=1&latency=2", "latency is given twice"),
    ("srt://h:9000?streamid=", "streamid needs a value"),
    ("srt://h:9000?passphrase=short", "the passphrase must be 10 to 79 characters long"),
    ("srt://h:9000?streamid=a%zz", "has a '%' that is not a %XX escape"),
    ("rtsp://h/record", "a port is needed (rtsp://HOST:PORT…)"),
    ("rtsp://h:8554", "an RTSP URL needs a /PATH after the port"),
    (f"rtsp://pilot@h:8554/record?k={KEY}", "credentials must be user:password@"),
    ("rtsp://[fd00::1:8554/record", "an IPv6 address goes in brackets"),
]


@pytest.mark.parametrize(("value", "allowed"), BAD_DESTINATIONS, ids=[v for v, _ in BAD_DESTINATIONS])
def test_bad_destinations_are_named_without_their_secrets(tmp_path, value, allowed):
    with pytest.raises(config.ConfigError) as caught:
        load(tmp_path, value)
    message = str(caught.value)
    assert message.startswith(f"PUBLISH_URL={redact_urls(value)!r}: "), message
    assert allowed in message
    for secret in (KEY, PASSPHRASE, "short", "pilot"):
        assert secret not in message


def test_several_destinations_name_the_bad_one(tmp_path):
    with pytest.raises(config.ConfigError) as caught:
        load(tmp_path, f"rtmp://h/live/{KEY} srt://h")
    assert str(caught.value) == (
        f"PUBLISH_URL='rtmp://h/live/{MASK} srt://h': destination 2: a port is needed (srt://HOST:PORT…)"
    )


def test_duplicates_and_too_many_destinations_are_refused(tmp_path):
    with pytest.raises(config.ConfigError, match="destinations 1 and 2 are the same"):
        load(tmp_path, f"rtmp://H/live/{KEY} rtmp://h:1935/live/{KEY}")
    with pytest.raises(config.ConfigError, match="destinations 1 and 2 are the same"):
        load(tmp_path, "srt://h:9000?streamid=a srt://h:9000?streamid=a&latency=300")
    many = " ".join(f"rtmp://h/live/k{n}" for n in range(parsers.PUBLISH_MAX_DESTINATIONS + 1))
    with pytest.raises(config.ConfigError, match="at most 8 destinations"):
        load(tmp_path, many)
    assert len(load(tmp_path, many.rsplit(" ", 1)[0]).publish_urls) == 8


def test_publishing_needs_the_rtsp_stream_and_not_our_own_server(tmp_path):
    with pytest.raises(config.ConfigError) as caught:
        load(tmp_path, f"rtmp://h/live/{KEY}", ENABLE_RTSP="0")
    assert str(caught.value) == (
        f"PUBLISH_URL='rtmp://h/live/{MASK}': needs ENABLE_RTSP=1 (the published stream is the RTSP "
        "stream's encoder), but ENABLE_RTSP=0"
    )
    with pytest.raises(config.ConfigError, match="is this machine's own RTSP server"):
        load(tmp_path, "rtsp://127.0.0.1:8554/record")
    with pytest.raises(config.ConfigError, match="is this machine's own RTSP server"):
        load(tmp_path, "rtsp://10.0.0.5:9554/x", RTSP_BIND="10.0.0.5", RTSP_PORT="9554")
    assert load(tmp_path, "rtsp://127.0.0.1:9554/record").publish_urls  # another server


def test_a_misspelt_publish_variable_is_refused_without_its_value(tmp_path):
    with pytest.raises(config.ConfigError) as caught:
        config.load({"HOME": str(tmp_path), "PUBLISH_URLS": f"rtmp://h/live/{KEY}"})
    assert (
        str(caught.value)
        == f"PUBLISH_URLS='rtmp://h/live/{MASK}': unknown setting (did you mean PUBLISH_URL?)"
    )


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        (f"rtmp://h/live/{KEY}", f"rtmp://h/live/{MASK}"),
        (f"rtmp://h/{KEY}", f"rtmp://h/{MASK}"),
        (f"rtmp://u:{PASSPHRASE}@h/live/{KEY}", f"rtmp://{MASK}@h/live/{MASK}"),
        (f"srt://h:1?streamid={KEY}&passphrase={PASSPHRASE}", f"srt://h:1?streamid={MASK}&passphrase={MASK}"),
        (f"srt://h:1?streamid=#!::r={KEY}", f"srt://h:1?streamid={MASK}#{MASK}"),
        (f"rtsp://h:1/x?{KEY}", f"rtsp://h:1/{MASK}?{MASK}"),
        (f"rtmp:/h/live/{KEY}", MASK),
        (KEY, MASK),
    ],
)
def test_urls_in_error_messages_are_masked_whatever_their_shape(text, shown):
    assert redact_url(text) == shown
    assert KEY not in redact_urls(f"{text} {text}")


# --- launch descriptions


def test_descriptions_hold_no_part_of_the_destination(tmp_path):
    s = load(
        tmp_path, f"rtmp://h/live/{KEY} srt://h:9000?passphrase={PASSPHRASE} rtsp://u:{PASSPHRASE}@h:1/x"
    )
    for d in s.publish_urls:
        description = pipelines.publish(s, d.kind)
        assert description.startswith(
            f'rtspsrc name={pipelines.PUBLISH_SOURCE_ELEMENT} location="rtsp://127.0.0.1:8554/live" '
            "protocols=tcp latency=0 ! rtph264depay"
        )
        assert "! h264parse ! queue name=publish_queue leaky=downstream max-size-buffers=30 " in description
        assert f"name={pipelines.PUBLISH_SINK_ELEMENT}" in description
        for secret in (KEY, PASSPHRASE, "9000", "u:"):
            assert secret not in description
        assert "x264enc" not in description and "avdec" not in description and "decodebin" not in description


def test_each_kind_muxes_and_sends_as_the_issue_says(tmp_path):
    s = config.load({"HOME": str(tmp_path), "VIDEO_FPS": "25"})
    rtmp, srt, rtsp = (pipelines.publish(s, kind) for kind in ("rtmp", "srt", "rtsp"))
    assert rtmp.endswith(
        "max-size-buffers=25 max-size-bytes=0 max-size-time=0 ! flvmux streamable=true "
        "! rtmp2sink name=publish_out sync=false"
    )
    assert srt.endswith(
        "! mpegtsmux alignment=7 ! srtsink name=publish_out mode=caller auto-reconnect=false sync=false"
    )
    assert "rtph264depay ! video/x-h264,stream-format=byte-stream,alignment=au ! h264parse !" in srt
    assert "config-interval" not in srt  # it corrupts x264's two-slice IDR frames in front of mpegtsmux
    assert rtsp.endswith("max-size-time=0 ! rtspclientsink name=publish_out protocols=tcp")
    with pytest.raises(ValueError, match="no such kind"):
        pipelines.publish(s, "webrtc")


def test_the_source_follows_the_rtsp_settings(tmp_path):
    s = load(tmp_path, f"rtmp://h/live/{KEY}", RTSP_BIND="::", RTSP_PORT="9554", RTSP_PATH="/cam")
    assert 'location="rtsp://[::1]:9554/cam"' in pipelines.publish(s, "rtmp")


def test_sink_properties_carry_the_destination(tmp_path):
    rtmp, srt, bare_srt, rtsp = load(
        tmp_path,
        f"rtmps://u:pw@a.example:4443/app/inst/{KEY} "
        f"srt://[fd00::5]:9000?streamid=%23!::r=drone,m=publish&latency=200&passphrase={PASSPHRASE} "
        "srt://10.0.0.9:9001 "
        "rtsp://pilot:pw@10.0.0.2:8554/record?x=1",
    ).publish_urls
    assert pipelines.publish_sink_properties(rtmp) == {
        "scheme": "rtmps",
        "host": "a.example",
        "port": 4443,
        "application": "app/inst",
        "stream": KEY,
        "username": "u",
        "password": "pw",
    }
    assert pipelines.publish_sink_properties(srt) == {
        "uri": "srt://[fd00::5]:9000",
        "latency": 200,
        "streamid": STREAMID,
        "passphrase": PASSPHRASE,
    }
    assert pipelines.publish_sink_properties(bare_srt) == {"uri": "srt://10.0.0.9:9001"}
    assert pipelines.publish_sink_properties(rtsp) == {
        "location": "rtsp://10.0.0.2:8554/record?x=1",
        "user-id": "pilot",
        "user-pw": "pw",
    }


# --- the controller's service


def test_the_publish_worker_is_a_service_only_with_destinations(tmp_path):
    assert PUBLISH not in service_specs(config.load({"HOME": str(tmp_path)}))
    s = load(tmp_path, f"rtmp://h/live/{KEY}", ENABLE_HTTP="0")
    assert service_specs(s) == [PUBLISH]
    assert stall_limit(s, PUBLISH) == STALL_PUBLISH_S


# --- retries


def test_pauses_double_up_to_30_s_and_start_again_after_a_settled_connection():
    backoff = Backoff()
    assert [backoff.failed(None) for _ in range(7)] == [1, 2, 4, 8, 16, 30, 30]
    assert backoff.failed(9.9) == 30  # a connection that did not settle does not reset it
    assert backoff.failed(10.0) == 1  # one that held for 10 s does
    assert backoff.failed(None) == 2


def test_an_attempt_is_connected_once_data_still_flows_a_second_after_the_first():
    flow = FlowWatch(started_at=100.0)
    assert not flow.sample(100.25, 0)
    assert not flow.sample(100.5, 900)  # headers and a first frame: a sink may take them, then block
    assert not flow.sample(101.0, 900)
    assert not flow.sample(101.25, 950)  # not a second after the first yet
    assert flow.sample(101.5, 2000) and flow.connected and flow.connected_at == 101.5
    assert not flow.sample(101.75, 3000)  # said once
    assert flow.problem(106.75) is None  # 5 s without data: not more than STALL_S yet
    assert flow.problem(107.0) == "nothing sent for 5 s"


def test_a_sink_that_takes_a_few_buffers_and_blocks_is_not_connected():
    flow = FlowWatch(started_at=0.0)
    flow.sample(0.25, 21_056)
    for tick in range(2, 60):
        assert not flow.sample(tick * 0.25, 21_056)
        if tick * 0.25 <= 15:
            assert flow.problem(tick * 0.25) is None
    assert flow.problem(15.25) == "not connected within 15 s"


def test_the_report_of_a_destination():
    report = DestinationReport(
        f"rtmp://h/live/{MASK}", "rtmp", False, 1_800_000_000.12345, 1234, 3, "boom", 3.04
    )
    assert report.as_dict() == {
        "url": f"rtmp://h/live/{MASK}",
        "kind": "rtmp",
        "connected": False,
        "since": 1_800_000_000.123,
        "bytes_sent": 1234,
        "reconnects": 3,
        "last_error": "boom",
        "next_attempt_in_s": 3.0,
    }


# --- the web worker's view


def snapshot(progress: dict | None) -> Snapshot:
    stack = StackState()
    if progress is not None:
        stack.workers["publish"] = WorkerState("publish", READY, 1, progress=progress)
    return Snapshot(time.time(), stack, True, Health(True, "up", None), {}, None, 0.0, False)


def test_status_and_metrics_show_each_destination_by_its_redacted_url(tmp_path):
    s = load(tmp_path, f"rtmp://h/live/{KEY} srt://h:9000?streamid={KEY}")
    before = status.publish_section(s, snapshot(None))
    assert before == {
        "enabled": True,
        "connected": None,
        "destinations": [
            {"url": f"rtmp://h/live/{MASK}", "kind": "rtmp", **dict.fromkeys(status.PUBLISH_FIELDS)},
            {"url": f"srt://h:9000?streamid={MASK}", "kind": "srt", **dict.fromkeys(status.PUBLISH_FIELDS)},
        ],
    }
    reported = [
        DestinationReport(f"rtmp://h/live/{MASK}", "rtmp", True, 1.0, 5000, 1, None, None).as_dict(),
        DestinationReport(f"srt://h:9000?streamid={MASK}", "srt", False, 2.0, 0, 4, "refused", 8.0).as_dict(),
    ]
    snap = snapshot({"frames": 10, "idle": False, "connected": 1, "destinations": reported})
    assert status.publish_section(s, snap) == {"enabled": True, "connected": 1, "destinations": reported}
    whole = status.build(s, snap)
    assert whole["publish"]["destinations"] == reported
    assert whole["settings"]["PUBLISH_URL"] == [f"rtmp://h/live/{MASK}", f"srt://h:9000?streamid={MASK}"]
    text = metrics.exposition(s, snap).decode()
    assert f'streamer_publish_connected{{destination="rtmp://h/live/{MASK}"}} 1.0' in text
    assert f'streamer_publish_connected{{destination="srt://h:9000?streamid={MASK}"}} 0.0' in text
    assert f'streamer_publish_bytes_sent_total{{destination="rtmp://h/live/{MASK}"}} 5000.0' in text
    assert f'streamer_publish_reconnects_total{{destination="srt://h:9000?streamid={MASK}"}} 4.0' in text
    assert KEY not in repr(whole) and KEY not in text
    assert "streamer_publish" not in metrics.exposition(s, snapshot(None)).decode()
    assert status.publish_section(config.load({"HOME": str(tmp_path)}), snapshot(None)) == {
        "enabled": False,
        "connected": None,
        "destinations": [],
    }


# --- the probes, on pipelines of their own


def push_frames(frames: list[tuple[bool, bool]]) -> list[int]:
    """Push buffers (keyframe?, discont?) numbered 0… through a queue with the keyframe gate on
    its source pad into a fakesink whose input is counted; return the numbers that got through,
    checking the count probe on the way."""
    from streamer.media import gst
    from streamer.media.gst import Gst

    pipeline = Gst.parse_launch(
        "appsrc name=src format=time caps=video/x-h264,stream-format=byte-stream,alignment=au "
        "! queue name=q ! fakesink name=sink sync=false"
    )
    passed: list[int] = []
    counted = [0, 0]

    def count(buffers: int, size: int) -> None:
        counted[0] += buffers
        counted[1] += size

    sink = pipeline.get_by_name("sink")
    removers = [
        gst.drop_to_keyframe_after_gap(pipeline.get_by_name("q")),
        gst.count_into(sink, count),
        gst.probe_buffers(sink, "sink", lambda b: passed.append(b.pts // Gst.MSECOND)),
    ]
    pipeline.set_state(Gst.State.PLAYING)
    source = pipeline.get_by_name("src")
    for number, (keyframe, discont) in enumerate(frames):
        buffer = Gst.Buffer.new_wrapped(bytes(10 + number))
        buffer.pts = number * Gst.MSECOND
        if not keyframe:
            buffer.set_flags(Gst.BufferFlags.DELTA_UNIT)
        if discont:
            buffer.set_flags(Gst.BufferFlags.DISCONT)
        source.emit("push-buffer", buffer)
    source.emit("end-of-stream")
    pipeline.get_bus().timed_pop_filtered(5 * Gst.SECOND, Gst.MessageType.EOS | Gst.MessageType.ERROR)
    pipeline.set_state(Gst.State.NULL)
    for remove in removers:
        remove()
    assert counted == [len(passed), sum(10 + n for n in passed)]
    return passed


def test_after_a_gap_nothing_goes_out_until_a_keyframe():
    key, delta, gap_delta, gap_key = (True, False), (False, False), (False, True), (True, True)
    frames = [delta, delta, key, delta, delta, gap_delta, delta, key, delta, gap_key, delta]
    #          0      1      2    3      4      5          6      7    8      9        10
    assert push_frames(frames) == [2, 3, 4, 7, 8, 9, 10]


def test_destinations_wait_while_the_stacks_rtsp_worker_is_not_ready(tmp_path):
    import logging
    import os

    from streamer.publish.worker import StreamWatch
    from streamer.runtime import state

    s = load(tmp_path, f"rtmp://h/live/{KEY}", SHM_RECORDER_SOCKET=str(tmp_path / "rec.sock"))
    watch = StreamWatch(s, logging.getLogger("test"), every_s=0.0)
    assert watch.up(0.0)  # no stack: the worker runs on its own, the stream may be there
    stack = StackState(controller_pid=os.getpid())
    stack.workers["rtsp"] = WorkerState("rtsp", "starting", 1)
    state.write(state.state_file(s.shm_recorder_socket + ".lock"), stack)
    assert not watch.up(1.0)
    stack.workers["rtsp"].state = READY
    state.write(state.state_file(s.shm_recorder_socket + ".lock"), stack)
    assert watch.up(2.0)
    stack.workers["rtsp"].state = "waiting"  # restarted alone
    state.write(state.state_file(s.shm_recorder_socket + ".lock"), stack)
    assert not watch.up(3.0)
    stack.controller_pid = 2**22 + 12345  # left behind by a controller that is gone
    state.write(state.state_file(s.shm_recorder_socket + ".lock"), stack)
    assert watch.up(4.0)
