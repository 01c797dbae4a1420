"""``GET /metrics``: the snapshot as Prometheus metrics, through prometheus_client's exposition.

A custom collector turns one ``Snapshot`` into metric families; each scrape registers it in a
private ``CollectorRegistry`` (no process-wide default registry, no state between scrapes).
Names follow Prometheus conventions: base units (seconds, bytes), counters end in ``_total``.
Workers' counters count from the worker's start, so they reset when it restarts: ``rate()``
and ``increase()`` handle that. A metric whose worker has not reported is left out, not 0.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from streamer.config import Settings
from streamer.runtime import state
from streamer.web.snapshot import Snapshot, recording_kinds

__all__ = ["CONTENT_TYPE", "SnapshotCollector", "exposition"]

CONTENT_TYPE = CONTENT_TYPE_LATEST


def exposition(settings: Settings, snap: Snapshot) -> bytes:
    """The Prometheus text of ``snap``."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(settings, snap))
    return generate_latest(registry)


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


class SnapshotCollector(Collector):
    def __init__(self, settings: Settings, snap: Snapshot) -> None:
        self.settings = settings
        self.snap = snap

    def collect(self) -> Iterator[Metric]:
        yield from self._stack()
        yield from self._camera()
        yield from self._encoder()
        yield from self._rtsp()
        yield from self._recording()
        yield from self._mavlink()
        yield from self._publish()
        yield from self._workers()

    # --- helpers

    @staticmethod
    def _one(family: CounterMetricFamily | GaugeMetricFamily, value: Any) -> Iterator[Metric]:
        number = _number(value)
        if number is not None:
            family.add_metric([], number)
            yield family

    def _counter(self, name: str, help_text: str, value: Any) -> Iterator[Metric]:
        yield from self._one(CounterMetricFamily(name, help_text), value)

    def _gauge(self, name: str, help_text: str, value: Any) -> Iterator[Metric]:
        yield from self._one(GaugeMetricFamily(name, help_text), value)

    # --- families

    def _stack(self) -> Iterator[Metric]:
        stack = self.snap.stack
        yield from self._gauge(
            "streamer_stack_up",
            "1 while every enabled worker of the stack is ready",
            int(bool(stack and stack.state == state.UP)),
        )
        yield from self._gauge(
            "streamer_healthy",
            "1 while /health answers 200 (see its reason otherwise)",
            int(self.snap.health.healthy),
        )

    def _camera(self) -> Iterator[Metric]:
        feeder = self.snap.progress("feeder")
        yield from self._counter(
            "streamer_camera_frames_total",
            "Frames decoded from the camera since the feeder started",
            feeder.get("frames"),
        )
        yield from self._counter(
            "streamer_camera_dropped_frames_total",
            "Camera frames beyond the configured rate, dropped",
            feeder.get("camera_dropped"),
        )
        yield from self._counter(
            "streamer_camera_corrupt_frames_total",
            "Broken JPEG frames from the camera, dropped before decoding",
            feeder.get("frames_corrupt"),
        )
        yield from self._gauge(
            "streamer_camera_fps", "Measured camera frame rate, frames per second", feeder.get("fps")
        )
        branches = feeder.get("branches")
        if isinstance(branches, dict) and branches:
            frames = CounterMetricFamily(
                "streamer_branch_frames_total",
                "Frames handed to a branch's shared-memory socket",
                labels=["branch"],
            )
            dropped = CounterMetricFamily(
                "streamer_branch_dropped_frames_total",
                "Frames dropped in front of a branch's slow reader",
                labels=["branch"],
            )
            for branch, counts in sorted(branches.items()):
                if not isinstance(counts, dict):
                    continue
                if (value := _number(counts.get("frames"))) is not None:
                    frames.add_metric([branch], value)
                if (value := _number(counts.get("dropped"))) is not None:
                    dropped.add_metric([branch], value)
            yield frames
            yield dropped

    def _encoder(self) -> Iterator[Metric]:
        """Info-style: one series, 1, labelled with the encoder asked for and the one in use;
        left out until the controller has chosen."""
        encoder = self.snap.stack.encoder if self.snap.stack is not None else {}
        chosen = encoder.get("chosen")
        if not isinstance(chosen, str):
            return
        info = GaugeMetricFamily(
            "streamer_encoder_info",
            "1, labelled with the H.264 encoder asked for (ENCODER) and the one the stack uses",
            labels=["requested", "chosen"],
        )
        info.add_metric([str(encoder.get("requested", self.settings.encoder)), chosen], 1)
        yield info
        yield from self._gauge(
            "streamer_encoder_fallback",
            "1 once a hardware encoder was given up for x264 after repeated failures",
            int(bool(encoder.get("fallback"))),
        )

    def _rtsp(self) -> Iterator[Metric]:
        rtsp = self.snap.progress("rtsp")
        yield from self._gauge("streamer_rtsp_viewers", "RTSP viewers playing now", rtsp.get("viewers"))
        yield from self._counter(
            "streamer_rtsp_sessions_total",
            "RTSP viewers that played since the RTSP worker started",
            rtsp.get("sessions_total"),
        )
        yield from self._gauge(
            "streamer_rtsp_bitrate_bits_per_second",
            "The stream encoder's bitrate now, bit/s",
            rtsp.get("bitrate"),
        )
        yield from self._counter(
            "streamer_rtsp_bitrate_changes_total",
            "Changes of the stream's bitrate (by the API or the link) since the RTSP worker started",
            rtsp.get("bitrate_changes"),
        )
        yield from self._viewer_links(rtsp.get("clients"))

    def _viewer_links(self, clients: Any) -> Iterator[Metric]:
        """Each viewer's link as its receiver reports (UDP) or send queue (TCP) tell it, labelled
        with its number in the RTSP worker's log and its transport; a figure not known yet (no
        receiver report, or not the viewer's transport) is left out."""
        if not isinstance(clients, list):
            return
        labels = ["viewer", "transport"]
        lost = GaugeMetricFamily(
            "streamer_rtsp_viewer_fraction_lost",
            "Share of the viewer's RTP packets lost (0..1), from its latest RTCP receiver report",
            labels=labels,
        )
        jitter = GaugeMetricFamily(
            "streamer_rtsp_viewer_jitter_seconds",
            "Interarrival jitter from the viewer's latest RTCP receiver report",
            labels=labels,
        )
        backlog = GaugeMetricFamily(
            "streamer_rtsp_viewer_backlog_seconds",
            "Video queued for the viewer and not sent yet (TCP)",
            labels=labels,
        )
        packets_lost = CounterMetricFamily(
            "streamer_rtsp_viewer_packets_lost_total",
            "RTP packets the viewer reported lost since it began playing",
            labels=labels,
        )
        for client in clients:
            if not isinstance(client, dict) or _number(client.get("number")) is None:
                continue
            label = [str(client["number"]), str(client.get("transport"))]
            if (value := _number(client.get("fraction_lost"))) is not None:
                lost.add_metric(label, value)
            if (value := _number(client.get("jitter_ms"))) is not None:
                jitter.add_metric(label, value / 1000)
            if (value := _number(client.get("backlog_s"))) is not None:
                backlog.add_metric(label, value)
            if (value := _number(client.get("packets_lost"))) is not None:  # never below 0 (links.py)
                packets_lost.add_metric(label, value)
        yield from (family for family in (lost, jitter, backlog, packets_lost) if family.samples)

    def _recording(self) -> Iterator[Metric]:
        s = self.settings
        recorder = self.snap.progress("recorder")
        if recorder:
            video, images = recording_kinds(s, recorder)
            writing = recorder.get("state") == "recording"
            active = GaugeMetricFamily(
                "streamer_recording_active",
                "1 while this kind of recording is being written",
                labels=["kind"],
            )
            active.add_metric(["video"], int(writing and video))
            active.add_metric(["images"], int(writing and images))
            yield active
        yield from self._counter(
            "streamer_recorder_chunks_total",
            "Video chunks finished since the recorder started",
            recorder.get("chunks"),
        )
        yield from self._counter(
            "streamer_recorder_snapshots_total",
            "Images written since the recorder started",
            recorder.get("snapshots"),
        )
        yield from self._counter(
            "streamer_recorder_written_bytes_total",
            "Bytes of finished recordings since the recorder started",
            recorder.get("bytes"),
        )
        yield from self._counter(
            "streamer_retention_deleted_files_total",
            "Recordings deleted to keep free space or for age",
            recorder.get("deleted_files"),
        )
        yield from self._counter(
            "streamer_retention_deleted_bytes_total",
            "Bytes of recordings deleted by retention",
            recorder.get("deleted_bytes"),
        )
        disk = self.snap.disk
        if disk is not None:
            yield from self._gauge(
                "streamer_disk_free_bytes", "Free space on SSD_PATH's file system", disk.free_bytes
            )
            yield from self._gauge(
                "streamer_disk_total_bytes", "Size of SSD_PATH's file system", disk.total_bytes
            )

    def _mavlink(self) -> Iterator[Metric]:
        mavlink = self.snap.progress("mavlink")
        if not mavlink:
            return
        yield from self._gauge(
            "streamer_mavlink_connected",
            "1 while MAVLink traffic is heard (within 5 s)",
            int(bool(mavlink.get("connected"))),
        )
        vehicle = mavlink.get("vehicle")
        yield from self._gauge(
            "streamer_mavlink_vehicle_heartbeat_age_seconds",
            "Time since the vehicle's last heartbeat",
            vehicle.get("last_heartbeat_s_ago") if isinstance(vehicle, dict) else None,
        )
        yield from self._gauge(
            "streamer_mavlink_position_fix",
            "1 while photos can be geotagged",
            int(bool(mavlink.get("position_fix"))),
        )
        yield from self._counter(
            "streamer_mavlink_messages_received_total",
            "MAVLink messages received",
            mavlink.get("messages_in"),
        )
        yield from self._counter(
            "streamer_mavlink_messages_sent_total", "MAVLink messages sent", mavlink.get("messages_out")
        )
        yield from self._counter(
            "streamer_mavlink_bad_frames_total",
            "Bytes or frames that were not valid MAVLink",
            mavlink.get("bad_frames"),
        )
        yield from self._counter(
            "streamer_mavlink_images_captured_total",
            "Photos taken for MAVLink image capture commands",
            mavlink.get("images_captured"),
        )
        yield from self._counter(
            "streamer_mavlink_reconnects_total",
            "Times the MAVLink link was opened again",
            mavlink.get("reconnects"),
        )
        commands = mavlink.get("commands")
        if isinstance(commands, dict) and commands:
            handled = CounterMetricFamily(
                "streamer_mavlink_commands_total", "MAVLink commands answered, by command", labels=["command"]
            )
            for command, count in sorted(commands.items()):
                if (value := _number(count)) is not None:
                    handled.add_metric([str(command)], value)
            yield handled

    def _publish(self) -> Iterator[Metric]:
        """One series per destination, labelled with its redacted URL."""
        destinations = self.snap.progress("publish").get("destinations")
        if not isinstance(destinations, list) or not destinations:
            return
        connected = GaugeMetricFamily(
            "streamer_publish_connected",
            "1 while the stream is being published to this destination",
            labels=["destination"],
        )
        sent = CounterMetricFamily(
            "streamer_publish_bytes_sent_total",
            "Bytes handed to this destination's sink (muxed) since the publish worker started",
            labels=["destination"],
        )
        reconnects = CounterMetricFamily(
            "streamer_publish_reconnects_total",
            "Attempts to connect to this destination again after a failure",
            labels=["destination"],
        )
        for destination in destinations:
            if not isinstance(destination, dict) or not isinstance(destination.get("url"), str):
                continue
            label = [destination["url"]]
            connected.add_metric(label, int(bool(destination.get("connected"))))
            if (value := _number(destination.get("bytes_sent"))) is not None:
                sent.add_metric(label, value)
            if (value := _number(destination.get("reconnects"))) is not None:
                reconnects.add_metric(label, value)
        yield from (connected, sent, reconnects)

    def _workers(self) -> Iterator[Metric]:
        stack = self.snap.stack
        workers = stack.workers if stack is not None else {}
        restarts = CounterMetricFamily(
            "streamer_worker_restarts_total",
            "Times a worker was started again, by why (exited, killed, stalled, not_ready, stack)",
            labels=["worker", "cause"],
        )
        up = GaugeMetricFamily(
            "streamer_worker_up", "1 while the worker is running and ready", labels=["worker"]
        )
        cpu = CounterMetricFamily(
            "streamer_worker_cpu_seconds_total",
            "CPU time (user + system) of the worker's current process",
            labels=["worker"],
        )
        rss = GaugeMetricFamily(
            "streamer_worker_resident_memory_bytes",
            "Resident memory of the worker's current process",
            labels=["worker"],
        )
        for name, worker in sorted(workers.items()):
            for cause in state.CAUSES:
                restarts.add_metric([name, cause], worker.restarts_by_cause.get(cause, 0))
            stats = self.snap.processes.get(name)
            up.add_metric([name], int(worker.state == state.READY and stats is not None))
            if stats is not None:
                cpu.add_metric([name], stats.cpu_seconds)
                rss.add_metric([name], stats.rss_bytes)
        yield from (restarts, up, cpu, rss)
