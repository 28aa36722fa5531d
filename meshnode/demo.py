"""A local walk-through of the signed scene CRDT: one room, three people, no network.

1. The owner creates a room (its ID is the hash of the signed genesis change).
2. Bob joins from the genesis and is granted the ``editor`` role; Carol is granted ``viewer``.
3. Owner and Bob both create and edit entities, concurrently, each on their own replica.
4. They exchange what the other lacks (``changes_since(heads())``) and converge: both replicas
   print the same ``state()``.
5. Carol, a viewer, tries to edit: every replica rejects her change, and says why.

Run it with ``python -m meshnode demo`` (or ``python3 dev.py run``).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from meshnode.crdt import SceneReplica


def sync(src: SceneReplica, dst: SceneReplica, now: float) -> int:
    """Send ``dst`` every change of ``src`` it lacks; return how many it applied."""
    applied = 0
    for data in src.changes_since(dst.heads()):
        result = dst.apply(data, now=now)
        if result.status == "applied":
            applied += 1
        elif result.status == "rejected":
            print(f"  ! change rejected: {result.reason}")
    return applied


def main() -> int:
    from meshnode.crdt import ROOT, SceneReplica
    from meshnode.identity import Identity

    owner, bob, carol = Identity.generate(), Identity.generate(), Identity.generate()
    print(f"owner {owner.public_id}\nbob   {bob.public_id}\ncarol {carol.public_id}")

    # 1. The owner creates the room; the genesis change is what others need to join it.
    room = SceneReplica.create(owner, now=0.0, nonce=b"demo")
    print(f"\nroom  {room.room_id.hex()}")

    # 2. Roles are themselves signed changes in the same CRDT.
    room.grant(bob.public_id, "editor")
    room.grant(carol.public_id, "viewer")
    table = room.create_entity(
        parent=ROOT, components={"name": {"text": "table"}, "transform": {"position": [0, 0, 0]}}
    )
    room.commit(now=1.0)

    bob_replica = SceneReplica.from_genesis(room.genesis, bob)
    carol_replica = SceneReplica.from_genesis(room.genesis, carol)
    print(f"bob catches up: {sync(room, bob_replica, now=1.0)} change(s) applied")
    sync(room, carol_replica, now=1.0)

    # 3. Concurrent edits, each replica on its own.
    room.create_entity(
        parent=table, components={"name": {"text": "lamp"}, "transform": {"position": [0, 1, 0]}}
    )
    room.set_field(table, "transform", "position", [1.0, 0.0, 0.0])
    room.commit(now=2.0)

    cube = bob_replica.create_entity(
        parent=ROOT, components={"name": {"text": "cube"}, "transform": {"position": [0, 0, 0]}}
    )
    bob_replica.set_field(cube, "transform", "position", [1.0, 2.0, 3.0])
    bob_replica.move(cube, table)  # bob puts his own cube on the owner's table
    scratch = bob_replica.create_entity(parent=ROOT, components={"name": {"text": "scratch"}})
    bob_replica.delete(scratch)
    bob_replica.commit(now=2.1)

    # 4. Exchange what each lacks, both ways, and compare.
    print(f"owner -> bob: {sync(room, bob_replica, now=3.0)} change(s) applied")
    print(f"bob -> owner: {sync(bob_replica, room, now=3.0)} change(s) applied")
    print("\nowner's replica:")
    print(json.dumps(room.state(), indent=2, sort_keys=True, default=str))
    print("bob's replica:")
    print(json.dumps(bob_replica.state(), indent=2, sort_keys=True, default=str))
    converged = room.state() == bob_replica.state()
    print(f"replicas equal: {converged}")

    # 5. A viewer may read but not write: her change is refused by every replica that checks it.
    sync(room, carol_replica, now=4.0)
    print("\ncarol (viewer) tries to move the table:")
    try:
        carol_replica.set_field(table, "transform", "position", [9.0, 9.0, 9.0])
        data = carol_replica.commit(now=4.0)
    except Exception as exc:  # her own replica may refuse before signing
        print(f"  refused locally: {exc}")
    else:
        if data is None:
            print("  refused locally: nothing to commit")
        else:
            result = room.apply(data, now=4.0)
            print(f"  owner's replica: {result.status} ({result.reason})")
            if result.status != "rejected":
                converged = False
    return 0 if converged else 1
