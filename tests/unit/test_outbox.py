"""Outbox: frames for one neighbour, packed into bounded bundles (sans-I/O)."""

from hypothesis import given
from hypothesis import strategies as st

from meshnode.runtime.outbox import BUNDLE_TARGET, Outbox
from protocol.link import Bundle, decode_link, peek_type


def frame(n: int, size: int) -> bytes:
    return b"\x93\x01\x04" + n.to_bytes(4, "big") + b"x" * size


def unpack(data: bytes) -> list[bytes]:
    t = peek_type(data)
    if t == Bundle.TYPE:
        msg = decode_link(data)
        assert isinstance(msg, Bundle)
        return list(msg.frames)
    return [data]


@given(st.lists(st.tuples(st.sampled_from(["sync", "presence"]), st.integers(0, 6_000)),
                max_size=60))
def test_drain_keeps_every_frame_in_order_within_bounded_messages(
        items: list[tuple[str, int]]) -> None:
    box = Outbox()
    sent: dict[str, list[bytes]] = {"sync": [], "presence": []}
    for i, (channel, size) in enumerate(items):
        f = frame(i, size)
        assert box.add(channel, f)
        sent[channel].append(f)
    got: dict[str, list[bytes]] = {"sync": [], "presence": []}
    for channel, data, count in box.drain():
        frames = unpack(data)
        assert len(frames) == count
        if count > 1:  # a bundle stays near its target (a lone frame may be larger)
            assert len(data) <= BUNDLE_TARGET[channel] + 64
        got[channel].extend(frames)
    assert got == sent
    assert not box and box.drain() == []


def test_a_full_outbox_refuses() -> None:
    box = Outbox(max_bytes=100)
    assert box.add("sync", b"x" * 60)
    assert not box.add("sync", b"x" * 60)
    assert box.size == 60
