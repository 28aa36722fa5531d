"""``SignalRelay``: relayed offers and answers through the mesh (sans-I/O)."""

import itertools
import random
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshnode.signaling.relay import DEFAULT_TTL, FANOUT, Deliver, Forward, SignalRelay
from protocol.link import Signal

NONCE = bytes(range(16))


def offer(src: str = "A", dst: str = "D", ttl: int = DEFAULT_TTL, nonce: bytes = NONCE,
          sdp: str = "v=0 offer") -> Signal:
    return Signal(src, dst, ttl, nonce, "offer", sdp)


def reply(of: Signal, kind: str = "answer", ttl: int = DEFAULT_TTL) -> Signal:
    return Signal(of.dst, of.src, ttl, of.nonce, kind, f"v=0 {kind}")


def forwards(actions: Iterable[Deliver | Forward]) -> list[Forward]:
    actions = list(actions)
    out = [a for a in actions if isinstance(a, Forward)]
    assert len(out) == len(actions)
    return out


# ------------------------------------------------------------------ one relay


def test_delivery_to_self_keeps_the_signal() -> None:
    relay = SignalRelay("D", random.Random(0))
    sig = offer()
    assert relay.handle(sig, "C", {"C", "E"}, 0.0) == [Deliver(sig, "C")]
    assert relay.answer_route(NONCE) == "C"


def test_delivery_to_self_even_with_ttl_zero() -> None:
    relay = SignalRelay("D", random.Random(0))
    sig = offer(ttl=0)
    assert relay.handle(sig, "C", {"C"}, 0.0) == [Deliver(sig, "C")]


@pytest.mark.parametrize("kind", ["answer", "error"])
def test_answers_and_errors_are_delivered_to_self(kind: str) -> None:
    relay = SignalRelay("A", random.Random(0))
    sig = Signal("D", "A", 2, NONCE, kind, "x")
    assert relay.handle(sig, "B", {"B"}, 0.0) == [Deliver(sig, "B")]


def test_direct_forward_when_dst_is_a_neighbour() -> None:
    relay = SignalRelay("C", random.Random(0))
    sig = offer()
    out = relay.handle(sig, "B", {"B", "D", "E", "F", "G", "H"}, 0.0)
    assert out == [Forward("D", offer(ttl=DEFAULT_TTL - 1))]


def test_fan_out_is_limited_and_never_goes_back() -> None:
    neighbours = {"A", "B"} | {f"N{i}" for i in range(10)}
    for seed in range(30):
        relay = SignalRelay("C", random.Random(seed))
        out = relay.handle(offer(src="A", ttl=3), "B", neighbours, 0.0)
        peers = [f.peer for f in forwards(out)]
        assert len(peers) == FANOUT == len(set(peers))
        assert set(peers) <= neighbours - {"A", "B"}
        assert all(f.signal == offer(src="A", ttl=2) for f in forwards(out))


def test_fan_out_to_all_when_few_neighbours() -> None:
    relay = SignalRelay("C", random.Random(1))
    out = relay.handle(offer(src="A"), "B", {"A", "B", "E", "F"}, 0.0)
    assert sorted(f.peer for f in forwards(out)) == ["E", "F"]
    relay = SignalRelay("C", random.Random(1))
    assert relay.handle(offer(src="A"), "B", {"A", "B"}, 0.0) == []


def test_fan_out_varies_with_the_rng_and_is_reproducible() -> None:
    neighbours = {f"N{i}" for i in range(8)}
    choices = set()
    for seed in range(40):
        a = SignalRelay("C", random.Random(seed)).handle(offer(), "B", neighbours, 0.0)
        b = SignalRelay("C", random.Random(seed)).handle(offer(), "B", neighbours, 0.0)
        assert a == b
        choices.add(frozenset(f.peer for f in forwards(a)))
    assert len(choices) > 1


@pytest.mark.parametrize("ttl", [DEFAULT_TTL, 1])
def test_ttl_is_decremented(ttl: int) -> None:
    relay = SignalRelay("C", random.Random(0))
    out = relay.handle(offer(ttl=ttl), "B", {"B", "E"}, 0.0)
    assert out == [Forward("E", offer(ttl=ttl - 1))]


def test_ttl_zero_is_dropped() -> None:
    relay = SignalRelay("C", random.Random(0))
    assert relay.handle(offer(ttl=0), "B", {"B", "E", "D"}, 0.0) == []
    assert relay.dropped == 1
    assert relay.handle(reply(offer(), ttl=0), "E", {"B", "E"}, 1.0) == []
    assert relay.dropped == 2


def test_duplicates_are_dropped() -> None:
    relay = SignalRelay("C", random.Random(0))
    assert relay.handle(offer(), "B", {"B", "E"}, 0.0)
    assert relay.handle(offer(), "B", {"B", "E"}, 0.0) == []
    # from another neighbour, with another TTL or SDP: still the same offer
    assert relay.handle(offer(ttl=2), "E", {"B", "E", "F"}, 0.0) == []
    assert relay.handle(offer(sdp="other"), "F", {"B", "E", "F"}, 0.0) == []
    assert relay.dropped == 3
    # ...and the first route stays
    assert relay.answer_route(NONCE) == "B"


def test_not_duplicates_when_nonce_kind_or_src_differ() -> None:
    relay = SignalRelay("C", random.Random(0))
    n = {"B", "E"}
    assert relay.handle(offer(), "B", n, 0.0)
    assert relay.handle(offer(nonce=b"\x01" * 16), "B", n, 0.0)
    assert relay.handle(offer(src="X"), "B", n, 0.0)
    assert relay.dropped == 0
    # an answer with the offer's nonce is not a duplicate of the offer
    assert relay.handle(reply(offer()), "E", n, 1.0) == [
        Forward("B", reply(offer(), ttl=DEFAULT_TTL - 1))]


def test_own_signal_coming_back_is_dropped() -> None:
    relay = SignalRelay("A", random.Random(0))
    sig = offer(src="A")
    assert relay.originate(sig, {"B", "C"})
    assert relay.handle(sig, "B", {"B", "C"}, 0.0) == []
    assert relay.handle(replace_ttl(sig, 1), "C", {"B", "C"}, 0.0) == []
    assert relay.dropped == 2


def replace_ttl(sig: Signal, ttl: int) -> Signal:
    return Signal(sig.src, sig.dst, ttl, sig.nonce, sig.kind, sig.sdp)


def test_originate_offer() -> None:
    relay = SignalRelay("A", random.Random(0))
    assert relay.originate(offer(dst="B"), {"B", "C"}) == [Forward("B", offer(dst="B"))]
    many = {f"N{i}" for i in range(9)}
    out = relay.originate(offer(nonce=b"\x02" * 16), many)
    assert len(out) == FANOUT and {f.peer for f in out} <= many
    assert all(f.signal == offer(nonce=b"\x02" * 16) for f in out)  # TTL not decremented
    assert relay.originate(offer(nonce=b"\x03" * 16), set()) == []


def test_originate_answer_goes_back_where_the_offer_came_from() -> None:
    relay = SignalRelay("D", random.Random(0))
    sig = offer()
    relay.handle(sig, "C", {"C", "E"}, 0.0)
    ans = reply(sig)
    assert relay.originate(ans, {"C", "E"}) == [Forward("C", ans)]
    # without a route (or with the way back gone) there is nowhere to send it
    assert SignalRelay("D", random.Random(0)).originate(ans, {"C", "E"}) == []
    assert relay.originate(reply(sig, "error"), {"E"}) == []


def test_originate_answer_direct_when_offerer_is_a_neighbour() -> None:
    relay = SignalRelay("D", random.Random(0))
    ans = reply(offer())
    assert relay.originate(ans, {"A", "C"}) == [Forward("A", ans)]


@pytest.mark.parametrize("kind", ["answer", "error"])
def test_answer_follows_the_remembered_route(kind: str) -> None:
    relay = SignalRelay("C", random.Random(0))
    sig = offer()
    relay.handle(sig, "B", {"B", "E", "F"}, 0.0)
    out = relay.handle(reply(sig, kind), "E", {"B", "E", "F"}, 1.0)
    assert out == [Forward("B", reply(sig, kind, ttl=DEFAULT_TTL - 1))]


def test_answer_without_route_is_dropped() -> None:
    relay = SignalRelay("C", random.Random(0))
    assert relay.handle(reply(offer()), "E", {"B", "E"}, 0.0) == []
    assert relay.dropped == 1


def test_answer_is_dropped_when_the_way_back_is_gone() -> None:
    relay = SignalRelay("C", random.Random(0))
    sig = offer()
    relay.handle(sig, "B", {"B", "E"}, 0.0)
    assert relay.handle(reply(sig), "E", {"E"}, 1.0) == []


def test_answer_goes_direct_when_dst_is_a_neighbour() -> None:
    relay = SignalRelay("C", random.Random(0))
    sig = offer()
    relay.handle(sig, "B", {"B", "E"}, 0.0)
    out = relay.handle(reply(sig), "E", {"A", "B", "E"}, 1.0)
    assert out == [Forward("A", reply(sig, ttl=DEFAULT_TTL - 1))]


def test_stale_route_is_not_used() -> None:
    relay = SignalRelay("C", random.Random(0), route_ttl_s=60.0)
    sig = offer()
    relay.handle(sig, "B", {"B", "E"}, 100.0)
    assert relay.handle(reply(sig), "E", {"B", "E"}, 160.0001) == []
    assert relay.dropped == 1
    relay = SignalRelay("C", random.Random(0), route_ttl_s=60.0)
    relay.handle(sig, "B", {"B", "E"}, 100.0)
    assert relay.handle(reply(sig), "E", {"B", "E"}, 160.0) == [
        Forward("B", reply(sig, ttl=DEFAULT_TTL - 1))]


def test_route_memory_is_bounded() -> None:
    relay = SignalRelay("C", random.Random(0), memory=3)
    nonces = [bytes([i]) * 16 for i in range(6)]
    for i, nonce in enumerate(nonces):
        relay.handle(offer(nonce=nonce), f"P{i}", {f"P{i}", "E"}, 0.0)
    assert [relay.answer_route(n) for n in nonces] == [None, None, None, "P3", "P4", "P5"]
    assert relay.handle(reply(offer(nonce=nonces[0])), "E", {"E", "P0"}, 1.0) == []
    assert relay.handle(reply(offer(nonce=nonces[5])), "E", {"E", "P5"}, 1.0) == [
        Forward("P5", reply(offer(nonce=nonces[5]), ttl=DEFAULT_TTL - 1))]


def test_duplicate_memory_is_bounded() -> None:
    relay = SignalRelay("C", random.Random(0), memory=3)
    nonces = [bytes([i]) * 16 for i in range(6)]
    for i, nonce in enumerate(nonces):
        assert relay.handle(offer(nonce=nonce), f"P{i}", {f"P{i}", "E"}, 0.0)
    assert relay.handle(offer(nonce=nonces[5]), "P9", {"P9", "E"}, 2.0) == []  # remembered
    assert relay.handle(offer(nonce=nonces[0]), "P9", {"P9", "E"}, 2.0) != []  # forgotten
    assert relay.dropped == 1


def test_answer_route_unknown_nonce() -> None:
    assert SignalRelay("C", random.Random(0)).answer_route(b"\x09" * 16) is None


def test_reused_nonce_from_another_source_does_not_steal_the_route() -> None:
    relay = SignalRelay("C", random.Random(0))
    real = offer(src="A", dst="D")
    relay.handle(real, "B", {"B", "M", "E"}, 0.0)
    # M saw the nonce go by and sends its own offer with it
    relay.handle(offer(src="X", dst="D"), "M", {"B", "M", "E"}, 0.5)
    out = relay.handle(reply(real), "E", {"B", "M", "E"}, 1.0)
    assert out == [Forward("B", reply(real, ttl=DEFAULT_TTL - 1))]


def test_answer_from_someone_else_than_the_offer_dst_is_not_routed() -> None:
    relay = SignalRelay("C", random.Random(0))
    real = offer(src="A", dst="D")
    relay.handle(real, "B", {"B", "E"}, 0.0)
    forged = Signal("Z", "A", DEFAULT_TTL, NONCE, "answer", "forged")
    assert relay.handle(forged, "E", {"B", "E"}, 1.0) == []


# ------------------------------------------------------------------ a mesh of relays


Graph = dict[str, set[str]]


@dataclass
class Outcome:
    offers: list[Deliver]  # the offer, delivered at dst
    answers: list[Deliver]  # its answer, delivered at src
    offer_forwards: dict[str, int]  # how many times each node forwarded the offer
    sent: int  # signals sent in all


def simulate(graph: Graph, src: str, dst: str, seed: int = 0, nonce: bytes = NONCE,
             ttl: int = DEFAULT_TTL) -> Outcome:
    """Run an offer from ``src`` to ``dst`` and (if it arrives) the answer back, through
    every node's ``SignalRelay``, one hop at a time in FIFO order."""
    rng = random.Random(seed)
    relays = {n: SignalRelay(n, random.Random(rng.random())) for n in graph}
    offer_forwards = dict.fromkeys(graph, 0)
    delivered: list[tuple[str, Deliver]] = []
    sent = 0
    queue: deque[tuple[str, str, Signal]] = deque()  # (from, to, signal)

    def send(frm: str, fwds: list[Forward]) -> None:
        nonlocal sent
        for f in fwds:
            assert f.peer in graph[frm], "sent to a non-neighbour"
            sent += 1
            queue.append((frm, f.peer, f.signal))

    def run() -> None:
        steps = 0
        while queue:
            steps += 1
            assert steps < 10_000, "signals keep circulating"
            frm, to, sig = queue.popleft()
            actions = relays[to].handle(sig, frm, graph[to], 0.0)
            fwds = [a for a in actions if isinstance(a, Forward)]
            for f in fwds:
                assert f.signal.ttl == sig.ttl - 1 >= 0
                assert f.peer != frm or f.peer == sig.dst
            if fwds and sig.kind == "offer":
                offer_forwards[to] += 1
            delivered.extend((to, a) for a in actions if isinstance(a, Deliver))
            send(to, fwds)

    sig = Signal(src, dst, ttl, nonce, "offer", "sdp-offer")
    send(src, relays[src].originate(sig, graph[src]))
    run()
    offers = [d for at, d in delivered if at == dst and d.signal.kind == "offer"]
    assert all(at == dst for at, _ in delivered)
    answers: list[Deliver] = []
    if offers:
        ans = Signal(dst, src, DEFAULT_TTL, offers[0].signal.nonce, "answer", "sdp-answer")
        assert relays[dst].answer_route(nonce) == offers[0].via
        delivered.clear()
        send(dst, relays[dst].originate(ans, graph[dst]))
        run()
        answers = [d for at, d in delivered if at == src]
        assert all(at == src for at, _ in delivered)
    return Outcome(offers, answers, offer_forwards, sent)


def line(n: int) -> Graph:
    names = [chr(ord("A") + i) for i in range(n)]
    graph: Graph = {x: set() for x in names}
    for a, b in itertools.pairwise(names):
        graph[a].add(b)
        graph[b].add(a)
    return graph


def one_forward(actions: list[Deliver | Forward] | list[Forward]) -> Forward:
    assert len(actions) == 1 and isinstance(actions[0], Forward)
    return actions[0]


def test_line_of_four_offer_and_answer() -> None:
    graph = line(4)
    relays = {n: SignalRelay(n, random.Random(0)) for n in graph}
    sig = offer(src="A", dst="D")
    hop = one_forward(relays["A"].originate(sig, graph["A"]))
    assert hop == Forward("B", sig)
    hop = one_forward(relays["B"].handle(hop.signal, "A", graph["B"], 0.0))
    assert hop == Forward("C", offer(ttl=DEFAULT_TTL - 1))
    hop = one_forward(relays["C"].handle(hop.signal, "B", graph["C"], 0.1))
    assert hop == Forward("D", offer(ttl=DEFAULT_TTL - 2))
    got = relays["D"].handle(hop.signal, "C", graph["D"], 0.2)
    assert got == [Deliver(offer(ttl=DEFAULT_TTL - 2), "C")]
    assert [relays[n].answer_route(NONCE) for n in "BCD"] == ["A", "B", "C"]

    ans = reply(sig)
    hop = one_forward(relays["D"].originate(ans, graph["D"]))
    assert hop == Forward("C", ans)
    hop = one_forward(relays["C"].handle(hop.signal, "D", graph["C"], 0.3))
    assert hop == Forward("B", reply(sig, ttl=DEFAULT_TTL - 1))
    hop = one_forward(relays["B"].handle(hop.signal, "C", graph["B"], 0.4))
    assert hop == Forward("A", reply(sig, ttl=DEFAULT_TTL - 2))
    done = relays["A"].handle(hop.signal, "B", graph["A"], 0.5)
    assert len(done) == 1 and isinstance(done[0], Deliver)
    assert done[0].signal.nonce == NONCE and done[0].signal.kind == "answer"
    assert done[0].signal.src == "D" and done[0].via == "B"


@pytest.mark.parametrize("n", [2, 3, 4, 5, 6])
def test_line_reaches_up_to_ttl_plus_one_hops(n: int) -> None:
    result = simulate(line(n), "A", chr(ord("A") + n - 1))
    assert len(result.offers) == 1 and len(result.answers) == 1


@pytest.mark.parametrize("n", [7, 8])
def test_line_longer_than_ttl_plus_one_is_not_reached(n: int) -> None:
    result = simulate(line(n), "A", chr(ord("A") + n - 1))
    assert result.offers == [] and result.answers == []


def test_ring_delivers_once_and_answers_once() -> None:
    names = "ABCDEF"
    graph: Graph = {x: set() for x in names}
    for i, a in enumerate(names):
        b = names[(i + 1) % len(names)]
        graph[a].add(b)
        graph[b].add(a)
    result = simulate(graph, "A", "D")
    assert len(result.offers) == 1 and len(result.answers) == 1


@st.composite
def connected_graphs(draw: st.DrawFn) -> tuple[Graph, str, str, int]:
    n = draw(st.integers(2, 8))
    names = [f"P{i}" for i in range(n)]
    graph: Graph = {x: set() for x in names}
    for i in range(1, n):  # a random spanning tree keeps it connected
        j = draw(st.integers(0, i - 1))
        graph[names[i]].add(names[j])
        graph[names[j]].add(names[i])
    pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1:]]
    for a, b in draw(st.lists(st.sampled_from(pairs), max_size=12)):
        graph[a].add(b)
        graph[b].add(a)
    src, dst = draw(st.lists(st.sampled_from(names), min_size=2, max_size=2, unique=True))
    return graph, src, dst, draw(st.integers(0, 2**32))


def distances(graph: Graph, src: str) -> dict[str, int]:
    dist = {src: 0}
    queue = deque([src])
    while queue:
        x = queue.popleft()
        for y in graph[x]:
            if y not in dist:
                dist[y] = dist[x] + 1
                queue.append(y)
    return dist


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(connected_graphs())
def test_random_graphs(case: tuple[Graph, str, str, int]) -> None:
    graph, src, dst, seed = case
    result = simulate(graph, src, dst, seed)
    offers, answers = result.offers, result.answers
    # no loops: each relay forwards a given offer at most once, so the flood is bounded
    assert all(count <= 1 for count in result.offer_forwards.values())
    assert result.sent <= FANOUT * len(graph) * 2
    # the offer is delivered at most once, and its answer comes back exactly when it was
    assert len(offers) <= 1
    assert len(answers) == len(offers)
    for ans in answers:
        assert ans.signal.nonce == NONCE and ans.signal.src == dst and ans.signal.kind == "answer"
    dist = distances(graph, src)[dst]
    max_degree = max(len(peers) for peers in graph.values())
    if dist > DEFAULT_TTL + 1:
        assert not offers  # the TTL bounds the walk
    elif dist == 1 or (dist == 2 and len(graph[src]) <= FANOUT) or max_degree <= FANOUT:
        assert len(offers) == 1 and len(answers) == 1


def test_rng_is_required() -> None:
    # No silent fallback to unseeded randomness: the driver must choose (issue 16, item 3).
    with pytest.raises(TypeError):
        SignalRelay("C")  # type: ignore[call-arg]
