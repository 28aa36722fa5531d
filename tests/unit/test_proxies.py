"""Reverse proxies (meshnode.signaling.proxies and the guard): X-Forwarded-For is believed
only from a trusted proxy, per-source limits then see the client, and admin routes refuse
whatever a proxy forwarded."""

from pathlib import Path

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import given
from hypothesis import strategies as st

from meshnode.signaling.admin_token import AdminTokenFile
from meshnode.signaling.guard import Guard, HostPolicy
from meshnode.signaling.proxies import TrustedProxies
from meshnode.signaling.source_limits import SourceBuckets


def test_forwarded_for_is_believed_only_from_a_trusted_proxy() -> None:
    proxies = TrustedProxies(["127.0.0.1", "10.0.0.0/8"])
    assert proxies.client("127.0.0.1", "203.0.113.9") == "203.0.113.9"
    # The right-most untrusted entry: what the client wrote on the left proves nothing.
    assert proxies.client("127.0.0.1", "1.1.1.1, 203.0.113.9, 10.2.3.4") == "203.0.113.9"
    assert proxies.client("10.9.9.9", "[2001:db8::7]:443") == "2001:db8::7"
    assert proxies.client("::ffff:127.0.0.1", "198.51.100.2") == "198.51.100.2"
    # Not from a trusted proxy: the header is ignored.
    assert proxies.client("192.0.2.1", "203.0.113.9") == "192.0.2.1"
    assert proxies.client("127.0.0.1", None) == "127.0.0.1"
    # Unreadable or all-proxy chains: the proxy is all we know.
    assert proxies.client("127.0.0.1", "garbage") == "127.0.0.1"
    assert proxies.client("127.0.0.1", "10.1.1.1, 127.0.0.1") == "127.0.0.1"
    assert TrustedProxies().client("127.0.0.1", "203.0.113.9") == "127.0.0.1"


@given(st.text(max_size=300), st.sampled_from(["127.0.0.1", "192.0.2.1", None, "x"]))
def test_the_forwarded_for_parser_never_crashes(header: str, remote: str | None) -> None:
    client = TrustedProxies(["127.0.0.0/8", "::1"]).client(remote, header)
    assert client is None or isinstance(client, str)


async def _client(tmp_path: Path, trusted: tuple[str, ...]) -> tuple[TestClient, Guard, str]:
    token = AdminTokenFile(tmp_path / "admin.token")
    token.ensure()
    guard = Guard(policy=HostPolicy("127.0.0.1"), token=token,
                  offers=SourceBuckets(rate=0.001, burst=1), count=lambda reason: None,
                  proxies=TrustedProxies(trusted))

    async def remote(request: web.Request) -> web.Response:
        return web.json_response({"remote": request.remote})

    app = web.Application(middlewares=[guard.middleware])
    app.router.add_get("/remote", remote)
    app.router.add_post("/signal/offer", remote)
    app.router.add_get("/api/status", guard.admin_only(remote))
    client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    return client, guard, str(token.current())


async def test_behind_a_trusted_proxy_limits_and_handlers_see_the_client(
        tmp_path: Path) -> None:
    client, guard, _ = await _client(tmp_path, ("127.0.0.1",))
    try:
        resp = await client.get("/remote", headers={"X-Forwarded-For": "203.0.113.9",
                                                    "X-Forwarded-Proto": "https"})
        assert (await resp.json())["remote"] == "203.0.113.9"
        last = guard.proxies.to_json()["last_forwarded"]
        assert isinstance(last, dict)
        assert (last["proxy"], last["trusted"], last["client"], last["proto"]) == (
            "127.0.0.1", True, "203.0.113.9", "https")
        # One offer per source: two clients behind the proxy each get theirs.
        for who in ("203.0.113.1", "203.0.113.2"):
            resp = await client.post("/signal/offer", headers={"X-Forwarded-For": who})
            assert resp.status == 200
        resp = await client.post("/signal/offer", headers={"X-Forwarded-For": "203.0.113.1"})
        assert resp.status == 429
    finally:
        await client.close()


async def test_admin_routes_refuse_what_a_proxy_forwarded(tmp_path: Path) -> None:
    for trusted in ((), ("127.0.0.1",)):
        (tmp_path / str(len(trusted))).mkdir()
        client, _, token = await _client(tmp_path / str(len(trusted)), trusted)
        try:
            auth = {"Authorization": f"Bearer {token}"}
            assert (await client.get("/api/status", headers=auth)).status == 200
            for header in ("X-Forwarded-For", "Forwarded"):
                resp = await client.get("/api/status", headers={**auth, header: "127.0.0.1"})
                assert resp.status == 403
                assert (await resp.json())["reason"] == "forwarded"
        finally:
            await client.close()


async def test_an_untrusted_forwarded_for_changes_nothing(tmp_path: Path) -> None:
    client, guard, _ = await _client(tmp_path, ())
    try:
        resp = await client.get("/remote", headers={"X-Forwarded-For": "203.0.113.9"})
        assert (await resp.json())["remote"] == "127.0.0.1"
        assert guard.proxies.last is not None and guard.proxies.last.trusted is False
    finally:
        await client.close()
