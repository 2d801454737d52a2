"""The slots of the comparison report (`python run.py compare`), one table or list per section.

Reads nothing itself: it words what `reporting.comparison` found about runs already loaded by
`reporting.runfiles`. Every cell is a value from a run's files with its unit, or `未测量：<reason>`
(in a note under the table when a whole stage is missing, so a table is not filled with reasons).
"""

from __future__ import annotations

from typing import Any

from reporting import comparison, facts, labels, wording
from reporting.comparison import PairedDifference, Run
from reporting.text import (
    fmt_bytes,
    fmt_float,
    fmt_general,
    fmt_int,
    fmt_loss,
    fmt_signed,
    fmt_time,
    is_number,
    shorten,
    shown,
)
from trainer.results import EvalMetric, NotMeasured, known, measured

VALUE_CHARS = 60  # longest config value shown in the differences table


def _value(value: Any) -> str:
    if value is None:
        return "未记录"
    if value == "" or value == []:
        return "（空）"
    if isinstance(value, list):
        return shorten(", ".join(fmt_general(v) for v in value), VALUE_CHARS)
    return shorten(fmt_general(value), VALUE_CHARS)


def runs_table(runs: list[Run]) -> list[list[str]]:
    """运行: folder, when trained, code version, test items and prompt format."""
    rows = []
    for r in runs:
        tr = r.files.train
        when = fmt_time(tr.started_at) if tr.started_at else shown(NotMeasured(tr.why_missing))
        commit = shown(r.files.env_value(r.files.env.git_commit), lambda v: str(v)[:12])
        items = f"{fmt_int(len(r.items))} 条" if not r.items_error else shown(NotMeasured(r.items_error))
        fmt, _ = comparison.prompt_setup(r)
        rows.append([r.label, str(r.files.path), when, commit, items, fmt])
    return rows


def config_rows(runs: list[Run]) -> list[list[str]]:
    return [[key, *map(_value, values)] for key, values in comparison.config_differences(runs)]


def _metric_cell(m: EvalMetric | None, why_missing: str) -> str:
    if m is None:
        return shown(NotMeasured(why_missing))
    digits = 4 if m.key == "loss" else 2
    after = (
        fmt_float(m.after, digits)
        if is_number(m.after)
        else shown(NotMeasured(wording.text(known(m.after.why, "")) or "未记录"))
    )
    if not is_number(m.improvement):
        return after
    change = facts.change_text(m, m.improvement)
    interval = facts.interval_text(m)
    word = labels.significance(m)
    tail = f"区间 {interval}，{word}" if interval and word else "区间未测量"
    return f"{after}（{change}；{tail}）"


def metric_table(runs: list[Run]) -> tuple[list[list[str]], list[str]]:
    """Metric rows (runs side by side: the tuned value, its change and interval) and the notes
    that say which intervals were not measured and why."""
    keys = list(dict.fromkeys(m.key for r in runs for m in facts.metrics(r.files)))
    keys.sort(key=lambda k: k != comparison.PRIMARY_METRIC)
    rows, notes = [], []
    for key in keys:
        found = [facts.metric(r.files, str(key)) for r in runs]
        first = next(m for m in found if m is not None)
        name = labels.metric_name(first)
        cells = [
            _metric_cell(m, f"{r.files.evaluate.name}.json 未记录该指标")
            for m, r in zip(found, runs, strict=True)
        ]
        rows.append([name, *cells])
    for r in runs:
        missing: dict[str, list[str]] = {}
        for m in facts.metrics(r.files):
            if is_number(m.improvement) and not facts.interval_text(m):
                missing.setdefault(facts.no_interval_reason(m), []).append(labels.metric_name(m))
        for reason, names in missing.items():
            notes.append(f"{r.label}：{'、'.join(names)} 的变化区间{shown(NotMeasured(reason))}")
    return rows, notes


def training_rows(runs: list[Run]) -> tuple[list[list[str]], list[str]]:
    """Steps, first → last training and validation loss and the best checkpoint, per run."""
    rows, notes = [], []
    for r in runs:
        tr = r.files.train
        if not tr.ok:
            notes.append(f"{r.label}：{shown(NotMeasured(tr.why_missing))}")
            continue
        res = tr.result

        def pair(first: Any, last: Any) -> str:
            if is_number(first) and is_number(last):
                return f"{fmt_loss(first)} → {fmt_loss(last)}"
            return "未记录"

        best = r.val_loss
        rows.append(
            [
                r.label,
                fmt_general(known(res.global_step, "未记录")),
                pair(res.train_loss_first, res.train_loss_last),
                pair(res.eval_loss_first, res.eval_loss_last),
                f"{fmt_loss(best[0])}（{best[1]}）" if best else "未记录",
            ]
        )
    return rows, notes


def speed_rows(runs: list[Run]) -> tuple[list[list[str]], list[str]]:
    """Training speed and resources per run, and the evaluation time."""
    rows, notes = [], []
    for r in runs:
        tr = r.files.train
        if not tr.ok:
            continue  # already named under the training table
        res = tr.result.resources
        gpu = tr.value(res.peak_gpu_reserved_bytes)
        if not measured(gpu) and r.files.has_gpu is False:
            notes.append(f"{r.label}：峰值显存{shown(NotMeasured('本次运行无GPU（env.json 中 gpu 为空）'))}")
        eval_s = r.files.evaluate.duration_s
        rows.append(
            [
                r.label,
                f"{known(tr.result.backend, '未记录')} / {known(tr.result.precision, '未记录')}",
                fmt_float(res.wall_time_s, 1) if is_number(res.wall_time_s) else "未记录",
                f"{fmt_float(res.tokens_per_s, 1)}" if is_number(res.tokens_per_s) else "未记录",
                f"{fmt_float(res.s_per_step, 2)}" if is_number(res.s_per_step) else "未记录",
                fmt_bytes(res.peak_rss_bytes) if is_number(res.peak_rss_bytes) else "未记录",
                fmt_bytes(gpu) if measured(gpu) else "无GPU" if r.files.has_gpu is False else "未记录",
                fmt_float(eval_s, 1) if eval_s is not None else "未记录",
            ]
        )
    return rows, notes


def serving_rows(runs: list[Run]) -> tuple[list[list[str]], list[str]]:
    """Serving figures at the lowest concurrency for runs that were benchmarked; a 未测量 note for
    the others."""
    rows, notes = [], []
    for r in runs:
        bm = r.files.benchmark
        if not bm.ok:
            notes.append(f"{r.label}：{shown(NotMeasured(bm.why_missing))}")
            continue
        res = bm.result
        levels = [row for row in res.summary if is_number(row.concurrency)]
        lowest = min(levels, key=lambda row: row.concurrency) if levels else None
        gguf = r.files.export.result.gguf if r.files.export.ok else None
        size = gguf.size_bytes if gguf is not None else None
        rows.append(
            [
                r.label,
                str(known(res.engine, "未记录")),
                fmt_bytes(size) if is_number(size) else "未记录",
                fmt_general(known(lowest.concurrency, "—")) if lowest else "—",
                fmt_float(lowest.decode_tokens_per_s, 1)
                if lowest and is_number(lowest.decode_tokens_per_s)
                else "未记录",
                fmt_float(lowest.ttft_ms.p50, 1) if lowest and is_number(lowest.ttft_ms.p50) else "未记录",
                fmt_bytes(res.memory.server_peak_rss_bytes)
                if is_number(res.memory.server_peak_rss_bytes)
                else "未记录",
            ]
        )
    return rows, notes


def _pair_sentence(best: Run, pair: PairedDifference) -> str:
    head = f"{best.label} 比 {pair.other} 高 {fmt_float(pair.difference)} 分"
    if pair.different_items:
        return f"{head}（各自测试集的均值之差）；两者{pair.different_items}，不判断显著性。"
    if pair.low is None or pair.high is None:
        return f"{head}；共同测试项仅 {pair.items} 条，无法估计区间，不判断显著性。"
    interval = f"[{fmt_signed(pair.low)}, {fmt_signed(pair.high)}]"
    method = f"{pair.items} 条共同测试项的配对自助法 95% 区间 {interval}"
    if pair.significant:
        return f"{head}，{method}，区间不含 0：{best.label} 显著更好。"
    return f"{head}，{method}，区间含 0：差异不显著，不能认为 {best.label} 更好。"


def verdict(runs: list[Run], pairs: list[PairedDifference]) -> list[str]:
    """The stated verdict: best on the primary metric, each difference against its interval, and
    the best run by validation loss."""
    best = comparison.best_by_primary(runs)
    if best is None:
        return [
            shown(NotMeasured("没有任何运行的 evaluate.json 记录了微调后的 ROUGE-L，无法判断哪次运行更好"))
        ]
    tied = [r.label for r in runs if r is not best and r.primary == best.primary]
    tie = f"，与 {'、'.join(tied)} 并列" if tied else ""
    lines = [f"主要指标（测试集 ROUGE-L，微调后）最高：{best.label}（{fmt_float(best.primary)}{tie}）。"]
    lines += [_pair_sentence(best, p) for p in pairs]
    lines += [
        f"{r.label}：ROUGE-L {shown(NotMeasured('evaluate.json 未记录微调后的 ROUGE-L'))}"
        for r in runs
        if r.primary is None
    ]
    by_loss = comparison.best_by_val_loss(runs)
    if by_loss is not None and by_loss.val_loss is not None:
        loss, where = by_loss.val_loss
        lines.append(f"验证 Loss 最低：{by_loss.label}（{fmt_loss(loss)}，{where}）。")
    else:
        lines.append(f"验证 Loss：{shown(NotMeasured('没有任何运行的 train.json 记录验证 Loss'))}")
    return lines


def warnings(runs: list[Run]) -> list[str]:
    """Runs whose evaluations are not on the same items (or prompts), and unreadable files."""
    out = []
    for r in runs[1:]:
        why = comparison.different_items(runs[0], r)
        if why:
            out.append(
                f"{runs[0].label} 与 {r.label} 的评估不在相同的测试项上（{why}），其指标不能逐项比较。"
            )
    for r in runs:
        out += [f"{r.label}：运行目录中的问题：{w}" for w in r.files.warnings]
    return out
