"""The viewers' links and the bitrate control law (``streamer.rtsp.links``), as pure code: the
reports and queues a link gives, and the law against a modelled link of a given capacity."""

from __future__ import annotations

import pytest

from streamer.rtsp import links
from streamer.rtsp.links import BitrateLaw, CleanReport, Congestion, ReceiverReport, SentBytes, ViewerLink

MAX, MIN = 2_000_000, 200_000


def rr(lost_256: int, seq: int, jitter: int = 0, packets_lost: int = 0) -> ReceiverReport:
    stats = {
        "have-rb": True,
        "rb-fractionlost": lost_256,
        "rb-packetslost": packets_lost,
        "rb-jitter": jitter,
        "rb-exthighestseq": seq,
        "rb-lsr": 1,
        "rb-dlsr": 2,
    }
    report = ReceiverReport.from_stats(stats)
    assert report is not None
    return report


def sent_at(rate_bps: float, until: float, since: float = 0.0) -> SentBytes:
    sent = SentBytes()
    for second in range(int(since), int(until) + 1):
        sent.add(float(second), int(rate_bps / 8 * second))
    return sent


def test_a_receiver_report_is_read_in_the_units_of_rfc_3550():
    assert ReceiverReport.from_stats({"have-rb": False, "rb-fractionlost": 30}) is None
    report = rr(64, seq=100, jitter=900, packets_lost=-1)
    assert report.fraction_lost == 0.25
    assert report.jitter_ms == 10.0  # 900 ticks of H.264's 90 kHz RTP clock
    assert report.packets_lost == 0  # duplicates can make RFC 3550's count negative


def test_a_lossy_report_gives_what_the_link_delivered_over_its_span():
    link = ViewerLink(3)
    sent = sent_at(1_000_000, until=20)
    assert link.report(rr(0, seq=100), now=10.0, sent=sent) == CleanReport(3, since=5.0)
    congestion = link.report(rr(64, seq=200), now=15.0, sent=sent)  # 25 % of 1 Mbit/s lost
    assert isinstance(congestion, Congestion) and congestion.viewer == 3
    assert congestion.delivered_bps == pytest.approx(750_000)
    assert congestion.why == "lost 25%"
    assert link.as_fields()["fraction_lost"] == 0.25


def test_the_links_capacity_holds_over_a_span_with_a_cut_in_its_middle():
    # 2 s at 2 Mbit/s, then a cut to 800 kbit/s for 3 s, through a 1 Mbit/s link: only the first
    # two seconds lost anything (2 Mbit of 6.4); the mean rate times what arrived would say 880k.
    sent, total = SentBytes(), 0
    sent.add(0.0, 0)
    for second, rate in enumerate([2_000_000, 2_000_000, 800_000, 800_000, 800_000], start=1):
        total += rate // 8
        sent.add(float(second), total)
    assert sent.link_bps(0.0, 5.0, fraction_lost=2 / 6.4) == pytest.approx(1_000_000, rel=1e-3)
    assert sent.link_bps(0.0, 5.0, fraction_lost=0.0) == pytest.approx(2_000_000, rel=1e-3)


def test_the_same_report_read_again_is_not_news_and_small_loss_is_clean():
    link = ViewerLink(1)
    sent = sent_at(1_000_000, until=20)
    assert link.report(rr(64, seq=100), now=10.0, sent=sent) is not None
    assert link.report(rr(64, seq=100), now=11.0, sent=sent) is None  # the same report
    # 2 %: no cut, but a warning: the link's capacity as that loss says
    warning = link.report(rr(5, seq=150), now=15.0, sent=sent)
    assert isinstance(warning, CleanReport) and warning.since == 10.0
    assert warning.link_bps == pytest.approx(1_000_000 * (1 - 5 / 256))
    assert link.fraction_lost == pytest.approx(5 / 256)


def test_a_tcp_queue_that_grows_past_the_limit_is_congestion_one_that_drains_is_not():
    link = ViewerLink(2)
    sent = sent_at(1_000_000, until=20)
    assert link.queued(10_000, now=10.0, bitrate=1_000_000, sent=sent) is None  # first look
    assert link.backlog_s == pytest.approx(0.08)
    # 100 kB more queued in a second of 125 kB sent: 200 kbit/s got through
    congestion = link.queued(110_000, now=11.0, bitrate=1_000_000, sent=sent)
    assert congestion is not None
    assert congestion.delivered_bps == pytest.approx(200_000)
    assert link.queued(90_000, now=12.0, bitrate=1_000_000, sent=sent) is None  # draining
    assert link.queued(95_000, now=13.0, bitrate=5_000_000, sent=sent) is None  # short


def test_congestion_cuts_at_once_below_what_the_link_delivered():
    law = BitrateLaw(MIN, MAX, MAX)
    change = law.congested(Congestion(1, 1_000_000, "lost 50%"), now=0.0)
    assert change is not None
    assert (change.previous, change.bitrate) == (MAX, round(1_000_000 * links.HEADROOM))
    assert "viewer 1 lost 50%" in change.reason
    # a second cut waits for the first to reach the viewer
    assert law.congested(Congestion(1, 500_000, "lost 60%"), now=links.CUT_HOLD_S / 2) is None
    # a little loss still cuts by MIN_CUT, and never below the minimum
    now = links.CUT_HOLD_S
    assert law.congested(Congestion(1, 10_000_000, "lost 3%"), now=now).bitrate == round(
        850_000 * (1 - links.MIN_CUT)
    )
    assert law.congested(Congestion(1, 1_000, "lost 99%"), now=now * 2).bitrate == MIN
    assert law.congested(Congestion(1, 1_000, "lost 99%"), now=now * 3) is None  # at the floor


def test_the_climb_waits_for_clean_seconds_then_probes_the_knee_carefully():
    law = BitrateLaw(MIN, MAX, MAX)
    law.congested(Congestion(1, 1_000_000, "lost 50%"), now=0.0)
    cut = law.bitrate
    assert law.tick(now=links.CLEAN_S - 0.5) is None
    change = law.tick(now=links.CLEAN_S)
    assert change is not None and change.bitrate == cut + round(links.PROBE_STEP * 1_000_000)
    assert "probing" in change.reason
    assert law.tick(now=links.CLEAN_S + 0.2) is None  # once a second
    # past the knee, still carefully, until a clean report covers only time spent past it
    now = links.CLEAN_S
    while law.bitrate < 1_000_000 * links.KNEE_MARGIN:
        now += 1
        law.tick(now)
    passed_at = now
    change = law.tick(now + 1)
    assert change is not None and change.bitrate - change.previous == round(links.PAST_KNEE_STEP * 1_000_000)
    law.clean(CleanReport(1, since=passed_at - 1))  # it began below the margin: not proof
    change = law.tick(now + 2)
    assert change is not None and change.bitrate - change.previous == round(links.PAST_KNEE_STEP * 1_000_000)
    law.clean(CleanReport(1, since=passed_at))
    change = law.tick(now + 3)
    assert change is not None and change.bitrate == round(change.previous * (1 + links.CLIMB_STEP))


def test_a_little_loss_while_climbing_briskly_makes_the_climb_careful_again():
    law = BitrateLaw(MIN, MAX, 1_000_000)
    assert law.tick(100.0).bitrate == round(1_000_000 * (1 + links.CLIMB_STEP))  # no knee: brisk
    law.clean(CleanReport(1, since=95.0, link_bps=1_020_000))  # 1 % lost: the link is near
    change = law.tick(101.0)
    assert change is not None and change.bitrate - change.previous == round(links.PAST_KNEE_STEP * 1_020_000)


def test_fixed_mode_ignores_the_links_and_takes_the_operators_bitrate():
    law = BitrateLaw(MIN, MAX, MAX, adaptive=False)
    assert law.congested(Congestion(1, 100_000, "lost 90%"), now=0.0) is None
    assert law.tick(now=100.0) is None
    change = law.set_ceiling(500_000)
    assert change is not None and (change.bitrate, change.reason) == (500_000, "set by the operator")
    assert law.set_ceiling(500_000) is None


def test_adaptive_mode_takes_the_operators_bitrate_as_its_ceiling():
    law = BitrateLaw(MIN, MAX, MAX)
    assert law.set_ceiling(800_000).bitrate == 800_000  # cut to it at once
    assert law.set_ceiling(1_500_000) is None  # above: climbed to when the links allow
    bitrates = [change.bitrate for now in range(100) if (change := law.tick(float(now)))]
    assert bitrates[-1] == 1_500_000 == law.bitrate


def run_law_over_link(law: BitrateLaw, capacity_bps: float, seconds: int, start: int = 0) -> list[int]:
    """The law against a modelled link: the viewer loses what the stream sends above the
    link's capacity and reports every 5 s, as RTP stacks do."""
    sent = SentBytes()
    link = ViewerLink(1)
    total, lost, arrived_since_report, history = 0.0, 0.0, 0.0, []
    for second in range(start, start + seconds):
        now = float(second)
        total += law.bitrate / 8
        lost += max(0.0, law.bitrate - capacity_bps) / 8
        arrived_since_report += min(law.bitrate, capacity_bps) / 8
        sent.add(now, int(total))
        if second % 5 == 4:
            fraction = lost / (lost + arrived_since_report)
            report = rr(round(fraction * 256), seq=second)
            outcome = link.report(report, now, sent)
            if isinstance(outcome, Congestion):
                law.congested(outcome, now)
            elif isinstance(outcome, CleanReport):
                law.clean(outcome)
            lost = arrived_since_report = 0.0
        law.tick(now)
        history.append(law.bitrate)
    return history


def test_against_a_link_of_half_the_bitrate_the_law_settles_under_it_and_climbs_back_once_it_is_gone():
    law = BitrateLaw(MIN, MAX, MAX)
    capped = run_law_over_link(law, capacity_bps=MAX / 2, seconds=60)
    assert capped[5] <= MAX / 2  # the first report (at 4 s) cuts under the link at once
    settled = capped[10:]
    assert max(settled) <= MAX / 2 * links.KNEE_MARGIN  # probing goes only a little past the link
    assert min(settled) >= MAX / 2 * 0.6  # and never falls far below it
    free = run_law_over_link(law, capacity_bps=10 * MAX, seconds=60, start=60)
    assert free[-1] == MAX
    assert free.index(MAX) < 70  # probing past the knee, a clean report there, then 5 % a second
