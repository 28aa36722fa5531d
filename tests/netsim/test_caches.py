"""The simulator's caches are its own (issue 16, item 3): a ``Simulation`` installs its
decode and verify caches and GC thresholds only while it builds and runs, the process is
left exactly as it was, and a cached change is shared between consumers only where the
simulation asks for it (its replicas only read a decoded change)."""

from __future__ import annotations

import gc
import json
from contextlib import nullcontext
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

import meshnode.crdt.key_table as key_table_mod
import meshnode.identity as identity_mod
import protocol.change as change_mod
import protocol.compact_cache as compact_cache_mod
import protocol.frames as frames_mod
from meshnode.crdt import ROOT, SceneReplica
from meshnode.identity import Identity
from meshnode.tuning import GC_THRESHOLDS
from netsim.caches import SimulationCaches, frozen_setup
from netsim.scenario import parse
from netsim.simulation import Simulation
from protocol.change import ChangeCache, decode_change, using_change_cache

SMALL: dict[str, Any] = {
    "seed": 2,
    "duration_s": 5,
    "topology": {"kind": "random", "nodes": 8, "degree": 3},
    "links": {"latency_ms": 20},
    "workload": {"editors": 4, "edits_per_s": 4},
}


def process_state() -> tuple[Any, ...]:
    return (gc.get_threshold(), identity_mod._verify_cache.value,
            frames_mod._frame_cache.value, change_mod._change_cache.value,
            key_table_mod._shared.value, compact_cache_mod.expansion_cache.value)


def test_a_simulation_leaves_the_process_as_it_found_it() -> None:
    before = process_state()
    assert before[1:] == (None, None, None, None, None)
    sim = Simulation(parse(SMALL))
    assert process_state() == before  # built: nothing left switched on
    sim.run()
    assert process_state() == before  # run: likewise
    # While it runs, its own caches were in use (and are kept by the simulation only).
    assert sim.caches.changes.decoded and sim.caches.verify.entries and sim.caches.frames.entries
    # Node links carry compact changes: their expansions were shared too.
    assert sim.caches.expansions.entries and sim.caches.expansions.compacted
    # Every replica interned its keys in the simulation's one table.
    assert sim.caches.keys
    for node in sim.nodes:
        assert node.replica._keys is sim.caches.keys
        for other in sim.nodes:
            assert node.replica._keys[other.identity.public_key] is sim.caches.keys[
                other.identity.public_key]
    # A replica made outside any simulation has a table of its own.
    alone = SceneReplica.create(Identity.generate(), now=0.0, nonce=bytes(16))
    assert alone._keys is not sim.caches.keys


def test_caches_are_restored_even_when_the_run_fails() -> None:
    before = process_state()
    caches = SimulationCaches(verify=10, frames=10, changes=10)
    try:
        with caches.active():
            assert change_mod._change_cache.value is caches.changes
            assert compact_cache_mod.expansion_cache.value is caches.expansions
            assert key_table_mod._shared.value is caches.keys
            assert gc.get_threshold() == GC_THRESHOLDS
            raise RuntimeError("a failing run")
    except RuntimeError:
        pass
    assert process_state() == before


def _change() -> bytes:
    ident = Identity.from_private_bytes(b"\x07" * 32)
    rep = SceneReplica.create(ident, now=0.0, name="cache", nonce=b"\x02" * 16)
    rep.create_entity(ROOT, {"t": {"v": [1, 2, 3], "name": "a"}})
    data = rep.commit(1.0)
    assert data is not None
    return data


def test_mutating_a_decoded_change_cannot_affect_another_consumer() -> None:
    data = _change()
    pristine = decode_change(data)
    with using_change_cache(ChangeCache(100)):
        first = decode_change(data)
        first.ops.append(["junk"])
        first.ops[0].append("junk")
        first.deps.append(b"\x00" * 32)
        first.actors.append(b"\x01" * 32)
        first.names.append("junk")
        second = decode_change(data)  # a cache hit
    assert second is not first
    assert second == pristine


def test_a_sharing_cache_hands_every_consumer_the_one_decoded_change() -> None:
    data = _change()
    pristine = decode_change(data)
    cache = ChangeCache(2, share=True)
    with using_change_cache(cache):
        first = decode_change(data)
        assert decode_change(data) is first
        assert decode_change(bytes(data)) is first  # equal bytes, another object
        others = [decode_change(_other_change(i)) for i in range(2)]  # the oldest goes
        again = decode_change(data)
    assert first == pristine == again and again is not first
    assert cache.decoded is not None and len(cache.decoded) == 2 and not cache.ids
    assert all(o.change_id == decode_change(o.body + o.signature).change_id for o in others)


def _other_change(i: int) -> bytes:
    ident = Identity.from_private_bytes(bytes([0x20 + i]) * 32)
    rep = SceneReplica.create(ident, now=0.0, name=f"other{i}", nonce=b"\x04" * 16)
    rep.create_entity(ROOT)
    data = rep.commit(1.0)
    assert data is not None
    return data


FINITE = st.floats(allow_nan=False, allow_infinity=False)
VALUES = st.one_of(st.integers(-2**40, 2**40), st.text(max_size=20),
                   st.lists(FINITE, max_size=3), st.booleans())


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["t", "m"]), st.sampled_from(["v", "w"]), VALUES),
                min_size=1, max_size=8))
def test_a_cache_hit_decodes_exactly_what_a_decode_gives(edits: list[Any]) -> None:
    ident = Identity.from_private_bytes(b"\x09" * 32)
    rep = SceneReplica.create(ident, now=0.0, name="prop", nonce=b"\x03" * 16)
    ent = rep.create_entity(ROOT)
    for comp, fld, value in edits:
        rep.set_field(ent, comp, fld, value)
    data = rep.commit(1.0)
    assert data is not None
    plain = decode_change(data)
    with using_change_cache(ChangeCache(10)):
        miss = decode_change(data)
        hit = decode_change(data)
    assert plain == miss == hit
    assert hit is not miss


SHARED_STATE: dict[str, Any] = {
    **SMALL,
    "duration_s": 30,
    "topology": {"kind": "random", "nodes": 12, "degree": 3},
    "links": {"latency_ms": 20, "jitter_ms": 3, "loss": 0.02},
    "events": [
        {"at_s": 6, "kind": "partition", "groups": [[0, 1, 2], "rest"]},
        {"at_s": 12, "kind": "heal"},
        {"at_s": 14, "kind": "crash", "nodes": [5]},
        {"at_s": 18, "kind": "restart", "nodes": [5]},
        {"at_s": 20, "kind": "remove", "nodes": [3]},
    ],
}


def test_results_are_byte_identical_with_and_without_shared_state(monkeypatch: Any) -> None:
    """What replicas share in a simulation (the decode, verify, expansion and key caches,
    the replicas cloned from one set-up template with one shared role book) changes no byte
    of results.json: the same run with every cache, the shared key table and the cloning
    switched off gives the same results (issue 15, item 3)."""
    from netsim.metrics import results

    def run(*, share_setup: bool = True) -> str:
        sim = Simulation(parse(SHARED_STATE), share_setup=share_setup)
        sim.run()
        out = results(sim, 0.0)
        assert out["changes_submitted"] > 20 and out["frames_cut_by_partitions"] > 0
        decoded = sim.caches.changes.decoded
        if share_setup:
            # The decoded changes every replica was handed: none was changed by any of
            # them (each still equals a fresh decoding of its bytes).
            assert decoded
            for data, ch in decoded.items():
                assert ch == decode_change(data)
        return json.dumps(out, sort_keys=True)

    shared = run()
    monkeypatch.setattr("netsim.caches.using_key_table", lambda _table: nullcontext())
    monkeypatch.setattr("netsim.caches.using_change_cache", lambda _c: nullcontext())
    monkeypatch.setattr("netsim.caches.using_frame_cache", lambda _c: nullcontext())
    monkeypatch.setattr("netsim.caches.using_verify_cache", lambda _c: nullcontext())
    monkeypatch.setattr("netsim.caches.using_expansion_cache", lambda _c: nullcontext())
    alone = run(share_setup=False)
    assert key_table_mod._shared.value is None
    assert shared == alone


def test_the_setup_is_frozen_out_of_the_collector_only_while_it_runs() -> None:
    """``frozen_setup``: the set-up's objects are out of the collector's scans during the
    run (gc.freeze), and the process's heap is as it was afterwards; a heap someone else
    froze (a node's ``tune_gc``) is left alone."""
    sim = Simulation(parse(SMALL))
    seen: list[int] = []
    sim.engine.at(1.0, lambda: seen.append(gc.get_freeze_count()))
    assert gc.get_freeze_count() == 0
    sim.run()
    assert seen and seen[0] > 0
    assert gc.get_freeze_count() == 0
    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        with frozen_setup():
            assert gc.get_freeze_count() == frozen
        assert gc.get_freeze_count() == frozen
    finally:
        gc.unfreeze()
