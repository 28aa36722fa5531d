"""The page's node is killed mid-stream: the page reconnects to the room's other host (learnt
from its node, joined cross-origin) and keeps editing; every edit lands exactly once; and it
then learns the room's hosts from the node it moved to."""

from collections import Counter
from pathlib import Path

from meshnode.client import connect
from meshnode.identity import Identity
from tests.integration.nodeproc import NodeProcess, start_host
from tests.integration.test_line import ICE, until

from .chromium import Chromium

EDITS = 30
EDIT_LOOP = f"""window.__made = []; window.__errors = [];
(async () => {{
  for (let i = 0; i < {EDITS}; i++) {{
    try {{
      window.__made.push(await window.meshnode.createEntity("root",
                                                              {{name: {{value: "p-" + i}}}}));
    }} catch (err) {{ window.__errors.push(String(err)); }}
    await new Promise((r) => setTimeout(r, 100));
  }}
}})(); true"""


async def test_page_fails_over_to_another_host(chromium: Chromium, tmp_path: Path) -> None:
    a = NodeProcess(tmp_path / "a").start()
    b: NodeProcess | None = None
    nodes: list[NodeProcess] = []
    try:
        room = a.default_room
        assert room is not None
        b = start_host(tmp_path / "b", a, room, bootstrap=a)
        # B hosts the room invite-only: the page carries an editor's invite, as a guest would.
        token = a.post(f"/api/rooms/{room}/invites", {"role": "editor"})["token"]
        page = await chromium.new_page()
        await page.goto(f"{a.url}/?room={room}#invite={token}")
        await page.evaluate("window.meshnode.ready")

        async def js(expr: str) -> object:
            return await page.evaluate(expr)

        async def wait_js(expr: str, what: str) -> None:
            for _ in range(1200):
                if await js(expr):
                    return
                await page.evaluate("new Promise((r) => setTimeout(r, 50))")
            raise AssertionError(f"timed out waiting for {what}:\n{page.console_text()}")

        await wait_js(f"window.meshnode.connection().hosts.includes({b.url!r})",
                      "the page to learn B from A")
        await js(EDIT_LOOP)
        await wait_js("window.__made.length >= 5", "edits through A")
        a.kill()
        await wait_js(f"window.__made.length + window.__errors.length >= {EDITS}",
                      "every edit to be acknowledged, through B after the failover")
        assert await js("window.__errors") == []
        conn = await js("window.meshnode.connection()")
        assert isinstance(conn, dict)
        assert conn["url"] == b.url and conn["failovers"] >= 1
        # A third host joins while A is dead: the page hears of it from B, the node it
        # moved to (cross-origin), not from its own dead node.
        # (An admin may invite editors, not admins: C hosts the room as an editor.)
        invite_c = b.post(f"/api/rooms/{room}/invites", {"role": "editor"})["token"]
        c = NodeProcess(tmp_path / "c", args=["--no-default-room", "--bootstrap", b.url,
                                              "--join", invite_c])
        nodes.append(c.start())
        await wait_js(f"window.meshnode.connection().hosts.includes({c.url!r})",
                      "the page to learn C from B after the failover")

        # B holds every edit of the page exactly once (the one in flight when A died too).
        async with connect(b.url, room, Identity.generate(), ice=ICE, invite=token) as at_b:
            def names() -> Counter[str]:
                return Counter(str(e["components"].get("name", {}).get("value"))
                               for e in at_b.state().values())
            await until(lambda: all(names()[f"p-{i}"] >= 1 for i in range(EDITS)),
                        "every edit at B")
            assert all(names()[f"p-{i}"] == 1 for i in range(EDITS)), names()
            made = await js("window.__made")
            assert isinstance(made, list) and sorted(made) == sorted(set(made))
            assert all(m in at_b.state() for m in made)
    finally:
        a.kill()
        for n in [b, *nodes]:
            if n is not None:
                n.kill()
