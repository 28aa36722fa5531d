"""The media relay's Prometheus metrics (on the node's public registry: aggregates only, no
room label)."""

from prometheus_client import CollectorRegistry, Counter, Gauge

__all__ = ["MediaMetrics"]


class MediaMetrics:
    """``meshnode_media_*``: streams and kbps in and out by kind, keyframe requests, drops
    and refusals by reason, subscribers per source."""

    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.streams = Gauge("meshnode_media_streams",
                             "Media streams relayed now, by direction (in: sources arriving, "
                             "out: outputs) and kind", ["direction", "kind"], registry=r)
        self.kbps = Gauge("meshnode_media_kbps", "Media bitrate relayed now, by direction "
                          "and kind", ["direction", "kind"], registry=r)
        self.bytes = Counter("meshnode_media_bytes", "RTP bytes relayed, by direction "
                             "(in, out: to clients, trunk: to neighbour nodes)", ["direction"],
                             registry=r)
        self.keyframe_requests = Counter("meshnode_media_keyframe_requests",
                                         "Keyframe requests sent to publishers", registry=r)
        self.drops = Counter("meshnode_media_drops", "RTP packets not forwarded, by reason "
                             "(malformed, unknown_ssrc, over_rate, paused, layer, ...)",
                             ["reason"], registry=r)
        self.refusals = Counter("meshnode_media_refusals", "Media requests refused, by reason "
                                "(not_member, removed, too_many_publications, relay_full, "
                                "media_disabled, ...)", ["reason"], registry=r)
        self.subscribers_per_source = Gauge("meshnode_media_subscribers_per_source",
                                            "Outputs per relayed source, the largest now",
                                            registry=r)
        self.decoders = Gauge("meshnode_media_decoders",
                              "Media decoders aiortc created in this node (0: the relay "
                              "forwards RTP and never decodes)", registry=r)
