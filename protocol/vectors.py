"""Test vectors for ``docs/protocol.md``, built from fixed seeds, a fixed nonce and fixed times.

``build_vectors()`` returns every vector as plain data (bytes as lowercase hex);
``python -m protocol.vectors`` prints the "Test vectors" section of the specification, which
``tests/protocol/test_vectors.py`` checks against the document byte for byte. Ed25519 signing
is deterministic (RFC 8032), so the same code always yields the same bytes.

This module is as pure as the rest of ``protocol``: it signs with ``cryptography`` directly and
derives PeerIDs itself, without importing ``meshnode``. The tests check that ``meshnode``'s
``Identity`` and ``SceneReplica`` agree with it.

The fixed inputs, keys, PeerIDs and JSON helpers are in ``protocol.vector_inputs`` (all
importable from here); this module builds the vectors and renders them as markdown.
"""

import json
from typing import Any

from protocol.bloom import BloomFilter
from protocol.change import (
    OP_CREATE,
    OP_DELETE,
    OP_GENESIS,
    OP_MOVE,
    OP_ROLE,
    OP_SET,
    ROLE_EDITOR,
    ROLE_VIEWER,
    change_id,
    encode_change,
)
from protocol.frames import (
    Changes,
    Disconnect,
    ForwardJoin,
    Graft,
    Heads,
    IHave,
    Message,
    Prune,
    Shuffle,
    ShuffleReply,
    Snapshot,
    Want,
    encode_frame,
    make_presence,
)
from protocol.msgpack_io import pack
from protocol.vector_inputs import _B58_ALPHABET as _B58_ALPHABET
from protocol.vector_inputs import _PEER_ID_PREFIX as _PEER_ID_PREFIX
from protocol.vector_inputs import BLOOM_SALT as BLOOM_SALT
from protocol.vector_inputs import MAX_CLOCK_SKEW_S as MAX_CLOCK_SKEW_S
from protocol.vector_inputs import NONCE as NONCE
from protocol.vector_inputs import NOW_APPLY as NOW_APPLY
from protocol.vector_inputs import NOW_CHANGE_1 as NOW_CHANGE_1
from protocol.vector_inputs import NOW_CHANGE_2 as NOW_CHANGE_2
from protocol.vector_inputs import NOW_GENESIS as NOW_GENESIS
from protocol.vector_inputs import ROOM_NAME as ROOM_NAME
from protocol.vector_inputs import SEED_A as SEED_A
from protocol.vector_inputs import SEED_B as SEED_B
from protocol.vector_inputs import SEED_C as SEED_C
from protocol.vector_inputs import SNAPSHOT_PLACEHOLDER as SNAPSHOT_PLACEHOLDER
from protocol.vector_inputs import UNKNOWN_HASH as UNKNOWN_HASH
from protocol.vector_inputs import _change_json as _change_json
from protocol.vector_inputs import _make_change as _make_change
from protocol.vector_inputs import _signed as _signed
from protocol.vector_inputs import b58encode as b58encode
from protocol.vector_inputs import frame_json as frame_json
from protocol.vector_inputs import hlc_at as hlc_at
from protocol.vector_inputs import peer_id as peer_id
from protocol.vector_inputs import public_key as public_key
from protocol.vector_inputs import signer as signer
from protocol.vector_inputs import to_json as to_json
from protocol.vector_inputs import to_json_plain as to_json_plain

# --------------------------------------------------------------------------- the vectors


def build_vectors() -> dict[str, Any]:
    """Every test vector of ``docs/protocol.md`` as plain data (bytes as hex strings)."""
    a, b, c = public_key(SEED_A), public_key(SEED_B), public_key(SEED_C)
    pa, pb = peer_id(a), peer_id(b)

    # (b) valid changes ------------------------------------------------------------------
    genesis, genesis_json = _make_change(
        SEED_A, seq=1, deps=[], hlc=hlc_at(NOW_GENESIS), actors=[], names=[],
        ops=[[OP_GENESIS, ROOM_NAME, NONCE]], room_id=b"",
    )
    room = change_id(genesis)
    tags = {"a": "x", "b": [1, True, None]}  # keys sorted, as in every canonical map
    uri = "https://example.org/chair.glb"
    change1, change1_json = _make_change(
        SEED_A, seq=2, deps=[room], hlc=hlc_at(NOW_CHANGE_1), actors=[b],
        names=["transform", "position", "model", "uri", "meta", "tags"],
        ops=[
            [OP_CREATE, 1, None],  # A/1 under the root
            [OP_SET, 1, 0, 1, [0.0, 1.5, -2.0]],  # A/1 transform.position
            [OP_CREATE, 2, 1],  # A/2 under A/1
            [OP_SET, 2, 2, 3, uri],  # A/2 model.uri
            [OP_SET, 2, 4, 5, tags],  # A/2 meta.tags
            [OP_CREATE, 3, None],  # A/3 under the root ...
            [OP_DELETE, 3],  # ... and deleted again
            [OP_ROLE, 0, ROLE_EDITOR, 0],  # B becomes an editor (cut-off: B's seq seen, 0)
        ],
        room_id=room,
    )
    id1 = change_id(change1)
    change2, change2_json = _make_change(
        SEED_B, seq=1, deps=[id1], hlc=hlc_at(NOW_CHANGE_2), actors=[0],
        names=["transform", "position", "light", "intensity"],
        ops=[
            [OP_CREATE, 1, [0, 1]],  # B/1 under A/1 (actor 0 = the author of dep 0 = A)
            [OP_SET, 1, 0, 1, [3.0, 0.0, 0.0]],  # B/1 transform.position
            [OP_SET, 1, 2, 3, 800],  # B/1 light.intensity
            [OP_CREATE, 2, None],  # B/2 under the root
            [OP_MOVE, 1, 2],  # B/1 moves under B/2
        ],
        room_id=room,
    )
    id2 = change_id(change2)
    state = {
        f"{pa}/1": {"parent": "root", "components": {"transform": {"position": [0.0, 1.5, -2.0]}}},
        f"{pa}/2": {
            "parent": f"{pa}/1",
            "components": {"model": {"uri": uri}, "meta": {"tags": tags}},
        },
        f"{pb}/1": {
            "parent": f"{pb}/2",
            "components": {
                "transform": {"position": [3.0, 0.0, 0.0]},
                "light": {"intensity": 800},
            },
        },
        f"{pb}/2": {"parent": "root", "components": {}},
    }

    # (a) frames -------------------------------------------------------------------------
    bloom = BloomFilter.build([room, id1, id2], BLOOM_SALT).encode()
    presence_fields = {"position": [1.0, 1.6, -0.5], "speaking": True}
    presence = make_presence(room, b, 7, presence_fields, signer(SEED_B))
    frame_list: list[tuple[str, Message, str]] = [
        ("frame/changes", Changes(room, (change1, change2), True),
         "`Changes` (type 1), an eager push of `change/1` and `change/2` (below); the JSON "
         "lists the SHA-256 of each carried change, i.e. their change IDs."),
        ("frame/heads", Heads(room, (id2,), ((a, 2), (b, 1)), bloom, True),
         "`Heads` (type 2) of a replica holding the three changes below (its only head is "
         "`change/2`; its version vector: A at seq 2, B at seq 1), with a Bloom filter "
         "(salt `5a17f00d`) "
         "of all three change IDs, asking for the receiver's heads in reply."),
        ("frame/snapshot", Snapshot(room, SNAPSHOT_PLACEHOLDER),
         "`Snapshot` (type 3). The data here is an opaque placeholder, not a valid snapshot "
         "(see [Snapshots](#snapshots))."),
        ("frame/ihave", IHave(room, (id1, id2)), "`IHave` (type 4) announcing two changes."),
        ("frame/graft", Graft(room, (id2,)), "`Graft` (type 5) asking for `change/2`."),
        ("frame/prune", Prune(room, (a,)), "`Prune` (type 6) for A's changes."),
        ("frame/want", Want(room, (id1,)), "`Want` (type 7) asking for `change/1`."),
        ("frame/presence", presence,
         "`Presence` (type 8): B's update number 7, signed by B."),
        ("frame/forward-join", ForwardJoin(room, pb, 3),
         "`ForwardJoin` (type 9): B joined, 3 more hops to walk."),
        ("frame/shuffle", Shuffle(room, pa, 2, (pb, peer_id(c))),
         "`Shuffle` (type 10) from A, 2 more hops, offering B and C."),
        ("frame/shuffle-reply", ShuffleReply(room, (pa,)), "`ShuffleReply` (type 11) offering A."),
        ("frame/disconnect", Disconnect(room, (peer_id(c),)),
         "`Disconnect` (type 12), suggesting C instead."),
    ]
    frames = {
        name: (encode_frame(msg), frame_json(msg), about) for name, msg, about in frame_list
    }

    # (c) invalid inputs for the decoders ------------------------------------------------
    heads_frame = frames["frame/heads"][0]
    deps2 = sorted([room, id1])
    invalid: list[tuple[str, str, bytes, str, str]] = [
        ("invalid/frame-version-2", "decode_frame", pack([2, 2, room, []]), "UnknownVersion",
         "A frame of protocol version 2: not spoken by a version-1 node."),
        ("invalid/frame-type-99", "decode_frame", pack([1, 99, room, []]),
         "UnknownMessageType", "Message type 99 is not defined in version 1."),
        ("invalid/frame-version-bool", "decode_frame", pack([True, 2, room, []]),
         "SchemaError", "The version is `true`, not an integer."),
        ("invalid/frame-truncated", "decode_frame", heads_frame[:-1], "MalformedMsgpack",
         "`frame/heads` without its last byte."),
        ("invalid/frame-trailing-byte", "decode_frame", heads_frame + b"\xc0",
         "MalformedMsgpack", "`frame/heads` followed by one more msgpack object (`nil`)."),
        ("invalid/frame-ext-type", "decode_frame", b"\xd4\x01\x00", "MalformedMsgpack",
         "An ext type (fixext 1): ext types are never allowed."),
        ("invalid/frame-huge-array", "decode_frame", b"\xdd\xff\xff\xff\xff",
         "MalformedMsgpack", "An array32 header declaring 2^32 - 1 items, and no items."),
        ("invalid/frame-short-room-id", "decode_frame", pack([1, 2, room[:31], [], b"", False]),
         "SchemaError", "A `Heads` frame whose room ID is 31 bytes."),
        ("invalid/frame-duplicate-head", "decode_frame",
         pack([1, 2, room, [id2, id2], b"", False]),
         "SchemaError", "A `Heads` frame naming one head twice."),
        ("invalid/frame-missing-field", "decode_frame", pack([1, 2, room, [id2], [], b""]),
         "SchemaError", "A `Heads` frame without its `reply` field."),
        ("invalid/frame-push-not-bool", "decode_frame", pack([1, 1, room, [], 1]),
         "SchemaError", "A `Changes` frame whose `push` flag is `1`, not a bool."),
        ("invalid/frame-bad-peer-id", "decode_frame", pack([1, 9, room, "12D3KooW0OIl", 3]),
         "SchemaError", "A `ForwardJoin` whose peer has characters outside base58 (`0OIl`)."),
        ("invalid/frame-ttl-too-large", "decode_frame", pack([1, 9, room, pb, 17]),
         "SchemaError", "A `ForwardJoin` with a TTL of 17 (at most 16)."),
        ("invalid/frame-presence-nan", "decode_frame",
         pack([1, 8, room, pack([b, 8, {"x": float("nan")}]), presence.signature]),
         "SchemaError", "A `Presence` whose fields hold a NaN."),
        ("invalid/change-unsorted-deps", "decode_change",
         _signed(SEED_A, room, [a, 3, deps2[::-1], hlc_at(NOW_APPLY), [[], [], [[4, 1]]]]),
         "SchemaError", "Deps in descending order (they must be sorted and unique)."),
        ("invalid/change-seq-bool", "decode_change",
         _signed(SEED_A, room, [a, True, [id2], hlc_at(NOW_APPLY), [[], [], [[4, 1]]]]),
         "SchemaError", "`seq` is `true`: a bool is never accepted where an integer is."),
        ("invalid/change-nan", "decode_change",
         _signed(SEED_A, room, [a, 3, [id2], hlc_at(NOW_APPLY),
                                [[], ["c", "f"], [[2, 1, 0, 1, float("nan")]]]]),
         "SchemaError", "A `SET` whose value is NaN."),
        ("invalid/change-value-too-deep", "decode_change",
         _signed(SEED_A, room, [a, 3, [id2], hlc_at(NOW_APPLY),
                                [[], ["c", "f"], [[2, 1, 0, 1, [[[[[[[[[1]]]]]]]]]]]]]),
         "LimitExceeded", "A `SET` value nested 9 arrays deep (the limit is 8)."),
        ("invalid/change-bytes-value", "decode_change",
         _signed(SEED_A, room, [a, 3, [id2], hlc_at(NOW_APPLY),
                                [[], ["c", "f"], [[2, 1, 0, 1, b"\x01\x02"]]]]),
         "SchemaError", "A `SET` whose value is a bin: values never hold bytes."),
        ("invalid/change-owner-role", "decode_change",
         _signed(SEED_A, room, [a, 3, [id2], hlc_at(NOW_APPLY), [[c], [], [[5, 0, 4]]]]),
         "SchemaError", "A `ROLE` op granting role 4 (owner is never on the wire)."),
        ("invalid/change-role-five-elements", "decode_change",
         _signed(SEED_A, room, [a, 3, [id2], hlc_at(NOW_APPLY), [[c], [], [[5, 0, 1, 0, 0]]]]),
         "SchemaError", "A `ROLE` op of 5 elements (3, 4 or 6 are valid)."),
        ("invalid/change-actor-is-author", "decode_change",
         _signed(SEED_A, room, [a, 3, [id2], hlc_at(NOW_APPLY), [[a], [], [[4, [0, 1]]]]]),
         "SchemaError", "The actors table lists the author."),
        ("invalid/change-no-ops", "decode_change",
         _signed(SEED_A, room, [a, 3, [id2], hlc_at(NOW_APPLY), [[], [], []]]),
         "SchemaError", "A change with no ops."),
        ("invalid/change-short", "decode_change", b"\x00" * 64, "SchemaError",
         "64 bytes: too short to hold a body and a signature."),
    ]

    # (c) signed, well-formed changes that a replica rejects ------------------------------
    def by(seed: bytes, seq: int, deps: list[bytes], hlc: int, actors: list[bytes],
           names: list[str], ops: list[Any], room_id: bytes = room) -> bytes:
        return encode_change(
            author=public_key(seed), seq=seq, deps=deps, hlc=hlc, actors=actors, names=names,
            ops=ops, room_id=room_id, sign=signer(seed),
        )

    later = hlc_at(NOW_APPLY)
    bad_seq = by(SEED_A, 5, [id2], later, [], [], [[OP_DELETE, 1]])
    sig_flipped = change2[:-1] + bytes([change2[-1] ^ 0x01])
    rejected: list[tuple[str, bytes, str, str]] = [
        ("reject/bad-signature", sig_flipped, "bad_signature",
         "Change 2 with the last bit of its signature flipped."),
        ("reject/other-room", by(SEED_A, 3, [id2], later, [], [], [[OP_DELETE, 1]],
                                 room_id=b"\x00" * 32),
         "bad_signature", "A change by A signed for another room (room ID 00…00)."),
        ("reject/future-timestamp",
         by(SEED_A, 3, [id2], hlc_at(NOW_APPLY + 3600), [], [], [[OP_DELETE, 1]]),
         "future_timestamp", "A change stamped one hour after the receiver's clock."),
        ("reject/unknown-author",
         by(SEED_C, 1, [UNKNOWN_HASH], later, [], [], [[OP_CREATE, 1, None]]),
         "unknown_author", "A stranger's change that depends on a change nobody has."),
        ("reject/foreign-genesis", by(SEED_A, 3, [], later, [], [], [[OP_DELETE, 1]]),
         "foreign_genesis", "A change with no deps that is not this room's genesis."),
        ("reject/bad-seq", bad_seq, "bad_seq",
         "A's next change must have seq 3, this one has 5."),
        ("reject/depends-on-rejected",
         by(SEED_A, 6, [change_id(bad_seq)], later + 1, [], [], [[OP_DELETE, 2]]),
         "depends_on_rejected",
         "A change whose dep is `reject/bad-seq`, offered *after* it (offered first, it "
         "would be buffered, then dropped with this reason when its dep is rejected)."),
        ("reject/clock-not-after-deps",
         by(SEED_A, 3, [id2], hlc_at(NOW_CHANGE_2), [], [], [[OP_DELETE, 1]]),
         "clock_not_after_deps", "A change whose HLC equals its dep's (change 2)."),
        ("reject/not-a-member", by(SEED_C, 1, [id2], later, [], [], [[OP_CREATE, 1, None]]),
         "not_a_member", "A stranger's change that depends on change 2."),
        ("reject/root-is-immutable",
         by(SEED_A, 3, [id2], later, [], ["c", "f"], [[OP_SET, None, 0, 1, 1]]),
         "root_is_immutable", "A `SET` on the root."),
        ("reject/unknown-entity",
         by(SEED_A, 3, [id2], later, [], ["c", "f"], [[OP_SET, 99, 0, 1, 1]]),
         "unknown_entity", "A `SET` on A/99, which was never created."),
        ("reject/entity-exists",
         by(SEED_A, 3, [id2], later, [], [], [[OP_CREATE, 3, None]]),
         "entity_exists", "Creating A/3 again: deleted entity IDs are never reused."),
        ("reject/not-entity-owner",
         by(SEED_B, 2, [id2], later, [a], ["c", "f"], [[OP_SET, [0, 1], 0, 1, 1]]),
         "not_entity_owner", "B (an editor) sets a field of A/1."),
        ("reject/role-change-not-allowed",
         by(SEED_B, 2, [id2], later, [c], [], [[OP_ROLE, 0, ROLE_VIEWER]]),
         "role_change_not_allowed", "B (an editor) makes C a viewer."),
        ("reject/bad-cutoff",
         by(SEED_A, 3, [id2], later, [b], [], [[OP_ROLE, 0, ROLE_VIEWER, 0]]),
         "bad_cutoff", "A demotes B naming cut-off 0, but B's seq 1 (change 2) is in its "
                       "past: the cut-off must be 1."),
        ("reject/misplaced-genesis",
         by(SEED_A, 3, [id2], later, [], [], [[OP_GENESIS, "again", b""]]),
         "misplaced_genesis", "A `GENESIS` op in a change other than the genesis."),
    ]

    return {
        "identities": {
            name: {"seed": seed.hex(), "public_key": public_key(seed).hex(),
                   "peer_id": peer_id(public_key(seed))}
            for name, seed in (("A", SEED_A), ("B", SEED_B), ("C", SEED_C))
        },
        "room": {
            "name": ROOM_NAME,
            "nonce": NONCE.hex(),
            "room_id": room.hex(),
            "apply_now": NOW_APPLY,
            "max_clock_skew_s": MAX_CLOCK_SKEW_S,
            "members": {pa: "owner", pb: "editor"},
            "heads": [id2.hex()],
            "state": state,
        },
        "frames": {
            name: {"hex": data.hex(), "decoded": decoded, "about": about}
            for name, (data, decoded, about) in frames.items()
        },
        "changes": {
            "change/genesis": {
                "hex": genesis.hex(), "decoded": genesis_json,
                "about": f"The genesis change of room {ROOM_NAME!r}, by A at "
                         f"t = {NOW_GENESIS:.0f} s. Its change ID is the room ID.",
            },
            "change/1": {
                "hex": change1.hex(), "decoded": change1_json,
                "about": "A (owner, seq 2) creates A/1, A/2 under A/1 and A/3, sets three "
                         "fields, deletes A/3 and makes B an editor.",
            },
            "change/2": {
                "hex": change2.hex(), "decoded": change2_json,
                "about": "B (editor, seq 1) creates B/1 under A's entity A/1 (an "
                         "`[actor, counter]` reference), sets two fields, creates B/2 and "
                         "moves B/1 under B/2.",
            },
        },
        "invalid": {
            name: {"hex": data.hex(), "decoder": decoder, "error": error,
                   "reason": _REASONS[error], "about": about}
            for name, decoder, data, error, about in invalid
        },
        "rejected": {
            name: {"hex": data.hex(), "reason": reason, "about": about,
                   "change_id": change_id(data).hex(),
                   "after": ["reject/bad-seq"] if name == "reject/depends-on-rejected" else []}
            for name, data, reason, about in rejected
        },
    }


_REASONS = {
    "FrameTooLarge": "too_large",
    "MalformedMsgpack": "malformed_msgpack",
    "LimitExceeded": "limit_exceeded",
    "SchemaError": "schema",
    "UnknownVersion": "unknown_version",
    "UnknownMessageType": "unknown_type",
}


# --------------------------------------------------------------------------- markdown

BEGIN_MARKER = "<!-- BEGIN GENERATED VECTORS (python -m protocol.vectors) -->"
END_MARKER = "<!-- END GENERATED VECTORS -->"


def _hex_block(label: str, hexstr: str, width: int = 64) -> str:
    lines = [hexstr[i : i + width] for i in range(0, len(hexstr), width)] or [""]
    return f"```hex vector={label}\n" + "\n".join(lines) + "\n```\n"


def _dumps(obj: Any, indent: int = 0, lead: int = 0, width: int = 96) -> str:
    """JSON with sorted keys, one line per item unless the whole value fits on one line.

    ``indent`` is the current indentation; ``lead`` the width of a key before the value.
    """
    flat = json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(", ", ": "))
    if indent + lead + len(flat) <= width or not isinstance(obj, dict | list) or not obj:
        return flat
    pad = " " * (indent + 2)
    if isinstance(obj, list):
        items = [pad + _dumps(x, indent + 2) for x in obj]
        return "[\n" + ",\n".join(items) + "\n" + " " * indent + "]"
    items = []
    for k in sorted(obj):
        key = json.dumps(k, ensure_ascii=False) + ": "
        items.append(pad + key + _dumps(obj[k], indent + 2, len(key)))
    return "{\n" + ",\n".join(items) + "\n" + " " * indent + "}"


def _json_block(label: str, obj: Any) -> str:
    text = _dumps(obj)
    return f"```json vector={label}\n{text}\n```\n"


def render_markdown(v: dict[str, Any] | None = None) -> str:
    """The generated part of the "Test vectors" section of ``docs/protocol.md``."""
    v = build_vectors() if v is None else v
    out: list[str] = [BEGIN_MARKER, ""]
    out.append("### Identities\n")
    out.append(_json_block("identities", v["identities"]))
    out.append("### Frames\n")
    for name, fr in v["frames"].items():
        out.append(f"#### `{name}`\n\n{fr['about']}\n")
        out.append(_hex_block(name, fr["hex"]))
        out.append(_json_block(name + ".decoded", fr["decoded"]))
    out.append("### Changes\n")
    out.append(
        "Hex of the wire bytes (`body || signature`); the JSON shows the decoded fields, with "
        "`bin` values as `{\"$bytes\": \"<hex>\"}`, the signing room ID (empty for the genesis) "
        "and the change ID.\n"
    )
    for name, ch in v["changes"].items():
        out.append(f"#### `{name}`\n\n{ch['about']}\n")
        out.append(_hex_block(name, ch["hex"]))
        out.append(_json_block(name + ".decoded", ch["decoded"]))
    out.append("### Room and resulting state\n")
    out.append(
        "A replica that starts from `change/genesis` and applies `change/1` and `change/2` "
        "(in any order, with its clock at `apply_now`) has this room ID, these members and "
        "heads, and this `state()`; A/3 was deleted and is absent.\n"
    )
    out.append(_json_block("room", v["room"]))
    out.append("### Invalid inputs\n")
    out.append(
        "Each must make the named decoder raise the named `protocol.errors` class, whose "
        "`reason` is given; offered to a replica, each `decode_change` vector is rejected "
        "with that same `reason`.\n"
    )
    rows = ["| vector | decoder | error | reason | what is wrong |", "|---|---|---|---|---|"]
    for name, inv in v["invalid"].items():
        rows.append(
            f"| `{name}` | `{inv['decoder']}` | `{inv['error']}` | `{inv['reason']}` "
            f"| {inv['about']} |"
        )
    out.append("\n".join(rows) + "\n")
    for name, inv in v["invalid"].items():
        out.append(_hex_block(name, inv["hex"]))
    out.append("### Rejected changes\n")
    out.append(
        "Well-formed changes, each offered alone (except where said) to a replica holding the "
        "three changes above, with its clock at `apply_now`. Each is rejected with the given "
        "reason.\n"
    )
    rows = ["| vector | reason | what is wrong |", "|---|---|---|"]
    for name, rej in v["rejected"].items():
        rows.append(f"| `{name}` | `{rej['reason']}` | {rej['about']} |")
    out.append("\n".join(rows) + "\n")
    for name, rej in v["rejected"].items():
        out.append(_hex_block(name, rej["hex"]))
    out.append(END_MARKER)
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    print(render_markdown(), end="")
