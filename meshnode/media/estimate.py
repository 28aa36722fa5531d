"""How much a subscriber's link carries: REMB and receiver reports into one estimate. Sans-I/O.

The relay learns about each subscriber's downlink from the RTCP it sends back on every output
(``meshnode.media.aiortc_driver.OutputSender``): REMB (the receiver's own delay-based estimate,
video only) and receiver reports (fraction lost, and the round-trip time from LSR/DLSR). A
``LinkEstimate`` per subscriber turns them into one ``kbps`` for the selector's budget
(``meshnode.media.selection``), after the loss-based half of Google Congestion Control
(draft-ietf-rmcat-gcc-02, section 6):

- **Loss.** On a new report with more than ``high_loss`` lost (or a round-trip time over
  ``high_rtt_ms``, a queue building up), the estimate drops to ``(1 - loss/2)`` of what was
  being sent (at least a 5 % cut); with less than ``low_loss`` lost it grows by ``growth``
  at most once a second, and once it passes the REMB (or ``ceiling_kbps``) it lets go: the
  REMB alone bounds the link again. Between the two, it holds.
- **REMB.** The last REMB is the upper bound while video flows. A subscriber on audio only
  sends none (audio receivers make no REMB), so the last one is held for ``remb_hold_s`` and
  then forgotten: the selector then tries video again, a probe that a still-weak link
  answers with a low REMB or losses within a second or two.

The estimate is ``min`` of the two that are known, ``None`` when neither is. No clock: every
call passes ``now``.
"""

from dataclasses import dataclass

__all__ = ["EstimateConfig", "LinkEstimate", "LinkReport"]


@dataclass(frozen=True, slots=True)
class EstimateConfig:
    """Thresholds of ``LinkEstimate`` (see the module docstring)."""

    high_loss: float = 0.10
    low_loss: float = 0.02
    high_rtt_ms: float = 1_000.0
    growth: float = 1.08
    growth_interval_s: float = 1.0
    remb_hold_s: float = 10.0
    floor_kbps: float = 10.0
    ceiling_kbps: float = 100_000.0
    rate_window_s: float = 1.0


@dataclass(frozen=True, slots=True)
class LinkReport:
    """What the outputs to one subscriber say now, together (the relay gives the least loss
    and round trip of its outputs: the others show what one source lost before the relay).

    ``remb_kbps``: the latest REMB (None: none yet, or no video output); ``loss`` (0..1) and
    ``rtt_ms``: from the latest receiver reports; ``reports``: how many
    receiver reports arrived on its outputs so far (a new one makes ``loss`` news);
    ``sent_bytes``: payload bytes sent to it so far, over every output."""

    remb_kbps: float | None
    loss: float | None
    rtt_ms: float | None
    reports: int
    sent_bytes: int


class LinkEstimate:
    """One subscriber's downlink estimate (see the module docstring)."""

    def __init__(self, config: EstimateConfig | None = None) -> None:
        self.config = config or EstimateConfig()
        self.loss_kbps: float | None = None  # the loss-based bound (None: no bound)
        self.remb_kbps: float | None = None
        self._remb_at = 0.0
        self._reports = 0
        self._grown_at = 0.0
        self._window: tuple[float, int] | None = None
        self.sent_kbps = 0.0

    @property
    def kbps(self) -> float | None:
        """The current estimate: the smaller of the REMB and the loss-based bound."""
        known = [v for v in (self.remb_kbps, self.loss_kbps) if v is not None]
        return min(known) if known else None

    def update(self, report: LinkReport, now: float) -> float | None:
        """Take the outputs' current figures; returns the estimate."""
        cfg = self.config
        self._measure(report.sent_bytes, now)
        if report.remb_kbps is not None and report.remb_kbps >= 0:
            self.remb_kbps, self._remb_at = report.remb_kbps, now
        elif self.remb_kbps is not None and now - self._remb_at > cfg.remb_hold_s:
            self.remb_kbps = None  # no video flows: forget it, and let video be tried again
        if report.reports < self._reports:
            self._reports = report.reports  # outputs were replaced: counts start over
        if report.reports > self._reports:
            self._reports = report.reports
            self._on_report(report, now)
        return self.kbps

    def _measure(self, sent_bytes: int, now: float) -> None:
        if self._window is None or sent_bytes < self._window[1]:
            self._window = (now, sent_bytes)
            return
        start, start_bytes = self._window
        if now - start >= self.config.rate_window_s:
            self.sent_kbps = (sent_bytes - start_bytes) * 8 / 1000 / (now - start)
            self._window = (now, sent_bytes)

    def _on_report(self, report: LinkReport, now: float) -> None:
        cfg = self.config
        loss = report.loss if report.loss is not None and 0 <= report.loss <= 1 else 0.0
        slow = report.rtt_ms is not None and report.rtt_ms > cfg.high_rtt_ms
        if loss > cfg.high_loss or slow:
            base = self.sent_kbps if self.sent_kbps > 0 else self.kbps
            if base is None:
                return
            if self.loss_kbps is not None:
                base = min(base, self.loss_kbps)
            self.loss_kbps = max(cfg.floor_kbps, base * (1 - max(loss, 0.1) / 2))
            self._grown_at = now
        elif (loss < cfg.low_loss and self.loss_kbps is not None
              and not (report.rtt_ms is not None and report.rtt_ms > cfg.high_rtt_ms / 2)
              and now - self._grown_at >= cfg.growth_interval_s):
            self._grown_at = now
            self.loss_kbps *= cfg.growth
            if self.loss_kbps > min(self.remb_kbps or cfg.ceiling_kbps, cfg.ceiling_kbps):
                self.loss_kbps = None
