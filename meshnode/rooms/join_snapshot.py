"""A node that joins a room whose history was pruned starts from the inviter's snapshot.

A host prunes the changes older than ``[store] history_days`` (docs/operators.md, "Pruning
rule"): it keeps a signed frontier snapshot instead. A node that joins the room later
cannot get that history by sync from anyone who pruned it: the changes after the frontier
build on changes nobody sends any more, so a node that started from the genesis would wait
for them for ever (and never even see the grant that admits it). So, as a Python client
does, the joining node asks the invite's nodes for the room's latest snapshot
(``GET /api/rooms/{room}/snapshot?history=kept``, signed with its identity and carrying
the invite: the stored snapshot, which lists the retention window, not the join snapshot a
client gets, whose history a node could never serve to its peers) and,
if it verifies (signed by a member of the room, this room's genesis) and has a frontier,
starts from it; then syncs the changes after it as usual.

A snapshot without a frontier (nothing pruned) is not used: the whole history can still be
synced, and a node keeps every change it serves. When no node answers, the join starts from
the genesis as before (and catches up if the history was never pruned).
"""

from __future__ import annotations

import asyncio
import logging
from urllib.parse import urlsplit

import aiohttp

from meshnode.crdt import SceneReplica
from meshnode.identity import Identity
from meshnode.rooms.invite import Invite
from meshnode.rooms.readers import INVITE_HEADER
from meshnode.signaling.signed_request import sign_request
from protocol.errors import DecodeError

__all__ = ["pruned_room_replica"]

log = logging.getLogger("meshnode.node")


async def pruned_room_replica(invite: Invite, token: str, identity: Identity,
                              timeout_s: float = 15.0) -> SceneReplica | None:
    """The room's replica from the first verified frontier snapshot one of the invite's
    nodes serves, or None (start from the genesis): see the module docstring."""
    for url in invite.urls:
        data = await _get_snapshot(url.rstrip("/"), invite, token, identity, timeout_s)
        if data is None:
            continue
        try:
            replica = await asyncio.to_thread(SceneReplica.from_snapshot, data, identity)
        except DecodeError as err:
            log.warning("room %s: the snapshot of %s was refused (%s: %s)",
                        invite.room_id.hex()[:16], url, err.reason, err)
            continue
        if replica.genesis != invite.genesis:
            log.warning("room %s: %s sent another room's snapshot", invite.room_id.hex()[:16],
                        url)
            continue
        if sum(replica.frontier_vv().values()) <= 1:
            # Only the genesis below the frontier (every snapshot has it there): nothing
            # was pruned, so sync the whole history and keep it, as always.
            return None
        log.info("room %s: joined from the pruned history's snapshot of %s (%d changes)",
                 invite.room_id.hex()[:16], url, replica.change_count())
        return replica
    return None


async def _get_snapshot(base: str, invite: Invite, token: str, identity: Identity,
                        timeout_s: float) -> bytes | None:
    parts = urlsplit(base)
    host = parts.netloc.rpartition("@")[2]
    path = f"{parts.path.rstrip('/')}/api/rooms/{invite.room_id.hex()}/snapshot?history=kept"
    headers = {"Host": host, INVITE_HEADER: token.strip(),
               **sign_request(identity, "GET", path, host)}
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as http, \
                http.get(f"{base}/api/rooms/{invite.room_id.hex()}/snapshot?history=kept",
                         headers=headers) as resp:
            if resp.status != 200:
                return None
            return await resp.read()
    except (aiohttp.ClientError, TimeoutError) as err:
        log.info("room %s: no snapshot from %s (%s)", invite.room_id.hex()[:16], base,
                 err or type(err).__name__)
        return None
