"""Properties of the per-(source, subscriber) forwarding state (meshnode.media.forwarding)."""

from dataclasses import dataclass
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshnode.media.forwarding import (
    FRAME_MEMORY,
    Drop,
    DropReason,
    Forward,
    KeyframeThrottle,
    Output,
    PacketInfo,
    RateLimit,
)

L1T3 = (0, 2, 1, 2)
FPS = 15
VIDEO_RATE = 90000


@dataclass(frozen=True)
class Pkt:
    info: PacketInfo
    frame: int
    now: float


def video_stream(
    frames: int,
    *,
    seq0: int = 1000,
    ts0: int = 5000,
    keyframe_every: int = 30,
    packets_per_frame: tuple[int, ...] = (2,),
    sync: bool = True,
) -> list[Pkt]:
    """An L1T3 VP8-like stream: TIDs 0,2,1,2; TL1/TL2 frames after a TL0 carry the sync bit
    when ``sync``; a keyframe every ``keyframe_every`` frames."""
    out: list[Pkt] = []
    seq = seq0
    for i in range(frames):
        n = packets_per_frame[i % len(packets_per_frame)]
        ts = (ts0 + i * VIDEO_RATE // FPS) % (1 << 32)
        tid = L1T3[i % 4]
        for j in range(n):
            out.append(Pkt(PacketInfo(
                sequence_number=seq % (1 << 16), timestamp=ts, marker=j == n - 1,
                keyframe=j == 0 and i % keyframe_every == 0, frame_start=j == 0, tid=tid,
                size=100, layer_sync=sync and tid > 0,
            ), i, i / FPS))
            seq += 1
    return out


def assert_contiguous(seqs: list[int]) -> None:
    for a, b in pairwise(seqs):
        assert b == (a + 1) % (1 << 16), (a, b)


Action = tuple[str, int]
actions = st.lists(
    st.tuples(st.sampled_from(["pause", "resume", "tid", "none"]), st.integers(-1, 3)),
    min_size=1, max_size=40,
)


@settings(max_examples=200, deadline=None)
@given(
    acts=actions,
    seq0=st.integers(0, 0xFFFF),
    ts0=st.integers(0, 0xFFFFFFFF),
    first_seq=st.integers(0, 0xFFFF),
    ppf=st.lists(st.integers(1, 4), min_size=1, max_size=5).map(tuple),
)
def test_output_sequence_is_contiguous_and_gated_whatever_is_dropped(
    acts: list[Action], seq0: int, ts0: int, first_seq: int, ppf: tuple[int, ...]
) -> None:
    stream = video_stream(120, seq0=seq0, ts0=ts0, keyframe_every=10, packets_per_frame=ppf)
    out = Output("video", VIDEO_RATE, first_sequence_number=first_seq, first_timestamp=7)
    step = max(1, len(stream) // len(acts))
    seqs: list[int] = []
    ts_offsets: set[int] = set()
    gated = True  # no packet may pass until a keyframe starts
    forwarded_frames: dict[int, int] = {}
    for i, pkt in enumerate(stream):
        if i % step == 0 and i // step < len(acts):
            act, arg = acts[i // step]
            if act == "pause":
                out.pause()
            elif act == "resume" and out.paused:
                assert out.resume(pkt.now) is True
                gated = True
            elif act == "tid":
                out.set_max_tid(None if arg < 0 else arg)
        result = out.forward(pkt.info, pkt.now)
        if isinstance(result, Forward):
            if gated:
                assert pkt.info.keyframe and pkt.info.frame_start
                gated = False
            seqs.append(result.sequence_number)
            ts_offsets.add((result.timestamp - pkt.info.timestamp) % (1 << 32))
            forwarded_frames[pkt.frame] = forwarded_frames.get(pkt.frame, 0) + 1
        else:
            assert result.reason in set(DropReason)
    assert_contiguous(seqs)
    if seqs:
        assert seqs[0] == first_seq
        assert len(ts_offsets) == 1  # one constant offset: media time is kept
    assert out.sent_packets == len(seqs)
    assert out.sent_packets + sum(out.dropped.values()) == len(stream)


@settings(max_examples=200, deadline=None)
@given(
    fate=st.lists(st.integers(0, 9), min_size=120, max_size=120),
    seq0=st.integers(0, 0xFFFF),
    max_tid=st.none() | st.integers(0, 2),
)
def test_loss_and_reordering_keep_output_order_and_unique_slots(
    fate: list[int], seq0: int, max_tid: int | None
) -> None:
    stream = video_stream(60, seq0=seq0, keyframe_every=12, packets_per_frame=(1, 3, 2))[:120]
    # fate 0: lost upstream; 1: swapped with the next packet (reordered / retransmitted late).
    kept = [p for p, f in zip(stream, fate, strict=True) if f != 0]
    for i, f in enumerate(fate[: len(kept) - 1]):
        if f == 1:
            kept[i], kept[i + 1] = kept[i + 1], kept[i]
    out = Output("video", VIDEO_RATE)
    out.set_max_tid(max_tid)
    sent: list[tuple[int, int]] = []  # (input seq - seq0, output seq)
    for pkt in kept:
        r = out.forward(pkt.info, pkt.now)
        if isinstance(r, Forward):
            sent.append(((pkt.info.sequence_number - seq0) % (1 << 16), r.sequence_number))
    outs = [o for _, o in sorted(sent)]
    assert len(set(outs)) == len(outs), "two packets took one output sequence number"
    # The output order is the input order: the rewriting is monotone.
    unwrapped = [(o - outs[0]) % (1 << 16) for o in outs] if outs else []
    assert unwrapped == sorted(unwrapped)


@given(seq0=st.integers(0, 0xFFFF), ts0=st.integers(0, 0xFFFFFFFF),
       max_tid=st.none() | st.integers(0, 2))
def test_layer_filter_never_splits_a_frame(seq0: int, ts0: int, max_tid: int | None) -> None:
    out = Output("video", VIDEO_RATE)
    per_frame: dict[int, list[bool]] = {}
    for n, pkt in enumerate(video_stream(80, seq0=seq0, ts0=ts0, packets_per_frame=(1, 3, 2))):
        if n == 50:
            out.set_max_tid(max_tid)
        sent = isinstance(out.forward(pkt.info, pkt.now), Forward)
        per_frame.setdefault(pkt.frame, []).append(sent)
    assert all(len(set(v)) == 1 for v in per_frame.values())


@pytest.mark.parametrize(("max_tid", "share"), [(0, 4), (1, 2), (2, 1), (None, 1)])
def test_temporal_filter_thins_l1t3(max_tid: int | None, share: int) -> None:
    out = Output("video", VIDEO_RATE)
    out.set_max_tid(max_tid)
    frames = set()
    for pkt in video_stream(400, keyframe_every=400):
        if isinstance(out.forward(pkt.info, pkt.now), Forward):
            frames.add(pkt.frame)
    assert len(frames) == 400 // share
    assert out.dropped[DropReason.LAYER] == 2 * (400 - 400 // share)


def test_layer_upgrade_waits_for_sync_or_keyframe() -> None:
    out = Output("video", VIDEO_RATE)
    out.set_max_tid(0)
    stream = video_stream(40, keyframe_every=20, sync=False)
    sent_frames = []
    for pkt in stream:
        if pkt.frame == 5:
            out.set_max_tid(2)
        if isinstance(out.forward(pkt.info, pkt.now), Forward):
            sent_frames.append(pkt.frame)
    sent = sorted(set(sent_frames))
    # No sync bits: TL1/TL2 frames only come back with the keyframe at frame 20.
    assert [f for f in sent if f < 20] == [0, 4, 8, 12, 16]
    assert [f for f in sent if f >= 20] == list(range(20, 40))


def test_layer_upgrade_steps_up_on_sync_frames() -> None:
    out = Output("video", VIDEO_RATE)
    out.set_max_tid(0)
    sent = set()
    for pkt in video_stream(16, keyframe_every=100):
        if pkt.frame == 3:
            out.set_max_tid(2)
        if isinstance(out.forward(pkt.info, pkt.now), Forward):
            sent.add(pkt.frame)
    # frame 5 (TL2, sync) is above cur=0 by two: waits; frame 6 (TL1, sync) steps to 1;
    # frame 7 (TL2, sync) steps to 2; everything after passes.
    assert sorted(sent) == [0, 4, *range(6, 16)]


def test_wraparound_of_sequence_and_timestamp() -> None:
    stream = video_stream(20, seq0=0xFFF0, ts0=0xFFFFFFFF - 3 * VIDEO_RATE // FPS,
                          packets_per_frame=(3,), keyframe_every=100)
    out = Output("video", VIDEO_RATE, first_sequence_number=0xFFFE, first_timestamp=0xFFFFFFF0)
    results = [out.forward(p.info, p.now) for p in stream]
    fwd = [r for r in results if isinstance(r, Forward)]
    assert len(fwd) == 60
    assert_contiguous([r.sequence_number for r in fwd])
    assert fwd[0].sequence_number == 0xFFFE and fwd[2].sequence_number == 0
    step = VIDEO_RATE // FPS
    assert fwd[3].timestamp == (0xFFFFFFF0 + step) % (1 << 32)
    assert fwd[-1].timestamp == (0xFFFFFFF0 + 19 * step) % (1 << 32)


def test_upstream_loss_keeps_its_gap_and_retransmission_fills_it() -> None:
    stream = video_stream(8, keyframe_every=100, packets_per_frame=(3,))
    out = Output("video", VIDEO_RATE)
    lost = stream[7]  # middle packet of frame 2 (TL1)
    seqs = {}
    for pkt in stream:
        if pkt is lost:
            continue
        r = out.forward(pkt.info, pkt.now)
        assert isinstance(r, Forward)
        seqs[pkt.info.sequence_number] = r.sequence_number
    assert seqs[lost.info.sequence_number + 1] == seqs[lost.info.sequence_number - 1] + 2
    late = out.forward(lost.info, lost.now)
    assert isinstance(late, Forward)
    assert late.sequence_number == seqs[lost.info.sequence_number - 1] + 1


def test_late_packet_of_a_dropped_frame_stays_dropped_and_gap_closes() -> None:
    stream = video_stream(8, keyframe_every=100, packets_per_frame=(3,))
    out = Output("video", VIDEO_RATE)
    out.set_max_tid(0)
    lost = stream[4]  # middle packet of frame 1 (TL2: dropped anyway)
    seqs = [r.sequence_number for p in stream if p is not lost
            for r in [out.forward(p.info, p.now)] if isinstance(r, Forward)]
    assert_contiguous(seqs)
    assert out.forward(lost.info, lost.now) == Drop(DropReason.LAYER)


def test_nothing_before_a_keyframe_after_resume_and_late_packets_from_before_pause() -> None:
    stream = video_stream(40, keyframe_every=15)
    out = Output("video", VIDEO_RATE)
    assert out.wants_keyframe
    held = None
    for pkt in stream:
        if pkt.frame == 5 and pkt.info.frame_start:
            out.pause()
            assert not out.wants_keyframe
        if pkt.frame == 8 and pkt.info.frame_start:
            assert out.resume(pkt.now)
            assert out.wants_keyframe
            # A retransmission of a packet forwarded before the pause arrives now.
            assert held is not None
            assert out.forward(held.info, pkt.now) == Drop(DropReason.AWAITING_KEYFRAME)
        if pkt.frame == 3:
            held = pkt
        r = out.forward(pkt.info, pkt.now)
        if 5 <= pkt.frame < 15:
            assert isinstance(r, Drop)
        elif pkt.frame >= 15:
            assert isinstance(r, Forward)
    assert not out.wants_keyframe
    assert out.dropped[DropReason.PAUSED] == 6
    assert out.dropped[DropReason.AWAITING_KEYFRAME] == 14 + 1


def test_audio_is_not_gated_and_resumes_contiguously() -> None:
    out = Output("audio", 48000)
    assert not out.wants_keyframe
    seqs = []
    for i in range(100):
        if i == 30:
            out.pause()
        if i == 60:
            assert out.resume(i * 0.02) is False
        info = PacketInfo(sequence_number=(65500 + i) % 65536, timestamp=960 * i, marker=False,
                          keyframe=True, frame_start=True, tid=None, size=80)
        r = out.forward(info, i * 0.02)
        if isinstance(r, Forward):
            seqs.append(r.sequence_number)
            assert r.timestamp == 960 * i  # media time goes on during a pause
    assert len(seqs) == 70
    assert_contiguous(seqs)


def test_source_restart_rebases_timestamp_and_waits_for_keyframe() -> None:
    out = Output("video", VIDEO_RATE)
    first = video_stream(10, keyframe_every=100)
    second = [Pkt(p.info, p.frame, 10 + p.now) for p in
              video_stream(14, seq0=30000, ts0=123, keyframe_every=10)][8:]
    fwd = [r for p in first + second for r in [out.forward(p.info, p.now)]
           if isinstance(r, Forward)]
    assert len(fwd) == 20 + 8  # second stream: from its keyframe at frame 10
    assert_contiguous([r.sequence_number for r in fwd])
    gap = (fwd[20].timestamp - fwd[19].timestamp) % (1 << 32)
    assert gap == round((10 + 10 / FPS - 9 / FPS) * VIDEO_RATE)


def test_bad_arguments_are_rejected() -> None:
    with pytest.raises(ValueError, match="kind"):
        Output("data", 1000)
    with pytest.raises(ValueError, match="clock_rate"):
        Output("audio", 0)
    with pytest.raises(ValueError, match="max_tid"):
        Output("video", VIDEO_RATE).set_max_tid(4)


@given(st.lists(st.floats(0, 0.5), min_size=1, max_size=100))
def test_keyframe_throttle_allows_one_request_per_interval(gaps: list[float]) -> None:
    throttle = KeyframeThrottle(0.3)
    now = 0.0
    granted = []
    for gap in gaps:
        now += gap
        if throttle.request(now):
            granted.append(now)
    assert granted[0] == gaps[0]
    assert all(b - a >= 0.3 for a, b in pairwise(granted))
    assert throttle.sent == len(granted) and throttle.suppressed == len(gaps) - len(granted)


def test_rate_limit_allows_the_rate_and_a_burst_only() -> None:
    limit = RateLimit(kbps=80, burst_s=1.0)  # 10,000 bytes per second
    assert sum(limit.allow(1000, 0.0) for _ in range(20)) == 10
    # Over the next 10 s at twice the rate, about half passes.
    passed = sum(limit.allow(1000, 0.05 * i) for i in range(1, 201))
    assert 98 <= passed <= 101
    with pytest.raises(ValueError):
        RateLimit(kbps=0)


@settings(max_examples=200, deadline=None)
@given(
    seq_a=st.integers(0, 0xFFFF),
    seq_b=st.integers(0, 0xFFFF),
    ts_a=st.integers(0, 0xFFFFFFFF),
    ts_b=st.integers(0, 0xFFFFFFFF),
    first_seq=st.integers(0, 0xFFFF),
    switch_at=st.integers(1, 59),
    gap_s=st.floats(0.0, 30.0),
    kind=st.sampled_from(["audio", "video"]),
)
def test_a_reused_sender_continues_sequence_and_media_time_across_sources(
    seq_a: int, seq_b: int, ts_a: int, ts_b: int, first_seq: int, switch_at: int,
    gap_s: float, kind: str,
) -> None:
    """A receive slot that switches from source A to source B: what its subscriber sees on
    the one SSRC is contiguous in sequence numbers, and its timestamps go on by the time
    that passed (not a random jump), whatever A's and B's own numbers were."""
    a = video_stream(60, seq0=seq_a, ts0=ts_a, keyframe_every=10)
    b = video_stream(60, seq0=seq_b, ts0=ts_b, keyframe_every=10)
    first = Output(kind, VIDEO_RATE, first_sequence_number=first_seq, first_timestamp=99)
    sent: list[tuple[Forward, float]] = []
    for pkt in a[:switch_at]:
        r = first.forward(pkt.info, pkt.now)
        if isinstance(r, Forward):
            sent.append((r, pkt.now))
    end = first.end()
    assert end is not None  # A's first packet is a keyframe: something was sent
    assert end.next_sequence_number == (sent[-1][0].sequence_number + 1) % (1 << 16)
    second = Output(kind, VIDEO_RATE, first_sequence_number=12345, first_timestamp=678,
                    after=end)
    assert second.end() == end  # nothing sent yet: a third output would continue the same
    t0 = a[switch_at - 1].now + gap_s
    switched = len(sent)
    for pkt in b:
        r = second.forward(pkt.info, t0 + pkt.now)
        if isinstance(r, Forward):
            sent.append((r, t0 + pkt.now))
    assert len(sent) > switched
    assert_contiguous([f.sequence_number for f, _ in sent])
    (last, last_at), (nxt, nxt_at) = sent[switched - 1], sent[switched]
    step = (nxt.timestamp - last.timestamp) % (1 << 32)
    assert step == max(1, round((nxt_at - last_at) * VIDEO_RATE))


@pytest.mark.parametrize("kind", ["audio", "video"])
def test_late_packets_of_unknown_frames_keep_the_frame_memory_bounded(kind: str) -> None:
    """A publisher sending late packets with ever-new timestamps (reordered, or hostile) must
    not grow an output's state: the frame memory stays at FRAME_MEMORY (audio keeps none), and
    a late packet still goes into its own slot."""
    out = Output(kind, VIDEO_RATE if kind == "video" else 48000)
    step = 3000 if kind == "video" else 960
    seq0 = 1000
    for i in range(200):  # in order: frame i, with a hole left at every even sequence number
        info = PacketInfo(sequence_number=seq0 + 2 * i + 1, timestamp=step * i, marker=True,
                          keyframe=True, frame_start=True, tid=None, size=100)
        assert isinstance(out.forward(info, i / 30), Forward)
    slots = []
    for i in range(5000):  # late packets into the holes, each claiming a frame never seen
        info = PacketInfo(sequence_number=seq0 + 2 * (i % 200), timestamp=10**9 + step * i,
                          marker=True, keyframe=True, frame_start=True, tid=None, size=100)
        r = out.forward(info, 7.0)
        if isinstance(r, Forward):
            slots.append(r.sequence_number)
    assert len(out._frames) <= (FRAME_MEMORY if kind == "video" else 0)
    assert slots  # late packets of passing frames are still forwarded into their holes
