"""Summaries the node benchmarks share."""


def pct(values: list[float], q: float) -> float:
    """The q-quantile (0..1) of ``values`` (seconds), in ms, rounded; NaN when there are none."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    idx = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return round(ordered[idx] * 1000, 3)
