"""``RoomOverlay``: how one node takes part in one room's mesh. Sans-I/O.

It composes a HyParView partial view (``membership``), per-author Plumtree broadcast
(``broadcast``), anti-entropy by heads and Bloom filters (here), presence (``presence``) and
per-peer defence (``scoring``) around a ``SceneReplica``. The driver feeds it links, frames and
time, and carries out what it asks for:

    overlay.connect(peer_id, now, compact=...) / disconnect(peer_id, now) / connect_failed(...)
    overlay.receive(peer_id, channel, frame, now)
    overlay.submit_change(change_bytes, now); overlay.submit_presence(fields, now)
    overlay.handle_timer(now) when now >= overlay.get_timer()
    overlay.frames_to_send() -> [(peer_id, channel, frame)]   channel: "sync" | "presence"
    overlay.next_event() -> Event | None

Two clocks, as in aioquic. Every ``now`` passed in is MONOTONIC time (seconds from any
origin): timer deadlines, rate limits, scores and budgets use it, so a wall clock stepped back
or forward (NTP, a board without a real-time clock, a restored VM) never stalls or rushes
them. Wall time (the scene's hybrid logical clock: the horizon a remote change's stamp is
checked against, the stamps of presence updates) comes from ``wall_clock``, a source the driver
owns and injects at construction. A simulator or test may give both the same virtual clock.

Read access (who is served). A peer linked to the room is served (changes pushed or pulled,
``IHave``, ``Heads``, presence) only while it holds a role in the room (viewer or above; hosting
nodes are members with a role), judged by this replica's current roles:

    peer's role   we send it                    its Heads / Want / Graft
    none          membership frames only (*)    refused (``RequestRefused``, NOT_A_MEMBER), scored
    viewer+       everything                    answered, within its reply budget

(*) and, while this node holds no role itself (it is joining with an invite), its own
``Heads``, so that a host it does not yet know as a member can serve it. Changes from any peer
are accepted (they are signed; the replica checks their authors). When a grant makes a linked
peer a member, it is served at once (``Heads`` then sync, presence); when it loses its role,
nothing more is sent to it, queued frames included. Peers' roles are reviewed after a batch of
applied changes only if the replica's ``roles_version`` moved since the last review (a
plain scene change leaves it alone).

``RoomOverlay`` is one chain of classes, a file each: ``OverlayLinks`` (``overlay_links``:
the state, the outbox, links, access, defence), ``OverlaySync`` (``overlay_sync``: frames
from peers, changes, anti-entropy, old history reads, presence in) and ``RoomOverlay`` (here:
local input and the timer).
"""

from typing import Any

from meshnode.crdt import APPLIED, ApplyResult
from meshnode.identity import peer_id_from_public_key, verify_signature
from meshnode.overlay.events import PresenceExpired, PresenceUpdated
from meshnode.overlay.overlay_links import PRESENCE as PRESENCE
from meshnode.overlay.overlay_links import SYNC as SYNC
from meshnode.overlay.overlay_links import OverlayLinks as OverlayLinks
from meshnode.overlay.overlay_links import OverlayStats as OverlayStats
from meshnode.overlay.overlay_sync import _CHANGE_PREFIX as _CHANGE_PREFIX
from meshnode.overlay.overlay_sync import _REPLY_OVERHEAD as _REPLY_OVERHEAD
from meshnode.overlay.overlay_sync import MAX_PREFIX_MATCHES as MAX_PREFIX_MATCHES
from meshnode.overlay.overlay_sync import MAX_PULLED as MAX_PULLED
from meshnode.overlay.overlay_sync import MAX_WANT as MAX_WANT
from meshnode.overlay.overlay_sync import OverlaySync as OverlaySync
from meshnode.overlay.overlay_sync import _note_in_frame as _note_in_frame
from meshnode.overlay.sealed_presence import open_presence, seal_presence
from protocol.change import change_id
from protocol.frames import (
    Presence,
    PresenceInterest,
    check_presence_interest,
    make_presence,
    presence_payload,
)
from protocol.values import InvalidValue, normalize_value


class RoomOverlay(OverlaySync):
    """One node's part in one room's overlay; see the module docstring for the surface."""

    # ------------------------------------------------------------------ local input

    def submit_change(self, data: bytes, now: float) -> ApplyResult:
        """Spread a local change: one this replica just committed, or one from a client."""
        cid = change_id(data)
        if self.replica.has_change(cid):
            self._review_access(now)  # it may grant or revoke: decide who gets it first
            self._spread(cid, None, now)
            self._flush_changes()
            return ApplyResult(APPLIED, None, cid, (cid,))
        res = self.replica.apply_many([data], self.wall_clock(), mono=now, ids=[cid])[0]
        if res.status == APPLIED:
            self._review_access(now)
            for c in res.applied:
                self._spread(c, None, now)
        self._flush_changes()
        return res

    def submit_signed_presence(self, msg: Presence, now: float) -> str | None:
        """Publish a presence update signed by someone else: a person whose browser this node
        serves (``meshnode.web.people``). Judged as one from a link would be (member,
        signature, newer seq, the participant's rate), but a refusal costs no peer score:
        the caller refuses it to its page. None if taken, else the reason (``not_a_member``,
        ``bad_signature``, ``stale_or_rate_limited``)."""
        if msg.room_id != self.room_id:
            return "wrong_room"
        if self.replica.role_of(msg.participant) == "none":
            return "not_a_member"
        if not verify_signature(msg.participant, msg.signature,
                                presence_payload(self.room_id, msg.body)):
            return "bad_signature"
        if not self.presence.accept(msg, now):
            return "stale_or_rate_limited"
        fields = msg.fields
        if self.replica.private:  # a person's sealed presence: shown here as opened
            fields = open_presence(self.replica, msg.participant, msg.seq, fields,
                                   self.replica.limits) or {}
        self._emit(PresenceUpdated(peer_id_from_public_key(msg.participant), fields, now))
        self.presence.enqueue(msg, self._targets, None, now)
        return None

    def set_presence_interest(self, msgs_per_s: float = 0.0, bytes_per_s: float = 0.0,
                              view_radius: float = 0.0) -> None:
        """State what presence this participant wants from the peers it is linked to (a
        client: from its node): at most ``msgs_per_s`` updates and ``bytes_per_s`` bytes a
        second, full detail within ``view_radius`` of its own position; 0: the peer's
        default. Sent now and to every peer linked later (a failover). Raises
        ``protocol.errors.BadPresenceInterest`` (a ``ValueError``; ``reason``
        ``bad_presence_interest``) on a value out of range (``check_presence_interest``)."""
        m, b, r = check_presence_interest(msgs_per_s, bytes_per_s, view_radius)
        self._interest = PresenceInterest(self.room_id, m, b, r)
        for peer in sorted(self.connected):
            self._send(peer, self._interest)

    def presence_sent(self) -> dict[str, tuple[int, int]]:
        """Per recipient now linked: presence updates and frame bytes sent to it so far
        (counted while it is served)."""
        return {peer: (r.sent_msgs, r.sent_bytes)
                for peer, r in sorted(self.presence.recipients.items())}

    def submit_presence(self, fields: dict[str, Any], now: float) -> bool:
        """Publish the local participant's presence (e.g. ``{"position": [x, y, z]}``).

        Returns False if it was dropped by the local rate limit, or not sent because this
        replica holds no presence key of a private room.
        """
        try:
            value = normalize_value(fields, self.replica.limits)
        except InvalidValue as err:
            raise ValueError(str(err)) from None
        if type(value) is not dict:
            raise TypeError("presence fields must be a mapping")
        # Wall-clock milliseconds, so a restarted participant's seq outruns its old one; +1
        # keeps it growing if the wall clock steps back.
        seq = max(self._presence_seq + 1, int(self.wall_clock() * 1000))
        if self.replica.private:
            # Sealed under the epoch's presence key; without one (a blind host, a reader
            # waiting for its key) nothing is published (meshnode.overlay.sealed_presence).
            sealed = seal_presence(self.replica, self.identity.public_key, seq, value,
                                   self.replica._random_bytes)
            if sealed is None:
                return False
            value = sealed
        msg = make_presence(self.room_id, self.identity.public_key, seq, value,
                            self.identity.sign)
        if not self.presence.accept(msg, now):
            return False
        self._presence_seq = seq
        self.presence.enqueue(msg, self._targets, None, now)
        return True

    # ------------------------------------------------------------------ time

    def handle_timer(self, now: float) -> None:
        """Do whatever is due: view upkeep, announcements, grafts, presence, anti-entropy."""
        self.view.tick(now)
        self.scores.expire_bans(now)
        self.quota.forget_idle(now)
        active = self.view.active
        targets = self._targets()
        self.tree.tick(now, self._known, targets, active | self.leaves)
        for peer, msg in self.presence.flush(now):
            # Encoded once for all its recipients (PresenceTable.frame_of).
            self._enqueue(peer, PRESENCE, self.presence.frame_of(msg), "Presence")
        for gone in self.presence.expire(now):
            self._emit(PresenceExpired(peer_id_from_public_key(gone), now))
        if self.next_anti_entropy is not None and now >= self.next_anti_entropy:
            self.next_anti_entropy = now + self._ae_interval()
            # Members only, unless we are joining (module docstring).
            asked = active & self._serving if self._member_self else active
            if asked:
                self._send(self.rng.choice(sorted(asked)), self._heads(reply=True))
        self._flush_changes()
