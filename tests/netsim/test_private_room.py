"""A private room in netsim (issue 13): 3 blind hosts, 6 readers, a partition, a removal
during it and concurrent rotations on both sides. Everything converges: every replica, blind
or not, holds the same DAG, role book and epoch book; the readers still in the room hold the
same scene; the blind hosts read nothing; and the bytes each rotation cost are reported."""

import json
from pathlib import Path

from meshnode.identity import peer_id_from_public_key
from netsim.scenario import load
from netsim.simulation import Simulation

SCENARIO = Path(__file__).resolve().parents[2] / "netsim" / "scenarios" / "private.toml"


def test_blind_hosts_readers_partition_removal_and_concurrent_rotations_converge() -> None:
    sim = Simulation(load(SCENARIO))
    sim.run()
    removed = sim.nodes[3].peer_id
    # (The removed member is served nothing after its removal: it is left out.)
    nodes = [n for n in sim.nodes if n.alive and n.peer_id != removed]
    reps = [n.replica for n in nodes]
    first = reps[0]
    assert first.private
    for r in reps[1:]:
        assert r.heads() == first.heads()
        assert r.members() == first.members()
        assert r.epoch_book_view() == first.epoch_book_view()
    assert first.role_of(removed) == "none"
    hosts = [n for n in nodes if first.role_of(n.peer_id) == "host"]
    readers = [n for n in nodes if first.is_reader(n.identity.public_key)]
    assert len(hosts) == 3 and len(readers) == 5
    states = {json.dumps(n.replica.state(), sort_keys=True) for n in readers}
    assert len(states) == 1 and all(n.replica.readable for n in readers)
    assert len(first.state()) > 5
    for h in hosts:
        assert not h.replica.readable and h.replica.privacy_counters()["epochs_held"] == 0
        assert len(h.replica.state()) <= 1  # at most the root: no entity is readable
    # The removal rotated (1 epoch) and the two concurrent rotations made two more, on top
    # of the first epoch: all are valid at once (no total order is needed).
    epochs = first.epoch_ids()
    assert len(epochs) >= 4
    sizes = sorted(len(first.change_bytes(e)) for e in epochs)
    readers_then = {peer_id_from_public_key(k) for e in first.epoch_book_view().values()
                    for k in e[2]}
    assert removed in readers_then  # the first epoch went to it, later ones did not
    print(f"\nbytes per rotation (change carrying the ROTATE, {len(epochs)} epochs, "
          f"<= 6 readers): min {sizes[0]}, max {sizes[-1]}")
    assert sizes[-1] < 2_000
