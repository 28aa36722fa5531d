"""Size limits that every decoder enforces before and while it parses."""

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on what a peer may send.

    The defaults fit one SCTP message of aiortc's data channels (262,144 bytes); a change
    must leave room for the frame around it.
    """

    max_frame_bytes: int = 262_144
    max_change_bytes: int = 240 * 1024
    max_ops_per_change: int = 4_096
    max_deps: int = 256
    max_actors_per_change: int = 256
    max_names_per_change: int = 256
    max_name_chars: int = 64
    max_value_depth: int = 8
    max_str_bytes: int = 65_536
    max_bin_bytes: int = 65_536
    max_collection_items: int = 4_096
    max_value_bytes: int = 65_536
    max_changes_per_frame: int = 1_024
    max_snapshot_bytes: int = 256 * 1024 * 1024


DEFAULT_LIMITS = Limits()
