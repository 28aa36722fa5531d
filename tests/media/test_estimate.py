"""The subscriber link estimate (pure): REMB bounds it, losses and a long round trip cut it
to below what was being sent, a clean link lets it grow back until the REMB governs again,
and a REMB that stops coming (audio only) is forgotten after a while, so video is retried.
Plus the tap's per-layer rates (``layer_rates``)."""

from hypothesis import given
from hypothesis import strategies as st

from meshnode.media.estimate import LinkEstimate, LinkReport
from meshnode.media.relay_driver import layer_rates


def feed(est: LinkEstimate, t: float, *, remb: float | None = None, loss: float | None = None,
         rtt: float | None = None, reports: int, sent: int) -> float | None:
    return est.update(LinkReport(remb, loss, rtt, reports, sent), t)


def test_losses_cut_below_the_sent_rate_and_a_clean_link_grows_back_to_the_remb() -> None:
    est = LinkEstimate()
    assert feed(est, 0.0, reports=0, sent=0) is None  # nothing known: no limit
    sent = 0
    for i in range(1, 4):  # 1000 kbps flowing, clean
        sent += 125_000
        assert feed(est, float(i), remb=1500.0, loss=0.0, reports=i, sent=sent) == 1500.0
    sent += 125_000
    cut = feed(est, 4.0, remb=1500.0, loss=0.3, reports=4, sent=sent)
    assert cut is not None and cut == 1000 * (1 - 0.15)  # (1 - loss/2) of the sent rate
    # The same report again (no new receiver report) changes nothing.
    assert feed(est, 4.5, remb=1500.0, loss=0.3, reports=4, sent=sent) == cut
    # A long round trip counts as congestion too.
    sent += 60_000
    slow = feed(est, 5.5, remb=1500.0, loss=0.0, rtt=1500.0, reports=5, sent=sent)
    assert slow is not None and slow < cut
    # A clean link: grows at most once a second, up to the REMB, then the REMB governs.
    values = []
    t = 5.5
    for n in range(6, 60):
        t += 1.0
        values.append(feed(est, t, remb=1500.0, loss=0.0, rtt=50.0, reports=n, sent=sent))
    assert values == sorted(v for v in values if v is not None)
    assert values[-1] == 1500.0 and est.loss_kbps is None


def test_a_remb_that_stops_coming_is_forgotten_so_video_is_tried_again() -> None:
    est = LinkEstimate()
    assert feed(est, 0.0, remb=60.0, reports=0, sent=0) == 60.0
    assert feed(est, 5.0, reports=0, sent=0) == 60.0  # held
    assert feed(est, 11.0, reports=0, sent=0) is None  # forgotten: no bound


@given(st.lists(st.tuples(st.floats(0, 1), st.floats(0, 5000), st.integers(0, 200_000),
                          st.one_of(st.none(), st.floats(0, 100_000))), max_size=40))
def test_the_estimate_is_never_negative_and_never_above_a_fresh_remb(
        steps: list[tuple[float, float, int, float | None]]) -> None:
    est = LinkEstimate()
    sent = 0
    for i, (loss, rtt, more, remb) in enumerate(steps):
        sent += more
        value = feed(est, i * 0.7, remb=remb, loss=loss, rtt=rtt, reports=i, sent=sent)
        assert value is None or value >= 0
        if remb is not None and value is not None:
            assert value <= remb


def test_layer_rates_are_cumulative_from_bytes_per_tid() -> None:
    before = {0: 1000, 1: 500}
    after = {0: 1000 + 20_000, 1: 500 + 10_000, 2: 10_000}
    assert layer_rates(before, after, 2.0) == (80.0, 120.0, 160.0)
    assert layer_rates(after, after, 1.0) == ()  # nothing sent: one layer at kbps
    assert layer_rates({}, {0: 1_000}, 1.0) == (8.0,)
