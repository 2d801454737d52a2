"""The before/after metrics table of `evaluate.json`, each change with its 95 % interval.

Not a stage: `trainer/evaluate.py` scores every test record (one row per record, `per`) and the
identity probe, then calls `metric_table` here. Reads and writes nothing.

Every metric of `trainer.metrics.METRIC_KEYS` gets its before, after (and reference) value and its
`improvement`; every metric computed per test item also gets the paired bootstrap interval of that
improvement and the verdict it allows (`trainer.significance`). Corpus-level metrics (corpus
BLEU-4, Distinct-2) have no per-item pairs: their interval is null with the reason.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from trainer import metrics, significance
from trainer.results import EvalMetric, NotMeasured, or_not_measured

Triple = tuple[float | None, float | None, float | None]  # (before, after, reference)


@dataclass(frozen=True)
class Paired:
    """Per-item values of one metric, before and after, as the bootstrap resamples them."""

    before: list[float]
    after: list[float]
    weights: list[float] | None = None  # tokens per answer: the loss is token-weighted
    transform: Any = None  # applied to each resampled mean (np.exp: loss -> perplexity)


def rounded(v: float | None, nd: int = 2, why: str = "") -> float | NotMeasured:
    """`v` rounded, or not measured (null) when there is no value or it is not finite."""
    return NotMeasured(why) if v is None or (isinstance(v, float) and not math.isfinite(v)) else round(v, nd)


def metric_values(
    per: list[dict[str, Any]], answers: dict[str, Any], probe: list[dict[str, Any]]
) -> dict[str, Triple]:
    """Every metric of metrics.METRIC_KEYS as (before, after, reference) over the test split
    (the identity probe's own rows for identity_probe_pct)."""

    def avg(key: str, rows: list[dict[str, Any]] = per) -> float | None:
        return metrics.mean(p[key] for p in rows)

    identity_rows = [p for p in per if p["identity_question"]]
    loss_before, loss_after = answers["loss_before"], answers["loss_after"]
    return {
        "avg_answer_chars": (avg("chars_before"), avg("chars_after"), avg("chars_reference")),
        "bleu4": (avg("bleu4_before"), avg("bleu4_after"), None),
        "corpus_bleu4": (
            metrics.corpus_bleu4([p["answer_before"] for p in per], [p["reference"] for p in per]),
            metrics.corpus_bleu4([p["answer_after"] for p in per], [p["reference"] for p in per]),
            None,
        ),
        "rouge1": (avg("rouge1_before"), avg("rouge1_after"), None),
        "rouge2": (avg("rouge2_before"), avg("rouge2_after"), None),
        "rougeL": (avg("rougeL_before"), avg("rougeL_after"), None),
        "loss": (loss_before, loss_after, None),
        "perplexity": (metrics.perplexity(loss_before), metrics.perplexity(loss_after), None),
        "distinct2": (
            metrics.distinct_n([p["answer_before"] for p in per]),
            metrics.distinct_n([p["answer_after"] for p in per]),
            metrics.distinct_n([p["reference"] for p in per]),
        ),
        "hit_max_tokens_pct": (
            metrics.percent_true(p["hit_max_before"] for p in per),
            metrics.percent_true(p["hit_max_after"] for p in per),
            None,
        ),
        "identity_pct": (
            metrics.percent_true(p["identity_before"] for p in identity_rows),
            metrics.percent_true(p["identity_after"] for p in identity_rows),
            None,
        ),
        "identity_probe_pct": (
            metrics.percent_true(p["hit_before"] for p in probe),
            metrics.percent_true(p["hit_after"] for p in probe),
            None,
        ),
    }


def paired_values(per: list[dict[str, Any]], probe: list[dict[str, Any]]) -> dict[str, Paired]:
    """The per-item pairs of every metric that has them (corpus-level metrics have none)."""

    def pair(key: str, rows: list[dict[str, Any]] = per, scale: float = 1.0) -> Paired:
        return Paired(
            [scale * float(p[f"{key}_before"]) for p in rows],
            [scale * float(p[f"{key}_after"]) for p in rows],
        )

    scored = [p for p in per if p["answer_tokens"]]
    return {
        "avg_answer_chars": pair("chars"),
        "bleu4": pair("bleu4"),
        "rouge1": pair("rouge1"),
        "rouge2": pair("rouge2"),
        "rougeL": pair("rougeL"),
        "loss": Paired(
            [p["loss_before"] for p in scored],
            [p["loss_after"] for p in scored],
            [p["answer_tokens"] for p in scored],
        ),
        "perplexity": Paired(
            [p["loss_before"] for p in scored],
            [p["loss_after"] for p in scored],
            [p["answer_tokens"] for p in scored],
            np.exp,
        ),
        "hit_max_tokens_pct": pair("hit_max", scale=100.0),
        "identity_pct": pair("identity", [p for p in per if p["identity_question"]], 100.0),
        "identity_probe_pct": pair("hit", probe, 100.0),
    }


NO_PAIRS = "corpus-level metric: computed once over all answers, no per-item pairs to resample"


def metric_table(
    values: dict[str, Triple], pairs: dict[str, Paired], resamples: int, seed: int
) -> list[EvalMetric]:
    """The metrics table of `evaluate.json`: values, improvement and its interval of each metric (the
    report names and defines each key itself, reporting/labels.py)."""
    table = []
    for key in metrics.METRIC_KEYS:
        b, a, ref = values[key]
        hib, kind = metrics.HIGHER_IS_BETTER[key], metrics.IMPROVEMENT_KIND[key]
        nd = 4 if key == "loss" else 2
        missing = "no item to score" if key != "identity_probe_pct" else "identity probe not run"
        row = EvalMetric(
            key=key,
            before=rounded(b, nd, missing),
            after=rounded(a, nd, missing),
            reference=rounded(ref),
            improvement=rounded(metrics.improvement(b, a, hib, kind), 2, missing),
            improvement_kind=kind,
            higher_is_better=or_not_measured(hib),  # null for answer length: neither direction is better
        )
        _add_interval(row, pairs.get(key), resamples, seed)
        table.append(row)
    return table


def _add_interval(row: EvalMetric, pair: Paired | None, resamples: int, seed: int) -> None:
    """Set the interval fields of `row` from the paired bootstrap (or why there is none)."""
    hib = metrics.HIGHER_IS_BETTER[str(row.key)]
    interval = None
    if pair is not None:
        interval = significance.change_interval(
            pair.before,
            pair.after,
            kind=metrics.IMPROVEMENT_KIND[str(row.key)],
            higher_is_better=hib,
            weights=pair.weights,
            transform=pair.transform,
            resamples=resamples,
            seed=seed,
        )
    if interval is None:
        why = NO_PAIRS if pair is None else f"{len(pair.before)} paired item(s): too few to resample"
        row.change_ci95_low = row.change_ci95_high = row.significance = NotMeasured(why)
        row.paired_items = len(pair.before) if pair is not None else NotMeasured(why)
        return
    # The verdict is read from the interval as written, so the file never says "improved" beside 0.00.
    shown = significance.Interval(round(interval.low, 2) + 0.0, round(interval.high, 2) + 0.0, interval.items)
    row.change_ci95_low, row.change_ci95_high = shown.low, shown.high
    row.significance = significance.verdict(shown, hib)
    row.paired_items = shown.items
