"""Which foreign web origins may open a browser session here: the pages of a room's other hosts.

A browser page is served by one node and, by default, only that node's own pages may offer
a browser connection (``meshnode.signaling.guard``: a foreign ``Origin`` gets 403), so that a
web site a visitor happens to open cannot make their browser join rooms on a node it can
reach (one on their loopback or LAN). Failover needs one exception: when a page's node dies,
the page offers to another host of its room, cross-origin.

The rule (``HostOrigins.allows``): a page from origin O may offer for room R here only if O is
the origin of a node that holds a role in R by this node's replica, at the URL that node gave
in its signed hello (remembered from every link to a node, even after the link closed, at most
``max_nodes``). Such a node holds R already, so its pages gain nothing they could not get
from it; every other site is still refused. A page never gets more than what it proves (an
invite, an open room's policy): the admin token is not accepted cross-origin, and browsers
never send it since the CORS preflight allows no ``Authorization`` header.
"""

from collections import OrderedDict
from collections.abc import Callable
from urllib.parse import urlsplit

from meshnode.crdt import SceneReplica
from meshnode.runtime.links import Established, LinkService

__all__ = ["HostOrigins", "origin_of"]

MAX_NODES = 256


def origin_of(url: str) -> str | None:
    """The web origin (``scheme://host[:port]``, as a browser sends it in ``Origin``) of a
    node's URL, or None if it is not an http(s) URL."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    host = parts.hostname.lower().rstrip(".")
    if ":" in host:
        host = f"[{host}]"
    default = 443 if parts.scheme == "https" else 80
    return f"{parts.scheme}://{host}" + (f":{port}" if port and port != default else "")


class HostOrigins(LinkService):
    """The web origins of the nodes this node has linked to, and the rule above.

    ``replica(room_id)`` gives a hosted room's replica (None if not hosted here)."""

    def __init__(self, replica: Callable[[bytes], SceneReplica | None], *,
                 max_nodes: int = MAX_NODES) -> None:
        self._replica = replica
        self._max = max_nodes
        self._origins: OrderedDict[str, str] = OrderedDict()  # PeerID -> origin

    def remember(self, peer: str, url: str) -> None:
        """``peer`` (a node) serves at ``url`` (least recently seen forgotten first)."""
        origin = origin_of(url)
        if origin is None:
            return
        self._origins[peer] = origin
        self._origins.move_to_end(peer)
        while len(self._origins) > self._max:
            self._origins.popitem(last=False)

    def link_up(self, est: Established) -> None:
        """Remember where a node that linked with us serves (its signed hello says)."""
        if est.hello.kind == "node" and est.hello.url:
            self.remember(est.peer, est.hello.url)

    def allows(self, origin: str, room_id: bytes) -> bool:
        """Whether a page from ``origin`` may offer for ``room_id`` (the module's rule)."""
        replica = self._replica(room_id)
        if replica is None:
            return False
        return any(o == origin and replica.role_of(peer) != "none"
                   for peer, o in self._origins.items())

    def known(self, origin: str) -> bool:
        """Whether ``origin`` is a remembered node's (the CORS preflight, which names no
        room, asks this; the offer itself is judged per room by ``allows``)."""
        return origin in self._origins.values()
