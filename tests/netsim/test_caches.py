"""The simulator's caches are its own (issue 16, item 3): a ``Simulation`` installs its
decode and verify caches and GC thresholds only while it builds and runs, the process is
left exactly as it was, and a cached change is never shared between consumers."""

from __future__ import annotations

import gc
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

import meshnode.identity as identity_mod
import protocol.change as change_mod
import protocol.frames as frames_mod
from meshnode.crdt import ROOT, SceneReplica
from meshnode.identity import Identity
from meshnode.tuning import GC_THRESHOLDS
from netsim.caches import SimulationCaches
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
            frames_mod._frame_cache.value, change_mod._change_cache.value)


def test_a_simulation_leaves_the_process_as_it_found_it() -> None:
    before = process_state()
    assert before[1:] == (None, None, None)
    sim = Simulation(parse(SMALL))
    assert process_state() == before  # built: nothing left switched on
    sim.run()
    assert process_state() == before  # run: likewise
    # While it runs, its own caches were in use (and are kept by the simulation only).
    assert sim.caches.changes.ids and sim.caches.verify.entries and sim.caches.frames.entries


def test_caches_are_restored_even_when_the_run_fails() -> None:
    before = process_state()
    caches = SimulationCaches(verify=10, frames=10, changes=10)
    try:
        with caches.active():
            assert change_mod._change_cache.value is caches.changes
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
