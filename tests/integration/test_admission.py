"""Admission across real nodes: an invite carries its issuer's authority and no more."""

import time
import urllib.error
from pathlib import Path

import pytest

from meshnode.client import AdmissionRefused, ClientError, connect
from meshnode.identity import Identity
from meshnode.rooms.invite import make_invite, parse_invite
from tests.integration.nodeproc import NodeProcess, start_host
from tests.integration.test_line import ICE


async def test_an_admins_invite_cannot_make_an_admin(tmp_path: Path) -> None:
    a = NodeProcess(tmp_path / "a").start()
    b = None
    try:
        room = a.post("/api/rooms", {"name": "by invite", "admit": "invite",
                                     "private": False})["id"]
        b = start_host(tmp_path / "b", a, room, bootstrap=a)  # B is an admin
        # B's node refuses to mint it (it could never admit anyone) ...
        with pytest.raises(urllib.error.HTTPError) as minted:
            b.post(f"/api/rooms/{room}/invites", {"role": "admin"})
        assert minted.value.code == 403
        assert "only the room's owner grants admin" in minted.value.read().decode()
        # ... and one signed with B's key anyway (another program, an older release) is
        # refused where it is redeemed.
        b_key = Identity.load(b.data_dir / "identity.key")
        genesis = parse_invite(a.post(f"/api/rooms/{room}/invites", {})["token"]).genesis
        escalate = make_invite(bytes.fromhex(room), genesis, "admin", b_key.public_key,
                               b_key.sign, int((time.time() + 600) * 1000), [a.url]).token()
        with pytest.raises(AdmissionRefused, match="invite_issuer_may_not_grant"):
            async with connect(a.url, room, Identity.generate(), ice=ICE, invite=escalate,
                               timeout_s=3):
                pass
        assert any(k.startswith("meshnode_rejections_total")
                   and 'invite_issuer_may_not_grant' in k and v >= 1
                   for k, v in a.metrics().items())
        # What an admin may grant, its invite grants, at any host that may grant it.
        editor = b.post(f"/api/rooms/{room}/invites", {"role": "editor"})["token"]
        async with connect(a.url, room, Identity.generate(), ice=ICE, invite=editor) as c:
            assert c.role() == "editor"
        # Without an invite, nobody is admitted to this room, and a stranger cannot read it.
        with pytest.raises(ClientError, match="does not host room"):
            async with connect(a.url, room, Identity.generate(), ice=ICE, timeout_s=5):
                pass
    finally:
        a.kill()
        if b is not None:
            b.kill()
