"""How a room's privacy is shown: ``meshnode room list``, the admin API and the browser page.

Read-only, from the replica: whether the room is private, whether this node reads it (a
reader: it holds the keys and renders the room for its browsers) or hosts it blind, and
which readers hold the keys (public data: a blind host can show it too).
"""

from typing import Any

from meshnode.crdt import SceneReplica
from meshnode.identity import peer_id_from_public_key

__all__ = ["private_info"]


def private_info(replica: SceneReplica, peer_id: str) -> dict[str, Any]:
    """``{"private": False}`` for a room that is not private; for a private room also
    ``this_node``: ``reader`` (it holds the keys: it can read and render the room) or its role
    (``host``: a blind host that stores, relays and admits and reads nothing; ``none`` while
    joining), ``readable`` (it holds every key it needs now) and ``keys``: each reader's
    PeerID -> whether it holds the newest epoch (False: it waits for a reader to come online
    and share the keys)."""
    if not replica.private:
        return {"private": False}
    return {
        "private": True,
        "this_node": "reader" if replica.is_reader() else replica.role_of(peer_id),
        "readable": replica.readable,
        "keys": {peer_id_from_public_key(k): ok
                 for k, ok in sorted(replica.key_holders().items())},
    }
