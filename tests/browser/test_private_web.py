"""People in browsers edit private rooms (real Chromium; a real node for the end-to-end case).

- wire.js reproduces docs/protocol.md's private-room vectors (commitment, content and
  presence keys, padding, AAD, AES-GCM sealing and opening) with WebCrypto.
- wire.js ``checkSealedDraft`` accepts a draft the Python node sealed for the edit asked for,
  and refuses one for another edit, another secret, another epoch change, a flipped
  ciphertext bit or extra ops in clear.
- A browser with an editor invite to a private room on a real node edits it: the change is
  sealed, authored by the person's key, and read by a Python member; the page shows the lock,
  the members holding keys and that its node renders the room; a stranger's browser is not
  served the room; once the person is removed, their page is shown nothing more.
"""

from __future__ import annotations

import base64
import json
import os
import re
import time
from pathlib import Path
from typing import Any

from meshnode.client import connect
from meshnode.crdt import EntityId, SceneReplica
from meshnode.crdt.authoring import PersonDraft
from meshnode.identity import Identity
from protocol.change import decode_change
from protocol.msgpack_io import pack
from protocol.private_ops import OP_SEALED
from tests.integration.nodeproc import NodeProcess
from tests.integration.test_line import ICE, until

from .chromium import Chromium
from .test_people import open_page, refused, static_site, wait_js

__all__ = ["static_site"]  # the fixture, imported so pytest finds it here

DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"
CANARY = "CANARY-b12c"


def private_vectors() -> dict[str, str]:
    """The "Private rooms: test vectors" block of docs/protocol.md, as hex by label."""
    text = DOC.read_text(encoding="utf-8")
    block = text.split("<!-- BEGIN PRIVATE VECTORS", 1)[1].split("<!-- END PRIVATE VECTORS", 1)[0]
    body = block.split("```text\n", 1)[1].split("```", 1)[0]
    out: dict[str, str] = {}
    label = ""
    for line in body.splitlines():
        if line.startswith("  "):
            out[label] += line.strip()
        else:
            label = line.rstrip(":")
            out[label] = ""
    return out


VECTORS_JS = """(async () => {
  const w = await import("/static/wire.js");
  const V = VECTORS;
  const H = (k) => w.fromHex(V[k]);
  const room = H("room_id"), secret = H("epoch_secret");
  const content = await w.hkdf(secret, w.derivedInfo(room, "content"));
  const aad = w.sealAad(room, H("author_A_ed25519"), 2, 1700000001000n << 16n, new Uint8Array());
  const opened = await w.openPayload(content, H("seal_nonce"), H("sealed_ciphertext"), aad);
  const flipped = H("sealed_ciphertext");
  flipped[3] ^= 1;
  return {
    commitment: w.hex(await w.hkdf(secret, w.commitmentInfo(room))),
    content_key: w.hex(content),
    presence_key: w.hex(await w.hkdf(secret, w.derivedInfo(room, "presence"))),
    padded_plaintext: w.hex(w.pad(H("sealed_payload_plaintext"))),
    unpadded: w.hex(w.unpad(H("padded_plaintext"))),
    aad: w.hex(aad),
    sealed_ciphertext: w.hex(await w.sealPayload(content, H("seal_nonce"),
                                                 H("sealed_payload_plaintext"), aad)),
    opened: opened && w.hex(opened),
    flipped_opens: (await w.openPayload(content, H("seal_nonce"), flipped, aad)) !== null,
    bad_padding: w.unpad(new Uint8Array(64)) === null,
  };
})()"""


async def test_wire_js_seals_and_opens_as_the_protocol_vectors_say(
        chromium: Chromium, static_site: str) -> None:
    v = private_vectors()
    page = await chromium.new_page()
    await page.goto(f"{static_site}/")
    got = await page.evaluate(VECTORS_JS.replace("VECTORS", json.dumps(v)))
    assert got["commitment"] == v["commitment"]
    assert got["content_key"] == v["content_key"]
    assert got["presence_key"] == v["presence_key"]
    assert got["padded_plaintext"] == v["padded_plaintext"]
    assert got["unpadded"] == v["sealed_payload_plaintext"]
    assert got["aad"] == v["seal_aad (seq 2, epoch created by the same change)"]
    assert got["sealed_ciphertext"] == v["sealed_ciphertext"]
    assert got["opened"] == v["sealed_payload_plaintext"]
    assert got["flipped_opens"] is False and got["bad_padding"] is True


CHECK_JS = """(async () => {
  const w = await import("/static/wire.js");
  const C = CASES;
  const b = (x) => w.fromB64(x);
  const out = {};
  for (const [name, c] of Object.entries(C)) {
    out[name] = await w.checkSealedDraft(b(c.body), c.edit, b(c.me), b(c.room),
                                         {secret: b(c.secret), epoch: b(c.epoch)});
  }
  // Fuzz: random byte changes to the body, the secret and the epoch change never throw, and
  // are accepted only where the page does not look (deps: docs/protocol.md says why).
  const h = C.honest;
  let seed = 7;
  const rand = (n) => ((seed = (seed * 1103515245 + 12345) % 2147483648) % n);
  out.fuzz = {threw: [], accepted_secret_or_epoch: 0, accepted_ct: 0};
  for (let i = 0; i < 300; i++) {
    const which = ["body", "secret", "epoch"][i % 3];
    const parts = {body: b(h.body), secret: b(h.secret), epoch: b(h.epoch)};
    const at = rand(parts[which].length);
    parts[which][at] ^= 1 + rand(255);
    try {
      const got = await w.checkSealedDraft(parts.body, h.edit, b(h.me), b(h.room),
                                           {secret: parts.secret, epoch: parts.epoch});
      if (got !== null && typeof got !== "string") out.fuzz.threw.push(`${which}: ${got}`);
      if (got === null && which !== "body") out.fuzz.accepted_secret_or_epoch++;
      if (got === null && which === "body" && at >= parts.body.length - 40) out.fuzz.accepted_ct++;
    } catch (err) {
      out.fuzz.threw.push(`${which}@${at}: ${err.message}`);
    }
  }
  return out;
})()"""


def sealed_cases() -> dict[str, dict[str, Any]]:
    """A draft the Python node seals for a person's create, and the same draft lied about."""
    owner, ann = Identity.generate(), Identity.generate()
    replica = SceneReplica.create(owner, time.time(), name="vault", nonce=b"v", private=True)
    replica.grant(ann.public_id, "editor")
    replica.commit(time.time())
    draft = PersonDraft(replica, ann.public_key)
    draft.create_entity(components={"name": {"value": CANARY}})
    sealed = draft.seal(time.time(), None, nonce=os.urandom(12))
    assert sealed.epoch_secret is not None and sealed.epoch_change is not None
    b64 = lambda x: base64.b64encode(x).decode()  # noqa: E731
    edit = {"t": "create", "parent": "root", "components": {"name": {"value": CANARY}}}
    base = {"body": b64(sealed.body), "edit": edit, "me": b64(ann.public_key),
            "room": b64(replica.room_id), "secret": b64(sealed.epoch_secret),
            "epoch": b64(sealed.epoch_change)}
    ch = decode_change(sealed.body + bytes(64))
    op = ch.ops[0]
    flipped = bytearray(op[3])
    flipped[0] ^= 1
    genesis = replica.genesis

    def body(ops: list[Any]) -> str:
        return b64(pack([ch.author, ch.seq, ch.deps, ch.hlc, [[], [], ops]]))

    return {
        "honest": base,
        "another_edit": {**base, "edit": {**edit, "components": {"name": {"value": "other"}}}},
        "another_secret": {**base, "secret": b64(bytes(32))},
        "another_epoch": {**base, "epoch": b64(genesis)},
        "flipped": {**base, "body": body([[OP_SEALED, op[1], op[2], bytes(flipped)]])},
        "extra_op": {**base, "body": body([op, [4, [0, 1]]])},
        "not_mine": {**base, "me": b64(owner.public_key)},
    }


async def test_wire_js_checks_what_the_node_sealed_before_signing(
        chromium: Chromium, static_site: str) -> None:
    page = await chromium.new_page()
    await page.goto(f"{static_site}/")
    got = await page.evaluate(CHECK_JS.replace("CASES", json.dumps(sealed_cases())))
    assert got["honest"] is None, got
    assert "differs" in got["another_edit"]
    assert "commitment" in got["another_secret"]
    assert "epoch change" in got["another_epoch"]
    assert "do not open" in got["flipped"]
    assert "one sealed op" in got["extra_op"]
    assert "not authored" in got["not_mine"]
    fuzz = got["fuzz"]
    assert fuzz["threw"] == [] and fuzz["accepted_secret_or_epoch"] == 0
    assert fuzz["accepted_ct"] == 0


async def test_a_browser_edits_a_private_room_on_a_real_node(
        chromium: Chromium, tmp_path: Path) -> None:
    node = NodeProcess(tmp_path / "a", args=["--no-default-room"]).start()
    try:
        created = node.post("/api/rooms", {"name": f"vault {CANARY}", "private": True,
                                           "admit": "invite"})
        room = created["id"]
        assert created["private"] and created["this_node"] == "reader"
        editor = node.post(f"/api/rooms/{room}/invites", {"role": "editor"})["token"]
        viewer = node.post(f"/api/rooms/{room}/invites", {"role": "viewer"})["token"]
        page, info = await open_page(chromium, f"{node.url}/?room={room}&invite={editor}")
        assert info["role"] == "editor"
        await wait_js(page, "window.meshnode.privacy().you === 'reader'",
                      "window.meshnode.privacy()")
        made = await page.evaluate(
            f'window.meshnode.createEntity("root", {{"name": {{"value": "{CANARY}"}}}})')
        assert EntityId.parse(made).creator == EntityId.parse(f"{info['peer_id']}/1").creator
        await page.evaluate(f"window.meshnode.setField({made!r}, 'name', 'value', "
                            f"'{CANARY} 2')")
        # The page shows the lock, who holds keys, and that its own node renders the room.
        shown = await page.evaluate("""({
            lock: !document.getElementById("lock").hidden,
            text: document.getElementById("privacy").textContent,
            title: document.getElementById("room-name").textContent,
            privacy: window.meshnode.privacy()})""")
        assert shown["lock"] is True
        assert "renders this room for you" in shown["text"] and node.peer_id in shown["text"]
        assert f"{info['peer_id']} (you): keys ok" in shown["text"]
        assert shown["privacy"]["keys"][info["peer_id"]] is True
        assert shown["title"] == f"vault {CANARY}"
        # A Python member reads the person's sealed edit, authored by the person's key.
        async with connect(node.url, room, Identity.generate(), ice=ICE,
                           invite=viewer) as member:
            await until(lambda: member.state().get(made, {}).get("components", {}).get(
                "name") == {"value": f"{CANARY} 2"}, "the browser's edit at the member")
            replica = member.replica
            mine = [c for c in replica.recent_changes(50)
                    if replica.change_author(c) == EntityId.parse(made).creator]
            assert len(mine) == 2
            # The page seals its presence (its node gave it the presence key): a member
            # opens it; it is signed by the person.
            await until(lambda: "position" in member.presence().get(info["peer_id"], {}),
                        "the page's sealed presence at the member")
            for cid in mine:
                raw = replica.change_bytes(cid)
                assert raw is not None and CANARY.encode() not in raw
                assert [op[0] for op in decode_change(raw).ops] == [OP_SEALED]
                assert replica.voided(cid) is None
        # A stranger's browser (another profile, no invite) is not even served the room.
        other = await Chromium.launch()
        try:
            stranger = await other.new_page()
            await stranger.goto(f"{node.url}/?room={room}")
            why = await stranger.evaluate("window.meshnode.ready.then(() => 'served', "
                                          "(err) => err.message)")
            assert "does not host room" in why
            assert CANARY not in json.dumps(await stranger.evaluate(
                "[window.meshnode.state(), document.body.textContent]"))
        finally:
            await other.close()
        # The person is removed: their page is shown nothing more and gets no key.
        node.post(f"/api/rooms/{room}/members", {"peer": info["peer_id"], "role": "none"})
        await wait_js(page, "window.meshnode.privacy().you === 'not_a_reader' && "
                      "Object.keys(window.meshnode.state()).length === 0",
                      "[window.meshnode.privacy(), window.meshnode.state()]")
        assert "not a member" in await page.evaluate(
            'document.getElementById("privacy").textContent')
        assert await refused(page, 'window.meshnode.createEntity("root", {})') == "not_a_member"
        errors = [m for m in page.console if m.kind in ("exception", "log:error")]
        assert not errors, page.console_text()
        assert not re.search(r"refused to sign", page.console_text())
    finally:
        node.kill()
