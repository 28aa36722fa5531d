"""People in browsers, at the session level: a Python model of the page (it holds the person's
key, checks and signs what the node drafts) against a real ``BrowserSession``, ``PeopleRoom``,
``RoomRuntime`` and overlay, in memory. Bad input from a page: a signature over other bytes, a
replayed or reordered signing answer, an edit beyond the person's role, a forged presence: a
typed refusal and nothing applied."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import random
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshnode.crdt import ROOT, EntityId, SceneReplica
from meshnode.crdt.authoring import PersonDraft
from meshnode.identity import Identity, IdentityFileError
from meshnode.identity_export import (
    did_key,
    export_identity,
    import_identity,
    load_identity,
    public_key_from_did,
)
from meshnode.overlay import RoomOverlay
from meshnode.runtime.room import LIVE_OVERLAY, RoomRuntime
from meshnode.web.messages import BadMessage
from meshnode.web.people import PeopleRoom, identify_payload
from meshnode.web.session import BrowserSession
from meshnode.web.signing import parse_sign_answer
from protocol.change import decode_change, signing_payload
from protocol.frames import presence_payload
from protocol.msgpack_io import pack


def durable_now(room_id: bytes, cid: bytes, data: bytes) -> asyncio.Future[None]:
    fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    fut.set_result(None)
    return fut


class Node:
    """One node's room (real runtime, no links) and its owner identity."""

    def __init__(self, admit: str = "open", admit_role: str = "editor") -> None:
        self.identity = Identity.generate()
        replica = SceneReplica.create(self.identity, time.time(), name="people", nonce=b"p")
        overlay = RoomOverlay(replica, self.identity, LIVE_OVERLAY, rng=random.Random(1),
                              wall_clock=time.time)
        self.runtime = RoomRuntime(overlay, send=lambda *a: False, persist=durable_now)
        self.room = PeopleRoom(self.runtime, admit_policy=lambda: admit, admit_role=admit_role)
        self.replica = replica


class Page:
    """What app.js and identity.js do, in Python: identify, check and sign drafts."""

    def __init__(self, node: Node, person: Identity | None = None, *, honest: bool = True
                 ) -> None:
        self.node = node
        self.person = person or Identity.generate()
        self.sent: list[dict[str, Any]] = []
        self.session = BrowserSession(node.room, self._receive, session_name="page")
        self.signed_seq = 0
        self.signed: dict[int, bytes] = {}
        self.honest = honest
        self.edits: dict[int, dict[str, Any]] = {}
        self.req = 0
        self.tasks: list[asyncio.Task[None]] = []
        self.answers: list[dict[str, Any]] = []
        self.tamper: Any = None

    def _receive(self, text: str) -> None:
        msg = json.loads(text)
        self.sent.append(msg)
        if msg["t"] == "sign":
            self.tasks.append(asyncio.get_running_loop().create_task(self._sign(msg)))

    async def _sign(self, msg: dict[str, Any]) -> None:
        body = base64.b64decode(msg["body"])
        ch = decode_change(body + bytes(64))
        assert ch.author == self.person.public_key
        answer: dict[str, Any]
        if ch.seq <= self.signed_seq:
            answer = {"t": "sign_refused", "sreq": msg["sreq"], "reason": "seq_reused",
                      "seq": self.signed_seq, "changes": [
                          base64.b64encode(self.signed[s]).decode()
                          for s in sorted(self.signed) if s >= ch.seq]}
        else:
            signed = body if self.tamper is None else self.tamper(body)
            sig = self.person.sign(signing_payload(self.node.runtime.room_id, signed))
            self.signed_seq = ch.seq
            self.signed[ch.seq] = body + sig
            answer = {"t": "signed", "sreq": msg["sreq"], "sig": base64.b64encode(sig).decode()}
        self.answers.append(answer)
        await self.session.handle(json.dumps(answer))

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.sent if m["t"] == kind]

    async def start(self, invite: str | None = None) -> dict[str, Any]:
        self.session.start()
        welcome = self.of("welcome")[0]
        challenge = base64.b64decode(welcome["challenge"])
        node_key = self.node.identity.public_key
        sig = self.person.sign(identify_payload(self.node.runtime.room_id, node_key, challenge))
        msg: dict[str, Any] = {"t": "identify", "peer": self.person.public_id,
                               "sig": base64.b64encode(sig).decode()}
        if invite is not None:
            msg["invite"] = invite
        await self.session.handle(json.dumps(msg))
        return self.of("identified")[-1]

    async def edit(self, **msg: Any) -> dict[str, Any]:
        self.req += 1
        req = self.req
        self.edits[req] = msg
        await self.session.handle(json.dumps({**msg, "req": req}))
        for task in self.tasks:
            await task
        return [m for m in self.sent if m["t"] == "ack" and m["req"] == req][-1]


async def test_a_person_authors_their_own_changes_in_an_open_room() -> None:
    node = Node()
    page = Page(node)
    identified = await page.start()
    assert identified["role"] == "editor" and identified["problem"] is None
    assert identified["did"] == did_key(page.person.public_key)
    ack = await page.edit(t="create", parent="root", components={"name": {"value": "mine"}})
    assert ack["ok"] is True
    made = EntityId.parse(ack["id"])
    assert made.creator == page.person.public_key  # the person's entity, not the node's
    assert node.replica.state()[ack["id"]]["components"]["name"] == {"value": "mine"}
    ack = await page.edit(t="set", id=ack["id"], component="name", field="value", value="x")
    assert ack["ok"] is True and ack["seq"] == 2
    # Every change of the person's is signed by the person's key.
    authors = {node.replica.change_author(c) for c in node.replica.recent_changes(10)}
    assert page.person.public_key in authors
    assert node.replica.equivocations == []


async def test_an_editor_cannot_delete_another_persons_entity() -> None:
    node = Node()
    theirs = node.replica.create_entity(ROOT, {"name": {"value": "owner's"}})
    node.replica.commit(time.time())
    page = Page(node)
    await page.start()
    before = node.replica.change_count()
    ack = await page.edit(t="delete", id=str(theirs))
    assert ack["ok"] is False and ack["reason"] == "not_entity_owner"
    assert page.of("sign") == []  # never asked to sign what no replica would accept
    assert node.replica.change_count() == before and node.replica.exists(theirs)


async def test_a_viewer_cannot_edit_and_a_stranger_is_not_admitted() -> None:
    node = Node(admit_role="viewer")
    viewer = Page(node)
    assert (await viewer.start())["role"] == "viewer"
    ack = await viewer.edit(t="create", parent="root", components={})
    assert ack["ok"] is False and ack["reason"] == "viewer_cannot_edit"
    closed = Node(admit="invite")
    stranger = Page(closed)
    identified = await stranger.start()
    assert identified["role"] == "none" and identified["problem"] == "invite_only"
    ack = await stranger.edit(t="create", parent="root", components={})
    assert ack["ok"] is False and ack["reason"] == "not_a_member"


async def test_a_removed_person_loses_their_rights() -> None:
    node = Node()
    page = Page(node)
    await page.start()
    ack = await page.edit(t="create", parent="root", components={})
    assert ack["ok"]
    await node.runtime.edit(lambda r: r.grant(page.person.public_id, "none"))
    ack = await page.edit(t="set", id=ack["id"], component="a", field="b", value=1)
    assert ack["ok"] is False and ack["reason"] == "not_a_member"
    # An open room does not take them back on a new connection either.
    again = Page(node, page.person)
    assert (await again.start())["problem"] == "removed"


async def test_a_signature_over_other_bytes_is_refused_and_nothing_applied() -> None:
    node = Node()
    page = Page(node)
    await page.start()
    page.tamper = lambda body: body.replace(b"honest", b"forged")
    before = node.replica.change_count()
    ack = await page.edit(t="create", parent="root", components={"n": {"v": "honest"}})
    assert ack["ok"] is False and ack["reason"] == "bad_signature"
    assert node.replica.change_count() == before
    assert page.session.counters["bad_signature"] == 1


async def test_replayed_and_unknown_signing_answers_are_refused() -> None:
    node = Node()
    page = Page(node)
    await page.start()
    ack = await page.edit(t="create", parent="root", components={})
    assert ack["ok"]
    before = node.replica.change_count()
    # The same answer again (a replay), and one for a request never made (reordered/forged).
    await page.session.handle(json.dumps(page.answers[-1]))
    forged = {**page.answers[-1], "sreq": 999}
    await page.session.handle(json.dumps(forged))
    errors = [m for m in page.of("error") if m["reason"] == "unknown_signing_request"]
    assert len(errors) == 2
    assert node.replica.change_count() == before


async def test_an_edit_before_identifying_is_refused() -> None:
    node = Node()
    page = Page(node)
    page.session.start()
    await page.session.handle(json.dumps({"t": "create", "req": 1, "parent": "root",
                                          "components": {}}))
    ack = page.of("ack")[-1]
    assert ack["ok"] is False and ack["reason"] == "not_identified"
    # A proof of another key, or over another challenge, does not identify.
    other = Identity.generate()
    sig = other.sign(identify_payload(node.runtime.room_id, node.identity.public_key, b"x" * 32))
    await page.session.handle(json.dumps({"t": "identify", "peer": other.public_id,
                                          "sig": base64.b64encode(sig).decode()}))
    assert page.of("error")[-1]["reason"] == "bad_identity_proof"
    assert page.session.person is None


async def test_seq_is_never_reused_when_another_tab_signed_first() -> None:
    """Another tab of the person signed seq 1 through another node, and this node has not
    seen it: the node drafts seq 1 again, the page refuses and shows the change it signed,
    the node applies it and drafts seq 2. Both edits land; no equivocation."""
    node = Node()
    person = Identity.generate()
    page = Page(node, person)
    await page.start()
    other_tab = PersonDraft(node.replica, person.public_key)
    other_tab.create_entity(ROOT, {"tab": {"n": 2}})
    sealed = other_tab.seal(time.time(), None)
    page.signed_seq = sealed.seq
    page.signed[sealed.seq] = sealed.body + person.sign(
        signing_payload(node.runtime.room_id, sealed.body))
    ack = await page.edit(t="create", parent="root", components={"tab": {"n": 1}})
    assert sealed.seq == 1 and ack["ok"] and ack["seq"] == 2
    assert [a["t"] for a in page.answers] == ["sign_refused", "signed"]
    tabs = sorted(e["components"]["tab"]["n"] for e in node.replica.state().values())
    assert tabs == [1, 2]
    assert node.replica.equivocations == []


async def test_forged_presence_is_refused() -> None:
    node = Node()
    page = Page(node)
    await page.start()
    room_id = node.runtime.room_id

    def presence(who: Identity, signer: Identity, seq: int) -> str:
        body = pack([who.public_key, seq, {"name": "x", "position": [1.0, 0.0, 2.0]}])
        sig = signer.sign(presence_payload(room_id, body))
        return json.dumps({"t": "presence", "body": base64.b64encode(body).decode(),
                           "sig": base64.b64encode(sig).decode()})

    mallory = Identity.generate()
    await page.session.handle(presence(mallory, mallory, 1))
    assert page.of("error")[-1]["reason"] == "presence_not_yours"
    await page.session.handle(presence(page.person, mallory, 2))
    assert page.of("error")[-1]["reason"] == "presence_bad_signature"
    assert page.person.public_id not in node.runtime.presence()
    await page.session.handle(json.dumps({"t": "presence", "fields": {"name": "x"}}))
    assert page.of("error")[-1]["reason"] == "presence_unsigned"
    await page.session.handle(presence(page.person, page.person, 3))
    assert node.runtime.presence()[page.person.public_id]["position"] == [1.0, 0.0, 2.0]


def test_encrypted_export_round_trip_and_wrong_passphrase() -> None:
    person = Identity.generate()
    text = export_identity(person, "correct horse", iterations=100_000)
    assert json.loads(text)["did"] == did_key(person.public_key)
    assert import_identity(text, "correct horse") == person
    with pytest.raises(IdentityFileError):
        import_identity(text, "wrong")
    doc = json.loads(text)
    doc["peer_id"] = Identity.generate().public_id  # someone else's name on the file
    with pytest.raises(IdentityFileError):
        import_identity(json.dumps(doc), "correct horse")
    assert public_key_from_did(did_key(person.public_key)) == person.public_key
    # The did:key of the W3C spec's first Ed25519 example key prefix.
    assert did_key(person.public_key).startswith("did:key:z6Mk")


# ---------------------------------------------------------------------- new decoders, fuzzed


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=12)


@settings(max_examples=300, deadline=None)
@given(kind=st.sampled_from(["signed", "sign_refused"]),
       fields=st.dictionaries(st.sampled_from(["sreq", "sig", "reason", "seq", "changes"]),
                              JSONISH, max_size=5))
def test_signing_answers_parse_or_are_refused(kind: str, fields: dict[str, Any]) -> None:
    try:
        answer = parse_sign_answer({"t": kind, **fields})
    except BadMessage as bad:
        assert bad.reason == "bad_message"
        return
    assert answer.sreq >= 1
    assert (answer.signature is not None) == (kind == "signed")


@settings(max_examples=150, deadline=None)
@given(text=st.one_of(st.text(max_size=300), JSONISH.map(json.dumps),
                      st.dictionaries(st.sampled_from(
                          ["format", "kdf", "cipher", "iterations", "salt", "iv", "ciphertext",
                           "peer_id", "did"]), JSONISH, max_size=9).map(json.dumps)))
def test_identity_files_load_or_are_refused(text: str) -> None:
    with contextlib.suppress(IdentityFileError):
        import_identity(text, "pass")


def test_the_cli_exports_and_imports_identities(tmp_path: Any, monkeypatch: Any,
                                                capsys: Any) -> None:
    from meshnode.cli import main

    person = Identity.generate()
    person.save(tmp_path / "me.key")
    monkeypatch.setenv("MESHNODE_PASSPHRASE", "a passphrase")
    assert main(["identity", "export", "--identity", str(tmp_path / "me.key"),
                 "--out", str(tmp_path / "me.json")]) == 0
    assert main(["identity", "import", str(tmp_path / "me.json"),
                 "--out", str(tmp_path / "again.key")]) == 0
    assert Identity.load(tmp_path / "again.key") == person
    assert load_identity(tmp_path / "me.json", "a passphrase") == person
    with pytest.raises(IdentityFileError, match="encrypted export"):
        Identity.load(tmp_path / "me.json")
    capsys.readouterr()
    assert main(["identity", "show", "--identity", str(tmp_path / "me.json")]) == 0
    out = capsys.readouterr().out.split()
    assert out == [person.public_id, did_key(person.public_key)]
