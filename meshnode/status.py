"""What a node shows about itself: ``meshnode status``/``peers``, the admin API, the status
page, and the gauges of ``/metrics`` that are read from its state at scrape time.

Everything here reads a ``NodeView``: the node's identity, metrics and live tables of rooms
and links, not the node itself."""

import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from meshnode.federation.policy import FederationPolicy
from meshnode.identity import peer_id_from_public_key
from meshnode.metrics import NodeMetrics
from meshnode.overlay.presence import WAIT_BUCKETS_S
from meshnode.rooms.hosted import HostedRoom
from meshnode.rooms.privacy_info import private_info
from meshnode.runtime.links import Established, PolicyRefusal
from meshnode.web.browser_link import BrowserLinks


@dataclass(frozen=True, slots=True)
class NodeView:
    """What a node shows, read-only: ``rooms`` and ``links`` are the live tables of its room
    host and link manager; ``url()`` is known once it serves; ``federation`` is the operator's
    policy and ``refusals`` the link manager's recent refusals under it."""

    peer_id: str
    url: Callable[[], str]
    started_at: float
    metrics: NodeMetrics
    rooms: Mapping[bytes, HostedRoom]
    links: Mapping[str, Established]
    federation: FederationPolicy = field(default_factory=FederationPolicy)
    refusals: Mapping[str, PolicyRefusal] = field(default_factory=dict)
    media: Callable[[], dict[str, Any]] | None = None
    """The media relay's load (``MediaRelay.status``), if it runs."""


def _summed(counters: Iterable[Mapping[str, int]]) -> dict[str, int]:
    """Per-room counters added up across the node's rooms, key by key."""
    total: dict[str, int] = {}
    for counter in counters:
        for key, n in counter.items():
            total[key] = total.get(key, 0) + n
    return total


def refresh_metrics(node: NodeView, browsers: BrowserLinks | None) -> None:
    """Update the gauges that are read rather than counted (before a /metrics scrape)."""
    links = node.links
    kinds = {"node": 0, "client": 0}
    for est in links.values():
        kinds[est.hello.kind] = kinds.get(est.hello.kind, 0) + 1
    for kind, n in kinds.items():
        node.metrics.peers.labels(kind).set(n)

    if browsers is not None:
        node.metrics.browsers.set(browsers.count)
        for kind, n in browsers.counters().items():
            node.metrics.browser_events.labels(kind).set(n)
    rooms = list(node.rooms.values())
    for kind, n in _summed(h.runtime.overlay.stats.bytes_out_by_kind for h in rooms).items():
        node.metrics.overlay_bytes_out.labels(kind).set(n)
    for event, n in _summed(h.runtime.overlay.stats.compact for h in rooms).items():
        node.metrics.compact_changes.labels(event).set(n)
    for reason, n in _summed(h.runtime.replica.rejections for h in rooms).items():
        node.metrics.changes_rejected.labels(reason).set(n)
    node.metrics.changes_out.set(sum(h.runtime.overlay.stats.changes_out
                                     for h in node.rooms.values()))
    _presence_waits(node)
    for rid, hosted in node.rooms.items():
        label = rid.hex()[:16]
        node.metrics.room_members.labels(label).set(len(hosted.runtime.peers()))
        node.metrics.participants.labels(label).set(len(hosted.runtime.presence()))
        private = hosted.runtime.replica.privacy_counters()
        if private:
            m = node.metrics
            m.sealed_changes.labels(label).set(private["sealed_changes"])
            m.pending_content.labels(label).set(private["waiting_for_key"])
            m.epochs.labels(label, "all").set(private["epochs"])
            m.epochs.labels(label, "held").set(private["epochs_held"])
            for reason, n in private["voided"].items():
                m.content_voided.labels(label, reason).set(n)

def node_status(node: NodeView) -> dict[str, Any]:
    """What ``meshnode status``, ``/api/status`` and the status page show."""
    return {
        "peer_id": node.peer_id,
        "url": node.url(),
        "uptime_s": round(time.time() - node.started_at, 1),
        "links": len(node.links),
        "rooms": [room_info(node, rid) for rid in node.rooms],
        "federation": federation_info(node),
        **({"media": node.media()} if node.media is not None else {}),
    }


def federation_info(node: NodeView) -> dict[str, Any]:
    """The federation policy, which operators' nodes host which of our rooms with us now (a
    node linked to us that shares the room), and the nodes the policy refused lately."""
    operators = []
    for rid, hosted in node.rooms.items():
        hosts = sorted(peer for peer, est in node.links.items()
                       if est.hello.kind == "node" and rid in est.rooms)
        operators.append({"room": rid.hex(), "name": hosted.runtime.replica.room_name,
                          "hosts": hosts})
    refused = [{"peer": r.peer, "reason": r.reason, "how": r.how, "count": r.count,
                "at": round(r.at, 1)} for r in list(node.refusals.values())[::-1]]
    return {"policy": node.federation.describe(), "rooms": operators, "refused": refused}

def room_info(node: NodeView, room_id: bytes) -> dict[str, Any]:
    """One room's summary."""
    hosted = node.rooms[room_id]
    rt = hosted.runtime
    return {
        "id": room_id.hex(),
        # A private room's name is sealed: "" on a blind host (and on a reader before its key).
        "name": rt.replica.room_name,
        "changes": rt.replica.change_count(),
        "entities": len(rt.replica.entities()),
        "peers": sorted(rt.peers()),
        "role": rt.replica.role_of(node.peer_id),
        "admit": hosted.settings.get("admit", "invite"),
        "default": bool(hosted.settings.get("default")),
        "participants": sorted(rt.presence()),
        "owner": peer_id_from_public_key(rt.replica.owner),
        **private_info(rt.replica, node.peer_id),
    }


def peers_info(node: NodeView) -> list[dict[str, Any]]:
    """Established links, for ``meshnode peers``."""
    out = []
    for est in node.links.values():
        out.append({
            "peer": est.peer,
            "kind": est.hello.kind,
            "url": est.hello.url,
            "rooms": sorted(r.hex() for r in est.rooms & set(node.rooms)),
            "offered_by_us": est.offered_by_us,
            "buffered_bytes": est.link.buffered_bytes(),
        })
    return out


def _presence_waits(node: NodeView) -> None:
    """How long presence updates waited here before being sent, over all rooms."""
    tables = [h.runtime.overlay.presence for h in node.rooms.values()]
    below = 0
    for k, bound in enumerate(WAIT_BUCKETS_S):
        below += sum(t.waited[k] for t in tables)
        node.metrics.presence_waited.labels("+Inf" if bound == math.inf else f"{bound:g}").set(
            below)
    node.metrics.presence_waited_seconds.set(sum(t.waited_s for t in tables))
