"""``AiortcMediaDriver``: the relay's ``MediaDriver`` on top of ``meshnode.media.aiortc_driver``.

One ``Forwarder`` per source (its ``SourceTap`` on the publisher's receiver), one
``OutputSender`` per subscriber line, keyed by the relay's endpoint key. The tap's rate is
measured here over windows of about a second (per VP8 temporal layer too, from each
packet's TID: ``layer_kbps``, what the selector picks layers by); a publisher far over
``max_ingest_kbps`` has its excess dropped by the tap (``rate``). Nothing is ever decoded:
``stats()["decoders"]`` counts the decoders aiortc created in the process
(``count_decoders``), and stays 0, while ``packets_tapped`` counts the packets that went
through taps instead.
"""

import time
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpTransceiver
from aiortc import rtcrtpreceiver as aiortc_receiver

from meshnode.media.aiortc_driver import (
    Forwarder,
    OutputSender,
    SourceTap,
    make_media_pc,
    transport_drops,
)
from meshnode.media.endpoint import SourceInfo

__all__ = ["AiortcMediaDriver", "DriverOutput", "DriverTap", "count_decoders"]

_decoders = [0]  # decoders aiortc created in this process (see count_decoders)


def count_decoders() -> None:
    """Count every decoder aiortc creates in this process (its receivers' ``get_decoder``):
    the relay's taps keep them from ever being created, and ``stats()["decoders"]`` shows
    it. Idempotent."""
    original = getattr(aiortc_receiver, "get_decoder")  # noqa: B009 (not re-exported)
    if getattr(original, "meshnode_counted", False):
        return

    def counted(codec: Any) -> Any:
        _decoders[0] += 1
        return original(codec)

    counted.meshnode_counted = True  # type: ignore[attr-defined]
    setattr(aiortc_receiver, "get_decoder", counted)  # noqa: B010


SPEAKING_LEVEL = 50  # RFC 6464 -dBov at or below which a voice packet counts as speech
RATE_WINDOW_S = 1.0
LAYER_SMOOTHING = 0.25  # weight of the newest window in the per-layer rates
LOSS_LIMIT = 0.02  # receiver-reported loss from which a subscriber's REMB limits what it gets


class DriverTap:
    """One source: its tap, its forwarder, and its measured rate."""

    def __init__(self, source: SourceInfo, transceiver: RTCRtpTransceiver, *,
                 max_kbps: float | None, clock: Callable[[], float]) -> None:
        self.source = source
        self.tap = SourceTap(transceiver, source_id=source.source_id, max_kbps=max_kbps,
                             clock=clock)
        self.forwarder = Forwarder(self.tap)
        self._clock = clock
        self._window = (clock(), 0)
        self._kbps = 0.0
        self._layer_window: tuple[float, dict[int, int]] = (clock(), {})
        self._layer_kbps: tuple[float, ...] = ()
        self.last_spoke: float | None = None
        self.closed = False

    @property
    def kbps(self) -> float:
        """Bits per second of payload over the last window, in kbps."""
        now = self._clock()
        start, start_bytes = self._window
        if now - start >= RATE_WINDOW_S:
            self._kbps = (self.tap.bytes - start_bytes) * 8 / 1000 / (now - start)
            self._window = (now, self.tap.bytes)
        return self._kbps

    @property
    def audio_level(self) -> int | None:
        """The last RFC 6464 level heard (0 loudest .. 127 silence)."""
        tap = self.tap
        if tap.voice and tap.audio_level is not None and tap.audio_level <= SPEAKING_LEVEL:
            self.last_spoke = tap.audio_level_at
        return tap.audio_level

    @property
    def layer_kbps(self) -> tuple[float, ...]:
        """``[i]``: the rate of temporal layers ``0..i`` together over the last window, in
        kbps (measured from each packet's VP8 TID); ``()`` for a source without temporal
        layers (audio, or video whose packets carry no TID)."""
        now = self._clock()
        start, before = self._layer_window
        if now - start >= RATE_WINDOW_S:
            current = dict(self.tap.layer_bytes)
            layers = layer_rates(before, current, now - start)
            old = self._layer_kbps
            if len(layers) > 1 and len(old) == len(layers):
                # A second holds ~4 base-layer frames: smoothed over a few windows, a budget
                # between two layers does not flip the subscriber from one to the other.
                layers = tuple(o + (n - o) * LAYER_SMOOTHING
                               for o, n in zip(old, layers, strict=True))
            self._layer_kbps = layers if len(layers) > 1 else ()
            self._layer_window = (now, current)
        return self._layer_kbps

    @property
    def layered(self) -> bool:
        """VP8 with temporal layers seen (else a layer limit means the whole stream)."""
        return any(tid > 0 for tid, n in self.tap.layer_bytes.items() if n)

    def close(self) -> None:
        """Stop forwarding and give the receiver back."""
        if not self.closed:
            self.closed = True
            self.forwarder.close()
            self.tap.detach()


def layer_rates(before: Mapping[int, int], after: Mapping[int, int],
                seconds: float) -> tuple[float, ...]:
    """Cumulative per-layer rates (kbps) from byte counts per TID at two times: ``[i]`` is
    layers ``0..i`` together, up to the highest layer that sent anything; ``()`` if none."""
    sent = {tid: after[tid] - before.get(tid, 0) for tid in after}
    top = max((tid for tid, n in sent.items() if n > 0), default=None)
    if top is None or seconds <= 0:
        return ()
    rates: list[float] = []
    total = 0
    for tid in range(top + 1):
        total += max(0, sent.get(tid, 0))
        rates.append(total * 8 / 1000 / seconds)
    return tuple(rates)


class DriverOutput:
    """One source forwarded into one subscriber line."""

    def __init__(self, tap: DriverTap, key: str, sender: OutputSender, trunk: bool) -> None:
        self._tap = tap
        self.key = key
        self.sender = sender
        self.trunk = trunk

    @property
    def estimate_kbps(self) -> float | None:
        """The subscriber's REMB estimate while its receiver reports show loss (at least
        ``LOSS_LIMIT``), else None: no limit. A browser's REMB for a stream it gets less of
        than its link carries stays near what it gets (at most ~1.5 times): taken as a limit
        without loss, a subscriber held to a lower layer once would never get back up, as
        the relay sends no probing padding."""
        loss = self.sender.loss
        if loss is None or loss < LOSS_LIMIT:
            return None
        return self.sender.estimate_kbps

    @property
    def sent_bytes(self) -> int:
        """Payload bytes sent to the subscriber."""
        return self.sender.sent_bytes

    @property
    def loss(self) -> float | None:
        """Fraction lost (0..1) in the subscriber's latest receiver report."""
        return self.sender.loss

    @property
    def rtt_ms(self) -> float | None:
        """Round-trip time from the subscriber's latest receiver report."""
        return self.sender.rtt_ms

    @property
    def reports(self) -> int:
        """Receiver reports from the subscriber so far."""
        return self.sender.reports

    def pause(self) -> None:
        """Stop sending (the line stays; ``resume`` starts again on the next keyframe)."""
        if self.key in self._tap.forwarder.keys:
            self._tap.forwarder.pause(self.key)

    def resume(self) -> None:
        """Send again, from the next keyframe (asked of the publisher now)."""
        if self.key in self._tap.forwarder.keys:
            self._tap.forwarder.resume(self.key)

    def set_max_tid(self, tid: int | None) -> None:
        """Forward temporal layers 0..tid (None: all). For a source without temporal layers
        the selector's 0 means the whole stream: nothing is filtered."""
        if not self._tap.layered:
            tid = None
        if self.key in self._tap.forwarder.keys:
            self._tap.forwarder.set_max_tid(self.key, tid)

    def close(self) -> None:
        """Stop forwarding into the line."""
        self._tap.forwarder.remove_output(self.key)
        self.sender.close()


class AiortcMediaDriver:
    """The relay's ``MediaDriver`` (see the module docstring)."""

    def __init__(self, configuration: Callable[[], RTCConfiguration], *,
                 max_ingest_kbps: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._configuration = configuration
        self._max_ingest = max_ingest_kbps
        self._clock = clock
        self.taps: list[DriverTap] = []
        self.outputs: list[DriverOutput] = []
        self._closed_bytes: Counter[str] = Counter()
        self._closed_drops: Counter[str] = Counter()
        self._closed_tapped = 0
        self._closed_keyframes = 0
        count_decoders()

    def make_pc(self) -> RTCPeerConnection:
        """A media connection (MAX_BUNDLE, the node's ICE servers)."""
        return make_media_pc(self._configuration())

    def tap(self, source: SourceInfo, transceiver: RTCRtpTransceiver) -> DriverTap:
        """Tap the receiver of ``transceiver`` for ``source``."""
        tap = DriverTap(source, transceiver, max_kbps=self._max_ingest, clock=self._clock)
        self.taps.append(tap)
        return tap

    def output(self, tap: DriverTap, transceiver: RTCRtpTransceiver, key: str,
               trunk: bool) -> DriverOutput:
        """Forward ``tap``'s source into ``transceiver``'s sender, as output ``key``."""
        sender = OutputSender(transceiver)
        tap.forwarder.remove_output(key)
        tap.forwarder.add_output(key, sender)
        out = DriverOutput(tap, key, sender, trunk)
        self.outputs.append(out)
        return out

    def stats(self) -> Mapping[str, Any]:
        """Packets tapped, bytes out (``trunk`` separately), drops by reason; forgets what
        was closed (keeping its totals)."""
        for out in [o for o in self.outputs if o._tap.closed
                    or o.key not in o._tap.forwarder.keys]:
            self.outputs.remove(out)
            self._closed_bytes["trunk" if out.trunk else "out"] += \
                out.sent_bytes
        for tap in [t for t in self.taps if t.closed]:
            self.taps.remove(tap)
            self._closed_tapped += tap.tap.packets
            self._closed_keyframes += tap.tap.keyframe_requests
            self._closed_drops.update(tap.tap.dropped)
            self._closed_bytes["in"] += tap.tap.bytes
        bytes_ = Counter(self._closed_bytes)
        drops = Counter(self._closed_drops)
        drops.update(transport_drops)
        tapped = self._closed_tapped
        keyframes = self._closed_keyframes
        for tap in self.taps:
            keyframes += tap.tap.keyframe_requests
            bytes_["in"] += tap.tap.bytes
            drops.update(tap.tap.dropped)
            tapped += tap.tap.packets
        for out in self.outputs:
            bytes_["trunk" if out.trunk else "out"] += out.sent_bytes
            drops.update(out.sender.dropped)
        return {"taps": len(self.taps), "outputs": len(self.outputs), "packets_tapped": tapped,
                "bytes": dict(bytes_), "drops": dict(drops), "keyframe_requests": keyframes,
                "decoders": _decoders[0]}
