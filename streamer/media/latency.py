"""Capture→decoded latency statistics: percentiles and a summary (pure)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0 to 100) of already sorted values, interpolating linearly between
    ranks (numpy's default), so small samples give sensible tails."""
    if not sorted_values:
        return math.nan
    rank = (len(sorted_values) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (rank - low)


@dataclass(frozen=True)
class LatencySummary:
    """Capture→decoded latency over a run, in milliseconds."""

    frames: int  # frames whose stamp was read
    p50: float
    p95: float
    p99: float
    max: float
    mean: float

    @classmethod
    def of(cls, latencies_ms: Sequence[float]) -> LatencySummary:
        ordered = sorted(latencies_ms)
        if not ordered:
            return cls(0, math.nan, math.nan, math.nan, math.nan, math.nan)
        return cls(
            len(ordered),
            percentile(ordered, 50),
            percentile(ordered, 95),
            percentile(ordered, 99),
            ordered[-1],
            sum(ordered) / len(ordered),
        )

    def as_dict(self) -> dict[str, float | int | None]:
        """JSON-ready (NaN, for no samples, becomes null)."""
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in vars(self).items()}
