"""The test vectors of docs/protocol.md: parsed out of the document, decoded, re-encoded,
regenerated, and replayed through a ``SceneReplica``."""

import dataclasses
import hashlib
import json
import re
from pathlib import Path
from typing import Any

import pytest

from meshnode.crdt import ROOT, SceneReplica
from meshnode.crdt.results import TRANSIENT_REASONS
from meshnode.identity import Identity, peer_id_from_public_key, verify_signature
from protocol import errors
from protocol.bloom import BloomFilter
from protocol.change import SIGNING_DOMAIN, decode_change, encode_change, signing_payload
from protocol.frames import (
    Changes,
    Heads,
    Presence,
    decode_frame,
    encode_frame,
    presence_payload,
)
from protocol.msgpack_io import pack
from protocol.vectors import (
    BEGIN_MARKER,
    END_MARKER,
    NONCE,
    NOW_APPLY,
    NOW_CHANGE_1,
    NOW_CHANGE_2,
    NOW_GENESIS,
    ROOM_NAME,
    SEED_A,
    SEED_B,
    SEED_C,
    build_vectors,
    hlc_at,
    peer_id,
    public_key,
    render_markdown,
    signer,
    to_json,
)

DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"
BLOCK = re.compile(r"^```(hex|json) vector=(\S+)\n(.*?)^```$", re.M | re.S)


def _blocks() -> tuple[dict[str, bytes], dict[str, Any]]:
    hexes: dict[str, bytes] = {}
    jsons: dict[str, Any] = {}
    for kind, label, body in BLOCK.findall(DOC.read_text(encoding="utf-8")):
        target: dict[str, Any] = hexes if kind == "hex" else jsons
        assert label not in target, f"vector {label} appears twice"
        target[label] = bytes.fromhex("".join(body.split())) if kind == "hex" else json.loads(body)
    return hexes, jsons


HEX, JSON = _blocks()
V = build_vectors()
ROOM = JSON["room"]
ROOM_ID = bytes.fromhex(ROOM["room_id"])
GENESIS, CHANGE_1, CHANGE_2 = HEX["change/genesis"], HEX["change/1"], HEX["change/2"]


def _replica(*datas: bytes, seed: bytes = SEED_C) -> SceneReplica:
    r = SceneReplica.from_genesis(GENESIS, Identity.from_private_bytes(seed))
    results = r.apply_many(list(datas), NOW_APPLY)
    assert all(res.status == "applied" for res in results), results
    return r


# --------------------------------------------------------------------------- the document


def test_document_holds_every_vector() -> None:
    assert set(HEX) == (
        set(V["frames"]) | set(V["changes"]) | set(V["invalid"]) | set(V["rejected"])
    )
    assert set(JSON) == (
        {"identities", "room"}
        | {n + ".decoded" for n in V["frames"]}
        | {n + ".decoded" for n in V["changes"]}
    )


def test_generated_section_is_what_the_generator_prints() -> None:
    text = DOC.read_text(encoding="utf-8")
    assert text.count(BEGIN_MARKER) == 1 and text.count(END_MARKER) == 1
    start = text.index(BEGIN_MARKER)
    end = text.index(END_MARKER) + len(END_MARKER) + 1
    assert text[start:end] == render_markdown(), (
        "docs/protocol.md is out of date: replace its generated section with the output "
        "of `python -m protocol.vectors`"
    )


def test_build_vectors_reproduces_the_document() -> None:
    assert build_vectors() == V  # deterministic
    for group in ("frames", "changes", "invalid", "rejected"):
        for name, vec in V[group].items():
            assert HEX[name].hex() == vec["hex"], name
    for group in ("frames", "changes"):
        for name, vec in V[group].items():
            assert JSON[name + ".decoded"] == vec["decoded"], name
    assert JSON["identities"] == V["identities"]
    assert JSON["room"] == json.loads(json.dumps(V["room"]))


# --------------------------------------------------------------------------- identities


@pytest.mark.parametrize("name,seed", [("A", SEED_A), ("B", SEED_B), ("C", SEED_C)])
def test_identities_match_meshnode(name: str, seed: bytes) -> None:
    ident = Identity.from_private_bytes(seed)
    doc = JSON["identities"][name]
    assert bytes.fromhex(doc["seed"]) == seed
    assert ident.public_key.hex() == doc["public_key"] == public_key(seed).hex()
    assert ident.public_id == doc["peer_id"] == peer_id(ident.public_key)
    assert peer_id_from_public_key(ident.public_key) == doc["peer_id"]
    msg = b"any message"
    assert ident.sign(msg) == signer(seed)(msg)


def test_signing_domain() -> None:
    assert SIGNING_DOMAIN == b"meshnode/change/v1\x00"
    assert SIGNING_DOMAIN.hex(" ") in DOC.read_text(encoding="utf-8")


# --------------------------------------------------------------------------- frames


def _frame_view(msg: Any) -> dict[str, Any]:
    view: dict[str, Any] = {"version": 1, "type": msg.TYPE, "message": type(msg).__name__}
    for f in dataclasses.fields(msg):
        value = getattr(msg, f.name)
        if f.name == "changes":
            view["change_ids"] = [hashlib.sha256(c).hexdigest() for c in value]
        elif isinstance(value, bytes):
            view[f.name] = value.hex()
        elif isinstance(value, tuple):
            view[f.name] = [_plain(x) for x in value]
        else:
            view[f.name] = value
    return view


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, tuple):
        return [_plain(x) for x in value]
    return value


def test_one_frame_vector_per_message_type() -> None:
    types = {JSON[n + ".decoded"]["type"] for n in V["frames"]}
    assert types == set(range(1, 13))


@pytest.mark.parametrize("name", sorted(V["frames"]))
def test_frames_decode_as_documented_and_reencode_identically(name: str) -> None:
    data, doc = HEX[name], JSON[name + ".decoded"]
    msg = decode_frame(data)
    assert _frame_view(msg) == doc
    assert msg.room_id == ROOM_ID
    assert encode_frame(msg) == data
    if isinstance(msg, Changes):
        assert msg.changes == (CHANGE_1, CHANGE_2)
    elif isinstance(msg, Heads):
        assert [h.hex() for h in msg.heads] == ROOM["heads"]
        bloom = BloomFilter.decode(msg.bloom)
        assert all(c in bloom for c in (ROOM_ID, hashlib.sha256(CHANGE_1).digest(), msg.heads[0]))
    elif isinstance(msg, Presence):
        payload = presence_payload(msg.room_id, msg.body)
        assert payload.startswith(b"meshnode/presence/v1\x00" + ROOM_ID)
        assert verify_signature(msg.participant, msg.signature, payload)
        assert msg.participant == public_key(SEED_B)


# --------------------------------------------------------------------------- changes


@pytest.mark.parametrize("name", ["change/genesis", "change/1", "change/2"])
def test_changes_decode_as_documented_and_reencode_identically(name: str) -> None:
    data, doc = HEX[name], JSON[name + ".decoded"]
    ch = decode_change(data)
    assert ch.author.hex() == doc["author"]
    assert ch.seq == doc["seq"]
    assert [d.hex() for d in ch.deps] == doc["deps"]
    assert ch.hlc == doc["hlc"] == (doc["hlc_millis"] << 16) | doc["hlc_logical"]
    assert [a.hex() if isinstance(a, bytes) else a for a in ch.actors] == doc["actors"]
    assert ch.names == doc["names"]
    assert to_json(ch.ops) == doc["ops"]
    assert ch.signature.hex() == doc["signature"]
    assert len(ch.body) == doc["body_len"]
    assert ch.change_id.hex() == doc["change_id"] == hashlib.sha256(data).hexdigest()
    # canonical: re-encoding the decoded body gives the same bytes
    body = pack([ch.author, ch.seq, ch.deps, ch.hlc, [ch.actors, ch.names, ch.ops]])
    assert body == ch.body == data[:-64]
    room = bytes.fromhex(doc["signed_room_id"])
    assert room == (b"" if name == "change/genesis" else ROOM_ID)
    assert verify_signature(ch.author, ch.signature, signing_payload(room, ch.body))
    assert not verify_signature(ch.author, ch.signature, signing_payload(b"\x01" * 32, ch.body))


def test_room_id_is_the_genesis_change_id() -> None:
    assert hashlib.sha256(GENESIS).digest() == ROOM_ID
    assert JSON["change/genesis.decoded"]["change_id"] == ROOM["room_id"]


def test_the_editing_api_produces_the_vector_changes_byte_for_byte() -> None:
    a = Identity.from_private_bytes(SEED_A)
    b = Identity.from_private_bytes(SEED_B)
    ra = SceneReplica.create(a, NOW_GENESIS, name=ROOM_NAME, nonce=NONCE)
    assert ra.genesis == GENESIS and ra.room_id == ROOM_ID
    e1 = ra.create_entity(ROOT, {"transform": {"position": [0.0, 1.5, -2.0]}})
    e2 = ra.create_entity(e1, {"model": {"uri": "https://example.org/chair.glb"}})
    ra.set_field(e2, "meta", "tags", {"b": (1, True, None), "a": "x"})  # normalised
    ra.delete(ra.create_entity())
    ra.grant(b.public_key, "editor")
    assert ra.commit(NOW_CHANGE_1) == CHANGE_1

    rb = SceneReplica.from_genesis(GENESIS, b)
    assert rb.apply(CHANGE_1, NOW_CHANGE_1).status == "applied"
    b1 = rb.create_entity(
        e1, {"transform": {"position": [3.0, 0.0, 0.0]}, "light": {"intensity": 800}}
    )
    rb.move(b1, rb.create_entity())
    assert rb.commit(NOW_CHANGE_2) == CHANGE_2
    assert rb.state() == ROOM["state"]


# --------------------------------------------------------------------------- resulting state


@pytest.mark.parametrize("order", [(CHANGE_1, CHANGE_2), (CHANGE_2, CHANGE_1)])
def test_replica_reaches_the_documented_state(order: tuple[bytes, bytes]) -> None:
    r = _replica(*order)
    assert r.room_id.hex() == ROOM["room_id"]
    assert r.room_name == ROOM["name"]
    assert r.state() == ROOM["state"]
    assert r.members() == ROOM["members"]
    assert [h.hex() for h in r.heads()] == ROOM["heads"]
    assert r.change_count() == 3


def test_state_one_change_at_a_time_with_a_transient_rejection() -> None:
    r = SceneReplica.from_genesis(GENESIS, Identity.from_private_bytes(SEED_C))
    # B is not a member until change 1 arrives: its change is not buffered but refused
    first = r.apply(CHANGE_2, NOW_APPLY)
    assert (first.status, first.reason) == ("rejected", "unknown_author")
    assert r.apply(CHANGE_1, NOW_APPLY).status == "applied"
    assert r.apply(CHANGE_2, NOW_APPLY).status == "applied"  # transient: accepted now
    assert r.state() == ROOM["state"]


# --------------------------------------------------------------------------- invalid inputs


@pytest.mark.parametrize("name", sorted(V["invalid"]))
def test_invalid_inputs_raise_the_documented_error(name: str) -> None:
    vec = V["invalid"][name]
    decoder = decode_frame if vec["decoder"] == "decode_frame" else decode_change
    with pytest.raises(errors.DecodeError) as info:
        decoder(HEX[name])
    assert type(info.value).__name__ == vec["error"]
    assert type(info.value) is getattr(errors, vec["error"])
    assert info.value.reason == vec["reason"]
    if decoder is decode_change:
        res = _replica(CHANGE_1, CHANGE_2).apply(HEX[name], NOW_APPLY)
        assert (res.status, res.reason) == ("rejected", vec["reason"])


@pytest.mark.parametrize("name", sorted(V["rejected"]))
def test_rejected_changes_get_the_documented_reason(name: str) -> None:
    vec = V["rejected"][name]
    data = HEX[name]
    decode_change(data)  # well-formed
    r = _replica(CHANGE_1, CHANGE_2)
    for earlier in vec["after"]:
        assert r.apply(HEX[earlier], NOW_APPLY).reason == V["rejected"][earlier]["reason"]
    before = r.state()
    res = r.apply(data, NOW_APPLY)
    assert (res.status, res.reason) == ("rejected", vec["reason"])
    assert res.change_id is not None and res.change_id.hex() == vec["change_id"]
    assert r.state() == before and r.change_count() == 3
    again = r.apply(data, NOW_APPLY)  # final and transient reasons alike: same verdict
    assert (again.status, again.reason) == ("rejected", vec["reason"])


def test_a_buffered_dependent_is_dropped_when_its_dep_is_rejected() -> None:
    r = _replica(CHANGE_1, CHANGE_2)
    dependent = HEX["reject/depends-on-rejected"]
    assert r.apply(dependent, NOW_APPLY).status == "buffered"
    assert r.apply(HEX["reject/bad-seq"], NOW_APPLY).reason == "bad_seq"
    assert r.buffered_count() == 0
    assert r.rejections.get("depends_on_rejected") == 1
    again = r.apply(dependent, NOW_APPLY)
    assert (again.status, again.reason) == ("rejected", "depends_on_rejected")


def test_future_timestamp_is_transient() -> None:
    data = HEX["reject/future-timestamp"]
    r = _replica(CHANGE_1, CHANGE_2)
    assert r.apply(data, NOW_APPLY).reason == "future_timestamp"
    assert r.apply(data, NOW_APPLY + 3600).status == "applied"
    assert r.exists((public_key(SEED_A), 1)) is False  # it deleted A/1


# --------------------------------------------------------------------------- the prose


def test_every_rejection_reason_is_documented() -> None:
    """The reason table of docs/protocol.md lists exactly the reasons the code can give."""
    text = DOC.read_text(encoding="utf-8")
    section = text[text.index("| reason | kind | meaning |") :]
    section = section[: section.index("\n\n")]
    documented = set(re.findall(r"^\| `([a-z_]+)` \|", section, re.M))
    crdt = Path(__file__).resolve().parents[2] / "meshnode" / "crdt"
    source = "".join((crdt / f).read_text()
                     for f in ("replica_apply.py", "replica_integrate.py", "scene_rules.py",
                               "privacy.py", "private_rules.py", "private_content.py"))
    in_code = set(re.findall(r"Rejected\(\"([a-z_]+)\"\)", source))
    in_code |= set(re.findall(r"_reject\([^,]+, \"([a-z_]+)\"\)", source))
    in_code |= {"too_large", "malformed_msgpack", "limit_exceeded", "schema"}  # decode
    in_code |= set(re.findall(r"return None, \"([a-z_]+)\"", (crdt / "redemption.py").read_text()))
    assert documented == in_code
    transient = set(re.findall(r"^\| `([a-z_]+)` \| \*\*transient\*\*", section, re.M))
    assert transient == set(TRANSIENT_REASONS)


def test_last_role_op_for_a_member_in_one_change_counts() -> None:
    """docs/protocol.md: of several ROLE ops for one member in one change, the last counts."""
    r = SceneReplica.from_genesis(GENESIS, Identity.from_private_bytes(SEED_C))
    a = Identity.from_private_bytes(SEED_A)
    data = encode_change(
        author=a.public_key, seq=2, deps=[ROOM_ID], hlc=hlc_at(NOW_CHANGE_1),
        actors=[public_key(SEED_B)], names=[], ops=[[5, 0, 3], [5, 0, 1]], room_id=ROOM_ID,
        sign=a.sign,
    )
    assert r.apply(data, NOW_APPLY).status == "applied"
    assert r.role_of(public_key(SEED_B)) == "viewer"
