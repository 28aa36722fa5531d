"""``OverlayConfig``: every knob of the room overlay in one dataclass (aioquic style)."""

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class OverlayConfig:
    """Tuning of membership, broadcast, anti-entropy, presence and peer defence.

    Times are seconds of the monotonic ``now`` the driver passes in (never the wall clock:
    see ``RoomOverlay``); rates are per second unless named per minute.
    """

    # HyParView partial view
    active_view_size: int = 6
    passive_view_size: int = 30
    forward_join_ttl: int = 4
    passive_join_ttl: int = 2
    shuffle_interval_s: float = 10.0
    shuffle_sample: int = 8
    repair_interval_s: float = 2.0
    connect_timeout_s: float = 10.0
    # Rewiring (membership.py): a node whose active view is full swaps a settled neighbour
    # for a random passive peer, confirmed by the peer, every rewire_interval_s (jittered)
    # after its topology moved (a link failed, discovery named a new peer), backing off by
    # doubling to rewire_max_interval_s while nothing moves. It is what re-merges two
    # groups whose views all filled up during a partition; 0 = never (a client's one link).
    rewire_interval_s: float = 60.0
    rewire_max_interval_s: float = 480.0
    # Plumtree broadcast
    ihave_interval_s: float = 0.05
    graft_timeout_s: float = 0.5
    promise_timeout_s: float = 5.0  # a grafted change still missing after this: broken promise
    max_missing: int = 10_000
    frame_target_bytes: int = 16 * 1024
    # Anti-entropy
    anti_entropy_interval_s: float = 5.0
    bloom_recent: int = 2_000
    want_interval_s: float = 0.5
    # Compact changes (protocol.compact) held for deps this node lacks (overlay/compact_hold),
    # and the signature checks one Changes frame may cost to resolve ambiguous dep prefixes.
    compact_hold_changes: int = 1_024
    compact_hold_bytes: int = 4 * 1024 * 1024
    compact_checks_per_frame: int = 64
    heads_min_interval_s: float = 0.5
    # Replies (changes answering Heads/Want/Graft, Heads answering Heads) to one peer are
    # paid from a budget: reply_factor bytes per byte received from it, plus an allowance
    # refilled at reply_refill_bytes_per_s (see overlay/budget.py).
    reply_factor: float = 4.0
    reply_allowance_bytes: int = 1024 * 1024
    reply_refill_bytes_per_s: float = 512 * 1024.0
    # Per-author ingress quota on new changes, whoever relays them (see overlay/budget.py).
    # The burst covers a joiner's sync of one author's history (and a heavy editing session,
    # measured at ~660 changes/s through one client); the rate bounds a flood's growth of
    # every replica, beside the per-member entity quota of the CRDT.
    author_changes_per_min: float = 60_000.0
    author_change_burst: float = 20_000.0
    author_bytes_per_min: float = 32 * 1024 * 1024.0
    author_byte_burst: float = 16 * 1024 * 1024.0
    # Presence
    presence_interval_s: float = 0.05
    presence_rate_per_s: float = 20.0
    presence_burst: float = 40.0
    presence_ttl_s: float = 10.0
    presence_per_flush: int = 32
    max_participants: int = 1_024
    # Interest management (overlay/presence_interest.py): per-recipient budgets (a client's
    # default and cap; a neighbour node's per link), the nearest that get the full rate, the
    # view radius beyond which only the floor applies, the floor (everyone at least every
    # presence_floor_s: keep it under presence_ttl_s / 2), how often a recipient's plan is
    # recomputed, and the bucket depth in seconds. presence_filter False: no filtering.
    presence_filter: bool = True
    # A client's default: its 10 nearest at 20 Hz (200/s), the floor of a room of 50 (~17/s),
    # and a little for the next ring; a room of 50 then costs a node 12,000 updates/s, not
    # the 49,000 of sending everything (benchmarks/node_bench.py).
    presence_client_msgs_per_s: float = 240.0
    presence_client_bytes_per_s: float = 64 * 1024.0
    presence_link_msgs_per_s: float = 4_000.0
    presence_link_bytes_per_s: float = 2 * 1024 * 1024.0
    presence_near_count: int = 10
    presence_view_radius: float = 30.0
    presence_floor_s: float = 3.0
    presence_plan_s: float = 0.5
    presence_budget_burst_s: float = 0.25
    # Defence
    peer_frames_per_s: float = 1_000.0
    peer_frame_burst: float = 2_000.0
    peer_bytes_per_s: float = 4_000_000.0
    peer_byte_burst: float = 8_000_000.0
    score_disconnect: float = -100.0
    score_recovery_per_s: float = 1.0
    backoff_s: float = 60.0
    max_outbox_bytes: int = 8 * 1024 * 1024
    max_events: int = 100_000
