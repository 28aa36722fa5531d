"""The hosts of a room this node knows without asking the DHT: itself (when it hosts the
room) and the nodes linked to it that share the room. Both are live by construction (a link
is up: its keepalive would have closed it otherwise)."""

from collections.abc import Iterable, Mapping

from meshnode.discovery import HostRecord
from meshnode.runtime.links import Established

__all__ = ["known_hosts", "merge_hosts"]


def known_hosts(room_id: bytes, *, me: str, my_url: str, hosted: bool,
                links: Mapping[str, Established], addrs: tuple[str, ...] = ()) -> list[HostRecord]:
    """This node (if it hosts ``room_id``) and the linked nodes that share the room."""
    out = []
    if hosted:
        out.append(HostRecord(me, (my_url,), addrs, True))
    for peer, est in sorted(links.items()):
        if est.hello.kind == "node" and room_id in est.rooms:
            urls = (est.hello.url,) if est.hello.url else ()
            out.append(HostRecord(peer, urls, (), True))
    return out


def merge_hosts(*groups: Iterable[HostRecord]) -> list[HostRecord]:
    """One record per PeerID, the URLs and addresses of every sighting together, live if any
    sighting was; in the order first seen."""
    merged: dict[str, HostRecord] = {}
    for group in groups:
        for rec in group:
            old = merged.get(rec.peer_id)
            if old is None:
                merged[rec.peer_id] = rec
                continue
            merged[rec.peer_id] = HostRecord(
                rec.peer_id, tuple(dict.fromkeys(old.urls + rec.urls)),
                tuple(dict.fromkeys(old.addrs + rec.addrs)), old.live or rec.live)
    return list(merged.values())
