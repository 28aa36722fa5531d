"""``RoomClient.set_presence_interest``: checked locally (typed refusal), sent to the node on
the link, and sent again to whichever node the client links to next (a failover)."""

from __future__ import annotations

import asyncio
import random

import pytest

from meshnode.client.room import RoomClient
from meshnode.crdt import SceneReplica
from meshnode.identity import Identity
from meshnode.overlay import RoomOverlay
from meshnode.runtime.room import RoomRuntime
from meshnode.transport.ice import IceSettings
from protocol.errors import BadPresenceInterest
from protocol.frames import PresenceInterest, decode_frame

from ..overlay.harness import Network


def test_room_client_sends_its_interest_and_refuses_bad_values() -> None:
    async def main() -> list[tuple[str, str, bytes]]:
        owner, me = Identity.generate(), Identity.generate()
        node = SceneReplica.create(owner, 1_700_000_000.0, name="r", nonce=bytes(16))
        node.grant(me.public_id, "editor")
        node.commit(1_700_000_000.0)
        replica = SceneReplica.from_snapshot(node.snapshot(), me)
        sent: list[tuple[str, str, bytes]] = []
        overlay = RoomOverlay(replica, me, rng=random.Random(1), wall_clock=lambda: 1.7e9)
        client = RoomClient("http://127.0.0.1:1", replica.room_id, me, ice=IceSettings(),
                            invite=None, timeout_s=1.0)
        client._runtime = RoomRuntime(overlay, send=lambda p, c, f: sent.append((p, c, f))
                                      or True)
        client._runtime.attach(owner.public_id)
        with pytest.raises(BadPresenceInterest) as err:
            client.set_presence_interest(budget_msgs_per_s=0.2)
        assert err.value.reason == "bad_presence_interest"
        with pytest.raises(ValueError):  # BadPresenceInterest is a ValueError
            client.set_presence_interest(budget_bytes_per_s=float("inf"))
        sent.clear()
        client.set_presence_interest(budget_msgs_per_s=40, budget_bytes_per_s=16_384,
                                     view_radius=8)
        client._runtime.close()
        return sent

    sent = asyncio.run(main())
    frames = [decode_frame(f) for _, c, f in sent if c == "sync"]
    asked = [f for f in frames if isinstance(f, PresenceInterest)]
    assert [(a.msgs_per_s, a.bytes_per_s, a.view_radius) for a in asked] == [
        (40.0, 16_384.0, 8.0)]


def test_the_interest_follows_the_client_to_its_next_node() -> None:
    net = Network(seed=5)
    room = net.add_room(3)
    first, second, client = room.nodes
    net.link(first, second)
    net.link(first, client, leaf=True)
    net.run_for(1.0)
    ov = net.nodes[client].overlay
    assert ov is not None
    ov.set_presence_interest(msgs_per_s=25.0, view_radius=4.0)
    net.presence(client, {"position": [0.0, 0.0, 0.0]})  # the harness sends what is queued
    net.run_for(0.5)
    peer = net.nodes[client].peer_id
    hub_ov = net.nodes[first].overlay
    assert hub_ov is not None
    budget = hub_ov.presence.recipient(peer, net.now).budget
    assert (budget.msgs_per_s, budget.view_radius) == (25.0, 4.0)
    net.unlink(first, client)
    net.link(second, client, leaf=True)
    net.run_for(0.5)
    hub_ov = net.nodes[second].overlay
    assert hub_ov is not None
    budget = hub_ov.presence.recipient(peer, net.now).budget
    assert (budget.msgs_per_s, budget.view_radius) == (25.0, 4.0)
