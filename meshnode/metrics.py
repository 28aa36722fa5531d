"""Prometheus metrics of one node (served at ``/metrics``).

Public ``/metrics`` carries aggregates only: a series labelled by room would tell anyone who can
reach the node which rooms it hosts and how busy each is. Per-room series live in a second
registry, served to the operator only (``GET /api/metrics``, admin token).

Each node has its own registry, so several nodes (or a node and its tests) can live in one
process without their counters mixing.
"""

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                    10.0, 30.0)


class NodeMetrics:
    """Every metric the node exports; names start with ``meshnode_``."""

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.admin_registry = a = CollectorRegistry()
        self.peers = Gauge("meshnode_peers", "Established links, by kind", ["kind"], registry=r)
        self.browsers = Gauge("meshnode_browsers", "Connected browser sessions", registry=r)
        self.browser_events = Gauge("meshnode_browser_events",
                                    "Browser session events since start (acks, refusals, bad "
                                    "messages...), by kind", ["kind"], registry=r)
        self.rooms = Gauge("meshnode_rooms", "Rooms this node hosts", registry=r)
        self.room_changes = Gauge("meshnode_room_changes", "Changes held, per room", ["room"],
                                  registry=a)
        self.room_members = Gauge("meshnode_room_active_peers",
                                  "Overlay neighbours, per room", ["room"], registry=a)
        self.participants = Gauge("meshnode_room_participants",
                                  "Participants with live presence, per room", ["room"],
                                  registry=a)
        # Private rooms (docs/operators.md, "Private rooms"): per room, the operator's only.
        self.sealed_changes = Gauge("meshnode_sealed_changes",
                                    "Changes with a sealed payload held, per private room",
                                    ["room"], registry=a)
        self.content_voided = Gauge(
            "meshnode_content_voided",
            "Sealed payloads voided (no effect) by this reader, per private room and reason "
            "(undecryptable, bad_padding, schema, unknown_entity, ...)", ["room", "reason"],
            registry=a)
        self.pending_content = Gauge(
            "meshnode_pending_content",
            "Changes whose sealed content waits for a key, per private room", ["room"],
            registry=a)
        self.epochs = Gauge("meshnode_epochs", "Key epochs of a private room, and how many of "
                                               "them this node holds (held: 0 on a blind host)",
                            ["room", "kind"], registry=a)
        self.rotation_seconds = Histogram(
            "meshnode_rotation_seconds",
            "Time to write a key rotation (wraps to every reader, seal, sign), per private room",
            ["room"], buckets=_LATENCY_BUCKETS, registry=a)
        self.reader_snapshots = Counter(
            "meshnode_reader_snapshots",
            "Readers' sealed snapshots of private rooms: sent to blind hosts (a reader node), "
            "stored (a blind host); refusals are in meshnode_rejections (reader_snapshot_*)",
            ["outcome"], registry=a)
        self.key_shares = Counter("meshnode_key_shares",
                                  "SHAREs this node wrote to keyless readers, per private room",
                                  ["room"], registry=a)
        self.changes_in = Counter("meshnode_changes_in", "Changes applied that came from peers",
                                  registry=r)
        self.changes_local = Counter("meshnode_changes_local",
                                     "Changes made on this node (browser edits, grants)",
                                     registry=r)
        self.changes_out = Gauge("meshnode_changes_out",
                                 "Change copies sent to peers (pushed or answering requests)",
                                 registry=r)
        self.changes_rejected = Gauge(
            "meshnode_changes_rejected",
            "Changes refused by the scene rules since start, by reason (future_timestamp: the "
            "author's clock is ahead of ours by more than the allowed skew)",
            ["reason"], registry=r)
        self.compact_changes = Gauge(
            "meshnode_compact_changes",
            "Compact changes (deps as 8-byte prefixes, protocol.compact) since start, by event: "
            "sent, received, ambiguous, held, completed, evicted, prefixes_wanted, "
            "prefixes_answered", ["event"], registry=r)
        self.overlay_bytes_out = Gauge("meshnode_overlay_bytes_out",
                                       "Bytes of room frames sent, by message kind",
                                       ["kind"], registry=r)
        self.changes_stored = Counter("meshnode_changes_stored",
                                      "Changes written durably to the store", registry=r)
        self.store_failed_commits = Counter(
            "meshnode_store_failed_commits",
            "Store commits that failed (their changes are kept and retried), by reason "
            "(disk_full, io_error, locked, read_only, corrupt, other)", ["reason"], registry=r)
        self.store_retries = Counter("meshnode_store_commit_retries",
                                     "Store commits retried after a failure", registry=r)
        self.store_failing = Gauge("meshnode_store_failing",
                                   "1 while the store fails to commit (then /healthz is 503)",
                                   registry=r)
        self.store_missing_history = Gauge(
            "meshnode_store_changes_missing_history",
            "Stored changes found at start-up whose history the store lacks (invisible until "
            "a peer supplies it)", registry=r)
        self.store_replay_refused = Gauge(
            "meshnode_store_replay_refused",
            "Stored changes the replicas refused at start-up, by reason", ["reason"],
            registry=r)
        self.nacks_sent = Counter("meshnode_nacks_sent",
                                  "Changes of clients reported not durable yet (Nack), by reason",
                                  ["reason"], registry=r)
        self.frames_out = Counter("meshnode_frames_out", "Messages sent on links, by channel",
                                  ["channel"], registry=r)
        self.frames_dropped = Counter("meshnode_frames_dropped",
                                      "Messages not sent (queue full), by channel",
                                      ["channel"], registry=r)
        self.bytes_out = Counter("meshnode_bytes_out", "Bytes sent on links, by channel",
                                 ["channel"], registry=r)
        self.bytes_in = Counter("meshnode_bytes_in", "Bytes received on links, by channel",
                                ["channel"], registry=r)
        self.rejections = Counter("meshnode_rejections",
                                  "Input refused from peers, by reason", ["reason"],
                                  registry=r)
        self.links_closed = Counter("meshnode_links_closed", "Links closed, by reason",
                                    ["reason"], registry=r)
        self.presence_updates = Counter("meshnode_presence_updates",
                                        "Presence updates received", registry=r)
        self.presence_waited = Gauge(
            "meshnode_presence_waited",
            "Presence updates sent since start, by how long each waited in this node from "
            "arrival to send (cumulative, as a histogram's buckets: at most le seconds)",
            ["le"], registry=r)
        self.presence_waited_seconds = Gauge(
            "meshnode_presence_waited_seconds",
            "Sum of the waits counted in meshnode_presence_waited", registry=r)
        self.store_latency = Histogram("meshnode_store_commit_seconds",
                                       "Time from a change's arrival to its durable commit",
                                       buckets=_LATENCY_BUCKETS, registry=r)
        self.change_latency = Histogram(
            "meshnode_change_age_seconds",
            "Age of a change when applied here (local clock minus its author's clock)",
            buckets=_LATENCY_BUCKETS, registry=r)
        self.connect_latency = Histogram("meshnode_link_connect_seconds",
                                         "Time to open a link, hello included",
                                         buckets=_LATENCY_BUCKETS, registry=r)
        self.http_refused = Counter(
            "meshnode_http_refused",
            "HTTP requests refused by the guard, by reason (misdirected_host, foreign_origin, "
            "admin_token_missing, rate_limited, room_read_*, signature_*, ...)",
            ["reason"], registry=r)
        self.pending_links = Gauge(
            "meshnode_pending_links",
            "Connections answered whose handshake is not done (hello for peers, client channel "
            "for browsers), by kind (peer, browser)", ["kind"], registry=r)
        self.pending_evictions = Counter(
            "meshnode_pending_evictions",
            "Unfinished connections closed by the pending pool's rules, by kind and reason "
            "(pool_full, hello_timeout, established_full)", ["kind", "reason"], registry=r)
        self.federation_refused = Counter(
            "meshnode_federation_refused",
            "Links refused by the [federation] policy, by reason (denied, not_allowed)",
            ["reason"], registry=r)
        self.mdns_peers = Gauge("meshnode_mdns_peers",
                                "Nodes found on the LAN by mDNS and still announced", registry=r)
        self.mdns_rejected = Counter(
            "meshnode_mdns_rejected",
            "mDNS announcements ignored, by reason (bad_peer_id, bad_url, missing_field, "
            "too_large, table_full, denied, not_allowed, ...)", ["reason"], registry=r)
        self.mdns_dials = Counter("meshnode_mdns_dials",
                                  "Links dialled to nodes found by mDNS, by result (ok, failed)",
                                  ["result"], registry=r)

    def render(self) -> bytes:
        """The text exposition format of the public metrics."""
        return generate_latest(self.registry)

    def render_admin(self) -> bytes:
        """The text exposition format of the per-room series (the operator's only)."""
        return generate_latest(self.admin_registry)
