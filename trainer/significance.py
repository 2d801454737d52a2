"""Paired bootstrap confidence intervals of a before→after change, and the verdict they allow.

Not a stage: `trainer/evaluate.py` calls `change_interval` for every metric it computes per test
item (the base model's and the tuned model's score of the same item form a pair). numpy only;
reads and writes nothing.

Method (percentile bootstrap over paired items): the n items are drawn n times with replacement
(one seeded generator, `resamples` times; the same draw for before and after, so every item keeps
its pair); each resample's statistic is the metric's change computed exactly as the evaluation
table computes it (`trainer.metrics.improvement`: points, or percent of the before value, oriented
so that a positive change is better; weighted means where the metric is token-weighted, e.g. the
answer loss). The interval is the (1-c)/2 and (1+c)/2 quantiles of those changes (c = 0.95).

`verdict` calls a change significant only when the whole interval lies on one side of 0; an
interval that contains 0 (noise, or too few items to tell) is "no_significant_change".
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

RESAMPLES = 2000
CONFIDENCE = 0.95

# Machine-readable verdicts (the report words them, reporting/labels.py).
IMPROVED, WORSENED = "improved", "worsened"  # a metric with a better direction
INCREASED, DECREASED = "increased", "decreased"  # a metric without one (answer length)
NO_CHANGE = "no_significant_change"


@dataclass(frozen=True)
class Interval:
    """The `confidence` interval of the change and the number of paired items it rests on."""

    low: float
    high: float
    items: int


def change_interval(
    before: Sequence[float],
    after: Sequence[float],
    *,
    kind: str,
    higher_is_better: bool | None,
    weights: Sequence[float] | None = None,
    transform: Callable[[np.ndarray], np.ndarray] | None = None,
    resamples: int = RESAMPLES,
    seed: int = 0,
    confidence: float = CONFIDENCE,
) -> Interval | None:
    """The paired bootstrap interval of the change of mean(before) → mean(after); None for < 2 items.

    `kind` is "points" (after - before) or "relative_pct" ((after - before) / |before| x 100), as
    in `trainer.metrics.improvement`; `weights` make the means weighted (tokens per answer for the
    loss); `transform` maps each mean before the change is taken (exp for perplexity).
    """
    b, a = np.asarray(before, dtype=float), np.asarray(after, dtype=float)
    if b.shape != a.shape:
        raise ValueError(f"{b.size} before values but {a.size} after values")
    n = b.size
    if n < 2:
        return None
    w = np.ones(n) if weights is None else np.asarray(weights, dtype=float)
    idx = np.random.default_rng(seed).integers(0, n, size=(resamples, n))
    wi = w[idx]
    total = wi.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        mean_b = (b[idx] * wi).sum(axis=1) / total
        mean_a = (a[idx] * wi).sum(axis=1) / total
        if transform is not None:
            mean_b, mean_a = transform(mean_b), transform(mean_a)
        change = _change(mean_b, mean_a, kind)
    if higher_is_better is False:
        change = -change
    change = change[np.isfinite(change)]
    if change.size == 0:
        return None
    tail = (1.0 - confidence) / 2.0 * 100.0
    low, high = np.percentile(change, [tail, 100.0 - tail])
    return Interval(low=float(low) + 0.0, high=float(high) + 0.0, items=n)


def _change(mean_b: np.ndarray, mean_a: np.ndarray, kind: str) -> np.ndarray:
    if kind == "points":
        return mean_a - mean_b
    if kind == "relative_pct":
        return np.where(mean_b != 0, (mean_a - mean_b) / np.abs(mean_b) * 100.0, np.nan)
    raise ValueError(f"unknown change kind {kind!r}: use 'points' or 'relative_pct'")


def verdict(interval: Interval, higher_is_better: bool | None) -> str:
    """improved / worsened (increased / decreased without a better direction) when the interval
    excludes 0, else no_significant_change. The interval is already oriented (positive = better)."""
    if interval.low > 0:
        return INCREASED if higher_is_better is None else IMPROVED
    if interval.high < 0:
        return DECREASED if higher_is_better is None else WORSENED
    return NO_CHANGE
