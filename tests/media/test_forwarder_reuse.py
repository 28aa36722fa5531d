"""The driver's ``Forwarder`` when a subscriber's sender (a browser's receive slot) is reused
for another source: the stream on that SSRC goes on without a jump, and a keyframe of the new
source is asked for at once.

The tap and the senders are small stand-ins (the real ones need live peer connections; the
Chromium test in tests/browser/test_media.py drives the real path): the ``Forwarder`` only
uses what they stand in for here.
"""

import asyncio
import random
from itertools import pairwise
from typing import Any, cast

from meshnode.media.aiortc_driver import Forwarder, OutputSender, SourcePacket, SourceTap
from meshnode.media.forwarding import Forward, PacketInfo

RATE = 90000
FPS = 30


class AiortcSender:
    """What the weak map of stream ends is keyed by: the aiortc sender (one per slot)."""


class FakeSender:
    def __init__(self, aiortc_sender: AiortcSender) -> None:
        self.sender = aiortc_sender
        self.ready = True
        self.on_keyframe_request: Any = None
        self.written: list[tuple[str, Forward]] = []
        self.direct = True

    def send_copy(self, packet: SourcePacket, sequence_number: int, timestamp: int,
                  ntp: int) -> bool:
        self.written.append((packet.payload.decode(), Forward(sequence_number, timestamp)))
        return True


class FakeTap:
    def __init__(self, source_id: str) -> None:
        self.source_id = source_id
        self.kind = "video"
        self.clock_rate = RATE
        self.on_packet: Any = None
        self.keyframe_requests = 0
        self.now = 0.0

    def _clock(self) -> float:
        return self.now

    async def request_keyframe(self) -> bool:
        self.keyframe_requests += 1
        return True


def packet(source: str, i: int, seq0: int, ts0: int, keyframe_every: int) -> SourcePacket:
    info = PacketInfo(sequence_number=(seq0 + i) % 65536, timestamp=(ts0 + i * RATE // FPS)
                      % (1 << 32), marker=True, keyframe=i % keyframe_every == 0,
                      frame_start=True, tid=None, size=10)
    return SourcePacket(info, source.encode(), 96, 1234, "video/VP8", RATE, None, None)


async def feed(tap: FakeTap, forwarder: Forwarder, source: str, frames: range, *, seq0: int,
               ts0: int, start: float, keyframe_every: int) -> None:
    for i in frames:
        tap.now = start + i / FPS
        await forwarder.on_packet(cast(SourceTap, tap), packet(source, i, seq0, ts0,
                                                               keyframe_every), tap.now)


async def test_a_reused_slot_continues_its_stream_and_asks_for_a_keyframe() -> None:
    slot = AiortcSender()
    tap_a, tap_b = FakeTap("a"), FakeTap("b")
    fwd_a, fwd_b = Forwarder(cast(SourceTap, tap_a)), Forwarder(cast(SourceTap, tap_b))
    first = FakeSender(slot)
    fwd_a.add_output("sub", cast(OutputSender, first))
    await feed(tap_a, fwd_a, "a", range(40), seq0=60000, ts0=4_000_000_000, start=0.0,
               keyframe_every=30)
    fwd_a.remove_output("sub")
    # The relay reuses the slot for source b: a new sender object on the same aiortc sender.
    second = FakeSender(slot)
    requests = tap_b.keyframe_requests
    fwd_b.add_output("sub", cast(OutputSender, second))
    await asyncio.sleep(0)  # the keyframe request runs as a task
    assert tap_b.keyframe_requests == requests + 1, "the new source was not asked for a keyframe"
    # b's keyframe comes 5 frames later; what comes before it is held back.
    await feed(tap_b, fwd_b, "b", range(25, 60), seq0=100, ts0=7, start=2.0, keyframe_every=30)
    written = first.written + second.written
    assert {s for s, _ in first.written} == {"a"} and {s for s, _ in second.written} == {"b"}
    assert len(second.written) == 60 - 30
    seqs = [f.sequence_number for _, f in written]
    for x, y in pairwise(seqs):
        assert y == (x + 1) % 65536, (x, y)
    last, nxt = first.written[-1][1], second.written[0][1]
    elapsed = (2.0 + 30 / FPS) - 39 / FPS
    assert (nxt.timestamp - last.timestamp) % (1 << 32) == round(elapsed * RATE)


async def test_a_new_slot_starts_where_it_likes_and_ends_are_per_slot() -> None:
    tap = FakeTap("a")
    fwd = Forwarder(cast(SourceTap, tap), rng=random.Random(1))
    draws = random.Random(1)
    one, two = FakeSender(AiortcSender()), FakeSender(AiortcSender())
    fwd.add_output("one", cast(OutputSender, one))
    await feed(tap, fwd, "a", range(10), seq0=5, ts0=5, start=0.0, keyframe_every=30)
    fwd.remove_output("one")
    fwd.add_output("two", cast(OutputSender, two))
    await feed(tap, fwd, "a", range(30, 40), seq0=5, ts0=5, start=0.0, keyframe_every=30)
    assert len(one.written) == 10 and len(two.written) == 10
    # Another slot does not continue slot one's numbers: it starts at random, as RTP does.
    first_one = (draws.randrange(1 << 15), draws.randrange(1 << 32))
    first_two = (draws.randrange(1 << 15), draws.randrange(1 << 32))
    assert (one.written[0][1].sequence_number, one.written[0][1].timestamp) == first_one
    assert (two.written[0][1].sequence_number, two.written[0][1].timestamp) == first_two


class ChainSender(FakeSender):
    """A sender on aiortc's own send chain (``direct`` False): the Forwarder awaits its
    ``write``, one copy at a time, and never calls ``send``."""

    def __init__(self, aiortc_sender: AiortcSender) -> None:
        super().__init__(aiortc_sender)
        self.direct = False

    def send(self, packet: SourcePacket, forward: Forward, ntp: int) -> bool:
        raise AssertionError("a sender that is not direct got a direct send")

    async def write(self, packet: SourcePacket, forward: Forward) -> bool:
        self.written.append((packet.payload.decode(), forward))
        return True


async def test_direct_and_chain_senders_get_the_same_stream_and_copies_are_counted() -> None:
    tap = FakeTap("a")
    fwd = Forwarder(cast(SourceTap, tap), rng=random.Random(3))
    direct, chain = FakeSender(AiortcSender()), ChainSender(AiortcSender())
    fwd.add_output("direct", cast(OutputSender, direct))
    fwd.add_output("chain", cast(OutputSender, chain))
    await feed(tap, fwd, "a", range(20), seq0=9, ts0=9, start=0.0, keyframe_every=30)
    assert len(direct.written) == len(chain.written) == 20
    assert fwd.copies_sent == 40
    # Each output numbers its own stream; both advance one by one with the same timestamps'
    # spacing.
    for sent in (direct.written, chain.written):
        for (_, x), (_, y) in pairwise(sent):
            assert y.sequence_number == (x.sequence_number + 1) % 65536
            assert (y.timestamp - x.timestamp) % (1 << 32) == RATE // FPS
