"""Signaling endpoints of a real node: the WebSocket offer/answer and bad input on both."""

import json
import urllib.error
import urllib.request

import aiohttp
import pytest

from meshnode.client import connect
from meshnode.crdt import ROOT
from meshnode.identity import Identity
from tests.integration.nodeproc import NodeProcess
from tests.integration.test_line import ICE


async def test_client_links_through_the_websocket(node: NodeProcess) -> None:
    room = node.default_room
    assert room is not None
    async with connect(node.url, room, Identity.generate(), ice=ICE,
                       signaling="websocket") as client:
        ent = client.create_entity(ROOT, {"name": {"value": "via ws"}})
        assert await client.flush() is not None
        assert str(ent) in client.state()


async def test_websocket_answers_bad_input_with_errors_and_stays_up(node: NodeProcess) -> None:
    ws_url = "ws" + node.url[len("http"):] + "/signal/ws"
    async with aiohttp.ClientSession() as http, http.ws_connect(ws_url) as ws:
        for bad in ("not json", json.dumps([1, 2]), json.dumps({"type": "offer"}),
                    json.dumps({"type": "offer", "sdp": "nonsense"})):
            await ws.send_str(bad)
            reply = await ws.receive_json(timeout=10)
            assert reply["type"] == "error"
        # Past the burst, offers are refused until the rate allows more.
        await ws.send_str(json.dumps({"type": "offer", "sdp": "v=0 broken"}))
        assert (await ws.receive_json(timeout=10))["type"] == "error"
        await ws.send_str(json.dumps({"type": "offer", "sdp": "v=0 broken"}))
        reply = await ws.receive_json(timeout=10)
        assert reply == {"type": "error", "error": "too many offers; slow down"}
        await ws.send_bytes(b"\x00binary")
        closing = await ws.receive(timeout=10)
        assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED,
                                aiohttp.WSMsgType.CLOSING)
    assert node.get("/healthz")["ok"] is True


def test_http_offer_refuses_bad_bodies(node: NodeProcess) -> None:
    for body in (b"not json", b"[]", b'{"sdp": 5}', b'{"sdp": "hello"}', b"x" * 70_000):
        req = urllib.request.Request(node.url + "/signal/offer", data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(req, timeout=10)
        assert err.value.code in (400, 413)
    assert node.metrics()['meshnode_rejections_total{reason="bad_offer"}'] >= 2
