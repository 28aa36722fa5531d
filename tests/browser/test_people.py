"""People own their identity in the browser (real Chromium, real nodes).

- wire.js decodes docs/protocol.md's change vectors as documented, WebCrypto verifies their
  signatures and reproduces them from the vector seeds (Ed25519 is deterministic), and the
  PeerID and did:key renderings are the Python ones.
- Two browsers on two nodes, each with its own key: their changes reach a Python client
  authored by their own PeerIDs; an editor cannot delete another person's entity; a viewer
  cannot edit; a removed person loses their rights; two tabs of one person edit concurrently
  without equivocating; the key survives a reload; avatars show where people stand and move.
- Export in one browser profile, import in another and in the Python client: one person.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from meshnode.client import connect
from meshnode.crdt import EntityId
from meshnode.identity import Identity
from meshnode.identity_export import did_key, import_identity
from meshnode.web.routes import STATIC_DIR
from tests.integration.nodeproc import NodeProcess
from tests.integration.test_line import ICE, line, until

from .chromium import Chromium, Page
from .view import screenshot_view

__all__ = ["line"]  # the fixture, imported so pytest finds it here

DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"
BLOCK = re.compile(r"^```(hex|json) vector=(\S+)\n(.*?)^```$", re.M | re.S)


def vectors() -> tuple[dict[str, str], dict[str, Any]]:
    hexes: dict[str, str] = {}
    jsons: dict[str, Any] = {}
    for kind, label, body in BLOCK.findall(DOC.read_text(encoding="utf-8")):
        if kind == "hex":
            hexes[label] = "".join(body.split())
        else:
            jsons[label] = json.loads(body)
    return hexes, jsons


@pytest.fixture
async def static_site() -> AsyncIterator[str]:
    """The page's scripts on a secure-context origin (http://127.0.0.1), nothing else."""
    app = web.Application()

    async def blank(request: web.Request) -> web.Response:
        return web.Response(text="<!doctype html><title>t</title>", content_type="text/html")

    app.router.add_get("/", blank)
    app.router.add_static("/static/", STATIC_DIR)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield str(server.make_url("/")).rstrip("/")
    finally:
        await server.close()


CHECK_VECTORS = """(async () => {
  const w = await import("/static/wire.js");
  const H = HEXES, J = JSONS;
  const toJson = (v) => JSON.parse(JSON.stringify(v, (k, x) =>
    x instanceof Uint8Array ? {$bytes: w.hex(x)} : typeof x === "bigint" ? Number(x) : x));
  const out = {};
  const room = w.fromHex(J["room"].room_id);
  for (const name of ["change/genesis", "change/1", "change/2"]) {
    const ch = w.decodeChange(w.fromHex(H[name]));
    const want = J[name + ".decoded"];
    const key = await crypto.subtle.importKey("raw", ch.author, {name: "Ed25519"}, false,
                                              ["verify"]);
    const signedRoom = want.signed_room_id ? w.fromHex(want.signed_room_id) : new Uint8Array();
    out[name] = {
      author: w.hex(ch.author), seq: ch.seq, hlc_millis: w.hlcMillis(ch.hlc),
      deps: ch.deps.map(w.hex), actors: toJson(ch.actors).map((a) => a.$bytes || a),
      names: ch.names, ops: toJson(ch.ops), signature: w.hex(ch.signature),
      body_len: ch.body.length,
      verifies: await crypto.subtle.verify({name: "Ed25519"}, key, ch.signature,
                                           w.signingPayload(signedRoom, ch.body)),
      // A JavaScript number cannot say 2.0 from 2, so a page never re-encodes a change: it
      // decodes and checks it. Bodies without integral floats do re-encode byte for byte.
      reencoded: name !== "change/genesis" || w.hex(w.pack(w.unpack(ch.body))) === w.hex(ch.body),
    };
  }
  // Sign change/1's body with A's seed through WebCrypto: the same 64 bytes.
  const prefix = w.fromHex("302e020100300506032b657004220420");
  const seedA = w.fromHex(J["identities"].A.seed);
  const priv = await crypto.subtle.importKey("pkcs8", w.concat(prefix, seedA),
                                             {name: "Ed25519"}, false, ["sign"]);
  const ch1 = w.decodeChange(w.fromHex(H["change/1"]));
  out.resigned = w.hex(new Uint8Array(await crypto.subtle.sign({name: "Ed25519"}, priv,
                                                               w.signingPayload(room, ch1.body))));
  out.peer_ids = Object.fromEntries(Object.entries(J["identities"]).map(
    ([k, v]) => [k, [w.peerIdOf(w.fromHex(v.public_key)), w.didOf(w.fromHex(v.public_key))]]));
  // checkDraft on change/2 (B's): a create of B/1 under A/1 then more ops is not one create.
  out.mismatch = w.checkDraft(ch1.body, {t: "delete", id: "root"}, ch1.author);
  return out;
})()"""


async def test_wire_js_matches_the_protocol_vectors(chromium: Chromium, static_site: str
                                                    ) -> None:
    hexes, jsons = vectors()
    page = await chromium.new_page()
    await page.goto(f"{static_site}/")
    got = await page.evaluate(CHECK_VECTORS.replace("HEXES", json.dumps(hexes))
                              .replace("JSONS", json.dumps(jsons)))
    for name in ["change/genesis", "change/1", "change/2"]:
        want = jsons[f"{name}.decoded"]
        mine = got[name]
        assert mine["verifies"] is True and mine["reencoded"] is True, name
        for key in ("author", "seq", "hlc_millis", "deps", "names", "ops", "signature",
                    "body_len"):
            assert mine[key] == want[key], (name, key)
        assert mine["actors"] == want["actors"], name
    assert got["resigned"] == jsons["change/1.decoded"]["signature"]
    for name, ident in jsons["identities"].items():
        assert got["peer_ids"][name][0] == ident["peer_id"]
        assert got["peer_ids"][name][1] == did_key(bytes.fromhex(ident["public_key"]))
    assert got["mismatch"] is not None


WAIT = """new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error("timed out: " + JSON.stringify(DETAIL))), 30000);
    const poll = () => (COND) ? (clearTimeout(t), resolve(true)) : setTimeout(poll, 50);
    poll(); })"""


async def wait_js(page: Page, cond: str, detail: str = "null") -> None:
    await page.evaluate(WAIT.replace("COND", cond).replace("DETAIL", detail))


async def refused(page: Page, call: str) -> str:
    """The reason an edit call is refused with (the page's Error.reason)."""
    reason: str = await page.evaluate(
        f"{call}.then(() => 'accepted', (err) => err.reason || err.message)")
    return reason


async def open_page(browser: Chromium, url: str) -> tuple[Page, dict[str, Any]]:
    page = await browser.new_page()
    await page.goto(url)
    info: dict[str, Any] = await page.evaluate("window.meshnode.ready")
    return page, info


async def test_people_in_two_browsers_on_two_nodes(
        media_chromium: Chromium, line: tuple[NodeProcess, NodeProcess, NodeProcess, str]
) -> None:
    chromium = media_chromium
    a, _b, c, room = line
    editor = a.post(f"/api/rooms/{room}/invites", {"role": "editor"})["token"]
    viewer = a.post(f"/api/rooms/{room}/invites", {"role": "viewer"})["token"]
    # Ann: a browser on A (an open room: admitted as editor); Carl: on C, with an invite link.
    ann, ann_info = await open_page(chromium, f"{a.url}/?room={room}")
    carl, carl_info = await open_page(chromium, f"{c.url}/?room={room}&invite={editor}")
    assert ann_info["peer_id"] != carl_info["peer_id"] != a.peer_id
    assert ann_info["role"] == "editor" and carl_info["role"] == "editor"
    assert ann_info["did"].startswith("did:key:z6Mk")
    assert await carl.evaluate("location.search.includes('invite')") is False
    async with connect(c.url, room, Identity.generate(), ice=ICE, invite=editor) as watcher:
        made_a = await ann.evaluate(
            'window.meshnode.createEntity("root", {"name": {"value": "ann\'s"},'
            ' "transform": {"position": [-2, 0.5, 0]}})')
        made_c = await carl.evaluate(
            'window.meshnode.createEntity("root", {"name": {"value": "carl\'s"},'
            ' "transform": {"position": [2, 0.5, 0]}})')
        await until(lambda: made_a in watcher.state() and made_c in watcher.state(),
                    "both people's entities at the Python client")
        replica = watcher.replica
        # Authored by their own keys (the entity ID names its creator; the replica accepted
        # the change, so its signature by that key verified).
        for made, info in ((made_a, ann_info), (made_c, carl_info)):
            creator = EntityId.parse(made).creator
            assert EntityId.parse(made).creator == EntityId.parse(
                f"{info['peer_id']}/1").creator
            authored = [cid for cid in replica.recent_changes(200)
                        if replica.change_author(cid) == creator]
            assert authored, f"no change authored by {info['peer_id']}"
        assert replica.members()[ann_info["peer_id"]] == "editor"
        assert replica.members()[carl_info["peer_id"]] == "editor"

        # An editor cannot delete another person's entity; the reason is shown.
        await wait_js(carl, f"{json.dumps(made_a)} in window.meshnode.state()")
        assert await refused(carl, f"window.meshnode.deleteEntity({made_a!r})") \
            == "not_entity_owner"
        assert made_a in watcher.state()
        # Accountability: the page knows who made and who last changed each entity.
        await wait_js(carl, f"window.meshnode.authors()[{made_a!r}] === "
                            f"{json.dumps(ann_info['peer_id'])}")

        # A viewer cannot edit (another browser profile: another person).
        profile = await Chromium.launch()
        try:
            vera, vera_info = await open_page(profile, f"{c.url}/?room={room}&invite={viewer}")
            assert vera_info["role"] == "viewer"
            assert await refused(vera, 'window.meshnode.createEntity("root", {})') \
                == "viewer_cannot_edit"
        finally:
            await profile.close()

        # Two tabs of Ann edit at once: one seq each time, no equivocation anywhere.
        ann2, ann2_info = await open_page(chromium, f"{a.url}/?room={room}")
        assert ann2_info["peer_id"] == ann_info["peer_id"]
        burst = """Promise.all(Array.from({length: 6}, (_, i) =>
            window.meshnode.createEntity("root", {"name": {"value": "TAB " + i}})))"""
        made1, made2 = await asyncio.gather(ann.evaluate(burst), ann2.evaluate(burst))
        both = set(made1) | set(made2)
        assert len(both) == 12
        await until(lambda: both <= set(watcher.state()), "both tabs' entities at C")
        assert replica.equivocations == []
        await ann2.close()

        # Avatars: Ann steps aside; Carl's page sees her there and draws both avatars.
        moved = await ann.evaluate("window.meshnode.move(3, -2)")
        await wait_js(carl, "window.meshnode.people().some((p) => p.key === "
                      f"{json.dumps(ann_info['peer_id'])} && p.position && "
                      f"p.position[0] === {moved[0]} && p.position[2] === {moved[2]})",
                      "window.meshnode.people()")
        await wait_js(carl, "window.meshnode.view.status().avatars >= 2",
                      "window.meshnode.view.status()")
        drawn = await carl.evaluate("window.meshnode.view.avatars()")
        assert drawn[ann_info["peer_id"]][0] == moved[0]
        await screenshot_view(carl, "people_avatars.png", meshes=await carl.evaluate(
            "Object.keys(window.meshnode.state()).length"))

        # Ann turns her (fake, beeping) microphone on: her presence says she is speaking,
        # and Carl's view lights her ring; off again, it goes out.
        ann_key = json.dumps(ann_info["peer_id"])
        assert await ann.evaluate("window.meshnode.media.microphone(true)") is True
        await wait_js(carl, f"window.meshnode.people().some((p) => p.key === {ann_key} && "
                            "p.speaking === true)", "window.meshnode.people()")
        await wait_js(carl, f"window.meshnode.view.speaking()[{ann_key}] === true",
                      "window.meshnode.view.speaking()")
        assert (await carl.evaluate("window.meshnode.view.speaking()"))[
            carl_info["peer_id"]] is False
        assert await ann.evaluate("window.meshnode.media.microphone(false)") is False
        assert await ann.evaluate("window.meshnode.media.speaking()") is False
        await wait_js(carl, f"window.meshnode.view.speaking()[{ann_key}] === false",
                      "window.meshnode.view.speaking()")

        # Carl is removed (by the owner's node A): his rights end everywhere.
        a.post(f"/api/rooms/{room}/members", {"peer": carl_info["peer_id"], "role": "none"})
        await until(lambda: replica.role_of(carl_info["peer_id"]) == "none", "Carl removed")
        reason = await refused(carl, f"window.meshnode.setField({made_c!r}, 'name', 'value',"
                                     " 'still mine?')")
        assert reason == "not_a_member"

    # The key survives a reload (loading the page again, waiting for its load event: a
    # reload started from inside the page could be raced by the next evaluation).
    await ann.goto(await ann.evaluate("location.href"))
    again = await ann.evaluate("window.meshnode.ready")
    assert again["peer_id"] == ann_info["peer_id"]
    for page in (ann, carl):
        errors = [m for m in page.console if m.kind in ("exception", "log:error")]
        assert not errors, page.console_text()
        await page.close()


async def test_export_in_one_profile_import_in_another_and_in_python(
        chromium: Chromium, line: tuple[NodeProcess, NodeProcess, NodeProcess, str]) -> None:
    a, _b, c, room = line
    page, info = await open_page(chromium, f"{a.url}/?room={room}&identity=exportable")
    made = await page.evaluate('window.meshnode.createEntity("root", {"n": {"v": 1}})')
    text = await page.evaluate("window.meshnode.exportIdentity('a long passphrase')")
    assert json.loads(text)["peer_id"] == info["peer_id"]
    # A key made non-extractable (the default) cannot be exported.
    other = await Chromium.launch()
    try:
        plain, plain_info = await open_page(other, f"{a.url}/?room={room}")
        assert "non-extractable" in await plain.evaluate(
            "window.meshnode.exportIdentity('x').then(() => 'exported', (e) => e.message)")
        assert plain_info["peer_id"] != info["peer_id"]
        # Import the export in that other profile: after a reload it is the same person.
        imported = await plain.evaluate(
            f"window.meshnode.importIdentity({json.dumps(text)}, 'a long passphrase')")
        assert imported["peer_id"] == info["peer_id"]
        await plain.reload()
        await wait_js(plain, "window.meshnode && window.meshnode.info() && "
                      "window.meshnode.info().peer_id")
        assert (await plain.evaluate("window.meshnode.identity()"))["peer_id"] == info["peer_id"]
        # The same person edits their own entity from the other profile.
        await wait_js(plain, f"{json.dumps(made)} in window.meshnode.state()")
        await plain.evaluate(f"window.meshnode.setField({made!r}, 'n', 'v', 2)")
    finally:
        await other.close()
    # The Python client with the exported file is the same person: their entity, their role.
    person = import_identity(text, "a long passphrase")
    assert person.public_id == info["peer_id"]
    async with connect(c.url, room, person, ice=ICE) as client:
        await until(lambda: made in client.state(), "the person's entity at C")
        assert client.role() == "editor"
        client.set_field(EntityId.parse(made), "n", "v", 3)
        await client.flush()
    await page.close()
