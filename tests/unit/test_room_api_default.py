"""``POST /api/rooms`` makes the same room ``meshnode room create`` makes: private unless
``"private": false`` or ``"admit": "open"`` (an open room admits anyone, so it is never
private); a private room is invite-only. A real in-process node with real HTTP."""

from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp

from meshnode.config import NodeConfig
from meshnode.node import Node
from meshnode.signaling.admin_token import ADMIN_TOKEN_FILE, read_admin_token


async def test_post_rooms_defaults_to_private_for_invite_rooms(tmp_path: Path) -> None:
    node = Node(replace(NodeConfig(), data_dir=tmp_path / "node", listen_port=0,
                        store_synchronous="normal", admit="open"))
    await node.start()
    try:
        token = read_admin_token(tmp_path / "node" / ADMIN_TOKEN_FILE)
        async with aiohttp.ClientSession(
                headers={"Authorization": f"Bearer {token}"}) as http:

            async def create(body: dict[str, Any]) -> tuple[int, Any]:
                async with http.post(f"{node.url}/api/rooms", json=body) as resp:
                    return resp.status, await resp.json()

            status, room = await create({"name": "plain"})
            assert status == 200 and room["private"] and room["admit"] == "invite"
            assert room["this_node"] == "reader" and room["name"] == "plain"
            status, room = await create({"name": "by invite", "admit": "invite"})
            assert status == 200 and room["private"]
            status, room = await create({"name": "lobby", "admit": "open"})
            assert status == 200 and not room["private"] and room["admit"] == "open"
            # Not private: the node's [rooms] admit (open here), as `room create --public`.
            status, room = await create({"name": "exam", "private": False})
            assert status == 200 and not room["private"] and room["admit"] == "open"
            status, err = await create({"name": "x", "admit": "open", "private": True})
            assert status == 400 and "cannot be private" in err["error"]
    finally:
        await node.stop()
