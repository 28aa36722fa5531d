"""The guard's pure parts: Host and Origin rules, the signed-request decoder (fuzzed) and
verifier, per-source buckets, the admin token file, and who may read a room."""

import os
import stat
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshnode.identity import Identity
from meshnode.rooms.readers import (
    BrowserAccess,
    Credentials,
    ReadRefused,
    RoomPart,
    browser_access,
    may_read_room,
)
from meshnode.signaling.admin_token import (
    AdminTokenError,
    AdminTokenFile,
    read_admin_token,
    write_admin_token,
)
from meshnode.signaling.guard import HostPolicy, is_loopback_address, origin_allowed
from meshnode.signaling.signed_request import (
    RequestSignature,
    RequestVerifier,
    SignatureHeaderError,
    SignatureRefused,
    parse_signature_header,
    sign_request,
)
from meshnode.signaling.source_limits import SourceBuckets, source_key


@pytest.mark.parametrize(("policy", "host", "allowed"), [
    (HostPolicy("127.0.0.1"), "127.0.0.1:8470", True),
    (HostPolicy("127.0.0.1"), "localhost:8470", True),
    (HostPolicy("127.0.0.1"), "LOCALHOST", True),
    (HostPolicy("127.0.0.1"), "127.8.9.10", True),
    (HostPolicy("127.0.0.1"), "[::1]:8470", True),
    (HostPolicy("127.0.0.1"), "attacker.example", False),
    (HostPolicy("127.0.0.1"), "attacker.example:8470", False),
    (HostPolicy("127.0.0.1"), "localhost.attacker.example", False),
    (HostPolicy("127.0.0.1"), "192.0.2.7:8470", False),
    (HostPolicy("127.0.0.1"), "", False),
    (HostPolicy("127.0.0.1"), None, False),
    (HostPolicy("127.0.0.1"), "a b", False),
    (HostPolicy("127.0.0.1"), "user@127.0.0.1", False),
    (HostPolicy("127.0.0.1"), "127.0.0.1:99999", False),
    (HostPolicy("127.0.0.1"), "[::1", False),
    (HostPolicy("0.0.0.0"), "192.0.2.7:8470", True),  # an IP literal cannot be rebound
    (HostPolicy("0.0.0.0"), "node.lan", False),
    (HostPolicy("192.0.2.7"), "192.0.2.7", True),
    (HostPolicy("192.0.2.7"), "192.0.2.8", False),
    (HostPolicy("node.lan"), "NODE.lan:8470", True),
    (HostPolicy("0.0.0.0", "https://mesh.example.org/"), "mesh.example.org", True),
    (HostPolicy("0.0.0.0", "https://mesh.example.org/"), "mesh.example.org.", True),
    (HostPolicy("0.0.0.0", "https://mesh.example.org/"), "evil.example.org", False),
])
def test_host_policy(policy: HostPolicy, host: str | None, allowed: bool) -> None:
    assert policy.allows(host) is allowed


@pytest.mark.parametrize(("origin", "host", "public", "allowed"), [
    (None, "127.0.0.1:8470", "", True),
    ("http://127.0.0.1:8470", "127.0.0.1:8470", "", True),
    ("http://127.0.0.1:8471", "127.0.0.1:8470", "", False),
    ("http://localhost:8470", "127.0.0.1:8470", "", False),
    ("http://attacker.example", "127.0.0.1:8470", "", False),
    ("null", "127.0.0.1:8470", "", False),
    ("file://", "127.0.0.1:8470", "", False),
    ("http://[::1", "127.0.0.1:8470", "", False),
    ("https://mesh.example.org", "127.0.0.1:8470", "https://mesh.example.org/", True),
    ("http://mesh.example.org", "127.0.0.1:8470", "https://mesh.example.org/", False),
    ("https://mesh.example.org", "mesh.example.org", "", True),
    ("https://mesh.example.org", "mesh.example.org:80", "", False),
])
def test_origin_rule(origin: str | None, host: str, public: str, allowed: bool) -> None:
    assert origin_allowed(origin, host, public) is allowed


def test_loopback_addresses() -> None:
    assert is_loopback_address("127.0.0.1") and is_loopback_address("::1")
    assert is_loopback_address("::ffff:127.0.0.1")
    assert not is_loopback_address("192.0.2.1") and not is_loopback_address(None)
    assert not is_loopback_address("nonsense")


# ---------------------------------------------------------------------- signed requests


def test_a_signed_request_verifies_once_within_the_window() -> None:
    me = Identity.generate()
    header = sign_request(me, "GET", "/api/rooms/ab/heads", "127.0.0.1:8470", now_s=1000.0)
    value = next(iter(header.values()))
    v = RequestVerifier(window_s=60)
    ok = v.verify(value, "GET", "/api/rooms/ab/heads", "127.0.0.1:8470", 1010.0)
    assert isinstance(ok, RequestSignature) and ok.peer == me.public_id
    assert v.verify(value, "GET", "/api/rooms/ab/heads", "127.0.0.1:8470", 1011.0) \
        is SignatureRefused.REPLAYED
    fresh = RequestVerifier(window_s=60)
    assert fresh.verify(value, "GET", "/api/rooms/ab/heads", "127.0.0.1:8470", 1100.0) \
        is SignatureRefused.STALE
    for method, path, host in (("POST", "/api/rooms/ab/heads", "127.0.0.1:8470"),
                               ("GET", "/api/rooms/ab/genesis", "127.0.0.1:8470"),
                               ("GET", "/api/rooms/ab/heads", "other:8470")):
        assert RequestVerifier().verify(value, method, path, host, 1000.0) \
            is SignatureRefused.BAD_SIGNATURE


def test_the_replay_memory_is_bounded() -> None:
    me = Identity.generate()
    v = RequestVerifier(window_s=60, max_remembered=3)
    for i in range(10):
        value = next(iter(sign_request(me, "GET", f"/p{i}", "h", now_s=1000.0).values()))
        assert isinstance(v.verify(value, "GET", f"/p{i}", "h", 1000.0), RequestSignature)
    assert len(v._seen) == 3


@pytest.mark.parametrize("header", [
    "", "peer=x", "peer=a, ts=1, sig=AAAA, peer=b", "peer=a; ts=1; sig=AAAA",
    "peer=a, ts=-1, sig=AAAA", "peer=a, ts=1, sig=AAAA", "x" * 300,
    "peer=a, ts=1, sig=" + "A" * 86, "peer=a, ts=1e3, sig=" + "A" * 86,
])
def test_malformed_headers_are_refused(header: str) -> None:
    with pytest.raises(SignatureHeaderError) as err:
        parse_signature_header(header)
    assert err.value.reason in (SignatureRefused.MALFORMED, SignatureRefused.BAD_PEER)


@given(st.text(max_size=400))
def test_the_header_decoder_never_crashes(text: str) -> None:
    try:
        parsed = parse_signature_header(text)
    except SignatureHeaderError as err:
        assert isinstance(err.reason, SignatureRefused)
    else:
        assert len(parsed.signature) == 64 and len(parsed.public_key) == 32


@given(st.text(max_size=300), st.text(max_size=50), st.text(max_size=50))
def test_the_verifier_never_crashes(header: str, path: str, host: str) -> None:
    out = RequestVerifier().verify(header, "GET", path, host, 1000.0)
    assert isinstance(out, SignatureRefused | RequestSignature)


# ---------------------------------------------------------------------- buckets


def test_source_buckets_are_shared_per_address_and_bounded() -> None:
    b = SourceBuckets(rate=1.0, burst=2, max_sources=2)
    assert b.take("192.0.2.1", 0.0) == 0 and b.take("192.0.2.1", 0.0) == 0
    wait = b.take("192.0.2.1", 0.0)
    assert 0 < wait <= 1.0
    assert b.take("192.0.2.1", 1.0) == 0  # refilled
    assert b.take("192.0.2.2", 1.0) == 0 and b.take("192.0.2.3", 1.0) == 0
    assert len(b) == 2
    # One host's IPv6 /64 is one source.
    assert source_key("2001:db8::1") == source_key("2001:db8::ffff:1") == "2001:db8::/64"
    assert source_key("::ffff:192.0.2.1") == "192.0.2.1"
    assert source_key(None) == "unknown"


# ---------------------------------------------------------------------- the token file


def test_token_file_is_created_private_and_rotation_is_noticed(tmp_path: Path) -> None:
    path = tmp_path / "data" / "admin.token"
    tokens = AdminTokenFile(path)
    tokens.ensure()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    first = read_admin_token(path)
    assert tokens.matches(first) and not tokens.matches(first + "x")
    second = write_admin_token(path)
    assert second != first
    assert tokens.matches(second) and not tokens.matches(first)
    path.unlink()
    assert tokens.current() is None and not tokens.matches(second)  # fail closed
    with pytest.raises(AdminTokenError, match="start the node once"):
        read_admin_token(path)
    path.write_text("mnadm1shared\n")
    os.chmod(path, 0o644)
    with pytest.raises(AdminTokenError, match="rotate-token"):
        read_admin_token(path)
    assert tokens.current() is None


# ---------------------------------------------------------------------- who reads a room


@pytest.mark.parametrize(("admit", "part", "creds", "expected"), [
    ("open", RoomPart.SNAPSHOT, Credentials(), None),
    ("invite", RoomPart.GENESIS, Credentials(), ReadRefused.NO_CREDENTIALS),
    ("invite", RoomPart.SNAPSHOT, Credentials(operator=True), None),
    ("invite", RoomPart.HEADS, Credentials(signer_role="viewer"), None),
    ("invite", RoomPart.HEADS, Credentials(signer_role="none"), ReadRefused.NOT_MEMBER),
    ("invite", RoomPart.GENESIS, Credentials(invite_problem=""), None),
    ("invite", RoomPart.HEADS, Credentials(invite_problem=""),
     ReadRefused.INVITE_NOT_FOR_THIS),
    ("invite", RoomPart.GENESIS, Credentials(invite_problem="expired"),
     ReadRefused.BAD_INVITE),
    ("invite", RoomPart.SNAPSHOT, Credentials(signer_role="none", invite_problem=""),
     ReadRefused.INVITE_NOT_FOR_THIS),
])
def test_room_reads(admit: str, part: RoomPart, creds: Credentials,
                    expected: ReadRefused | None) -> None:
    assert may_read_room(admit, part, creds) == expected


@pytest.mark.parametrize(("admit", "admit_role", "operator", "invite_role", "expected"), [
    ("open", "editor", False, None, BrowserAccess.EDIT),
    ("open", "viewer", False, None, BrowserAccess.READ),
    ("open", "viewer", False, "editor", BrowserAccess.EDIT),
    ("invite", "editor", False, None, BrowserAccess.NONE),
    ("invite", "editor", False, "viewer", BrowserAccess.READ),
    ("invite", "editor", False, "admin", BrowserAccess.EDIT),
    ("invite", "viewer", True, None, BrowserAccess.EDIT),
])
def test_browser_access(admit: str, admit_role: str, operator: bool, invite_role: str | None,
                        expected: BrowserAccess) -> None:
    assert browser_access(admit, admit_role, operator=operator,
                          invite_role=invite_role) is expected


@given(st.text(max_size=300), st.text(max_size=300))
def test_host_and_origin_rules_never_crash(host: str, origin: str) -> None:
    assert HostPolicy("0.0.0.0", "https://mesh.example.org").allows(host) in (True, False)
    assert origin_allowed(origin, host, "https://mesh.example.org") in (True, False)
