"""What `python run.py compare` decides about several runs: which one is best, and by how much.

Reads nothing itself: it works on run folders already loaded by `reporting.runfiles` (each run's
`<stage>.json` through its type, `config.resolved.yaml`, `logs/metrics.jsonl` and the rows of
`evaluation_results.csv`). The wording of the comparison report is `reporting/sections/comparison.py`.

- Runs are compared on the same test items only when their evaluation CSVs list the same items
  (id, question, context, reference) and the prompt was built the same way (prepare's prompt format
  and the system prompt); otherwise `different_items` says why and no difference is called
  significant.
- The primary metric is ROUGE-L of the tuned model on the test split (evaluate.json `rougeL.after`,
  per item `rougeL_after` in the CSV). The best run is the one with the highest mean; against each
  other run on the same items, the per-item difference gets a seeded paired bootstrap interval
  (`trainer.significance.change_interval`, the one evaluate uses for before/after), and the best run
  is called better only when the 95 % interval excludes 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reporting import facts
from reporting.runfiles import RunFiles, eval_items
from reporting.text import is_number
from trainer.results import known
from trainer.significance import CONFIDENCE, change_interval

PRIMARY_METRIC = "rougeL"
PRIMARY_COLUMN = "rougeL_after"  # evaluation_results.csv: the tuned model's ROUGE-L of one item
ITEM_COLUMNS = ("id", "instruction", "input", "reference")
RESAMPLES = 2000
SEED = 0


@dataclass
class Run:
    """One loaded run folder, its label in the report and its evaluated test items."""

    label: str
    files: RunFiles
    items: list[dict[str, str]]
    items_error: str

    @property
    def primary(self) -> float | None:
        m = facts.metric(self.files, PRIMARY_METRIC)
        return float(m.after) if m is not None and is_number(m.after) else None

    @property
    def val_loss(self) -> tuple[float, str] | None:
        """The lowest validation loss train.json records (best checkpoint, else the last), and where."""
        tr = self.files.train
        if not tr.ok:
            return None
        best = tr.result.best_checkpoint
        if is_number(best.eval_loss):
            return float(best.eval_loss), f"最佳检查点 step {known(best.step, '?')}"
        last = tr.result.eval_loss_last
        return (float(last), "最后一次验证") if is_number(last) else None


@dataclass(frozen=True)
class PairedDifference:
    """Best run minus another on the primary metric, over the items both evaluated."""

    other: str
    difference: float  # mean over the paired items, ROUGE-L points
    low: float | None  # the 95 % paired bootstrap interval; None with fewer than 2 items
    high: float | None
    items: int
    different_items: str  # why the runs were not evaluated on the same items ("" when they were)

    @property
    def significant(self) -> bool:
        return not self.different_items and self.low is not None and self.low > 0


def run_labels(paths: list[Path]) -> list[str]:
    """Each run's folder name, with its parent's where two folders share a name."""
    names = [p.name for p in paths]
    return [f"{p.parent.name}/{p.name}" if names.count(p.name) > 1 else p.name for p in paths]


def load_runs(files: list[RunFiles]) -> list[Run]:
    labels = run_labels([f.path for f in files])
    runs = []
    for label, f in zip(labels, files, strict=True):
        items, error = eval_items(f)
        runs.append(Run(label, f, items, error))
    return runs


def _item_key(row: dict[str, str]) -> tuple[str, ...]:
    return tuple(" ".join(str(row.get(c) or "").split()) for c in ITEM_COLUMNS)


def prompt_setup(run: Run) -> tuple[str, str]:
    """How the run built its prompts: prepare's prompt format and the system prompt of its config."""
    fmt = known(run.files.prepare.result.prompt_format, None) if run.files.prepare.ok else None
    system = run.files.config_value("model", "system_prompt")
    return str(fmt or known(run.files.config_value("model", "prompt_format"), None)), str(known(system, None))


def different_items(a: Run, b: Run) -> str:
    """Why runs a and b were not evaluated on the same items with the same prompts ("" if they were)."""
    for run in (a, b):
        if run.items_error:
            return f"{run.label} 的测试项无法读取（{run.items_error}）"
    keys_a, keys_b = sorted(map(_item_key, a.items)), sorted(map(_item_key, b.items))
    if keys_a != keys_b:
        shared = len(set(keys_a) & set(keys_b))
        return (
            f"测试项不同：{a.label} {len(keys_a)} 条，{b.label} {len(keys_b)} 条，共同的 {shared} 条"
            "（测试集划分或评估样本数不同）"
        )
    (fmt_a, sys_a), (fmt_b, sys_b) = prompt_setup(a), prompt_setup(b)
    if fmt_a != fmt_b:
        return f"对话模板不同：{a.label} 为 {fmt_a}，{b.label} 为 {fmt_b}"
    if sys_a != sys_b:
        return f"系统提示词不同（{a.label} 与 {b.label}），同一问题的提示不同"
    return ""


def _scores(run: Run) -> dict[tuple[str, ...], float]:
    out = {}
    for row in run.items:
        try:
            value = float(row.get(PRIMARY_COLUMN) or "nan")
        except ValueError:
            continue
        if math.isfinite(value):
            out[_item_key(row)] = value
    return out


def paired_difference(
    best: Run, other: Run, resamples: int = RESAMPLES, seed: int = SEED
) -> PairedDifference:
    """The best run's per-item advantage over `other` on the primary metric, with its interval."""
    why = different_items(best, other)
    a, b = _scores(best), _scores(other)
    shared = sorted(set(a) & set(b))
    diff = (
        sum(a[k] - b[k] for k in shared) / len(shared)
        if shared
        else (best.primary or 0) - (other.primary or 0)
    )
    if why or len(shared) < 2:
        return PairedDifference(other.label, diff, None, None, len(shared), why)
    interval = change_interval(
        [b[k] for k in shared],
        [a[k] for k in shared],
        kind="points",
        higher_is_better=True,
        resamples=resamples,
        seed=seed,
        confidence=CONFIDENCE,
    )
    low, high = (interval.low, interval.high) if interval else (None, None)
    return PairedDifference(other.label, diff, low, high, len(shared), "")


def best_by_primary(runs: list[Run]) -> Run | None:
    scored = [r for r in runs if r.primary is not None]
    return max(scored, key=lambda r: r.primary or 0.0) if scored else None


def best_by_val_loss(runs: list[Run]) -> Run | None:
    scored = [r for r in runs if r.val_loss is not None]
    return min(scored, key=lambda r: (r.val_loss or (math.inf, ""))[0]) if scored else None


def config_differences(runs: list[Run]) -> list[tuple[str, list[Any]]]:
    """(dotted key, each run's value) for every config key whose value differs between the runs
    (run_name aside: it names the folder). A key a run's config.resolved.yaml lacks is `None` there."""
    flat = [_recorded(r.files) for r in runs]
    keys = list(dict.fromkeys(k for f in flat for k in f))
    rows = []
    for key in keys:
        if key == "run_name":
            continue
        values = [f.get(key) for f in flat]
        if any(v != values[0] for v in values[1:]):
            rows.append((key, values))
    return rows


def _recorded(files: RunFiles) -> dict[str, Any]:
    """The run's typed config as dotted keys, only those its config.resolved.yaml recorded."""
    flat = _flatten(files.config.to_dict())
    return {k: v for k, v in flat.items() if ".".join(k.split(".")[:2]) in files.config_recorded}


def _flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, f"{name}."))
        else:
            out[name] = value
    return out
