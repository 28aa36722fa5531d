"""``MediaConfig``: the ``[media]`` section of the node's configuration (docs/operators.md)."""

from dataclasses import dataclass, replace
from typing import Any

from meshnode.media.selection import SelectionConfig

__all__ = ["MEDIA_KEYS", "MediaConfig", "MediaConfigError", "media_config_from_mapping"]


class MediaConfigError(ValueError):
    """A ``[media]`` key is wrong (the node's ``ConfigError`` wraps it)."""


@dataclass(frozen=True, slots=True)
class MediaConfig:
    """The relay's switches and caps.

    - ``enabled``: relay voice and video at all (off: every media request is refused
      ``media_disabled``).
    - ``max_publications_per_peer``: sources one peer may publish in a room.
    - ``max_relay_kbps``: all media this node sends, together; above it new outputs are
      refused (``relay_full``) and subscribers fall back to audio. 0: no cap.
    - ``max_room_kbps``: the same, per room. 0: no cap.
    - ``max_peer_kbps``: the most one subscriber is sent (its budget is the smaller of this,
      its own ``max_kbps`` and its bandwidth estimate); also a publisher's ingest cap.
    - ``audio_only_below_kbps``, ``last_n``, ``max_audio``, ``audio_radius``: the selection
      (``meshnode.media.selection``).
    - ``plan_interval_s``: how often every room is re-planned.
    - ``recycle_sdp_chars``: a media connection whose description grows past this is
      replaced by a fresh one.
    """

    enabled: bool = True
    max_publications_per_peer: int = 4
    max_relay_kbps: float = 0.0
    max_room_kbps: float = 0.0
    max_peer_kbps: float = 4_000.0
    audio_only_below_kbps: float = 100.0
    last_n: int = 4
    max_audio: int = 8
    audio_radius: float | None = 30.0
    plan_interval_s: float = 0.5
    recycle_sdp_chars: int = 24_000

    def selection(self) -> SelectionConfig:
        """The selector's configuration."""
        return SelectionConfig(audio_radius=self.audio_radius, max_audio=self.max_audio,
                               last_n=self.last_n,
                               audio_only_below_kbps=self.audio_only_below_kbps)


MEDIA_KEYS = frozenset({"enabled", "max_publications_per_peer", "max_relay_kbps",
                        "max_room_kbps", "max_peer_kbps", "audio_only_below_kbps", "last_n",
                        "max_audio", "audio_radius", "plan_interval_s", "recycle_sdp_chars"})

_RANGES: dict[str, tuple[float, float]] = {
    "max_publications_per_peer": (0, 64), "max_relay_kbps": (0, 10_000_000),
    "max_room_kbps": (0, 10_000_000), "max_peer_kbps": (1, 1_000_000),
    "audio_only_below_kbps": (0, 1_000_000), "last_n": (0, 64), "max_audio": (0, 64),
    "audio_radius": (0, 1e9), "plan_interval_s": (0.05, 10), "recycle_sdp_chars": (4_000, 30_000),
}
_INTS = {"max_publications_per_peer", "last_n", "max_audio", "recycle_sdp_chars"}


def media_config_from_mapping(body: dict[str, Any], base: MediaConfig) -> MediaConfig:
    """Check the ``[media]`` table and apply it over ``base``; raises ``MediaConfigError``
    naming the key and its range."""
    unknown = set(body) - MEDIA_KEYS
    if unknown:
        raise MediaConfigError(f"unknown key(s) in [media]: {', '.join(sorted(unknown))}")
    changes: dict[str, Any] = {}
    if "enabled" in body:
        if not isinstance(body["enabled"], bool):
            raise MediaConfigError("media.enabled must be true or false")
        changes["enabled"] = body["enabled"]
    for key, (low, high) in _RANGES.items():
        if key not in body:
            continue
        value = body[key]
        want = int if key in _INTS else (int, float)
        if isinstance(value, bool) or not isinstance(value, want) or not low <= value <= high:
            kind = "an integer" if key in _INTS else "a number"
            raise MediaConfigError(f"media.{key} must be {kind} from {low:g} to {high:g}; "
                                   f"got {value!r}")
        changes[key] = value if key in _INTS else float(value)
    return replace(base, **changes)
