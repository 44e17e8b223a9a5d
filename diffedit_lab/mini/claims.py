"""A paper's claim as a record of ``bench/results-mini.json``: ours vs the paper's baseline over seeds.

``holds`` is decided one way for every claim: ours is better than the baseline **on every seed** (paired: the same
seed, data and budget on both sides). With three seeds that is what can be told from seed noise without a model of
the noise; the per-seed values, means and standard deviations are in the record so a reader can judge the margin.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n − 1; 0 for one value)."""
    n = len(values)
    m = sum(values) / n
    sd = math.sqrt(sum((v - m) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return m, sd


def make_claim(
    paper: str,
    claim: str,
    metric: str,
    higher_is_better: bool,
    seeds: Sequence[int],
    ours: Sequence[float],
    baseline: Sequence[float],
    ours_name: str,
    baseline_name: str,
) -> dict:
    if not (len(seeds) == len(ours) == len(baseline)) or not seeds:
        raise ValueError(
            f"{paper}/{metric}: one value per seed on both sides ({len(seeds)}, {len(ours)}, {len(baseline)})"
        )
    sign = 1.0 if higher_is_better else -1.0
    better = [sign * (o - b) > 0 for o, b in zip(ours, baseline)]
    (om, osd), (bm, bsd) = mean_sd(ours), mean_sd(baseline)
    return {
        "paper": paper,
        "claim": claim,
        "metric": metric,
        "higher_is_better": bool(higher_is_better),
        "ours_name": ours_name,
        "baseline_name": baseline_name,
        "ours": om,
        "baseline": bm,
        "ours_sd": osd,
        "baseline_sd": bsd,
        "seeds": [int(s) for s in seeds],
        "ours_per_seed": [float(v) for v in ours],
        "baseline_per_seed": [float(v) for v in baseline],
        "better_on_seeds": sum(better),
        "holds": all(better),
    }
