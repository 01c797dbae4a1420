"""The viewers' links and the stream's bitrate: what each viewer's link is telling us, and the
control law that follows the worst link (``VIDEO_BITRATE_MODE=adaptive``). Pure: the RTSP
worker reads the numbers from gst-rtsp-server (``streamer.media.gst.receiver_reports``, the
send queue of a TCP viewer's connection) and feeds them in; nothing here touches GStreamer.

Signals, per viewer:

- **UDP: RTCP receiver reports.** A viewer's RTP stack reports, every few seconds (RFC 3550:
  about 5 s, randomised; GStreamer's and FFmpeg's clients do so), the fraction of our packets
  it lost since its previous report, the cumulative count, and the interarrival jitter.
- **TCP: the send queue.** TCP loses nothing; a link too thin for the stream shows as video
  queuing unsent in the connection's socket (``backlog``, in seconds of video at the current
  bitrate), growing.

The law (``BitrateLaw``), every ``TICK_S``:

- **Cut, multiplicatively, on congestion.** A receiver report with loss above
  ``LOSS_THRESHOLD`` (2 %), or a TCP backlog above ``BACKLOG_LIMIT_S`` that is still growing,
  gives an estimate of the link's capacity. UDP: the capacity that, filled second by second
  with what we sent over the report's span, would have dropped the fraction reported
  (``SentBytes.link_bps``: a radio link or a policer carries up to its capacity and drops the
  rest), which holds for a span with a cut in its middle. TCP: what left the send queue over
  ``DRAIN_SPAN_S``. The bitrate drops at once to ``HEADROOM`` (85 %) of that estimate, by at
  least ``MIN_CUT`` (15 %), never below ``VIDEO_BITRATE_MIN``; no second cut within
  ``CUT_HOLD_S`` (2 s), while what was sent before the first is still on its way.
- **Climb slowly while every link is clean.** After ``CLEAN_S`` (6 s: more than a
  report's interval) without congestion from any viewer it rises each second: back towards
  the last congested level (the ``knee``) by ``PROBE_STEP`` (2 %) of it, then past it,
  carefully, by ``PAST_KNEE_STEP`` (1 %) a second, for a report comes only every few seconds
  and an overshoot is seen that late. Once a report without loss covers only time spent past
  ``KNEE_MARGIN`` (110 %) of the knee, the link has grown: the knee is forgotten and the
  bitrate climbs by ``CLIMB_STEP`` (4 %) of itself a second, until a report shows any loss
  (then its estimate is the knee again, probed carefully) or up to the ceiling
  (``VIDEO_BITRATE``, or what the API last set). Modelled against a link of half the bitrate
  (``tests/test_bitrate_law.py``) it settles in a sawtooth between about 85 % and 110 % of
  the link; freed, it is back at the maximum within a minute.
- **The worst viewer decides.** Every viewer's congestion cuts the one shared encoder: a
  shared stream cannot serve two links at two bitrates, and a viewer on a thin link would
  otherwise see smeared frames forever. (One viewer on a bad link therefore lowers everyone's
  bitrate; that is the documented policy.)
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field

TICK_S = 1.0
LOSS_THRESHOLD = 0.02  # fraction of packets: below it, a link is clean (jitter alone is not loss)
BACKLOG_LIMIT_S = 0.5  # seconds of video unsent in a TCP viewer's socket
DRAIN_SPAN_S = 3.0  # what left a TCP viewer's socket is measured over this span
HEADROOM = 0.85  # of the estimated delivered rate, after a cut
MIN_CUT = 0.15  # each cut takes at least this fraction off
CUT_HOLD_S = 2.0  # after a cut, before the next: what was queued before it must drain first
CLEAN_S = 6.0  # without congestion before climbing: longer than a viewer's report interval
PROBE_STEP = 0.02  # of the knee, per second, up to KNEE_NEAR of it
KNEE_NEAR = 0.95
PAST_KNEE_STEP = 0.01  # of the knee, per second, from KNEE_NEAR to KNEE_MARGIN of it
# Of the bitrate, per second, once well past the knee: multiplicative, so that what it climbs
# between two reports (about 5 s) stays about a fifth of where it is, whatever the rate.
CLIMB_STEP = 0.04
KNEE_MARGIN = 1.1  # "well past the knee": above this multiple of it
FIRST_REPORT_SPAN_S = 5.0  # RFC 3550's minimum interval: what a viewer's first report covers
SENT_HISTORY_S = 30.0  # how far back the sent bytes are kept (a report spans about 5 s)
CLIMB_REASON = "links clean"
JITTER_CLOCK_HZ = 90_000  # RTP clock of H.264 (RFC 6184): receiver reports count jitter in it


@dataclass(frozen=True)
class ReceiverReport:
    """The newest RTCP receiver report block about our stream from one address."""

    fraction_lost: float  # 0..1, over the span since the viewer's previous report
    packets_lost: int  # cumulative
    jitter_ms: float
    # What identifies one report from the next (highest sequence number, LSR, DLSR): a viewer's
    # stats stay the same between its reports.
    key: tuple[int, int, int]

    @classmethod
    def from_stats(cls, stats: Mapping[str, int]) -> ReceiverReport | None:
        """From rtpsession's per-source stats (``rb-*`` fields); None before the first report."""
        if not stats.get("have-rb"):
            return None
        return cls(
            # RFC 3550 6.4.1: a fixed-point fraction, 8 bits
            fraction_lost=stats.get("rb-fractionlost", 0) / 256,
            packets_lost=max(0, stats.get("rb-packetslost", 0)),
            jitter_ms=stats.get("rb-jitter", 0) * 1000 / JITTER_CLOCK_HZ,
            key=(stats.get("rb-exthighestseq", 0), stats.get("rb-lsr", 0), stats.get("rb-dlsr", 0)),
        )


class SentBytes:
    """The stream's bytes sent so far, sampled each tick: the rate over any recent span."""

    def __init__(self) -> None:
        self._samples: deque[tuple[float, int]] = deque()

    def add(self, now: float, total_bytes: int) -> None:
        self._samples.append((now, total_bytes))
        while len(self._samples) > 2 and self._samples[1][0] < now - SENT_HISTORY_S:
            self._samples.popleft()

    def rate_bps(self, since: float, until: float) -> float | None:
        """Mean bit/s between the samples nearest ``since`` and ``until``; None without two."""
        if len(self._samples) < 2:
            return None
        start = min(self._samples, key=lambda sample: abs(sample[0] - since))
        end = min(self._samples, key=lambda sample: abs(sample[0] - until))
        if end[0] - start[0] < TICK_S / 2:
            return None
        return (end[1] - start[1]) * 8 / (end[0] - start[0])

    def link_bps(self, since: float, until: float, fraction_lost: float) -> float | None:
        """The link's capacity, bit/s, that would have lost ``fraction_lost`` of what was sent
        between ``since`` and ``until``: a link that carries up to C and drops the rest (a
        radio's or a policer's), filled second by second with what we sent. Unlike the mean rate
        times what arrived, it holds when the span saw two bitrates (a cut in its middle: the
        loss came from the seconds above the link)."""
        seconds = [
            (later[0] - earlier[0], (later[1] - earlier[1]) * 8)
            for earlier, later in zip(self._samples, list(self._samples)[1:], strict=False)
            if earlier[0] >= since - TICK_S / 2 and later[0] <= until + TICK_S / 2
        ]
        sent_bits = sum(bits for _, bits in seconds)
        if not seconds or sent_bits <= 0:
            return None
        lost_bits = fraction_lost * sent_bits

        def lost_at(capacity: float) -> float:
            return sum(max(0.0, bits - capacity * duration) for duration, bits in seconds)

        low, high = 0.0, max(bits / duration for duration, bits in seconds if duration > 0)
        for _ in range(40):  # bisection: lost_at falls as the capacity grows
            middle = (low + high) / 2
            low, high = (middle, high) if lost_at(middle) > lost_bits else (low, middle)
        return (low + high) / 2


@dataclass(frozen=True)
class CleanReport:
    """A receiver report with no loss to speak of, over the span since ``since``; a little
    loss all the same (``link_bps``, the link's capacity as the loss says) is a warning."""

    viewer: int
    since: float
    link_bps: float | None = None


@dataclass(frozen=True)
class Congestion:
    """A viewer's link delivering less than the stream: ``delivered_bps`` is the estimate."""

    viewer: int
    delivered_bps: float
    why: str  # "lost 12 %", "3.2 s of video queued"


@dataclass
class ViewerLink:
    """One viewer's link, as its reports (UDP) or its send queue (TCP) show it."""

    number: int
    fraction_lost: float | None = None
    packets_lost: int | None = None
    jitter_ms: float | None = None
    backlog_s: float | None = None
    _report_key: tuple[int, int, int] | None = None
    _report_at: float | None = None
    # (monotonic time, bytes unsent) over the last DRAIN_SPAN_S: TCP's delivery comes in bursts
    # (a lost segment holds everything behind it), so one second says little.
    _backlog: deque[tuple[float, int]] = field(default_factory=deque)

    def report(self, report: ReceiverReport, now: float, sent: SentBytes) -> Congestion | CleanReport | None:
        """Take the viewer's newest receiver report (the same one again is ignored, None): a
        lossy one is congestion, with the link's capacity estimated over the report's span."""
        if report.key == self._report_key:
            return None
        previous_at, self._report_key, self._report_at = self._report_at, report.key, now
        self.fraction_lost, self.packets_lost, self.jitter_ms = (
            report.fraction_lost,
            report.packets_lost,
            report.jitter_ms,
        )
        # The report covers the span since the previous one (about 5 s before the first).
        since = previous_at if previous_at is not None else now - FIRST_REPORT_SPAN_S
        if report.fraction_lost <= LOSS_THRESHOLD:
            warning = sent.link_bps(since, now, report.fraction_lost) if report.fraction_lost > 0 else None
            return CleanReport(self.number, since, warning)
        link_bps = sent.link_bps(since, now, report.fraction_lost)
        if link_bps is None:
            return None
        return Congestion(self.number, link_bps, f"lost {report.fraction_lost:.0%}")

    def queued(self, unsent_bytes: int, now: float, bitrate: int, sent: SentBytes) -> Congestion | None:
        """Take the bytes unsent in the viewer's socket now (TCP); a queue past the limit and
        still growing is congestion, with what drained from it as the delivered rate."""
        self._backlog.append((now, unsent_bytes))
        while self._backlog[0][0] < now - DRAIN_SPAN_S:
            self._backlog.popleft()
        previous_at, previous_bytes = self._backlog[0]
        latest_bytes = self._backlog[-2][1] if len(self._backlog) > 1 else unsent_bytes
        self.backlog_s = unsent_bytes * 8 / bitrate if bitrate > 0 else None
        if self.backlog_s is None or now - previous_at < TICK_S / 2:
            return None
        if self.backlog_s <= BACKLOG_LIMIT_S or unsent_bytes <= latest_bytes:
            return None  # short, or draining: the bitrate now fits the link
        sent_bps = sent.rate_bps(previous_at, now)
        if sent_bps is None:
            return None
        grown_bps = (unsent_bytes - previous_bytes) * 8 / (now - previous_at)
        return Congestion(
            self.number, max(0.0, sent_bps - grown_bps), f"{self.backlog_s:.1f} s of video queued"
        )

    def as_fields(self) -> dict[str, object]:
        """The link's part of the viewer's entry in the progress report."""
        return {
            "fraction_lost": self.fraction_lost,
            "packets_lost": self.packets_lost,
            "jitter_ms": None if self.jitter_ms is None else round(self.jitter_ms, 1),
            "backlog_s": None if self.backlog_s is None else round(self.backlog_s, 2),
        }


@dataclass(frozen=True)
class BitrateChange:
    previous: int
    bitrate: int
    reason: str


@dataclass
class BitrateLaw:
    """The stream's bitrate between ``minimum`` and ``ceiling`` (at most ``maximum``): a deep
    cut on congestion, a slow climb when clean (the module's docstring)."""

    minimum: int
    maximum: int
    bitrate: int
    ceiling: int = 0  # 0: the maximum
    adaptive: bool = True
    _congested_at: float | None = None
    _knee: float | None = None
    _raised_at: float = field(default=float("-inf"))
    _cut_at: float = field(default=float("-inf"))
    _past_margin_at: float | None = None  # when the climb passed KNEE_MARGIN of the knee

    def __post_init__(self) -> None:
        if not self.ceiling:
            self.ceiling = self.maximum

    @property
    def mode(self) -> str:
        """``VIDEO_BITRATE_MODE`` as it applies: ``adaptive`` or ``fixed``."""
        return "adaptive" if self.adaptive else "fixed"

    def set_ceiling(self, bitrate: int) -> BitrateChange | None:
        """The operator's bitrate (fixed mode) or ceiling (adaptive), already within the limits."""
        self.ceiling = bitrate
        if not self.adaptive or self.bitrate > bitrate:
            return self._change(bitrate, "set by the operator")
        return None  # adaptive, below the new ceiling: it climbs there when the links allow

    def congested(self, congestion: Congestion, now: float) -> BitrateChange | None:
        if not self.adaptive:
            return None
        recently_cut = now - self._cut_at < CUT_HOLD_S
        self._congested_at = now
        self._past_margin_at = None
        delivered = max(congestion.delivered_bps, self.minimum)
        self._knee = min(self._knee, delivered) if recently_cut and self._knee is not None else delivered
        if recently_cut:
            return None  # the last cut has not reached the viewer's queue yet
        target = min(congestion.delivered_bps * HEADROOM, self.bitrate * (1 - MIN_CUT))
        if target >= self.bitrate:
            return None
        self._cut_at = now
        return self._change(
            round(target),
            f"viewer {congestion.viewer} {congestion.why} (delivering about "
            f"{congestion.delivered_bps / 1000:.0f} kbit/s)",
        )

    def clean(self, report: CleanReport) -> None:
        """A viewer's report without loss to speak of. Once one covers only time spent past
        KNEE_MARGIN of the knee, the link has grown: the knee is forgotten and the climb is
        brisk. A little loss (up to LOSS_THRESHOLD) is no cut, but the link is near: what it
        says becomes the knee, probed carefully again."""
        if report.link_bps is not None and (self._knee is None or report.link_bps < self._knee):
            self._knee, self._past_margin_at = max(report.link_bps, self.minimum), None
        elif self._past_margin_at is not None and report.since >= self._past_margin_at:
            self._knee = self._past_margin_at = None

    def tick(self, now: float) -> BitrateChange | None:
        """Once a second: climb if every link has been clean long enough."""
        if not self.adaptive or self.bitrate >= self.ceiling:
            return None
        clean_s = float("inf") if self._congested_at is None else now - self._congested_at
        if clean_s < CLEAN_S or now - self._raised_at < TICK_S * 0.9:
            return None
        knee = self._knee
        if knee is None:
            step = CLIMB_STEP * self.bitrate
        else:
            step = (PROBE_STEP if self.bitrate < knee * KNEE_NEAR else PAST_KNEE_STEP) * knee
        self._raised_at = now
        change = self._change(
            round(self.bitrate + step),
            CLIMB_REASON + (", probing the last congested level" if knee is not None else ""),
        )
        if knee is not None and self._past_margin_at is None and self.bitrate >= knee * KNEE_MARGIN:
            self._past_margin_at = now
        return change

    def _change(self, bitrate: int, reason: str) -> BitrateChange | None:
        bitrate = max(self.minimum, min(self.ceiling, bitrate))
        if bitrate == self.bitrate:
            return None
        previous, self.bitrate = self.bitrate, bitrate
        return BitrateChange(previous, bitrate, reason)
