"""``PendingPool``: the pool of unfinished connections, a pure decider (no aiortc here)."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshnode.runtime.pending import (
    Admit,
    Evict,
    PendingPolicy,
    PendingPool,
    Refuse,
    Stage,
)


def test_admits_up_to_capacity_then_evicts_the_oldest_of_the_least_advanced() -> None:
    pool = PendingPool[str](3)
    assert [pool.admit(k) for k in "abc"] == [Admit(), Admit(), Admit()]
    pool.advance("a", Stage.SECURED)
    pool.advance("b", Stage.ICE_CONNECTED)
    # c never got past the answer: it goes first, although a and b are older.
    assert pool.admit("d") == Evict("c")
    assert pool.admit("e") == Evict("d")
    pool.advance("e", Stage.ICE_CONNECTED)
    assert pool.admit("f") == Evict("b")  # b and e got as far; b is older
    assert pool.keys() == ["a", "e", "f"] and pool.stage("f") is Stage.ANSWERED


def test_among_equals_the_oldest_goes() -> None:
    pool = PendingPool[int](2)
    pool.admit(1)
    pool.admit(2)
    assert pool.admit(3) == Evict(1)
    assert pool.admit(4) == Evict(2)
    assert pool.keys() == [3, 4]


def test_refuse_policy_never_evicts() -> None:
    pool = PendingPool[int](1, PendingPolicy.REFUSE_NEW)
    assert pool.admit(1) == Admit()
    assert pool.admit(2) == Refuse("pending_full")
    assert pool.keys() == [1]
    assert pool.finish(1) and pool.admit(2) == Admit()


def test_finish_and_advance_of_unknown_keys_change_nothing() -> None:
    pool = PendingPool[int](2)
    pool.admit(1)
    assert not pool.finish(7)
    pool.advance(7, Stage.SECURED)
    assert pool.stage(7) is None and pool.keys() == [1]
    pool.advance(1, Stage.SECURED)
    pool.advance(1, Stage.ICE_CONNECTED)  # never backwards
    assert pool.stage(1) is Stage.SECURED
    assert pool.finish(1) and not pool.finish(1) and len(pool) == 0


def test_misuse_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 1 slot"):
        PendingPool[int](0)
    pool = PendingPool[int](2)
    pool.admit(1)
    with pytest.raises(ValueError, match="already pending"):
        pool.admit(1)


ops = st.lists(st.tuples(st.sampled_from(["admit", "finish", "advance"]), st.integers(0, 40),
                         st.sampled_from(list(Stage))), max_size=120)


@given(st.integers(1, 6), st.sampled_from(list(PendingPolicy)), ops)
def test_random_use_keeps_the_pool_bounded_and_evicts_by_the_rule(
        capacity: int, policy: PendingPolicy, script: list[tuple[str, int, Stage]]) -> None:
    pool = PendingPool[int](capacity, policy)
    model: dict[int, Stage] = {}  # insertion order = age
    next_key = 0
    for op, key, stage in script:
        if op == "admit":
            key, next_key = next_key, next_key + 1
            decision = pool.admit(key)
            if len(model) < capacity:
                assert decision == Admit()
                model[key] = Stage.ANSWERED
            elif policy is PendingPolicy.REFUSE_NEW:
                assert isinstance(decision, Refuse)
            else:
                least = min(model.values())
                expected = next(k for k, s in model.items() if s == least)
                assert decision == Evict(expected)
                del model[expected]
                model[key] = Stage.ANSWERED
        elif op == "finish":
            assert pool.finish(key) == (key in model)
            model.pop(key, None)
        else:
            pool.advance(key, stage)
            if key in model:
                model[key] = max(model[key], stage)
        assert len(pool) == len(model) <= capacity
        assert pool.keys() == list(model)
        assert all(pool.stage(k) == s for k, s in model.items())
