"""Entity identifiers.

An entity ID embeds its creator's public key and a per-creator counter, so "who may change
this entity" is a check every replica makes the same way without any lookup, and two
authors can never mint the same ID.
"""

from functools import lru_cache
from typing import NamedTuple


@lru_cache(maxsize=4096)
def _peer_id(public_key: bytes) -> str:
    from meshnode.identity import peer_id_from_public_key

    return peer_id_from_public_key(public_key)


class EntityId(NamedTuple):
    """``(creator public key, counter)``. Plain ``(bytes, int)`` tuples compare equal to it."""

    creator: bytes
    counter: int

    def __str__(self) -> str:
        if not self.creator:
            return _SPECIAL_NAMES[self.counter]
        return f"{_peer_id(self.creator)}/{self.counter}"

    @classmethod
    def parse(cls, text: str) -> "EntityId":
        """Inverse of ``str()``: ``"root"`` or ``"<PeerID>/<counter>"``."""
        if text == "root":
            return ROOT
        peer, sep, counter = text.rpartition("/")
        if not sep or not counter.isdigit() or int(counter) < 1:
            raise ValueError(f"not an entity ID: {text!r}")
        from meshnode.identity import public_key_from_peer_id

        return cls(public_key_from_peer_id(peer), int(counter))


ROOT = EntityId(b"", 0)
"""The scene root. It always exists and cannot be moved or deleted."""

TRASH = EntityId(b"", 1)
"""Hidden parent of deleted entities (a delete is a move here, as in Kleppmann et al.)."""

_SPECIAL_NAMES = {0: "root", 1: "trash"}
