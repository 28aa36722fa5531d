"""Voice and video in a private room reach readers only (issue 13 with issue 10).

Media are encrypted hop by hop (DTLS-SRTP to each node), not end to end, so whichever node
relays them hears and sees them. In a private room a blind host therefore relays none of its
media: a member who joined through it is refused ``blind_host``, and its reader neighbour
sends it no trunk copy of the readers' streams, while the readers' own node relays them."""

import json
from pathlib import Path

import pytest
from aiortc.mediastreams import AudioStreamTrack

from meshnode.client import MediaRefusedError, connect
from meshnode.identity import Identity
from tests.integration.nodeproc import NodeProcess
from tests.integration.test_line import ICE, until
from tests.integration.test_private_rooms import cli, room_of


def _media_bytes(node: NodeProcess) -> float:
    return sum(v for k, v in node.metrics().items()
               if k.startswith("meshnode_media_bytes_total"))


async def test_a_blind_host_relays_none_of_a_private_rooms_media(tmp_path: Path) -> None:
    a = NodeProcess(tmp_path / "a", args=["--no-default-room"]).start()
    h: NodeProcess | None = None
    try:
        room = json.loads(await cli(a, "room", "create", "quiet room"))["id"]
        host_token = a.post(f"/api/rooms/{room}/invites", {"role": "host"})["token"]
        h = NodeProcess(tmp_path / "h", args=["--no-default-room", "--bootstrap", a.url,
                                              "--join", host_token]).start()
        h.wait_for(lambda: room_of(h, room)["role"] == "host", "the host to be admitted")
        tokens = [json.loads(await cli(a, "room", "invite", room, "--role", "editor",
                                       "--json"))["token"] for _ in range(3)]
        alice, bob, carol = (Identity.generate() for _ in range(3))
        async with connect(h.url, room, alice, ice=ICE, invite=tokens[0]) as via_host, \
                connect(a.url, room, bob, ice=ICE, invite=tokens[1]) as speaker, \
                connect(a.url, room, carol, ice=ICE, invite=tokens[2]) as listener:
            heard: list[str] = []
            listener.on_track(lambda peer, track: heard.append(peer))
            via_host_heard: list[str] = []
            via_host.on_track(lambda peer, track: via_host_heard.append(peer))
            # Readers on the reader node hear each other.
            await speaker.publish(AudioStreamTrack())
            await until(lambda: bob.public_id in heard, "Carol to hear Bob through node a")
            # A member on the blind host may neither speak nor listen there.
            with pytest.raises(MediaRefusedError) as refused:
                await via_host.publish(AudioStreamTrack())
            assert refused.value.reason == "blind_host"
            await until(lambda: a.metrics().get(
                'meshnode_media_bytes_total{direction="out"}', 0.0) > 2_000,
                "node a to relay a few kilobytes of Bob's voice")
            assert via_host_heard == [] and via_host.media.tracks == {}
        # Node a sent the blind host no trunk copy, and the host relayed nothing at all.
        assert a.metrics().get('meshnode_media_bytes_total{direction="trunk"}', 0.0) == 0.0
        assert _media_bytes(h) == 0.0
        assert h.metrics().get('meshnode_media_refusals_total{reason="blind_host"}', 0) >= 1
    finally:
        if h is not None:
            h.kill()
        a.kill()
