"""``public_url``: does it lead to this node, does it fit the listen address, and does the
reverse proxy in front (if any) pass what the node needs and block what it must?

Behind a proxy (the recommended HTTPS set-up, docs/operators.md) the node needs the ``Host``
header passed through (else 421), WebSocket upgrades passed (``signaling = "websocket"``
clients), and ``X-Forwarded-For`` set by a proxy named in ``[http] trusted_proxies`` (else
every browser counts as the proxy's address for the per-source limits); and the proxy must
not forward ``/api/`` and ``/status`` (the operator's) from outside.
"""

import time
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from meshnode.doctor.findings import DoctorContext, Finding, Status
from meshnode.doctor.probe import ProbeError, http_get, running_node
from meshnode.identity import Identity, IdentityFileError

__all__ = ["check_public_url"]

_LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
BLOCKED_PATHS = ("/api/status", "/status", "/metrics")


def _own_peer_id(ctx: DoctorContext, status: dict[str, Any] | None) -> str | None:
    if status is not None and isinstance(status.get("peer_id"), str):
        return str(status["peer_id"])
    try:
        return Identity.load(ctx.config.data_dir / "identity.key").public_id
    except (IdentityFileError, OSError, ValueError):
        return None


def _consistency(ctx: DoctorContext) -> Finding:
    cfg = ctx.config
    listen_local = cfg.listen_host in _LOOPBACK_HOSTS or cfg.listen_host.startswith("127.")
    if not cfg.public_url:
        if listen_local:
            return Finding("http.listen", Status.OK,
                           f"no public_url: the node advertises {cfg.url}, which only this "
                           "machine can reach (enough for a node of its own)",
                           "set [node] public_url for other machines")
        return Finding("http.listen", Status.WARN,
                       f"the node listens on {cfg.listen_host}:{cfg.listen_port} but, with no "
                       f"public_url, advertises {cfg.url} to its peers and in its invites",
                       "set [node] public_url to the URL other machines use to reach it")
    url = urlsplit(cfg.public_url)
    if url.scheme == "https" and not listen_local:
        return Finding("http.listen", Status.WARN,
                       f"public_url is https (a TLS proxy in front) but the node also listens "
                       f"on {cfg.listen_host}:{cfg.listen_port}: browsers and scripts can "
                       "reach it around the proxy", 'listen = "127.0.0.1:PORT" behind a proxy')
    port = url.port or (443 if url.scheme == "https" else 80)
    if url.scheme == "http" and port != cfg.listen_port and listen_local:
        return Finding("http.listen", Status.WARN,
                       f"public_url ({cfg.public_url}) is plain http on port {port}, and the "
                       f"node listens on loopback port {cfg.listen_port}: only a proxy or a "
                       "port forward can join them", "check that one does")
    return Finding("http.listen", Status.OK,
                   f"public_url {cfg.public_url} fits the listen address "
                   f"{cfg.listen_host}:{cfg.listen_port}")


async def _websocket(base: str, timeout_s: float) -> Finding:
    try:
        async with aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=timeout_s)) as session, \
                session.ws_connect(base + "/signal/ws"):
            pass
    except (aiohttp.ClientError, OSError, TimeoutError) as err:
        return Finding("http.proxy.websocket", Status.FAIL,
                       f"a WebSocket to {base}/signal/ws does not open: "
                       f"{' '.join(str(err).split()) or type(err).__name__}",
                       "pass WebSocket upgrades at the proxy (nginx: proxy_http_version 1.1; "
                       "proxy_set_header Upgrade $http_upgrade; proxy_set_header Connection "
                       "\"upgrade\"); clients with signaling=\"websocket\" need it")
    return Finding("http.proxy.websocket", Status.OK, f"WebSockets open through {base}")


async def _blocked(base: str, timeout_s: float) -> list[Finding]:
    found = []
    for path in BLOCKED_PATHS:
        try:
            answer = await http_get(base + path, timeout_s)
        except ProbeError:
            continue
        body = answer.json()
        from_node = answer.status == 200 or (isinstance(body, dict) and "reason" in body)
        if from_node:
            found.append(Finding("http.proxy.blocked", Status.WARN if path == "/metrics"
                                 else Status.FAIL,
                                 f"{base}{path} reaches the node (HTTP {answer.status})",
                                 f"block {path} at the proxy (`location = {path} "
                                 "{ return 403; }`, docs/operators.md)", {"path": path}))
    if not found:
        found.append(Finding("http.proxy.blocked", Status.OK,
                             f"{', '.join(BLOCKED_PATHS)} are not served through {base}"))
    return found


async def check_public_url(ctx: DoctorContext) -> list[Finding]:
    """``http.listen``, ``http.public_url`` and, behind a proxy, ``http.proxy.*``."""
    found = [_consistency(ctx)]
    base = ctx.config.public_url.rstrip("/")
    if not base:
        return found
    status, _why = await running_node(ctx)
    sent = time.time()
    try:
        answer = await http_get(base + "/healthz", ctx.timeout_s)
    except ProbeError as err:
        found.append(Finding("http.public_url", Status.FAIL,
                             f"public_url {base} cannot be reached from here: {err}",
                             "check DNS, the proxy and the firewall; other nodes and browsers "
                             "use this URL"))
        return found
    body = answer.json()
    peer = body.get("peer_id") if isinstance(body, dict) else None
    mine = _own_peer_id(ctx, status)
    if answer.status == 421:
        found.append(Finding("http.public_url", Status.FAIL,
                             f"{base}/healthz: the node refuses the Host header the proxy "
                             "sends (421 misdirected_host)",
                             "pass the Host header through (nginx: proxy_set_header Host "
                             "$host)"))
        return found
    if peer is None:
        found.append(Finding("http.public_url", Status.FAIL,
                             f"{base}/healthz does not answer like a meshnode node (HTTP "
                             f"{answer.status})", "point public_url (and the proxy) at the "
                                                  "node's HTTP port"))
        return found
    if mine is not None and peer != mine:
        found.append(Finding("http.public_url", Status.FAIL,
                             f"public_url {base} leads to another node ({peer}; this one is "
                             f"{mine})", "fix public_url or the proxy's upstream"))
        return found
    found.append(Finding("http.public_url", Status.OK, f"public_url {base} leads to this node",
                         data={"peer_id": peer}))
    if status is None:
        return found  # whether a proxy passed headers is known only to the running node
    status_after, _ = await running_node(ctx)
    proxy = (status_after or {}).get("proxy") or {}
    last = proxy.get("last_forwarded")
    if not isinstance(last, dict):
        last = {}
    seen = float(last.get("at", 0)) >= sent - 1
    https = base.startswith("https://")
    if not seen and not https:
        found.append(Finding("http.proxy", Status.SKIP,
                             "no reverse proxy seen in front of the node (no request came "
                             "through public_url with X-Forwarded-For)"))
        return found
    if not seen:
        found.append(Finding("http.proxy", Status.WARN,
                             "the proxy in front of the node does not send X-Forwarded-For: "
                             "every browser counts as the proxy's address for the per-source "
                             "limits", "proxy_set_header X-Forwarded-For "
                                       "$proxy_add_x_forwarded_for; and [http] trusted_proxies"))
    elif not last.get("trusted"):
        found.append(Finding("http.proxy", Status.WARN,
                             f"the proxy at {last.get('proxy')} sends X-Forwarded-For, but it "
                             "is not in [http] trusted_proxies, so the node ignores it",
                             f"[http] trusted_proxies = [\"{last.get('proxy')}\"]",
                             {"last_forwarded": last}))
    else:
        found.append(Finding("http.proxy", Status.OK,
                             f"the proxy at {last.get('proxy')} is trusted and names the "
                             f"client (X-Forwarded-For; proto {last.get('proto')}, host "
                             f"{last.get('host')})", data={"last_forwarded": last}))
    found.append(await _websocket(base, ctx.timeout_s))
    found.extend(await _blocked(base, ctx.timeout_s))
    return found
