"""Headless Chromium on node A's web client, a Python client on node C: edits flow both ways
through three real ``meshnode up`` processes; a screenshot of the 3D view is saved."""

import json

from meshnode.client import connect
from meshnode.crdt import ROOT
from meshnode.identity import Identity
from tests.integration.nodeproc import NodeProcess
from tests.integration.test_line import ICE, line, until

from .chromium import Chromium
from .view import screenshot_view

__all__ = ["line"]  # the fixture, imported so pytest finds it here

WAIT_FOR_PEOPLE = """new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(JSON.stringify(window.meshnode.people()))),
                         15000);
    const poll = () => window.meshnode.people().length >= 2
      ? (clearTimeout(t), resolve(true)) : setTimeout(poll, 50);
    poll(); })"""
WAIT_FOR_ENTITY = """new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error("not seen")), 30000);
    const poll = () => (ENTITY in window.meshnode.state())
      ? (clearTimeout(t), resolve(true)) : setTimeout(poll, 20);
    poll(); })"""


async def test_browser_at_a_and_python_client_at_c(
        chromium: Chromium, line: tuple[NodeProcess, NodeProcess, NodeProcess, str]) -> None:
    a, _b, c, room = line
    editor = a.post(f"/api/rooms/{room}/invites", {"role": "editor"})["token"]
    page = await chromium.new_page()
    try:
        await page.goto(f"{a.url}/?room={room}")
        me = await page.evaluate("window.meshnode.ready")
        async with connect(c.url, room, Identity.generate(), ice=ICE, invite=editor) as at_c:
            # Browser at A -> Python client at C.
            made = await page.evaluate(
                'window.meshnode.createEntity("root", {"name": {"value": "from the browser"},'
                ' "transform": {"position": [1.5, 0.5, 0]},'
                ' "appearance": {"color": "#d03030"}})')
            assert isinstance(made, str)
            await until(lambda: made in at_c.state(), "the browser's entity at C")
            assert at_c.state()[made]["components"]["name"] == {"value": "from the browser"}
            assert await page.evaluate(
                f'window.meshnode.setField({made!r}, "name", "value", "renamed")') is not False
            await until(lambda: at_c.state().get(made, {}).get("components", {})
                        .get("name") == {"value": "renamed"}, "the rename at C")

            # Python client at C -> browser at A.
            cube = at_c.create_entity(ROOT, {"name": {"value": "from python"},
                                             "transform": {"position": [-1.5, 0.5, 0.0]},
                                             "appearance": {"color": "#3050d0"}})
            await at_c.flush()
            await page.evaluate(WAIT_FOR_ENTITY.replace("ENTITY", json.dumps(str(cube))))
            # The browser's view is the canonical view: equal to the replica's at C.
            browser_state = await page.evaluate("window.meshnode.state()")
            assert browser_state[str(cube)] == at_c.state()[str(cube)]
            assert browser_state[made] == at_c.state()[made]

            await screenshot_view(page, "node_a_room.png", meshes=2)
            # Deleting from the browser removes it at C.
            await page.evaluate(f"window.meshnode.deleteEntity({made!r})")
            await until(lambda: made not in at_c.state(), "the delete at C")

        errors = [m for m in page.console if m.kind in ("exception", "error", "log:error")]
        assert not errors, page.console_text()
        # Two people on node A's page (two browser profiles: two keys) are two people to
        # everyone: each signs their own presence.
        other = await Chromium.launch()
        try:
            second = await other.new_page()
            await second.goto(f"{a.url}/?room={room}")
            them = await second.evaluate("window.meshnode.ready")
            assert them["peer_id"] != me["peer_id"]
            async with connect(c.url, room, Identity.generate(), ice=ICE,
                               invite=editor) as watcher:
                await until(lambda: {me["peer_id"], them["peer_id"]} <= set(watcher.presence()),
                            "both people at C")
            await second.evaluate(WAIT_FOR_PEOPLE)
        finally:
            await other.close()
        # The operator's status page shows the node, its room and its links.
        await page.goto(f"{a.url}/status#token={a.admin_token}")  # as `status --open`
        await page.evaluate("""new Promise((resolve, reject) => {
            const t = setTimeout(() => reject(new Error(document.body.innerText)), 10000);
            const poll = () => document.querySelectorAll("#peers tbody tr").length >= 1
              ? (clearTimeout(t), resolve()) : setTimeout(poll, 20);
            poll(); })""")
        text = await page.evaluate("document.body.innerText")
        assert a.peer_id in text and "lobby" in text
    finally:
        await page.close()
