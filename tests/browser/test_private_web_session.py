"""People in browsers edit private rooms, at the session level: a real ``BrowserSession``,
``PeopleRoom``, ``RoomRuntime`` and a private ``SceneReplica``, in memory, against a Python
model of the page that checks sealed drafts as wire.js does (the JavaScript itself is checked
in real Chromium in ``test_private_web.py``).

- A reader who may edit gets a body sealed under the room's current epoch, with the epoch's
  secret and creating change; the page checks the key chain and the plaintext, signs, and the
  change is sealed on the wire and read by other readers as the person's.
- Pages that are not readers (a stranger, a viewer asking to edit, a removed member) get no
  key material and no content; a removed member's page gets no newer key.
- A node that lies (another secret, another epoch change, other ops) is caught by the page.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import random
import time
from typing import Any

import msgpack
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given, settings
from hypothesis import strategies as st

from meshnode.crdt import ROOT, EntityId, SceneReplica
from meshnode.crdt.sealing import commitment, derived_key, open_sealed, pad, seal_aad
from meshnode.identity import Identity
from meshnode.overlay import RoomOverlay
from meshnode.overlay.sealed_presence import presence_aad
from meshnode.runtime.room import LIVE_OVERLAY, RoomRuntime
from meshnode.web.people import PeopleRoom, identify_payload
from meshnode.web.session import BrowserSession
from protocol.change import decode_change, signing_payload
from protocol.frames import presence_payload
from protocol.msgpack_io import pack
from protocol.private_ops import OP_ROTATE, OP_SEALED

CANARY = "CANARY-7f3e"


def durable_now(room_id: bytes, cid: bytes, data: bytes) -> asyncio.Future[None]:
    fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    fut.set_result(None)
    return fut


class PrivateNode:
    """A node that owns a private, invite-only room (its owner is a reader)."""

    def __init__(self) -> None:
        self.identity = Identity.generate()
        replica = SceneReplica.create(self.identity, time.time(), name=f"vault {CANARY}",
                                      nonce=b"p", private=True)
        overlay = RoomOverlay(replica, self.identity, LIVE_OVERLAY, rng=random.Random(1),
                              wall_clock=time.time)
        self.runtime = RoomRuntime(overlay, send=lambda *a: False, persist=durable_now)
        self.room = PeopleRoom(self.runtime, admit_policy=lambda: "invite",
                               admit_role="editor")
        self.replica = replica

    async def set_role(self, person: Identity, role: str) -> None:
        await self.runtime.edit(lambda r: r.grant(person.public_id, role))


def open_sealed_draft(body: bytes, room_id: bytes, sealed: dict[str, str]) -> list[Any]:
    """What wire.js checkSealedDraft does before comparing ops: the epoch change hashes to the
    sealed op's epoch, its ROTATE commits to the secret, the ops open under the derived key.
    Returns ``[actors, names, ops]``; raises AssertionError naming the broken link."""
    ch = decode_change(body + bytes(64))
    assert ch.actors == [] and ch.names == [] and len(ch.ops) == 1, "one sealed op in clear"
    code, epoch_ref, nonce, ct = ch.ops[0]
    assert code == OP_SEALED and len(epoch_ref) == 32, "a sealed op under an existing epoch"
    secret = base64.b64decode(sealed["secret"])
    created = base64.b64decode(sealed["epoch"])
    assert hashlib.sha256(created).digest() == epoch_ref, "epoch change"
    rotate = [op for op in decode_change(created).ops if op[0] == OP_ROTATE]
    assert len(rotate) == 1 and commitment(secret, room_id) == rotate[0][1], "commitment"
    plain, why = open_sealed(derived_key(secret, room_id, "content"), nonce, ct,
                             seal_aad(room_id, ch.author, ch.seq, ch.hlc, epoch_ref))
    assert plain is not None, f"opens: {why}"
    block: list[Any] = msgpack.unpackb(plain)
    return block


class Page:
    """app.js + identity.js in Python, for a private room: identify, check sealed drafts."""

    def __init__(self, node: PrivateNode, person: Identity | None = None) -> None:
        self.node = node
        self.person = person or Identity.generate()
        self.sent: list[dict[str, Any]] = []
        self.session = BrowserSession(node.room, self._receive, session_name="page")
        self.tasks: list[asyncio.Task[None]] = []
        self.secrets: set[bytes] = set()
        self.opened: list[list[Any]] = []
        self.lie: Any = None  # the node's lie, applied to the sign request before the check
        self.req = 0

    def _receive(self, text: str) -> None:
        msg = json.loads(text)
        self.sent.append(msg)
        if msg["t"] == "sign":
            self.tasks.append(asyncio.get_running_loop().create_task(self._sign(msg)))

    async def _sign(self, msg: dict[str, Any]) -> None:
        if self.lie is not None:
            msg = self.lie(msg)
        body = base64.b64decode(msg["body"])
        room_id = self.node.runtime.room_id
        answer: dict[str, Any]
        try:
            assert "sealed" in msg, "a private room's draft comes with its key material"
            self.secrets.add(base64.b64decode(msg["sealed"]["secret"]))
            self.opened.append(open_sealed_draft(body, room_id, msg["sealed"]))
        except AssertionError as err:
            answer = {"t": "sign_refused", "sreq": msg["sreq"], "reason": "mismatch",
                      "detail": str(err)}
        else:
            sig = self.person.sign(signing_payload(room_id, body))
            answer = {"t": "signed", "sreq": msg["sreq"], "sig": base64.b64encode(sig).decode()}
        await self.session.handle(json.dumps(answer))

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.sent if m["t"] == kind]

    def scene(self) -> dict[str, Any]:
        """The state the page holds (welcome + state + delta messages)."""
        scene: dict[str, Any] = {}
        for m in self.sent:
            if m["t"] in ("welcome", "state"):
                scene = dict(m.get("state", {}))
            elif m["t"] == "delta":
                scene.update(m.get("set", {}))
                for k in m.get("del", []):
                    scene.pop(k, None)
        return scene

    async def start(self) -> dict[str, Any]:
        self.session.start()
        challenge = base64.b64decode(self.of("welcome")[0]["challenge"])
        sig = self.person.sign(identify_payload(self.node.runtime.room_id,
                                                self.node.identity.public_key, challenge))
        await self.session.handle(json.dumps({"t": "identify", "peer": self.person.public_id,
                                              "sig": base64.b64encode(sig).decode()}))
        return self.of("identified")[-1]

    async def edit(self, **msg: Any) -> dict[str, Any]:
        self.req += 1
        req = self.req
        await self.session.handle(json.dumps({**msg, "req": req}))
        for task in self.tasks:
            await task
        return [m for m in self.sent if m["t"] == "ack" and m["req"] == req][-1]


async def flushed() -> None:
    """Let the session's coalesced pushes run (they are scheduled on the loop)."""
    for _ in range(3):
        await asyncio.sleep(0.06)


async def test_a_reader_edits_a_private_room_and_other_readers_read_it() -> None:
    node = PrivateNode()
    ann = Identity.generate()
    await node.set_role(ann, "editor")
    page = Page(node, ann)
    assert page.of("welcome") == []
    identified = await page.start()
    assert identified["role"] == "editor"
    welcome = page.of("welcome")[0]
    # Before the page proved its person's key, the node showed nothing of the room.
    assert welcome["room_name"] == "" and welcome["state"] == {} and welcome["presence"] == {}
    assert welcome["privacy"]["you"] == "not_identified"
    await flushed()
    shown = page.of("privacy")[-1]["privacy"]
    assert shown["you"] == "reader" and shown["room_name"] == f"vault {CANARY}"
    assert shown["this_node"] == "reader" and shown["keys"][ann.public_id] is True

    ack = await page.edit(t="create", parent="root", components={"name": {"value": CANARY}})
    assert ack["ok"] is True, ack
    made = ack["id"]
    assert EntityId.parse(made).creator == ann.public_key
    _actors, names, ops = page.opened[-1]
    assert names == ["name", "value"] and ops[1][-1] == CANARY
    # Sealed on the wire: the person's change carries no clear scene op and no canary.
    cid = next(c for c in node.replica.recent_changes(5)
               if node.replica.change_author(c) == ann.public_key)
    raw = node.replica.change_bytes(cid)
    assert raw is not None and CANARY.encode() not in raw
    assert [op[0] for op in decode_change(raw).ops] == [OP_SEALED]
    await flushed()
    assert page.scene()[made]["components"]["name"] == {"value": CANARY}
    # Another reader (a Python client of the room) reads it, authored by Ann's key.
    bob = Identity.generate()
    await node.set_role(bob, "viewer")
    other = SceneReplica.from_genesis(node.replica.genesis, bob)
    other.apply_many(node.replica.changes_since([]), time.time())
    assert other.state()[made]["components"]["name"] == {"value": CANARY}
    assert other.voided(cid) is None and other.change_author(cid) == ann.public_key
    # Ann's second edit: the next seq of her own chain, sealed the same way.
    ack = await page.edit(t="set", id=made, component="name", field="value", value="renamed")
    assert ack["ok"] is True and ack["seq"] == 2
    assert page.session.counters["epoch_keys_given"] == 2
    assert node.replica.equivocations == []


async def test_pages_that_are_not_readers_get_no_content_and_no_keys() -> None:
    node = PrivateNode()
    secret_entity = await node.runtime.edit(
        lambda r: r.create_entity(ROOT, {"name": {"value": CANARY}}))
    # A stranger who reaches the node (an invite-only room: not admitted).
    stranger = Page(node)
    identified = await stranger.start()
    assert identified["role"] == "none" and identified["problem"] == "invite_only"
    await flushed()
    ack = await stranger.edit(t="create", parent="root", components={})
    assert ack["ok"] is False and ack["reason"] == "not_a_member"
    ack = await stranger.edit(t="delete", id=str(secret_entity))
    assert ack["ok"] is False
    assert stranger.of("sign") == [] and stranger.secrets == set()
    assert CANARY not in json.dumps(stranger.sent)
    assert stranger.scene() == {} and stranger.of("privacy")[-1]["privacy"]["you"] \
        == "not_a_reader"
    # A viewer reads the room (their node renders it) but gets no key: viewers do not edit.
    vera = Identity.generate()
    await node.set_role(vera, "viewer")
    viewer = Page(node, vera)
    await viewer.start()
    await flushed()
    assert viewer.scene()[str(secret_entity)]["components"]["name"] == {"value": CANARY}
    ack = await viewer.edit(t="create", parent="root", components={})
    assert ack["ok"] is False and ack["reason"] == "viewer_cannot_edit"
    assert viewer.of("sign") == []
    # A host-role person holds no keys: nothing shown, nothing drafted.
    hal = Identity.generate()
    await node.set_role(hal, "host")
    host_page = Page(node, hal)
    await host_page.start()
    await flushed()
    ack = await host_page.edit(t="create", parent="root", components={})
    assert ack["ok"] is False and ack["reason"] in ("not_a_reader", "viewer_cannot_edit")
    assert host_page.of("sign") == [] and host_page.scene() == {}
    assert CANARY not in json.dumps(host_page.sent)


async def test_a_removed_members_page_gets_no_newer_key_and_no_content() -> None:
    node = PrivateNode()
    ann, bob = Identity.generate(), Identity.generate()
    await node.set_role(ann, "editor")
    await node.set_role(bob, "editor")
    page = Page(node, ann)
    await page.start()
    assert (await page.edit(t="create", parent="root", components={}))["ok"]
    assert len(page.secrets) == 1
    # The owner's node removes Ann (the removal rotates the keys).
    before = set(node.replica.epoch_ids())
    await node.set_role(ann, "none")
    assert set(node.replica.epoch_ids()) > before
    removed_at = len(page.sent)
    await flushed()
    assert page.scene() == {} and page.of("privacy")[-1]["privacy"]["you"] == "not_a_reader"
    ack = await page.edit(t="create", parent="root", components={"name": {"value": CANARY}})
    assert ack["ok"] is False and ack["reason"] == "not_a_member"
    assert len(page.of("sign")) == 1 and len(page.secrets) == 1
    # Nor voice or video: a private room's media go to readers only.
    await page.session.handle(json.dumps({"t": "media_prefs", "req": 90}))
    refused = page.of("media_refused")[-1]
    assert refused["reason"] == "not_reader" and refused["req"] == 90
    # Bob, still a reader, edits under the new epoch, whose secret Ann never got.
    bob_page = Page(node, bob)
    await bob_page.start()
    ack = await bob_page.edit(t="create", parent="root", components={"name": {"value": CANARY}})
    assert ack["ok"] is True
    assert bob_page.secrets and bob_page.secrets.isdisjoint(page.secrets)
    await flushed()
    assert CANARY not in json.dumps(page.sent[removed_at:])  # nor the room's name


async def test_a_lying_node_is_caught_by_the_page_and_nothing_is_applied() -> None:
    node = PrivateNode()
    ann = Identity.generate()
    await node.set_role(ann, "editor")
    page = Page(node, ann)
    await page.start()
    other_epoch = node.replica.change_bytes(node.replica.heads()[0])

    def another_secret(msg: dict[str, Any]) -> dict[str, Any]:
        return {**msg, "sealed": {**msg["sealed"],
                                  "secret": base64.b64encode(bytes(32)).decode()}}

    def another_epoch_change(msg: dict[str, Any]) -> dict[str, Any]:
        assert other_epoch is not None
        return {**msg, "sealed": {**msg["sealed"],
                                  "epoch": base64.b64encode(other_epoch).decode()}}

    def no_material(msg: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in msg.items() if k != "sealed"}

    for lie, broken in ((another_secret, "commitment"), (another_epoch_change, "epoch change"),
                        (no_material, "key material")):
        page.lie = lie
        before = node.replica.change_count()
        ack = await page.edit(t="create", parent="root", components={})
        assert ack["ok"] is False and ack["reason"] == "mismatch", (broken, ack)
        assert node.replica.change_count() == before, broken


def page_presence(page: Page, seq: int, fields: dict[str, Any], *, sealed: bool) -> str:
    """A presence message as app.js sends it: sealed under the node's presence key (as
    wire.js sealPresence does) or, for the test of a refusal, in clear."""
    room_id = page.node.runtime.room_id
    if sealed:
        given = page.of("presence_key")[-1]
        epoch, key = base64.b64decode(given["epoch"]), base64.b64decode(given["key"])
        nonce = bytes(12)
        ct = AESGCM(key).encrypt(nonce, pad(pack(fields)),
                                 presence_aad(room_id, page.person.public_key, seq, epoch))
        fields = {"sealed": base64.b64encode(epoch + nonce + ct).decode()}
    body = pack([page.person.public_key, seq, fields])
    sig = page.person.sign(presence_payload(room_id, body))
    return json.dumps({"t": "presence", "body": base64.b64encode(body).decode(),
                       "sig": base64.b64encode(sig).decode()})


async def test_a_readers_page_seals_its_presence_and_clear_presence_is_refused() -> None:
    node = PrivateNode()
    ann = Identity.generate()
    await node.set_role(ann, "editor")
    page = Page(node, ann)
    await page.start()
    await flushed()
    given = page.of("presence_key")
    assert len(given) == 1 and given[0]["epoch"] is not None
    assert base64.b64decode(given[0]["epoch"]) == node.replica.current_epoch()
    # In clear: refused (a blind host would relay it as is).
    await page.session.handle(page_presence(page, 1, {"name": CANARY}, sealed=False))
    assert page.of("error")[-1]["reason"] == "presence_unsealed"
    assert ann.public_id not in node.runtime.presence()
    # Sealed: the node opens it for its pages (and relays the sealed update as signed).
    await page.session.handle(page_presence(page, 2, {"name": CANARY}, sealed=True))
    assert node.runtime.presence()[ann.public_id] == {"name": CANARY}
    await flushed()
    assert page.of("presence")[-1]["presence"][ann.public_id] == {"name": CANARY}
    # Removed: told to stop, and no newer key.
    await node.set_role(ann, "none")
    await flushed()
    assert page.of("presence_key")[-1] == {"t": "presence_key", "epoch": None, "key": None}
    assert len(page.of("presence_key")) == 2


async def test_the_node_rotates_when_asked_and_drafts_under_the_new_epoch() -> None:
    node = PrivateNode()
    ann = Identity.generate()
    await node.set_role(ann, "editor")
    before = node.replica.current_epoch()
    assert await node.room.rotate_keys() is True
    after = node.replica.current_epoch()
    assert after is not None and after != before
    page = Page(node, ann)
    await page.start()
    assert (await page.edit(t="create", parent="root", components={}))["ok"]
    sealed = decode_change(base64.b64decode(page.of("sign")[-1]["body"]) + bytes(64)).ops[0]
    assert sealed[1] == after


@settings(max_examples=60, deadline=None)
@given(plain=st.binary(max_size=400))
def test_judge_sealable_gives_a_reason_for_any_bytes(plain: bytes) -> None:
    replica = JUDGED[0]
    reason = replica.judge_sealable(plain, JUDGED[1].public_key, replica.heads())
    assert reason is None or (type(reason) is str and reason)


def _judged() -> tuple[SceneReplica, Identity]:
    owner, ann = Identity.generate(), Identity.generate()
    replica = SceneReplica.create(owner, time.time(), name="j", nonce=b"j", private=True)
    replica.grant(ann.public_id, "editor")
    replica.commit(time.time())
    return replica, ann


JUDGED = _judged()
