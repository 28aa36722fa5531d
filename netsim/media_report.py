"""The ``media`` part of ``results.json`` (see ``docs/netsim.md``, "Media")."""

from __future__ import annotations

from typing import Any

from netsim.media import MediaSim


def _r(x: float | None, digits: int = 3) -> float | None:
    return None if x is None else round(x, digits)


def media_results(media: MediaSim) -> dict[str, Any]:
    """Per node (subscriber) and summary figures of a run's media."""
    span = max(1e-9, media.stop - media.spec.start_s)
    nodes: dict[str, dict[str, Any]] = {}
    for i in media.subscribers:
        st = media.stats[i]
        nodes[str(i)] = {
            "media_kbps_received": _r(st.received_bytes * 8 / 1000 / span),
            "wanted_audio_share": _r(st.arrived_audio_s / st.wanted_audio_s
                                     if st.wanted_audio_s > 0 else None, 4),
            "stalls": {"count": st.stalls, "seconds": _r(st.stall_s)},
            "audio_only_share": _r(st.audio_only_s / st.planned_s if st.planned_s else None, 4),
            "video_streams_mean": _r(st.video_s / st.planned_s if st.planned_s else None),
            "video_layer_mean": _r(st.layer_s / st.video_s if st.video_s else None),
            "estimate_kbps_mean": _r(st.estimate_kbps_s / st.planned_s
                                     if st.planned_s else None),
            "keyframes": st.keyframes,
            "dropped": dict(sorted(st.dropped.items())),
        }
    links = {
        f"{a}-{b}": {
            "media_kbps": _r(ls.accepted * 8 / 1000 / span),
            "offered_kbps": _r(ls.offered * 8 / 1000 / span),
            "tail_dropped_share": _r(1 - ls.accepted / ls.offered if ls.offered else 0.0, 4),
        }
        for (a, b), ls in sorted(media.link_stats.items())
    }
    shares = [v["wanted_audio_share"] for v in nodes.values()
              if v["wanted_audio_share"] is not None]
    kbps = [v["media_kbps_received"] for v in nodes.values()]
    layers = [v["video_layer_mean"] for v in nodes.values() if v["video_layer_mean"] is not None]
    summary = {
        "subscribers": len(nodes),
        "sources": len(media.sources),
        "media_kbps_received": {
            "mean": _r(sum(kbps) / len(kbps) if kbps else None),
            "min": _r(min(kbps) if kbps else None),
            "max": _r(max(kbps) if kbps else None),
        },
        "wanted_audio_share": {
            "mean": _r(sum(shares) / len(shares) if shares else None, 4),
            "min": _r(min(shares) if shares else None, 4),
        },
        "stalls": {
            "count": sum(v["stalls"]["count"] for v in nodes.values()),
            "seconds": _r(sum(media.stats[i].stall_s for i in media.subscribers)),
        },
        "audio_only_nodes": sum(1 for v in nodes.values()
                                if (v["audio_only_share"] or 0.0) > 0.5),
        "video_layer_mean": _r(sum(layers) / len(layers) if layers else None),
        "keyframes": sum(v["keyframes"] for v in nodes.values()),
        "link_media_kbps_max": _r(max((v["media_kbps"] or 0.0 for v in links.values()),
                                      default=0.0)),
    }
    return {"nodes": nodes, "links": links, "summary": summary, "series": media.series}
