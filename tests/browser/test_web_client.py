"""The browser client: ``BrowserSession`` (the JSON protocol), the WebRTC link, the HTTP
routes, and the page itself in headless Chromium. The session's pages are people: they identify
with their own key and sign what the node drafts (``Wire`` does it for the Python-side tests;
``test_people_session`` tests the signing path's refusals)."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import aioice.ice
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

import meshnode.transport.ice as ice_module
from meshnode.crdt import APPLIED, BUFFERED, DUPLICATE, ROOT, EntityId, SceneReplica
from meshnode.crdt.authoring import PersonDraft, SealedDraft
from meshnode.identity import Identity, verify_signature
from meshnode.transport.ice import IceSettings, install_host_addresses
from meshnode.web import (
    BROWSER_LINKS,
    BrowserLinks,
    BrowserSession,
    InvalidOffer,
    SessionLimits,
    answer_browser_offer,
)
from meshnode.web.people import identify_payload
from meshnode.web.routes import add_web_routes
from protocol.change import decode_change, signing_payload
from protocol.frames import Presence, presence_payload
from protocol.msgpack_io import pack

from .chromium import Chromium
from .view import screenshot_view

NOW = 1000.0


# ---------------------------------------------------------------------- a fake node room


class FakeRoom:
    """``RoomAccess`` over a real ``SceneReplica``; ``durable`` gates when edits return."""

    def __init__(self, replica: SceneReplica | None = None) -> None:
        self.replica = replica or SceneReplica.create(
            Identity.generate(), NOW, name="test room", nonce=b"web-client"
        )
        self.room_id = self.replica.room_id
        self.room_name = self.replica.room_name
        self.me = self.replica.identity.public_id
        self.durable = asyncio.Event()
        self.durable.set()
        self.peers: dict[str, dict[str, Any]] = {}
        self.subscribers: list[Callable[[], None]] = []
        self.now = NOW
        self.durable_edits = 0
        self.presence_sets = 0
        self.locks: dict[bytes, asyncio.Lock] = {}

    def state(self) -> dict[str, dict[str, Any]]:
        return self.replica.state()

    def presence(self) -> dict[str, dict[str, Any]]:
        return {peer: dict(fields) for peer, fields in self.peers.items()}

    async def edit(self, fn: Callable[[SceneReplica], Any]) -> Any:
        result = self.local_edit(fn)
        await self.durable.wait()
        self.durable_edits += 1
        return result

    def local_edit(self, fn: Callable[[SceneReplica], Any]) -> Any:
        """Edit the replica directly (as the node would for a peer's change) and notify."""
        try:
            result = fn(self.replica)
            self.now += 0.001
            self.replica.commit(self.now)
        except BaseException:
            self.replica.discard()
            raise
        self.notify()
        return result

    def set_presence(self, fields: dict[str, Any], who: str | None = None) -> None:
        self.presence_sets += 1
        self.peers[who or self.me] = dict(fields)
        self.notify()

    def subscribe(self, callback: Callable[[], None]) -> Callable[[], None]:
        self.subscribers.append(callback)
        return lambda: self.subscribers.remove(callback)

    def notify(self) -> None:
        for callback in list(self.subscribers):
            callback()

    # A person's side, as ``meshnode.web.people.PeopleRoom`` does it on a real node.

    def author_lock(self, author: bytes) -> asyncio.Lock:
        return self.locks.setdefault(author, asyncio.Lock())

    def draft(self, author: bytes, fn: Callable[[Any], Any]) -> SealedDraft:
        draft = PersonDraft(self.replica, author)
        result = fn(draft)
        self.now += 0.001
        return draft.seal(self.now, None, result)

    def author_seq(self, author: bytes) -> int:
        return self.replica.version_vector().get(author, 0)

    async def submit_signed(self, data: bytes) -> str | None:
        res = self.replica.apply(data, self.now)
        if res.status not in (APPLIED, DUPLICATE, BUFFERED):
            return res.reason
        self.notify()
        await self.durable.wait()
        self.durable_edits += 1
        return None

    def submit_presence(self, msg: Presence) -> str | None:
        if not verify_signature(msg.participant, msg.signature,
                                presence_payload(self.room_id, msg.body)):
            return "bad_signature"
        self.set_presence(msg.fields, str(EntityId(msg.participant, 1)).split("/")[0])
        return None

    def role_of(self, peer: str) -> str:
        return self.replica.role_of(peer)

    async def admit_person(self, peer: str, invite: str | None) -> str | None:
        if self.replica.role_of(peer) != "none":
            return None
        if self.replica.role_of(self.me) not in ("owner", "admin"):
            return "node_may_not_grant"
        self.local_edit(lambda r: r.grant(peer, "editor"))
        return None


class Wire:
    """What a session sent, decoded; and the page's person, who signs what the node drafts
    (``identity.js``, in Python: it trusts the node here)."""

    def __init__(self, person: Identity | None = None) -> None:
        self.sent: list[dict[str, Any]] = []
        self.texts: list[str] = []
        self.person = person or Identity.generate()
        self.session: BrowserSession | None = None
        self.room_id = b""
        self.signing: set[asyncio.Task[None]] = set()

    def __call__(self, text: str) -> None:
        msg = json.loads(text)
        if msg["t"] == "sign":  # answered, not recorded: the tests look at the protocol's rest
            task = asyncio.get_running_loop().create_task(self._sign(msg))
            self.signing.add(task)
            task.add_done_callback(self.signing.discard)
            return
        self.texts.append(text)
        self.sent.append(msg)

    async def _sign(self, msg: dict[str, Any]) -> None:
        body = base64.b64decode(msg["body"])
        sig = self.person.sign(signing_payload(self.room_id, body))
        assert self.session is not None
        await self.session.handle(json.dumps({"t": "signed", "sreq": msg["sreq"],
                                              "sig": base64.b64encode(sig).decode()}))

    def presence(self, fields: dict[str, Any], seq: int) -> str:
        """A presence message signed by the person."""
        body = pack([self.person.public_key, seq, fields])
        sig = self.person.sign(presence_payload(self.room_id, body))
        return json.dumps({"t": "presence", "body": base64.b64encode(body).decode(),
                           "sig": base64.b64encode(sig).decode()})

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.sent if m["t"] == kind]

    def last(self) -> dict[str, Any]:
        return self.sent[-1]


class BrowserModel:
    """What the page does with the node's messages (app.js), in Python."""

    def __init__(self) -> None:
        self.state: dict[str, Any] = {}
        self.presence: dict[str, Any] = {}
        self._partial: dict[str, dict[str, Any] | None] = {"state": None, "presence": None}

    def feed(self, msgs: list[dict[str, Any]]) -> None:
        for msg in msgs:
            if msg["t"] in ("welcome", "state", "presence"):
                if msg["t"] == "welcome":
                    self.presence = msg["presence"]
                key = "presence" if msg["t"] == "presence" else "state"
                part = self._partial[key] or {}
                part.update(msg[key])
                if msg.get("more"):
                    self._partial[key] = part
                else:
                    setattr(self, key, part)
                    self._partial[key] = None
            elif msg["t"] == "delta":
                self.state.update(msg["set"])
                for gone in msg["del"]:
                    del self.state[gone]


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def open_session(room: FakeRoom, **limits: Any) -> tuple[BrowserSession, Wire]:
    """A started session whose page has not identified yet (see ``identify``)."""
    wire = Wire()
    wire.room_id = room.room_id
    clock = limits.pop("clock", None)
    kwargs: dict[str, Any] = {"clock": clock} if clock is not None else {}
    session = BrowserSession(room, wire, session_name="browser-test",
                             limits=SessionLimits(**limits), **kwargs)
    wire.session = session
    session.start()
    return session, wire


async def identify(session: BrowserSession, wire: Wire, room: FakeRoom) -> None:
    """The page proves its person's key (and is admitted); the messages so far are dropped."""
    challenge = base64.b64decode(wire.of("welcome")[0]["challenge"])
    node_key = EntityId.parse(f"{room.me}/1").creator
    sig = wire.person.sign(identify_payload(room.room_id, node_key, challenge))
    await session.handle(json.dumps({"t": "identify", "peer": wire.person.public_id,
                                     "sig": base64.b64encode(sig).decode()}))
    assert wire.of("identified")


async def open_person(room: FakeRoom, **limits: Any) -> tuple[BrowserSession, Wire]:
    """A session whose page identified; ``wire`` holds what was sent since."""
    session, wire = open_session(room, **limits)
    await identify(session, wire, room)
    del wire.sent[1:], wire.texts[1:]
    return session, wire


async def until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait until ``predicate()`` holds (polling); fail after a generous timeout."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


def msg(**fields: Any) -> str:
    return json.dumps(fields)


def create(parent: EntityId, components: dict[str, dict[str, Any]]
           ) -> Callable[[SceneReplica], EntityId]:
    return lambda r: r.create_entity(parent, components)


def set_field(entity: EntityId, component: str, field: str, value: Any
              ) -> Callable[[SceneReplica], None]:
    return lambda r: r.set_field(entity, component, field, value)


def delete(entity: EntityId) -> Callable[[SceneReplica], None]:
    return lambda r: r.delete(entity)


# ---------------------------------------------------------------------- the session


async def test_welcome_carries_room_state_and_presence() -> None:
    room = FakeRoom()
    cube = room.local_edit(lambda r: r.create_entity(ROOT, {"name": {"value": "cube"}}))
    room.peers["12D3KooWpeer"] = {"name": "ann"}
    session, wire = open_session(room)
    assert len(wire.sent) == 1
    welcome = wire.sent[0]
    assert len(base64.b64decode(welcome.pop("challenge"))) == 32  # to identify with
    assert welcome == {
        "t": "welcome",
        "room": room.room_id.hex(),
        "room_name": "test room",
        "me": room.me,
        "node": room.me,
        "session": "browser-test",
        "presence": {"12D3KooWpeer": {"name": "ann"}},
        "privacy": {"private": False},
        "state": {str(cube): {"parent": "root", "components": {"name": {"value": "cube"}}}},
    }
    assert room.subscribers
    session.close()
    assert not room.subscribers


class PrivateFakeRoom(FakeRoom):
    """A private room as a node's runtime shows it (``RoomRuntime.privacy``)."""

    def privacy(self) -> dict[str, Any]:
        from meshnode.rooms.privacy_info import private_info

        return {**private_info(self.replica, self.me), "node": self.me}


async def test_a_private_room_tells_the_page_who_renders_it_and_who_holds_keys() -> None:
    owner, host, ann = Identity.generate(), Identity.generate(), Identity.generate()
    founded = SceneReplica.create(owner, NOW, name="sealed lab", nonce=b"p", private=True)
    founded.grant(host.public_id, "host")
    founded.commit(NOW + 1)
    # The page is served by the blind host: its node cannot read, so neither can the page.
    blind = SceneReplica.from_genesis(founded.genesis, host)
    blind.apply_many(founded.changes_since([]), NOW + 2)
    room = PrivateFakeRoom(blind)
    session, wire = open_session(room)
    privacy = wire.sent[0]["privacy"]
    assert wire.sent[0]["room_name"] == ""
    assert privacy == {"private": True, "this_node": "host", "readable": False,
                       "keys": {owner.public_id: True}, "node": host.public_id,
                       "you": "not_identified"}
    # A reader without keys yet: the page lists them as waiting, then as holding keys.
    founded.grant(ann.public_id, "viewer")
    founded.commit(NOW + 3)
    room.local_edit(lambda r: r.apply_many(founded.changes_since([]), NOW + 4))
    await until(lambda: bool(wire.of("privacy")))
    keys = wire.of("privacy")[-1]["privacy"]["keys"]
    assert keys == {owner.public_id: True, ann.public_id: True}  # shared with the grant
    session.close()
    # Served by the owner's node (a reader), the page is told that its node renders it, but
    # sees the room (its sealed name, its scene) only once its person proved being a reader.
    reader_room = PrivateFakeRoom(founded)
    reader_session, reader_wire = open_session(reader_room)
    shown = reader_wire.sent[0]
    assert shown["room_name"] == "" and shown["state"] == {}
    assert shown["privacy"]["this_node"] == "reader" and shown["privacy"]["readable"]
    reader_wire.person = ann
    await identify(reader_session, reader_wire, reader_room)
    shown = reader_wire.of("privacy")[-1]["privacy"]
    assert shown["you"] == "reader" and shown["room_name"] == "sealed lab"
    reader_session.close()


async def test_create_set_move_delete_are_acked_after_the_state_that_shows_them() -> None:
    room = FakeRoom()
    session, wire = await open_person(room)
    model = BrowserModel()
    seen = 0

    async def request(**fields: Any) -> dict[str, Any]:
        """Send one edit; check its ack is last and the browser's view already shows it."""
        nonlocal seen
        await session.handle(msg(**fields))
        ack = wire.last()
        assert ack["t"] == "ack" and ack["req"] == fields["req"] and ack["ok"] is True, ack
        model.feed(wire.sent[seen:])
        seen = len(wire.sent)
        assert model.state == room.replica.state()
        return ack

    components = {"name": {"value": "cube"}, "transform": {"position": [1, 2.5, 3]}}
    cube = (await request(t="create", req=1, parent="root", components=components))["id"]
    assert model.state[cube]["components"] == components  # 1 stays an int, 2.5 a float
    assert room.replica.get_field(EntityId.parse(cube), "transform", "position") == [1, 2.5, 3]
    child = (await request(t="create", req=2, parent=cube))["id"]
    assert model.state[child] == {"parent": cube, "components": {}}
    assert EntityId.parse(cube).creator == wire.person.public_key  # not the node's
    ack = await request(t="set", req=3, id=cube, component="name", field="value", value="box")
    assert ack == {"t": "ack", "req": 3, "ok": True, "seq": 3}  # the person's 3rd change
    await request(t="set", req=4, id=cube, component="meta", field="x", value=None)
    await request(t="move", req=5, id=child, parent="root")
    assert room.replica.parent_of(EntityId.parse(child)) == ROOT
    await request(t="delete", req=6, id=cube)
    assert not room.replica.exists(EntityId.parse(cube))
    assert model.state == {child: {"parent": "root", "components": {}}}
    assert room.durable_edits == 6
    assert session.counters["acks"] == 6
    session.close()


async def test_ack_is_sent_only_once_the_edit_is_durable() -> None:
    room = FakeRoom()
    room.durable.clear()
    session, wire = await open_person(room)
    task = asyncio.create_task(
        session.handle(msg(t="create", req=7, parent="root", components={"name": {"value": "a"}}))
    )
    await until(lambda: len(room.replica.entities()) == 1)  # applied and committed...
    await asyncio.sleep(0.05)
    assert not wire.of("ack") and not task.done()  # ...but not durable: no ack
    room.durable.set()
    await task
    acks = wire.of("ack")
    assert len(acks) == 1 and acks[0]["ok"] is True and acks[0]["req"] == 7
    session.close()


async def test_presence_goes_to_the_room_and_comes_back() -> None:
    room = FakeRoom()
    session, wire = await open_person(room)
    fields = {"name": "ann", "pointer": [1.5, 0, -2], "selected": None}
    # Signed by the person, published as theirs (not inside the node's presence).
    await session.handle(wire.presence(fields, 1))
    me = wire.person.public_id
    assert room.peers[me] == fields
    await until(lambda: bool(wire.of("presence")))
    assert wire.of("presence")[-1] == {"t": "presence", "presence": {me: fields}}
    assert not wire.of("ack") and not wire.of("error")
    session.close()


MALFORMED: list[tuple[str | bytes, str, int | None]] = [
    ("not json", "bad_json", None),
    ("", "bad_json", None),
    ("[1, 2]", "bad_message", None),
    ('"create"', "bad_message", None),
    ('{"req": 1}', "bad_message", 1),
    ('{"t": 5, "req": 2}', "bad_message", 2),
    ('{"t": "fly", "req": 3}', "unknown_type", 3),
    ('{"t": "create", "parent": "root"}', "bad_message", None),
    ('{"t": "create", "req": "1", "parent": "root"}', "bad_message", None),
    ('{"t": "create", "req": true, "parent": "root"}', "bad_message", None),
    ('{"t": "create", "req": -1, "parent": "root"}', "bad_message", None),
    ('{"t": "create", "req": 1.5, "parent": "root"}', "bad_message", None),
    ('{"t": "create", "req": 9007199254740992, "parent": "root"}', "bad_message", None),
    ('{"t": "create", "req": 4, "parent": 5}', "bad_message", 4),
    ('{"t": "create", "req": 5, "parent": "nope"}', "bad_message", 5),
    ('{"t": "create", "req": 6, "parent": "root", "components": [1]}', "bad_message", 6),
    ('{"t": "create", "req": 7, "parent": "root", "components": {"a": 1}}', "bad_message", 7),
    ('{"t": "set", "req": 8, "id": "root", "component": "c", "field": "f"}', "bad_message", 8),
    ('{"t": "set", "req": 9, "id": "root", "component": 3, "field": "f", "value": 1}',
     "bad_message", 9),
    ('{"t": "set", "req": 10, "id": "root", "component": "c", "field": "f", "value": NaN}',
     "bad_json", None),
    ('{"t": "set", "req": 11, "id": "root", "component": "c", "field": "f", "value": -Infinity}',
     "bad_json", None),
    ('{"t": "move", "req": 12, "id": "root"}', "bad_message", 12),
    ('{"t": "delete", "req": 13}', "bad_message", 13),
    ('{"t": "delete", "req": 14, "id": "trash"}', "bad_message", 14),
    ('{"t": "presence", "fields": []}', "presence_unsigned", None),
    ('{"t": "presence"}', "presence_unsigned", None),
    ('{"t": "presence", "fields": {"name": "unsigned"}}', "presence_unsigned", None),
    ('{"t": "presence", "body": "!!", "sig": "AA=="}', "bad_presence", None),
    ('{"t": "presence", "body": "kwE=", "sig": "AA=="}', "bad_presence", None),
    ('{"t": "signed", "sreq": 1, "sig": "AA=="}', "bad_message", None),
    ('{"t": "signed", "sreq": 77, "sig": "' + "A" * 86 + '=="}', "unknown_signing_request",
     None),
    ('{"t": "sign_refused", "sreq": 5}', "bad_message", None),
    ('{"t": "identify", "peer": "nope", "sig": "AA=="}', "bad_message", None),
    (b'{"t": "presence", "fields": {}}', "bad_message", None),
    ('{"t": "presence", "fields": {"a": "' + "x" * 70_000 + '"}}', "oversized", None),
    ('{"t": "presence", "fields": {"a": "' + "\u00e9" * 40_000 + '"}}', "oversized", None),
    ("[" * 60_000 + "]" * 60_000, "oversized", None),
    ("[" * 30_000 + "]" * 30_000, "bad_json", None),  # too deep to decode
]


@pytest.mark.parametrize(("text", "reason", "req"), MALFORMED)
async def test_malformed_messages_get_an_error_and_change_nothing(
    text: str | bytes, reason: str, req: int | None
) -> None:
    room = FakeRoom()
    session, wire = await open_person(room)
    changes = room.replica.change_count()
    await session.handle(text)
    assert len(wire.sent) == 2, wire.sent[1:]
    reply = wire.last()
    assert reply["t"] == "error" and reply["req"] == req and reply["error"], reply
    assert session.counters[reason] == 1, session.counters
    assert room.replica.change_count() == changes and room.presence_sets == 0
    session.close()


async def test_refused_edits_get_a_failed_ack_and_the_batch_is_discarded() -> None:
    room = FakeRoom()
    session, wire = await open_person(room)
    await session.handle(msg(t="create", req=1, parent="root"))
    a = wire.last()["id"]
    await session.handle(msg(t="create", req=2, parent=a))
    b = wire.last()["id"]
    stranger = f"{Identity.generate().public_id}/1"
    state = room.replica.state()
    changes = room.replica.change_count()
    refused = [
        msg(t="set", req=10, id=stranger, component="c", field="f", value=1),
        msg(t="create", req=11, parent=stranger),
        msg(t="set", req=12, id=a, component="c", field="f", value=2**70),
        msg(t="set", req=13, id=a, component="c", field="f", value=[0] * 4_097),
        msg(t="set", req=14, id=a, component="", field="f", value=1),
        msg(t="set", req=15, id=a, component="c" * 65, field="f", value=1),
        msg(t="create", req=16, parent="root", components={"ok": {"v": 1}, "bad": {"": 1}}),
        msg(t="move", req=17, id="root", parent=a),
        msg(t="move", req=18, id=a, parent=b),  # a cycle
        msg(t="delete", req=19, id="root"),
        msg(t="delete", req=20, id=stranger),
    ]
    for i, text in enumerate(refused):
        await session.handle(text)
        reply = wire.last()
        assert reply["t"] == "ack" and reply["req"] == 10 + i, reply
        assert reply["ok"] is False and reply["error"], reply
        assert room.replica.pending_ops == 0
    assert room.replica.state() == state and room.replica.change_count() == changes
    assert session.counters["edit_refused"] == len(refused)
    session.close()


async def test_a_non_member_is_told_permission_denied() -> None:
    owner = SceneReplica.create(Identity.generate(), NOW, nonce=b"web-client-2")
    room = FakeRoom(SceneReplica.from_genesis(owner.genesis, Identity.generate()))
    session, wire = await open_person(room)
    await session.handle(msg(t="create", req=1, parent="root"))
    reply = wire.last()
    assert reply["ok"] is False and reply["error"].startswith("permission denied")
    assert room.replica.pending_ops == 0 and room.replica.state() == {}
    session.close()


async def test_a_failing_node_gets_a_failed_ack_not_an_exception() -> None:
    class BrokenRoom(FakeRoom):
        async def edit(self, fn: Callable[[SceneReplica], Any]) -> Any:
            raise OSError("disk full")

        async def submit_signed(self, data: bytes) -> str | None:
            raise OSError("disk full")

    room = BrokenRoom()
    session, wire = await open_person(room)
    await session.handle(msg(t="create", req=1, parent="root"))
    reply = wire.last()
    assert reply["ok"] is False and "disk full" in reply["error"]
    assert session.counters["edit_failed"] == 1
    session.close()


async def test_edits_are_rate_limited_per_session() -> None:
    room = FakeRoom()
    clock = FakeClock()
    session, wire = await open_person(room, clock=clock, edit_rate=50.0, edit_burst=100.0)
    for req in range(100):
        await session.handle(msg(t="create", req=req, parent="root"))
        assert wire.last()["ok"] is True
    await session.handle(msg(t="create", req=100, parent="root"))
    reply = wire.last()
    assert reply["ok"] is False and reply["error"].startswith("rate limited")
    assert session.counters["edit_rate_limited"] == 1
    clock.t += 0.1  # five more tokens
    for req in range(101, 106):
        await session.handle(msg(t="create", req=req, parent="root"))
        assert wire.last()["ok"] is True
    await session.handle(msg(t="create", req=106, parent="root"))
    assert wire.last()["ok"] is False
    assert len(room.replica.entities()) == 105
    session.close()


async def test_too_many_edits_in_flight_are_refused_as_busy() -> None:
    room = FakeRoom()
    room.durable.clear()
    session, wire = await open_person(room, max_edits_in_flight=2)
    tasks = [asyncio.create_task(session.handle(msg(t="create", req=i, parent="root")))
             for i in range(2)]
    # One person's changes are made one at a time: the second waits for the first.
    await until(lambda: len(room.replica.entities()) == 1)
    await session.handle(msg(t="create", req=2, parent="root"))
    assert wire.last() == {"t": "ack", "req": 2, "ok": False, "reason": "busy",
                           "error": "busy: too many edits waiting to be durable"}
    room.durable.set()
    await asyncio.gather(*tasks)
    assert sorted(a["req"] for a in wire.of("ack") if a["ok"]) == [0, 1]
    session.close()


async def test_presence_over_the_rate_keeps_only_the_latest() -> None:
    room = FakeRoom()
    clock = FakeClock()
    session, wire = await open_person(room, clock=clock, presence_rate=20.0, presence_burst=20.0)
    me = wire.person.public_id
    for i in range(25):
        await session.handle(wire.presence({"n": i}, i + 1))
    assert room.presence_sets == 20 and room.peers[me] == {"n": 19}
    assert session.counters["presence_coalesced"] == 5
    await asyncio.sleep(0.1)  # the clock stands still: no token, nothing published
    assert room.presence_sets == 20
    clock.t += 1.0
    await until(lambda: room.presence_sets == 21)
    # The latest, not the first held back.
    assert room.peers[me] == {"n": 24}
    assert not wire.of("error")
    session.close()


async def test_state_pushes_are_coalesced() -> None:
    room = FakeRoom()
    session, wire = open_session(room)
    model = BrowserModel()
    for i in range(50):
        room.local_edit(create(ROOT, {"n": {"i": i}}))
    await until(lambda: len(wire.sent) > 1)
    await asyncio.sleep(0.2)
    assert [m["t"] for m in wire.sent] == ["welcome", "state"]  # one push for 50 changes
    model.feed(wire.sent)
    assert model.state == room.replica.state() and len(model.state) == 50
    # A few changes: a delta.
    first = next(iter(model.state))
    room.local_edit(lambda r: r.set_field(EntityId.parse(first), "n", "i", -1))
    room.local_edit(lambda r: r.delete(EntityId.parse(first)))
    await until(lambda: len(wire.sent) > 2)
    await asyncio.sleep(0.2)
    assert wire.sent[2] == {"t": "delta", "del": [first], "set": {}}
    # Nothing changed: nothing sent.
    room.notify()
    await asyncio.sleep(0.2)
    assert len(wire.sent) == 3
    model.feed(wire.sent[2:])
    assert model.state == room.replica.state()
    assert session.counters["pushes"] == 2
    session.close()


async def test_pushes_wait_for_the_throttle_but_acks_do_not() -> None:
    room = FakeRoom()
    session, wire = await open_person(room, push_interval_s=3600.0)
    room.local_edit(lambda r: r.create_entity(ROOT))
    await asyncio.sleep(0.2)
    assert len(wire.sent) == 1  # throttled: the push waits
    await session.handle(msg(t="create", req=1, parent="root"))
    # The browser's own edit is acked at once, after a push that shows both entities.
    assert [m["t"] for m in wire.sent] == ["welcome", "delta", "ack"]
    model = BrowserModel()
    model.feed(wire.sent)
    assert model.state == room.replica.state() and len(model.state) == 2
    session.close()


async def test_large_messages_are_split_and_reassemble() -> None:
    room = FakeRoom()
    limit = 2_000
    ids = [room.local_edit(create(ROOT, {"name": {"value": f"{i:03}" * 60}})) for i in range(50)]
    session, wire = open_session(room, max_send_bytes=limit)
    kinds = [m["t"] for m in wire.sent]
    assert kinds[0] == "welcome" and set(kinds[1:]) == {"state"} and len(kinds) > 5
    assert all(m.get("more") is True for m in wire.sent[:-1]) and "more" not in wire.sent[-1]
    assert all(len(t.encode()) <= limit for t in wire.texts)
    model = BrowserModel()
    model.feed(wire.sent)
    assert model.state == room.replica.state()
    # A delta of ten large entities is split too.
    start = len(wire.sent)
    for e in ids[:10]:
        room.local_edit(set_field(e, "name", "value", "y" * 300))
    await until(lambda: len(wire.sent) > start and "more" not in wire.sent[-1])
    parts = wire.sent[start:]
    assert len(parts) > 1 and {m["t"] for m in parts} == {"delta"}
    model.feed(parts)
    assert model.state == room.replica.state()
    # Deleting most: a whole state instead of a delta.
    start = len(wire.sent)
    for e in ids[10:]:
        room.local_edit(delete(e))
    await until(lambda: len(wire.sent) > start and "more" not in wire.sent[-1])
    assert {m["t"] for m in wire.sent[start:]} == {"state"}
    model.feed(wire.sent[start:])
    assert model.state == room.replica.state() and len(model.state) == 10
    session.close()


async def test_bytes_and_non_finite_presence_values_are_sent_as_json() -> None:
    room = FakeRoom()
    session, wire = open_session(room)
    room.peers["peer"] = {"key": b"\x01\x02", "x": float("nan"), "ok": [1.0, 2]}
    room.notify()
    await until(lambda: bool(wire.of("presence")))
    assert wire.of("presence")[-1]["presence"] == {
        "peer": {"key": {"$bytes": "AQI="}, "x": None, "ok": [1.0, 2]}
    }
    assert "NaN" not in wire.texts[-1]
    session.close()


async def test_a_closed_session_is_silent() -> None:
    room = FakeRoom()
    session, wire = open_session(room)
    session.close()
    session.close()
    assert not room.subscribers
    room.local_edit(lambda r: r.create_entity(ROOT))
    await session.handle(msg(t="create", req=1, parent="root"))
    await session.handle("junk")
    await asyncio.sleep(0.1)
    assert len(wire.sent) == 1 and len(room.replica.entities()) == 1


async def test_a_closing_channel_does_not_break_the_session() -> None:
    room = FakeRoom()

    def broken(text: str) -> None:
        raise ConnectionError("channel closed")

    session = BrowserSession(room, broken, session_name="x")
    session.start()
    await session.handle(msg(t="create", req=1, parent="root"))
    assert session.counters["send_failed"] >= 2
    session.close()


# ---------------------------------------------------------------------- WebRTC link and routes


@pytest.fixture
def loopback_ice(monkeypatch: pytest.MonkeyPatch) -> Iterator[IceSettings]:
    """aioice offers only 127.0.0.1 during the test (restored afterwards)."""
    monkeypatch.setattr(aioice.ice, "get_host_addresses", aioice.ice.get_host_addresses)
    monkeypatch.setattr(ice_module, "_host_addresses", ice_module._host_addresses)
    install_host_addresses(("127.0.0.1",))
    yield IceSettings(host_addresses=("127.0.0.1",))


async def test_an_aiortc_client_edits_through_browser_links(loopback_ice: IceSettings) -> None:
    room = FakeRoom()
    links = BrowserLinks(loopback_ice, max_connections=4)
    client = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    received: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    channel = client.createDataChannel("client")
    channel.on("message", lambda text: received.put_nowait(json.loads(text)))
    try:
        await client.setLocalDescription(await client.createOffer())
        answer = await links.answer(client.localDescription.sdp, room)
        assert links.count == 1 and links.total == 1
        await client.setRemoteDescription(RTCSessionDescription(answer, "answer"))

        async def next_of(kind: str) -> dict[str, Any]:
            while True:
                m = await asyncio.wait_for(received.get(), 15.0)
                if m["t"] == kind:
                    return m

        welcome = await next_of("welcome")
        assert welcome["room"] == room.room_id.hex() and welcome["node"] == room.me
        # The client is a person: it proves its key, then signs what the node drafts.
        person = Identity.generate()
        proof = person.sign(identify_payload(room.room_id, EntityId.parse(f"{room.me}/1").creator,
                                             base64.b64decode(welcome["challenge"])))
        channel.send(msg(t="identify", peer=person.public_id,
                         sig=base64.b64encode(proof).decode()))
        assert (await next_of("identified"))["role"] == "editor"
        channel.send(msg(t="create", req=1, parent="root", components={"name": {"value": "x"}}))
        sign = await next_of("sign")
        body = base64.b64decode(sign["body"])
        assert decode_change(body + bytes(64)).author == person.public_key
        sig = person.sign(signing_payload(room.room_id, body))
        channel.send(msg(t="signed", sreq=sign["sreq"], sig=base64.b64encode(sig).decode()))
        ack = await next_of("ack")
        assert ack["ok"] is True
        assert room.replica.get_field(EntityId.parse(ack["id"]), "name", "value") == "x"
    finally:
        await client.close()
    await until(lambda: links.count == 0, timeout=20.0)  # the node noticed and cleaned up
    assert not room.subscribers
    assert links.counters()["acks"] == 1
    await links.close()


async def test_a_browser_that_never_opens_its_channel_is_dropped(
    loopback_ice: IceSettings,
) -> None:
    room = FakeRoom()
    client = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    client.createDataChannel("client")
    closed = asyncio.Event()
    try:
        await client.setLocalDescription(await client.createOffer())
        answer, conn = await answer_browser_offer(
            client.localDescription.sdp, room, loopback_ice, on_closed=closed.set,
            open_timeout_s=0.2,
        )
        assert answer.startswith("v=0") and not conn.closed
        # The client never takes the answer: the node gives up on it.
        await asyncio.wait_for(closed.wait(), 10.0)
        assert conn.closed and conn.session is None and not room.subscribers
        await conn.close()  # idempotent
    finally:
        await client.close()


async def test_an_offer_without_a_data_channel_is_refused(loopback_ice: IceSettings) -> None:
    client = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    client.addTransceiver("audio")
    try:
        await client.setLocalDescription(await client.createOffer())
        with pytest.raises(InvalidOffer, match="data channel"):
            await answer_browser_offer(client.localDescription.sdp, FakeRoom(), loopback_ice)
    finally:
        await client.close()


@pytest.fixture
async def web_app(loopback_ice: IceSettings) -> AsyncIterator[tuple[TestClient[Any, Any],
                                                                      FakeRoom]]:
    room = FakeRoom()
    app = web.Application()
    add_web_routes(
        app,
        rooms=lambda hex_id: room if hex_id == room.room_id.hex() else None,
        default_room=lambda: room.room_id.hex(),
        ice=loopback_ice,
        max_browsers=1,
    )
    client: TestClient[Any, Any] = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    try:
        yield client, room
    finally:
        await client.close()


async def test_routes_serve_the_page_and_refuse_bad_offers(
    web_app: tuple[TestClient[Any, Any], FakeRoom],
) -> None:
    client, room = web_app
    resp = await client.get("/")
    assert resp.status == 200 and "/static/app.js" in await resp.text()
    for path in ("/static/app.js", "/static/vendor/three.module.min.js",
                 "/static/vendor/three.core.min.js"):
        resp = await client.get(path)
        assert resp.status == 200 and "javascript" in resp.content_type, path
    assert (await client.get("/static/style.css")).status == 200
    assert (await client.get("/static/../session.py")).status in (403, 404)
    assert (await client.get("/static/%2e%2e/session.py")).status in (403, 404)
    resp = await client.get("/api/default-room")
    assert await resp.json() == {"room": room.room_id.hex()}
    resp = await client.get("/api/ice")
    assert await resp.json() == {"iceServers": []}

    async def offer(body: Any, *, raw: str | None = None,
                    content_type: str = "application/json") -> tuple[int, Any]:
        data = raw if raw is not None else json.dumps(body)
        r = await client.post("/api/browser/offer", data=data,
                              headers={"Content-Type": content_type})
        return r.status, await r.json()

    hex_id = room.room_id.hex()
    assert (await offer({"room": hex_id, "sdp": "x"}, content_type="text/plain"))[0] == 415
    for bad in ({"sdp": "x"}, {"room": 5, "sdp": "x"}, {"room": "zz", "sdp": "x"},
                {"room": hex_id}, {"room": hex_id, "sdp": 7}, [hex_id]):
        status, body = await offer(bad)
        assert status == 400 and body["error"], bad
    status, body = await offer(None, raw="{nope")
    assert status == 400 and "JSON" in body["error"]
    status, body = await offer(None, raw=json.dumps({"room": hex_id, "sdp": "v" * 200_000}))
    assert status == 400
    status, body = await offer({"room": "ab" * 32, "sdp": "x"})
    assert status == 404 and body["error"]
    status, body = await offer({"room": hex_id, "sdp": "not sdp"})
    assert status == 400 and "data channel" in body["error"]
    status, body = await offer({"room": hex_id, "sdp": "v=0\r\nm=application nonsense\r\n"})
    assert status == 400 and body["error"]
    assert client.app[BROWSER_LINKS].count == 0

    # The node is full (max_browsers=1) once one browser is connected: its channel opened.
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.createDataChannel("client")
    try:
        await pc.setLocalDescription(await pc.createOffer())
        status, body = await offer({"room": hex_id.upper(), "sdp": pc.localDescription.sdp})
        assert status == 200 and body["sdp"].startswith("v=0")
        await pc.setRemoteDescription(RTCSessionDescription(body["sdp"], "answer"))
        await until(lambda: client.app[BROWSER_LINKS].sessions == 1, timeout=20.0)
        status, body = await offer({"room": hex_id, "sdp": pc.localDescription.sdp})
        assert status == 503 and "at most 1" in body["error"]
    finally:
        await pc.close()


# ---------------------------------------------------------------------- the page in Chromium


WAIT_FOR = """
new Promise((resolve, reject) => {
  const test = () => { try { return (%s)(window.meshnode.state()); } catch (e) { return false; } };
  const timer = setTimeout(() => { off(); reject(new Error(
    "timed out; the page's state: " + JSON.stringify(window.meshnode.state()))); }, 15000);
  const off = window.meshnode.onChange(() => { if (test()) { clearTimeout(timer); off();
    resolve(window.meshnode.state()); } });
  if (test()) { clearTimeout(timer); off(); resolve(window.meshnode.state()); }
})
"""


WAIT_UNTIL = """
new Promise((resolve, reject) => {
  const started = performance.now();
  const poll = () => {
    if (%s) resolve(true);
    else if (performance.now() - started > 15000) reject(new Error("timed out"));
    else setTimeout(poll, 20);
  };
  poll();
})
"""


async def test_the_page_edits_and_follows_the_room_in_chromium(
    chromium: Chromium, web_app: tuple[TestClient[Any, Any], FakeRoom],
) -> None:
    client, room = web_app
    page = await chromium.new_page(width=1200, height=800)
    try:
        await page.goto(str(client.make_url("/")))
        info = await page.evaluate("window.meshnode.ready", timeout=20.0)
        assert info["room"] == room.room_id.hex() and info["node"] == room.me
        assert info["room_name"] == "test room" and info["role"] == "editor"
        assert info["peer_id"] != room.me
        assert await page.evaluate("window.meshnode.identity()") == {
            "peer_id": info["peer_id"], "did": info["did"]}

        # The browser creates an entity; the node has it, signed by the person's key.
        cube = await page.evaluate(
            'window.meshnode.createEntity("root", {"name": {"value": "cube"}, '
            '"transform": {"position": [1, 2, 3]}, "appearance": {"color": "#3060ff"}})'
        )
        entity = room.replica.state()[cube]
        op = entity["components"]["op"]  # the page tags its creates (failover redelivery)
        assert entity == {"parent": "root", "components": {
            "name": {"value": "cube"}, "transform": {"position": [1, 2, 3]},
            "appearance": {"color": "#3060ff"}, "op": op,
        }}
        assert cube.startswith(info["peer_id"] + "/")
        assert (await page.evaluate("window.meshnode.state()"))[cube] == entity
        await page.evaluate(f'window.meshnode.setField("{cube}", "transform", "position", '
                            '[1.5, 0.5, 0])')
        assert room.replica.get_field(EntityId.parse(cube), "transform", "position") == [
            1.5, 0.5, 0]
        error = await page.evaluate(
            'window.meshnode.deleteEntity("root").then(() => "no error", (e) => e.message)'
        )
        assert "root" in error

        # The node changes the scene (as a peer's change would); the page follows.
        red = room.local_edit(lambda r: r.create_entity(ROOT, {
            "name": {"value": "red"}, "transform": {"position": [-2.0, 0.5, 0.0]},
            "appearance": {"color": "#ff3030"},
        }))
        state = await page.evaluate(WAIT_FOR % f's => "{red}" in s')
        assert state == room.replica.state()
        temp = room.local_edit(lambda r: r.create_entity(ROOT))
        await page.evaluate(WAIT_FOR % f's => "{temp}" in s')
        room.local_edit(lambda r: r.delete(temp))
        state = await page.evaluate(WAIT_FOR % f's => !("{temp}" in s)')
        assert state == room.replica.state()

        # Presence: the page publishes its own, signed by the person.
        await page.evaluate('window.meshnode.setPresence({"name": "tester", "pointer": [0, 0, 1],'
                            ' "session": window.meshnode.info().session})')
        await until(lambda: room.peers.get(info["peer_id"], {}).get("name") == "tester")

        # The page's own controls: add, rename, delete.
        await page.evaluate("""(() => { const f = document.getElementById("add-form");
            f.elements.name.value = "chair"; f.elements.x.value = "3"; f.requestSubmit(); })()""")

        def named(name: str) -> str | None:
            for ident, ent in room.replica.state().items():
                if ent["components"].get("name") == {"value": name}:
                    return ident
            return None

        await until(lambda: named("chair") is not None)
        chair = EntityId.parse(named("chair") or "")
        assert room.replica.get_field(chair, "transform", "position") == [3, 0.5, 0]
        await page.evaluate(WAIT_UNTIL % 'document.getElementById("edit-title").textContent'
                            ' === "chair"')
        await page.evaluate("""(() => { const f = document.getElementById("edit-form");
            f.elements.name.value = "stool"; f.requestSubmit(); })()""")
        await until(lambda: room.replica.get_field(chair, "name", "value") == "stool")
        await page.evaluate(WAIT_UNTIL % 'document.getElementById("edit-title").textContent'
                            ' === "stool"')
        await page.evaluate('document.getElementById("delete-button").click()')
        await until(lambda: not room.replica.exists(chair))

        # The 3D view: a real WebGL render of both boxes.
        status = await page.evaluate("window.meshnode.view.status()")
        assert status["webgl"] is True, status
        _, _, bpp, pixels = await screenshot_view(page, "web_client_view.png", meshes=2)
        reds = blues = 0
        for i in range(0, len(pixels), bpp):
            r, g, b = pixels[i], pixels[i + 1], pixels[i + 2]
            reds += r > 140 and g < 90 and b < 90
            blues += b > 140 and r < 90 and g < 140
        assert reds > 200 and blues > 200, (reds, blues)
        assert not [m for m in page.console if m.kind in ("exception", "error", "log:error")], \
            page.console_text()
    finally:
        print(page.console_text())
        await page.close()


async def test_read_only_room_refuses_edits_and_passes_the_rest() -> None:
    from meshnode.crdt import PermissionDenied
    from meshnode.web import ReadOnlyRoom

    replica = SceneReplica.create(Identity.generate(), 0.0, nonce=b"web-client-3")

    class Room:
        room_id = replica.room_id
        room_name = "r"
        me = "me"

        def __init__(self) -> None:
            self.seen: list[dict[str, Any]] = []

        def state(self) -> dict[str, dict[str, Any]]:
            return replica.state()

        def presence(self) -> dict[str, dict[str, Any]]:
            return {}

        async def edit(self, fn: Callable[[SceneReplica], Any]) -> Any:
            return fn(replica)

        def set_presence(self, fields: dict[str, Any]) -> None:
            self.seen.append(fields)

        def subscribe(self, callback: Callable[[], None]) -> Callable[[], None]:
            return lambda: None

    room = Room()
    ro = ReadOnlyRoom(room)
    with pytest.raises(PermissionDenied):
        await ro.edit(lambda r: r.create_entity(ROOT))
    assert replica.entities() == []
    assert ro.state() == replica.state() and ro.room_id == replica.room_id
    ro.set_presence({"name": "watcher"})
    assert room.seen == [{"name": "watcher"}]
