"""``RoomSharing``: which hosted rooms each link carries, and why not the others.

A room's existence and content reach a linked peer only if it may read the room (the table in
``meshnode.rooms.access``): the node names those rooms to the peer with a ``Rooms`` message,
attaches those the peer shares too, and detaches and refuses (a ``Refused`` link message, once
per room, logged and counted) the others. It is asked again whenever what it depends on
changes: a link comes up, a peer's room list changes, a room is created or joined, a grant or
a removal is applied. The invites a peer presented in its hello count for as long as its link
lives, except one that admitted a member who was removed since: it is spent for them.
"""

import logging
from collections.abc import Mapping

from meshnode.metrics import NodeMetrics
from meshnode.rooms.access import Decision, Refuse, RoomFacts, Share, decide
from meshnode.rooms.hosted import HostedRoom
from meshnode.runtime.links import Established, LinkManager
from protocol.compact import COMPACT_VERSION
from protocol.link import MAX_ROOMS_PER_LINK, Refused, Rooms

log = logging.getLogger("meshnode.node")

__all__ = ["RoomSharing"]


class RoomSharing:
    """The per-link read access of a node's rooms (see the module docstring)."""

    def __init__(self, rooms: Mapping[bytes, HostedRoom], links: LinkManager,
                 metrics: NodeMetrics) -> None:
        self._rooms = rooms
        self._links = links
        self._metrics = metrics
        # Per linked peer: invites it presented (room -> (problem or "" if good, invite ID)),
        # the rooms we named to it, the rooms we told it it may not read.
        self._presented: dict[str, dict[bytes, tuple[str, bytes]]] = {}
        self._announced: dict[str, set[bytes]] = {}
        self._refused: dict[str, set[bytes]] = {}

    def presented(self, peer: str, room_id: bytes, problem: str, invite_id: bytes) -> None:
        """``peer`` presented an invite for ``room_id`` (``problem``: "" if it is good)."""
        self._presented.setdefault(peer, {})[room_id] = (problem, invite_id)

    def has_presented(self, peer: str, room_id: bytes) -> bool:
        """Whether ``peer`` presented an invite for ``room_id`` on its link."""
        return room_id in self._presented.get(peer, {})

    def forget(self, peer: str) -> None:
        """The link to ``peer`` is gone."""
        self._presented.pop(peer, None)
        self._announced.pop(peer, None)
        self._refused.pop(peer, None)

    def decision(self, est: Established, rid: bytes) -> Decision:
        """Whether ``rid`` may be shared with the link's peer (``meshnode.rooms.access``)."""
        hosted = self._rooms[rid]
        replica = hosted.runtime.replica
        role = replica.role_of(est.peer)
        removed = role == "none" and replica.was_removed(est.peer)
        problem: str | None = None
        entry = self._presented.get(est.peer, {}).get(rid)
        if entry is not None:
            problem, invite_id = entry
            if removed and replica.invite_admitted(invite_id, est.peer):
                problem = None  # it let them in before the removal: it is spent for them
        return decide(RoomFacts(open=hosted.settings.get("admit") == "open", peer_role=role,
                                invite_problem=problem, removed=removed))

    def share(self, est: Established) -> None:
        """Share with the peer exactly the rooms it may read: name them (``Rooms``), attach
        those it shares too, detach and refuse the others (``meshnode.rooms.access``)."""
        if est.peer not in self._links.links:
            return
        allowed = {rid for rid in self._rooms if isinstance(self.decision(est, rid), Share)}
        if allowed != self._announced.get(est.peer):
            self._announced[est.peer] = allowed
            self._links.send_link(est.peer, Rooms(tuple(sorted(allowed))[:MAX_ROOMS_PER_LINK]))
        for rid in est.rooms & set(self._rooms):
            runtime = self._rooms[rid].runtime
            decision = self.decision(est, rid)
            if isinstance(decision, Share):
                self._refused.get(est.peer, set()).discard(rid)
                if est.peer not in runtime.peers():
                    # Our clients are served whatever the size of the room's partial view.
                    runtime.attach(est.peer, leaf=est.hello.kind == "client",
                                   compact=COMPACT_VERSION in est.hello.versions)
            else:
                if est.peer in runtime.peers():
                    runtime.detach(est.peer)
                self._rooms[rid].clients.discard(est.peer)
                self.refuse(est, rid, decision)

    def refuse(self, est: Established, rid: bytes, decision: Refuse) -> None:
        """Tell the peer once per room why it may not read the room; log and count it."""
        refused = self._refused.setdefault(est.peer, set())
        if rid in refused:
            return
        refused.add(rid)
        self._metrics.rejections.labels(decision.reason).inc()
        log.info("room %s not shared with %s: %s", rid.hex()[:16], est.peer, decision.reason)
        self._links.send_link(est.peer, Refused(rid, decision.reason, decision.detail))
