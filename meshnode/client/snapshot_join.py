"""Joining from the node's signed snapshot: the replica a client starts from, the heads it
syncs to, its admission, and starting again from a newer snapshot when the node's pruning
frontier passed it (after a failover, or a late change below our snapshot)."""

import asyncio
import json
import logging
import time
from typing import Any

from meshnode.client.base import ClientBase
from meshnode.client.errors import ClientError
from meshnode.client.failover import UnackedChanges, behind_frontier, redelivery_frames
from meshnode.crdt import SceneReplica
from meshnode.rooms.invite import parse_invite
from protocol.change import change_id
from protocol.errors import DecodeError

log = logging.getLogger("meshnode.client")


class SnapshotJoin(ClientBase):
    """How a ``RoomClient`` gets (and keeps) a replica in step with its node."""

    async def _replica_from_snapshot(self, genesis: bytes) -> SceneReplica | None:
        """Start from the node's latest signed snapshot (then sync only the changes after
        it), or None to replay the whole history: no snapshot yet, one this identity may not
        read, or one that does not verify (bad signature, signer not a member, another
        room), which is logged."""
        data = await self._fetch("snapshot")
        if data is None:
            return None
        try:
            # Verifying and decoding a long room's snapshot takes a while: off the loop.
            replica = await asyncio.to_thread(SceneReplica.from_snapshot, data, self.identity)
        except DecodeError as err:
            log.warning("room %s: the node's snapshot was refused (%s: %s); replaying the "
                        "whole history instead", self.room_id.hex()[:16], err.reason, err)
            return None
        if replica.genesis != genesis:
            log.warning("room %s: the node's snapshot is another room's; replaying the whole "
                        "history instead", self.room_id.hex()[:16])
            return None
        if replica.scene_missing:
            # A private room's snapshot not sealed to us (a blind host's, or we were not a
            # reader when it was written): its scene would never be ours.
            log.info("room %s: the node's snapshot is not sealed to this member; replaying "
                     "the history instead", self.room_id.hex()[:16])
            return None
        self.joined_from_snapshot = True
        return replica

    def _invite_genesis(self) -> bytes | None:
        if not self._invite:
            return None
        try:
            invite = parse_invite(self._invite)
        except DecodeError as err:
            raise ClientError(f"the invite is not a valid token: {err}") from None
        if invite.room_id != self.room_id:
            raise ClientError(f"the invite is for room {invite.room_id.hex()}, not "
                              f"{self.room_id.hex()}")
        return invite.genesis

    async def _wait_for_heads(self, replica: SceneReplica, heads: dict[str, Any]) -> None:
        target = {bytes.fromhex(k): int(v) for k, v in heads.get("vv", {}).items()}
        await self._wait(lambda: all(replica.version_vector().get(a, 0) >= s
                                     for a, s in target.items()), "sync with the node")

    async def _wait_admitted(self) -> None:
        """Wait until we are a member. A newcomer to an invite-only room whose node pruned
        its history cannot apply the grant that admits it: the grant builds on history
        below the node's frontier, which a replica started from the genesis never gets (the
        room's snapshot is for members only). Once the node has admitted us we may read its
        snapshot: while changes wait for missing deps, ask whether the frontier passed us
        and, if so, start again from the snapshot (``_check_frontier``)."""
        deadline = checked = time.monotonic()
        deadline += self._timeout
        while self.replica.role_of(self.peer_id) == "none":
            if self._refusal is not None:
                raise self._refusal
            now = time.monotonic()
            if now > deadline:
                raise ClientError("timed out waiting for admission to the room")
            if self.replica.buffered_count() and not self.full_history and now - checked > 1.0:
                checked = now
                await self._check_frontier()
            await asyncio.sleep(0.02)

    async def _check_frontier(self) -> None:
        """After a reconnect: if the node pruned history this replica lacks (its frontier
        passed us while we were away), start again from the node's signed snapshot."""
        try:
            raw = await self._fetch("heads")
        except ClientError as err:
            log.info("could not ask %s for the room's frontier: %s", self.url, err)
            return
        if raw is None or self._runtime is None or self._closing:
            return
        try:
            frontier = {bytes.fromhex(k): int(v)
                        for k, v in json.loads(raw).get("frontier", {}).items()}
        except (ValueError, AttributeError, TypeError):
            log.warning("%s sent heads that do not parse; frontier not checked", self.url)
            return
        if behind_frontier(self.replica.version_vector(), frontier):
            await self._rejoin_from_snapshot()

    async def _rejoin_from_snapshot(self, *, keep_unacked: bool = False) -> None:
        """Replace the replica with one started from the node's snapshot (plus the changes
        after it, synced as on a first join). ``keep_unacked``: our changes the node has not
        acknowledged are carried over and redelivered (the node holds their past: a late
        change, ``_note_late_changes``); otherwise they are dropped (built on history below
        the node's pruning frontier, they cannot be merged any more)."""
        old = self._runtime
        if old is None:
            return
        replica = await self._replica_from_snapshot(old.replica.genesis)
        if replica is None or self._runtime is not old or self._closing:
            log.warning("room %s: behind the node's frontier and no usable snapshot: the "
                        "history it pruned cannot be synced", self.room_id.hex()[:16])
            return
        kept: list[bytes] = []
        if keep_unacked:
            mine = [d for d in (old.replica.change_bytes(c) for c in self._unacked)
                    if d is not None]
            replica.replay(mine)  # our own, signed here: their seqs stay ours
            kept = [d for d in mine if replica.has_change(change_id(d))
                    or replica.is_buffered(change_id(d))]
            log.info("room %s: the node applied a change below our snapshot's frontier; "
                     "started again from its current snapshot (%d unacknowledged change(s) "
                     "kept)", self.room_id.hex()[:16], len(kept))
        else:
            log.warning("room %s: the node pruned history this replica lacks; rejoined from "
                        "its signed snapshot (%d unacknowledged change(s) dropped)",
                        self.room_id.hex()[:16], len(self._unacked))
        peers = old.peers()
        subscribers = list(old._subscribers)
        for peer in peers:
            old.detach(peer)
        old.close()
        self._unacked = UnackedChanges()
        for data in kept:
            self._unacked.add(change_id(data))
        self._late_seen = 0
        runtime = self._runtime = self._make_runtime(replica)
        for cb in subscribers:  # subscribe() returned unsubscribers bound to the old one
            runtime.subscribe(cb)
        self.rejoins += 1
        for peer in peers:
            runtime.attach(peer)
            for frame in redelivery_frames(self.room_id, kept):
                self._send(peer, "sync", frame)

    def _note_late_changes(self) -> None:
        """The node sent a change our replica refused as ``behind_frontier``: stamped at or
        before our snapshot's frontier, it reached the node after it wrote that snapshot (an
        author that was offline). Our summary lacks it, so we would diverge: start again
        from the node's current snapshot (which the node rebuilds, ``meshnode.rooms.
        head_snapshots``), keeping our unacknowledged changes."""
        if self._runtime is None or self.full_history or self._closing:
            return
        late = self._runtime.replica.rejections.get("behind_frontier", 0)
        if late <= self._late_seen or self._frontier_checks:
            return
        self._late_seen = late
        task = asyncio.ensure_future(self._rejoin_from_snapshot(keep_unacked=True))
        self._frontier_checks.add(task)
        task.add_done_callback(self._frontier_checks.discard)
