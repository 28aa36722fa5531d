"""``FederationPolicy``: with which operators' nodes this node federates, and which rooms it
announces. Pure: no I/O, no clock; the link manager, the room host and discovery ask it.

The operator writes it in the ``[federation]`` section of the configuration
(docs/operators.md, "Federation policy"):

- ``deny``: PeerIDs this node never links to and never hosts a room with, whatever found
  them (a bootstrap URL, an invite, the overlay's relayed offers, the DHT, mDNS), and whose
  offers it refuses. A denied PeerID is refused whatever kind its hello says (a node that
  calls itself a client is the same key, the same operator).
- ``allow``: when set, the only nodes this node federates with (a closed community). It
  binds node links only: clients (hello kind ``client``: people, with their own keys) still
  reach this node's rooms under the rooms' own rules, or no user of a closed community could
  connect. ``deny`` wins over ``allow``.
- per-room announce: whether a room is announced to discovery (the DHT); ``announce`` is the
  default for every room, ``no_announce``/``announce_rooms`` turn single rooms off/on.

This node's own PeerID is never refused (``me``): it would only lock the node out of itself.
"""

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["FederationPolicy", "FederationRefusal"]


class FederationRefusal(enum.StrEnum):
    """Why the policy refuses a peer (a stable metric label:
    ``meshnode_federation_refused_total{reason}``)."""

    DENIED = "denied"
    """The PeerID is in ``deny``."""
    NOT_ALLOWED = "not_allowed"
    """``allow`` is set and this node is not in it."""


@dataclass(frozen=True, slots=True)
class FederationPolicy:
    """The operator's federation rules (see the module docstring). The defaults federate
    with everyone and announce every room.

    ``deny``/``allow`` hold PeerIDs (``allow=None``: no allow-list); ``announce`` maps a
    room's hex ID to whether it is announced (rooms not named: ``announce_default``).
    """

    deny: frozenset[str] = frozenset()
    allow: frozenset[str] | None = None
    announce: Mapping[str, bool] = field(default_factory=dict)
    announce_default: bool = True
    me: str = ""

    def refusal(self, peer_id: str, kind: str = "node") -> FederationRefusal | None:
        """Why a link with ``peer_id`` must not exist (None: it may). ``kind`` is what the
        peer's hello says it is (``node`` or ``client``); a peer we dial or that is named
        before a hello is a ``node``."""
        if peer_id == self.me and self.me:
            return None
        if peer_id in self.deny:
            return FederationRefusal.DENIED
        if self.allow is not None and kind == "node" and peer_id not in self.allow:
            return FederationRefusal.NOT_ALLOWED
        return None

    def may_link(self, peer_id: str) -> bool:
        """Whether this node may link to (and host rooms with) the node ``peer_id``."""
        return self.refusal(peer_id) is None

    def may_announce(self, room_id: bytes | str) -> bool:
        """Whether the room (32-byte ID or its hex) may be announced to discovery."""
        key = room_id.hex() if isinstance(room_id, bytes) else room_id.lower()
        return self.announce.get(key, self.announce_default)

    @property
    def restricted(self) -> bool:
        """Whether the policy refuses anyone at all."""
        return bool(self.deny) or self.allow is not None

    def for_node(self, me: str) -> "FederationPolicy":
        """This policy as the node ``me`` applies it (never refusing itself)."""
        return FederationPolicy(self.deny, self.allow, self.announce, self.announce_default,
                                me)

    def describe(self) -> dict[str, Any]:
        """The policy as ``meshnode peers``, ``/api/peers`` and the status page show it."""
        return {
            "deny": sorted(self.deny),
            "allow": None if self.allow is None else sorted(self.allow),
            "announce_default": self.announce_default,
            "no_announce": sorted(k for k, v in self.announce.items() if not v),
            "announce_rooms": sorted(k for k, v in self.announce.items() if v),
        }

    @classmethod
    def build(cls, deny: Iterable[str] = (), allow: Iterable[str] | None = None,
              no_announce: Iterable[str] = (), announce_rooms: Iterable[str] = (),
              announce_default: bool = True) -> "FederationPolicy":
        """A policy from plain lists (the configuration's shape)."""
        announce = {r.lower(): True for r in announce_rooms}
        announce.update({r.lower(): False for r in no_announce})  # off wins over on
        return cls(frozenset(deny), None if allow is None else frozenset(allow), announce,
                   announce_default)
