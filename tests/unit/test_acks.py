"""AckBatcher: acknowledgements due in one loop turn leave as one Ack per (client, room)."""

from collections.abc import Callable

from hypothesis import given
from hypothesis import strategies as st

from meshnode.rooms.acks import AckBatcher
from protocol.link import MAX_ACK_IDS, Ack, decode_link, encode_link

ROOM_A = b"\x0a" * 32
ROOM_B = b"\x0b" * 32


def cid(n: int) -> bytes:
    return n.to_bytes(32, "big")


class Turn:
    """A fake ``call_soon``: callbacks run when the test ends the turn."""

    def __init__(self) -> None:
        self.soon: list[Callable[[], None]] = []

    def schedule(self, cb: Callable[[], None]) -> None:
        self.soon.append(cb)

    def end(self) -> None:
        soon, self.soon = self.soon, []
        for cb in soon:
            cb()


def test_acks_of_one_turn_leave_as_one_message_per_client_and_room() -> None:
    turn = Turn()
    sent: list[tuple[str, Ack]] = []
    acks = AckBatcher(lambda peer, ack: sent.append((peer, ack)), turn.schedule)
    acks.add("p1", ROOM_A, cid(1))
    acks.add("p2", ROOM_A, cid(2))
    acks.add("p1", ROOM_A, cid(3))
    acks.add("p1", ROOM_B, cid(4))
    assert sent == [] and len(acks) == 4 and len(turn.soon) == 1  # nothing before the turn ends
    turn.end()
    assert sent == [("p1", Ack(ROOM_A, (cid(1), cid(3)))), ("p2", Ack(ROOM_A, (cid(2),))),
                    ("p1", Ack(ROOM_B, (cid(4),)))]
    assert len(acks) == 0
    acks.add("p1", ROOM_A, cid(5))  # a later turn: a new message
    turn.end()
    assert sent[-1] == ("p1", Ack(ROOM_A, (cid(5),)))


@given(st.lists(st.tuples(st.sampled_from(["p1", "p2"]), st.sampled_from([ROOM_A, ROOM_B]),
                          st.integers(0, 3_000)), max_size=2_500))
def test_every_ack_is_sent_once_in_order_within_decodable_messages(
        items: list[tuple[str, bytes, int]]) -> None:
    turn = Turn()
    sent: list[tuple[str, Ack]] = []
    acks = AckBatcher(lambda peer, ack: sent.append((peer, ack)), turn.schedule)
    for peer, room, n in items:
        acks.add(peer, room, cid(n))
    turn.end()
    got: dict[tuple[str, bytes], list[bytes]] = {}
    for peer, ack in sent:
        assert 1 <= len(ack.ids) <= MAX_ACK_IDS
        assert decode_link(encode_link(ack)) == ack  # a receiver takes every message
        got.setdefault((peer, ack.room_id), []).extend(ack.ids)
    want: dict[tuple[str, bytes], dict[bytes, None]] = {}
    for peer, room, n in items:  # an ID due twice in a turn is acknowledged once
        want.setdefault((peer, room), {})[cid(n)] = None
    assert got == {key: list(ids) for key, ids in want.items()}
