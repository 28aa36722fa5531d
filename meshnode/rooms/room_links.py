"""The hosted rooms on the node's links (the ``LinkService`` side of ``RoomHost``): the hello
that names our rooms and invites, redeeming the invites a peer presents and admitting it
(by this node's own grant, or by the invitee's redemption proof on a blind host), routing
room frames, and attaching or detaching rooms as links share them."""

import contextlib
import logging
import time

from meshnode.crdt import PermissionDenied, SceneReplica
from meshnode.crdt.redemption import check_proof
from meshnode.crdt.roles import ROLE_BY_NAME
from meshnode.identity import public_key_from_peer_id
from meshnode.rooms.access import Refusal, Refuse, Share, announced_in_hello
from meshnode.rooms.admission import invite_problem, may_auto_admit, may_grant
from meshnode.rooms.hosted import HostedRoom
from meshnode.rooms.invite import Invite, decode_invite_bytes, parse_invite
from meshnode.rooms.room_events import RoomEvents
from meshnode.runtime.links import Established
from meshnode.store import StoreError
from meshnode.transport.link import LocalHello
from protocol.errors import DecodeError
from protocol.link import MAX_ROOMS_PER_LINK, LinkMessage, Refused

log = logging.getLogger("meshnode.node")


class RoomLinks(RoomEvents):
    """How a ``RoomHost``'s rooms ride its links."""

    link_messages = (Refused,)

    def dial_failed(self, peer: str) -> None:
        """The overlay's rooms learn that ``peer`` could not be reached."""
        for hosted in self.rooms.values():
            hosted.runtime.connect_failed(peer)

    def local_hello(self, kind_hint: str) -> LocalHello:
        """Our hello, sent before we know who the peer is: our open rooms and the rooms we
        are joining (with their invites), our URL. Invite-only rooms are named to a peer
        only once it has shown it may read them, with a ``Rooms`` message
        (``meshnode.rooms.access``)."""
        invites: list[bytes] = []
        joining: list[bytes] = []
        for rid, hosted in self.rooms.items():
            token = hosted.settings.get("invite")
            if isinstance(token, str) and hosted.runtime.replica.role_of(self.peer_id) == "none":
                with contextlib.suppress(DecodeError):
                    # The presented form: our redemption signature, never the secret half.
                    invites.append(parse_invite(token).presented(self.identity.public_key))
                    joining.append(rid)
        opened = {rid: h.settings.get("admit") == "open" for rid, h in self.rooms.items()}
        rooms = announced_in_hello(opened, joining[:4])
        return LocalHello("node", tuple(rooms[:MAX_ROOMS_PER_LINK]), self.url,
                          tuple(invites[:4]))

    def link_up(self, est: Established) -> None:
        """Redeem the peer's invites, admit it, share the rooms it may read."""
        for raw in est.hello.invites:
            verdict = self._redeem(est.peer, raw)
            if verdict is not None:
                self.sharing.presented(est.peer, *verdict)
        if est.hello.kind == "client":
            for rid in est.rooms & set(self.rooms):
                hosted = self.rooms[rid]
                if isinstance(self.sharing.decision(est, rid), Share):
                    hosted.clients.add(est.peer)
                if (hosted.settings.get("admit") == "open"
                        and not self.sharing.has_presented(est.peer, rid)
                        and may_auto_admit(hosted.runtime.replica, est.peer)):
                    self._admit(hosted, est.peer, self.config.admit_role)
            for rid in sorted(est.rooms - set(self.rooms)):
                self.sharing.refuse(est, rid, Refuse(Refusal.UNKNOWN_ROOM.value,
                                                     "this node does not host the room"))
        self.sharing.share(est)

    def _redeem(self, peer: str, raw: bytes) -> tuple[bytes, str, bytes] | None:
        """Check an invite from a hello and admit its bearer; returns (room, problem, invite
        ID) with problem "" when the invite is good (None if it does not decode or names no
        room of ours)."""
        try:
            invite: Invite = decode_invite_bytes(raw)
        except DecodeError as err:
            self.metrics.rejections.labels("bad_invite").inc()
            log.warning("bad invite from %s: %s", peer, err)
            return None
        hosted = self.rooms.get(invite.room_id)
        if hosted is None:
            return None
        replica = hosted.runtime.replica
        problem = invite_problem(replica, invite, peer, int(time.time() * 1000))
        if problem is None and not self._may_grant_itself(replica, peer, invite.role):
            problem = self._proof_problem(replica, invite, peer)
        if problem is not None:
            self.metrics.rejections.labels(f"invite_{problem}").inc()
            log.warning("invite from %s refused: %s", peer, problem)
            return invite.room_id, problem, invite.id
        self._admit(hosted, peer, invite.role, invite)
        return invite.room_id, "", invite.id

    def _may_grant_itself(self, replica: SceneReplica, peer: str, role: str) -> bool:
        """Whether this node's own role lets it grant ``role`` (a blind host's never does: it
        admits only on an invite's authority, with the invitee's redemption proof)."""
        return (replica.role_of(self.peer_id) != "host"
                and may_grant(replica, self.peer_id, peer, role))

    def _proof_problem(self, replica: SceneReplica, invite: Invite, peer: str) -> str | None:
        """Why ``invite`` cannot be redeemed by proof for ``peer`` here (None: it can):
        ``no_redemption`` (a token without a key pair, or a hello without the redemption
        signature) or the reason every replica would give (``bad_redemption``...)."""
        proof = invite.proof()
        if proof is None or replica.role_of(self.peer_id) == "none":
            return "no_redemption"
        _terms, reason = check_proof(proof, replica.room_id, invite.id,
                                     ROLE_BY_NAME[invite.role], invite.max_uses,
                                     public_key_from_peer_id(peer))
        return reason or None

    def _admit(self, hosted: HostedRoom, peer: str, role: str,
               invite: Invite | None = None) -> None:
        replica = hosted.runtime.replica
        if replica.role_of(peer) != "none" or peer == self.peer_id:
            return
        by_proof = not self._may_grant_itself(replica, peer, role)
        proof = invite.proof() if invite is not None else None
        if by_proof and (invite is None or proof is None):
            log.info("cannot admit %s as %s: this node is %s and has no redemption proof",
                     peer, role, replica.role_of(self.peer_id))
            return

        async def grant() -> None:
            try:
                if by_proof:
                    assert invite is not None and proof is not None
                    await hosted.runtime.edit(lambda r: r.admit(
                        peer, role, invite_id=invite.id, max_uses=invite.max_uses,
                        proof=proof, now=time.time()))
                elif invite is None:
                    await hosted.runtime.edit(lambda r: r.grant(peer, role))
                else:  # the grant names the invite, so every replica counts its uses
                    await hosted.runtime.edit(lambda r: r.grant(
                        peer, role, invite=invite.id, max_uses=invite.max_uses))
                log.info("admitted %s as %s in room %s", peer, role,
                         replica.room_id.hex()[:16])
            except (PermissionDenied, ValueError, StoreError, ConnectionError) as err:
                log.warning("could not admit %s: %s", peer, err)

        self._tasks.spawn(grant(), f"admit {peer[:12]}")

    def link_message(self, est: Established, msg: LinkMessage) -> None:
        """A ``Refused``: a peer will not share a room with us; say so in the log (the
        operator of a node that joined with a bad invite learns it here)."""
        if isinstance(msg, Refused):
            log.warning("%s refused room %s: %s (%s)", est.peer, msg.room_id.hex()[:16],
                        msg.reason, msg.detail)

    def link_down(self, est: Established, reason: str) -> None:
        """Detach the peer from every room."""
        self.sharing.forget(est.peer)
        for hosted in self.rooms.values():
            hosted.clients.discard(est.peer)
            if est.peer in hosted.runtime.peers():
                hosted.runtime.detach(est.peer)

    def frame(self, est: Established, channel: str, data: bytes, room_id: bytes) -> None:
        """Give a room frame to its room."""
        hosted = self.rooms.get(room_id)
        if hosted is None:
            return
        if est.peer not in hosted.runtime.peers():
            # A frame for a room the peer may not read (or has not been given): it costs
            # the sender, like any bytes the link does not carry.
            self.links.count_garbage(est, "not_shared")
            return
        hosted.runtime.receive(est.peer, channel, data)

    def rooms_changed(self, est: Established, rooms: set[bytes]) -> None:
        """The peer's room list changed: attach and detach rooms to match."""
        for rid in est.rooms - rooms:
            hosted = self.rooms.get(rid)
            if hosted is not None and est.peer in hosted.runtime.peers():
                hosted.runtime.detach(est.peer)
        est.rooms = set(rooms)
        self.sharing.share(est)
