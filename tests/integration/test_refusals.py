"""Refusals at the right time (issue 17): what cannot work is refused when it is asked for,
before anything is written, with a message an operator understands."""

import json
import socket
import subprocess
import sys
import time
import urllib.error
from pathlib import Path

from meshnode.crdt import SceneReplica
from meshnode.identity import Identity
from meshnode.rooms.invite import make_invite
from tests.integration.nodeproc import NodeProcess


def up(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "meshnode", "up", *args], capture_output=True,
                          text=True, timeout=60)


def test_a_busy_port_leaves_the_data_dir_untouched(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        out = up("--data-dir", str(data), "--listen", f"127.0.0.1:{port}")
    assert out.returncode == 1
    assert "address already in use" in out.stderr
    # No identity, database, lock or room: the next start with a free port is a first start.
    assert not data.exists()


def test_join_with_a_bad_token_says_so_before_anything_is_created(tmp_path: Path) -> None:
    data = tmp_path / "data"
    owner = Identity.generate()
    replica = SceneReplica.create(owner, time.time(), nonce=b"refusals")
    good = make_invite(replica.room_id, replica.genesis, "editor", owner.public_key, owner.sign,
                       int(time.time() * 1000) + 60_000, ["http://127.0.0.1:1"]).token()
    for token, expected in ((good[:40], "damaged or cut short"),
                            (good[:-3] + "0OI", "characters an invite never holds"),
                            ("hello", "not an invite token"),
                            (make_invite(replica.room_id, replica.genesis, "editor",
                                         owner.public_key, owner.sign, 1_000,
                                         []).token(), "the invite expired at 1970")):
        out = up("--data-dir", str(data), "--listen", "127.0.0.1:0", "--join", token)
        assert out.returncode == 2, out.stderr
        assert expected in out.stderr and "msgpack" not in out.stderr, out.stderr
        assert not data.exists()


def test_an_invite_that_could_never_admit_is_refused_when_minted(tmp_path: Path) -> None:
    # A node that hosts a room it was invited to but has no role in yet (its inviter is
    # unreachable): every invite it signed would be refused as issuer_may_not_grant.
    owner = Identity.generate()
    replica = SceneReplica.create(owner, time.time(), nonce=b"refusals-2")
    token = make_invite(replica.room_id, replica.genesis, "editor", owner.public_key,
                        owner.sign, int(time.time() * 1000) + 60_000,
                        ["http://127.0.0.1:1"]).token()
    node = NodeProcess(tmp_path / "n", args=["--no-default-room", "--join", token]).start()
    try:
        room = replica.room_id.hex()
        try:
            node.post(f"/api/rooms/{room}/invites", {"role": "viewer"})
            raise AssertionError("the invite was minted")
        except urllib.error.HTTPError as err:
            assert err.code == 403
            message = json.loads(err.read())["error"]
        assert "this node is none in the room" in message
        assert "could never admit anyone" in message
    finally:
        node.kill()
