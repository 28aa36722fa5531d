"""``AckBatcher``: acknowledgements to clients, coalesced per loop turn.

The durable log commits every queued change in one transaction, and the futures of a
commit resolve together; sending one ``Ack`` link message per change then costs one
data-channel message (one SCTP packet, and its SACK) each, which was a fifth of the node's
sends under sustained edits. Acks that become due in the same turn of the event loop leave
as one ``Ack`` per (client, room) carrying every ID once, in the order they became durable.

Nothing is acknowledged earlier than before: an ID is added only once its change and its
history are durable (the caller's job); the batch only waits for the end of the turn.
"""

from collections.abc import Callable

from protocol.link import MAX_ACK_IDS, Ack

Schedule = Callable[[Callable[[], None]], object]
SendAck = Callable[[str, Ack], object]


class AckBatcher:
    """Collects ``(peer, room, change ID)`` acknowledgements and sends them, grouped, when
    ``schedule`` runs its callback (``loop.call_soon``: the end of this loop turn)."""

    __slots__ = ("_due", "_schedule", "_scheduled", "_send")

    def __init__(self, send: SendAck, schedule: Schedule) -> None:
        self._send = send
        self._schedule = schedule
        # Per (peer, room): the IDs as dict keys, in order, each once (the decoder refuses
        # an Ack naming an ID twice; a redelivered change can become due twice in a turn).
        self._due: dict[tuple[str, bytes], dict[bytes, None]] = {}
        self._scheduled = False

    def add(self, peer: str, room_id: bytes, change_id: bytes) -> None:
        """Acknowledge ``change_id`` of ``room_id`` to ``peer`` at the end of this turn."""
        self._due.setdefault((peer, room_id), {})[change_id] = None
        if not self._scheduled:
            self._scheduled = True
            self._schedule(self.flush)

    def flush(self) -> None:
        """Send every acknowledgement collected so far (at most ``MAX_ACK_IDS`` per
        message, the most a receiver decodes)."""
        self._scheduled = False
        due, self._due = self._due, {}
        for (peer, room_id), unique in due.items():
            ids = list(unique)
            for at in range(0, len(ids), MAX_ACK_IDS):
                self._send(peer, Ack(room_id, tuple(ids[at:at + MAX_ACK_IDS])))

    def __len__(self) -> int:
        """Acknowledgements waiting for the end of the turn."""
        return sum(len(ids) for ids in self._due.values())
