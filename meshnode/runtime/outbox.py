"""``Outbox``: the room frames waiting for one neighbour until the end of the loop turn.

aiortc spends about as much CPU per data-channel message as on its bytes, and a node often
has several frames for one neighbour at once (a change pushed, announcements, presence of
several participants). So frames wait here until the event loop's turn ends and then leave
together: one frame as itself, several as ``Bundle`` link messages of bounded size.
Sans-I/O: it only holds and packs bytes.
"""

from protocol.link import Bundle, encode_link

MAX_PENDING_BYTES = 8 * 1024 * 1024
# Up to ~16 KB on the reliable channel (the brief's batch size); on the unreliable one small
# enough for one packet, since losing any fragment loses the whole message.
BUNDLE_TARGET = {"sync": 16 * 1024, "presence": 1_100}


class Outbox:
    """Frames per channel for one neighbour, bounded by ``max_bytes``."""

    __slots__ = ("frames", "max_bytes", "size")

    def __init__(self, max_bytes: int = MAX_PENDING_BYTES) -> None:
        self.frames: dict[str, list[bytes]] = {}
        self.size = 0
        self.max_bytes = max_bytes

    def __bool__(self) -> bool:
        return self.size > 0

    def add(self, channel: str, frame: bytes) -> bool:
        """Queue ``frame``; False (not queued) if the outbox is full."""
        if self.size + len(frame) > self.max_bytes:
            return False
        self.frames.setdefault(channel, []).append(frame)
        self.size += len(frame)
        return True

    def drain(self) -> list[tuple[str, bytes, int]]:
        """Empty the outbox into messages: ``(channel, data, frames in it)``, in order."""
        frames, self.frames, self.size = self.frames, {}, 0
        out: list[tuple[str, bytes, int]] = []
        for channel, queue in frames.items():
            target = BUNDLE_TARGET.get(channel, BUNDLE_TARGET["sync"])
            batch: list[bytes] = []
            size = 0
            for frame in queue:
                if batch and size + len(frame) > target:
                    out.append(_message(channel, batch))
                    batch, size = [], 0
                batch.append(frame)
                size += len(frame) + 5  # msgpack bin header
            if batch:
                out.append(_message(channel, batch))
        return out


def _message(channel: str, batch: list[bytes]) -> tuple[str, bytes, int]:
    data = batch[0] if len(batch) == 1 else encode_link(Bundle(tuple(batch)))
    return channel, data, len(batch)
