"""Serverless discovery of a room's hosts: py-libp2p's Kademlia DHT behind one adapter.

What a node announces and finds, and the shapes other parts of the node code against:

- ``HostRecord``: one host of a room as discovery found it (its PeerID, its meshnode URLs,
  its libp2p addresses, and whether it answered a liveness check just now).
- ``node.discovery`` is a ``RoomDiscovery`` (``meshnode.discovery.service``) when the
  libp2p host runs, or None when discovery is off; ``DiscoveryState`` says which, and why.
  ``await node.discovery.find_hosts(room_id, timeout)`` returns the room's hosts.
- ``GET /api/rooms/<room_hex>/hosts`` (and ``meshnode room hosts ROOM_ID``) serve the live
  ones as JSON.

libp2p and trio are imported only by ``bridge``, ``libp2p_host`` and ``service``, never at
import time of this package: the node runs without them and says why discovery is off.
"""

from dataclasses import dataclass
from typing import Any

__all__ = ["DiscoveryState", "HostRecord"]


@dataclass(frozen=True, slots=True)
class HostRecord:
    """One host of a room: ``peer_id`` (the node's PeerID, which is also its libp2p PeerID),
    ``urls`` (its meshnode HTTP URLs, from its signed room card or its hello), ``addrs`` (its
    libp2p multiaddrs), ``live`` (it answered a liveness check: its ``/healthz`` named this
    PeerID, or a link to it is up)."""

    peer_id: str
    urls: tuple[str, ...]
    addrs: tuple[str, ...]
    live: bool

    def to_json(self) -> dict[str, Any]:
        """The record as ``GET /api/rooms/<room>/hosts`` and ``meshnode room hosts`` print it."""
        return {"peer_id": self.peer_id, "urls": list(self.urls), "addrs": list(self.addrs),
                "live": self.live}


@dataclass(frozen=True, slots=True)
class DiscoveryState:
    """Whether discovery runs (``on``) and, when it does not, why (``why``: one sentence
    that says what to do); shown in ``meshnode status`` and logged at start."""

    on: bool
    why: str = ""
    peer_id: str = ""
    addrs: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """As ``/api/status`` shows it."""
        if self.on:
            return {"state": "on", "peer_id": self.peer_id, "addrs": list(self.addrs)}
        return {"state": f"discovery off: {self.why}"}
