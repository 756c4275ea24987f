"""Pareto fronts of a results table."""
from __future__ import annotations

#: Columns where more is better; every other column is minimised.
HIGHER_IS_BETTER = frozenset({"throughput_ips", "utilization", "npu_mac_share", "peak_tops", "cosine_min",
                              "top1_agreement", "top5_agreement"})


def pareto(df, x: str, y: str, *, by: str | list[str] | None = None, maximize=None):
    """The rows of ``df`` that no other row beats in both ``x`` and ``y`` (at least as good in both and
    better in one), sorted by ``x``.

    A column is maximised when it is in ``maximize`` (default: those of x and y in :data:`HIGHER_IS_BETTER`,
    such as throughput_ips or cosine_min), minimised otherwise (latency_us, macs_per_cycle, onchip_bits).
    Rows missing x or y (failed points) take no part.  ``by`` (for example "model") gives each group its own
    front.  Of rows equal in both, the first is kept."""
    import pandas as pd

    for c in (x, y):
        if c not in df.columns:
            raise KeyError(f"no column {c!r}; columns: {', '.join(map(str, df.columns))}")
    if by is not None:
        fronts = [pareto(g, x, y, maximize=maximize) for _, g in df.groupby(by, sort=False)]
        return pd.concat(fronts) if fronts else df.iloc[:0]
    up = set(HIGHER_IS_BETTER if maximize is None else maximize)
    data = df.dropna(subset=[x, y])
    sx = -data[x] if x in up else data[x]
    sy = -data[y] if y in up else data[y]
    order = sorted(range(len(data)), key=lambda i: (sx.iloc[i], sy.iloc[i]))
    kept, best = [], None
    for i in order:
        if best is None or sy.iloc[i] < best:
            kept.append(i)
            best = sy.iloc[i]
    return data.iloc[kept]
