"""Data preparation stage: `python run.py prepare` (also `python -m trainer.prepare_data`).

Reads the files in `data.files` (JSON array, JSONL or CSV; Alpaca, ShareGPT or `messages` records,
parsed and checked by trainer/data_formats.py), validates, cleans (trim, whitespace, Unicode NFC, drop empty answers), removes exact duplicates,
drops or truncates records longer than `data.max_length` tokens in the chat format, and splits
train/val/test by a seeded, identity-stratified shuffle. Writes in the run folder:
`data/train.jsonl`, `data/val.jsonl`, `data/test.jsonl`, `data/rejected.jsonl` (every dropped
record with its reason), `prompt_format.json`, and returns the counts that go into `prepare.json`.

A broken file (bad encoding, BOM, invalid JSON, wrong CSV header) stops the stage with one message
naming the file, line and fix. A bad record among good ones is counted in rejected.jsonl instead,
unless `data.strict=true`.

`run` reads top to bottom: `_setup` (tokenizer, chat format), `_clean` (validate, clean, dedupe,
length limit), `_split` (val/test sizes capped at `data.max_eval_share` of the kept records, then
test/val questions copied in train found and moved or flagged by trainer/leakage.py), `_save` (the
split files; `data/rejected.jsonl` is written before the split so that a failed split still says
why records were dropped), `_summarize`.
"""

from __future__ import annotations

import hashlib
import os
import random
import statistics
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainer import leakage, metrics, prompt_format
from trainer.config import PipelineConfig
from trainer.data_formats import (
    Loaded,
    RawRecord,
    Rejection,
    Sample,
    as_row,
    clean_sample,
    load_files,
    validate,
)
from trainer.errors import UserError
from trainer.models import load_tokenizer, resolve_base_model
from trainer.results import (
    Augmentation,
    DropWarning,
    EvalSplitCap,
    InputFile,
    Leakage,
    LengthChars,
    LengthStats,
    LengthTokens,
    NotMeasured,
    PrepareResult,
    Reason,
    Splits,
    note,
)
from trainer.runfolder import ROOT, RunDir, write_jsonl

MIN_TRAIN = 1
# Val and test keep at least this many records when data.max_eval_share caps them.
MIN_EVAL_ITEMS = 3
# Fewer training records than this and prepare warns: a LoRA run learns little from so few.
MIN_USEFUL_TRAIN = 100


@dataclass
class _Cleaned:
    """The records `_clean` kept (prepared rows) and dropped, with the counts of its changes."""

    kept: list[dict[str, Any]] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    normalized: int = 0
    truncated: int = 0


@dataclass
class _Split:
    """What `_split` made: the rows per split and what it did to get them."""

    rows: dict[str, list[dict[str, Any]]]
    augmented: list[dict[str, Any]]
    cap: EvalSplitCap
    leakage: Leakage
    leaked_pairs: list[dict[str, Any]]


def run(cfg: PipelineConfig, run_dir: RunDir) -> PrepareResult:
    """Prepare the splits; returns the counts that go into `prepare.json`."""
    dc = cfg.data
    loaded = load_files(dc.files)
    tokenizer, fmt = _setup(cfg)
    cleaned = _clean(loaded, tokenizer, fmt, dc)
    # Written before the split can fail for lack of records: it says why they were dropped.
    write_jsonl(run_dir / "data" / "rejected.jsonl", [r.as_row() for r in cleaned.rejections])
    split = _split(cleaned, len(loaded.records), dc)
    _save(run_dir, split, fmt)
    return _summarize(cfg, loaded, cleaned, split, fmt)


def _setup(cfg: PipelineConfig) -> tuple[Any, prompt_format.PromptFormat]:
    """The base model's tokenizer and the chat format (detected from its template when `auto`)."""
    tokenizer = load_tokenizer(resolve_base_model(cfg), cfg.model.trust_remote_code)
    fmt_name = cfg.model.prompt_format
    if fmt_name == "auto":
        fmt_name = prompt_format.detect(getattr(tokenizer, "chat_template", None))
    return tokenizer, prompt_format.build(fmt_name, cfg.system_prompt())


def _clean(loaded: Loaded, tokenizer: Any, fmt: prompt_format.PromptFormat, dc: Any) -> _Cleaned:
    """Validate, fill, clean and dedupe every record; apply the length limit."""
    out = _Cleaned()
    seen: set[tuple[str, ...]] = set()
    for rec in loaded.records:
        _stop_if_strict(dc.strict, out.rejections)
        sample, problem = validate(rec)
        if sample is not None:
            changed, problem = clean_sample(rec, sample, dc)
            out.normalized += changed
        if problem:
            out.rejections.append(problem)
            continue
        assert sample is not None
        key = tuple(sample.texts.values())
        if key in seen:
            out.rejections.append(
                Rejection(rec.source, rec.line, "duplicate", "same as an earlier record", rec.data)
            )
            continue
        seen.add(key)
        row, problem, was_truncated = _fit_length(rec, sample, tokenizer, fmt, dc)
        if problem:
            out.rejections.append(problem)
            continue
        out.truncated += was_truncated
        out.kept.append(row)
    _stop_if_strict(dc.strict, out.rejections)
    return out


def _fit_length(
    rec: RawRecord, sample: Sample, tokenizer: Any, fmt: prompt_format.PromptFormat, dc: Any
) -> tuple[dict[str, Any], Rejection | None, bool]:
    """(the prepared row with prompt/completion and token count, why rejected, answer truncated?).

    A record over `data.max_length` tokens is dropped, or with `data.overlong=truncate` keeps the
    longest answer prefix that fits.
    """
    row = as_row(sample)
    pieces = fmt.record_segments(row)
    prompt = "".join(text for text, _ in pieces[:-1])
    completion = pieces[-1][0]
    prompt_ids = tokenizer(prompt)["input_ids"]
    n_tokens = len(prompt_ids) + len(tokenizer(completion, add_special_tokens=False)["input_ids"])
    truncated = False
    if n_tokens > dc.max_length:
        room = dc.max_length - len(prompt_ids) - 8
        short = None
        if dc.overlong == "truncate" and room > 0:
            short = _truncate_answer(tokenizer, row["output"], room)
        if not short:
            detail = f"{n_tokens} tokens > data.max_length={dc.max_length}"
            return row, Rejection(rec.source, rec.line, "too_long", detail, rec.data), False
        row["output"] = short
        completion = fmt.completion(short)
        n_tokens = len(prompt_ids) + len(tokenizer(completion, add_special_tokens=False)["input_ids"])
        truncated = True
    key = tuple(sample.texts.values())
    digest = hashlib.sha1("\x1f".join(key).encode()).hexdigest()[:10]
    answers = [row["output"], *(a for _, a in row.get("history", []))]
    name = dc.assistant_name
    kept = {
        "id": f"{Path(rec.source).stem}-{rec.line}-{digest}",
        **row,
        "prompt": prompt,
        "completion": completion,
        "identity": any(name.lower() in a.lower() for a in answers),
        "turns": len(sample.turns),
        "format": sample.kind,
        "n_tokens": n_tokens,
        "source": rec.source,
    }
    return kept, None, truncated


def _split(cleaned: _Cleaned, records_in: int, dc: Any) -> _Split:
    """Test/val/train rows by a seeded identity-stratified order, leaked questions moved or flagged,
    then the augmentations."""
    kept, rejections = cleaned.kept, cleaned.rejections
    cap = _eval_split_cap(len(kept), dc)
    n_val, n_test = _split_sizes(len(kept), dc.val_size, dc.test_size, dc.max_eval_share)
    if len(kept) < n_val + n_test + MIN_TRAIN:
        detail = _describe_rejections(rejections) if rejections else ""
        raise UserError(
            f"only {len(kept)} usable record(s) left after cleaning ({len(rejections)} rejected, "
            f"{records_in} read from {', '.join(dc.files)}); the splits need "
            f"{n_val} val + {n_test} test + at least {MIN_TRAIN} train." + (f"\n{detail}" if detail else ""),
            fix="add more distinct records with non-empty instruction and output, "
            "or lower data.val_size/data.test_size",
        )
    ordered = _stratified_order(kept, dc.seed)
    test = _test_split(ordered, n_test, dc.identity_test_size, dc.seed)
    held = {id(r) for r in test}
    rest = [r for r in ordered if id(r) not in held]
    if dc.identity_test_size > 0:  # the test split took identity rows from the front: interleave again
        rest = _stratified_order(rest, dc.seed)
    splits = {"test": test, "val": rest[:n_val], "train": rest[n_val:]}
    sizes = {name: len(rows) for name, rows in splits.items()}
    leaks, pairs = leakage.check(splits, dc.leakage)
    emptied = [name for name in ("test", "val") if sizes[name] and not splits[name]]
    if emptied:
        raise UserError(
            f"every {' and '.join(emptied)} question has an exact or near copy in the train split "
            f"({len(pairs)} found) and no train record without a copy was left to take their place: "
            "the data is mostly near-duplicates (e.g. questions from one template), such as:\n"
            + "\n".join(f"  {p['question']!r} ~ train {p['train_question']!r}" for p in pairs[:2]),
            fix="remove the near-duplicate questions from data.files, or set data.leakage=flag to keep them "
            "marked (evaluate then leaves them out of the metrics)",
        )
    augmented = []
    if dc.identity_oversample > 1:
        extra = [r for r in splits["train"] if r["identity"]] * (dc.identity_oversample - 1)
        splits["train"] = splits["train"] + extra
        random.Random(dc.seed).shuffle(splits["train"])
        augmented.append(
            {
                "method": "identity_oversample",
                "factor": dc.identity_oversample,
                "records_added": len(extra),
            }
        )
    return _Split(splits, augmented, cap, leaks, pairs)


def _save(run_dir: RunDir, split: _Split, fmt: prompt_format.PromptFormat) -> None:
    """Save step: `data/<split>.jsonl`, `data/leakage.jsonl` and `prompt_format.json` (each atomic)."""
    for name, rows in split.rows.items():
        write_jsonl(run_dir / "data" / f"{name}.jsonl", [dict(r) for r in rows])
    write_jsonl(run_dir / "data" / "leakage.jsonl", split.leaked_pairs)
    prompt_format.save(fmt, run_dir / prompt_format.FILE_NAME)


def _summarize(
    cfg: PipelineConfig,
    loaded: Loaded,
    cleaned: _Cleaned,
    split: _Split,
    fmt: prompt_format.PromptFormat,
) -> PrepareResult:
    """The results for `prepare.json`: counts, drops with the main cause, lengths, files."""
    dc = cfg.data
    kept, rejections = cleaned.kept, cleaned.rejections
    splits, augmented = split.rows, split.augmented
    dropped: dict[str, int] = {}
    for r in rejections:
        dropped[r.reason] = dropped.get(r.reason, 0) + 1
    counts = {k: len(v) for k, v in splits.items()}
    notes: list[str] = []
    note_codes: list[Reason] = []
    for reason, n in sorted(dropped.items()):
        note(notes, note_codes, "dropped", f"{n} record(s) dropped as {reason}", count=n, reason=reason)
    if cleaned.truncated:
        note(
            notes,
            note_codes,
            "truncated",
            f"{cleaned.truncated} answer(s) truncated to data.max_length={dc.max_length} tokens",
            count=cleaned.truncated,
            max_length=dc.max_length,
        )
    drop_warning = _drop_warning(dropped, len(loaded.records), dc.max_length)
    warnings = _warnings(drop_warning, split, counts["train"])
    return PrepareResult(
        dataset_name=" + ".join(Path(f).stem for f in dc.files),
        inputs=[InputFile(path=i["path"], format=i["format"], records=i["records"]) for i in loaded.inputs],
        records_in=len(loaded.records),
        records_kept=len(kept),
        splits=Splits(**counts),
        dropped=dropped,
        truncated=cleaned.truncated,
        augmented=[Augmentation(**a) for a in augmented],
        normalized=cleaned.normalized,
        drop_warning=drop_warning or NotMeasured(),  # null: at most DROP_WARNING_SHARE dropped
        record_formats=dict(sorted(Counter(r.get("format", "alpaca") for r in kept).items())),
        multi_turn_records=sum(r["turns"] > 1 for r in kept),
        identity_records=Splits(**{k: sum(r["identity"] for r in v) for k, v in splits.items()}),
        length_chars=LengthChars(
            prompt=_stats([len(fmt.user_text(r["instruction"], r["input"])) for r in kept]),
            output=_stats([len(r["output"]) for r in kept]),
        ),
        length_tokens=LengthTokens(total=_stats([r["n_tokens"] for r in kept])),
        max_length=dc.max_length,
        overlong=dc.overlong,
        prompt_format=fmt.name,
        files={
            "train": "data/train.jsonl",
            "val": "data/val.jsonl",
            "test": "data/test.jsonl",
            "rejected": "data/rejected.jsonl",
            "leakage": "data/leakage.jsonl",
        },
        eval_split_cap=split.cap,
        min_useful_train=MIN_USEFUL_TRAIN,
        leakage=split.leakage,
        headline=f"train {counts['train']} / val {counts['val']} / test {counts['test']}; "
        f"{len(rejections)} rejected; {len(split.leaked_pairs)} test/val question(s) copied in train",
        notes=notes,
        note_codes=note_codes,
        warnings=warnings,
    )


def _warnings(drop_warning: DropWarning | None, split: _Split, n_train: int) -> list[str]:
    """The English warnings of prepare.json, each also printed to stderr with its fix."""
    warnings = [drop_warning.message] if drop_warning else []
    cap = split.cap
    if cap.capped:
        warnings.append(
            f"val/test capped at {cap.max_share:.0%} of the kept records each (asked for "
            f"{cap.val_requested} val and {cap.test_requested} test): got {len(split.rows['val'])} val "
            f"and {len(split.rows['test'])} test, so most records stay for training. To change it: "
            "data.max_eval_share."
        )
    if n_train < MIN_USEFUL_TRAIN:
        warnings.append(
            f"only {n_train} training records: fewer than {MIN_USEFUL_TRAIN}, too few for the tuned "
            "model to learn much and for its test metrics to mean much. To fix: add more distinct "
            "question/answer records (a few hundred or more) to data.files."
        )
    found = len(split.leaked_pairs)
    if found:
        refilled = split.leakage.refilled
        action = (
            f"moved to train, and {refilled.test} test / {refilled.val} val record(s) without a copy in "
            "train taken in their place"
            if split.leakage.mode == "remove"
            else "flagged and left out of the metrics"
        )
        warnings.append(
            f"{found} test/val question(s) also occur in train (exactly or nearly): {action}; "
            "pairs in data/leakage.jsonl. To fix: remove the copies from the data."
        )
    for message in warnings:
        print(f"warning: {message}", file=sys.stderr, flush=True)
    return warnings


def _stats(values: list[int]) -> LengthStats:
    if not values:
        return LengthStats(min=0, mean=0.0, p50=0, p95=0, max=0)
    ordered = sorted(values)
    return LengthStats(
        min=ordered[0],
        mean=round(statistics.fmean(ordered), 1),
        p50=round(metrics.percentile(ordered, 50), 1),
        p95=round(metrics.percentile(ordered, 95), 1),
        max=ordered[-1],
    )


def _test_split(
    ordered: list[dict[str, Any]], n_test: int, identity_size: float, seed: int
) -> list[dict[str, Any]]:
    """The test rows: a prefix of the stratified order, or `identity_size` identity rows plus others.

    At least one identity record stays out of the test split (when there are two or more), so
    training still sees the assistant's name.
    """
    if identity_size <= 0:
        return ordered[:n_test]
    identity = [r for r in ordered if r["identity"]]
    other = [r for r in ordered if not r["identity"]]
    wanted = int(identity_size) if identity_size >= 1 else round(identity_size * len(identity))
    k = min(wanted, n_test, max(len(identity) - 1, 0))
    return _stratified_order(identity[:k] + other[: n_test - k], seed)


def _requested_size(n: int, size: float) -> int:
    """Records a val_size/test_size asks for: a count (>= 1) or a ratio of the n kept records."""
    if size == 0:
        return 0
    return int(size) if size >= 1 else max(1, round(size * n))


def _split_sizes(n: int, val_size: float, test_size: float, max_share: float) -> tuple[int, int]:
    """(val, test) records: as requested, but each at most max(MIN_EVAL_ITEMS, max_share x n)."""
    cap = max(MIN_EVAL_ITEMS, int(max_share * n))
    return min(_requested_size(n, val_size), cap), min(_requested_size(n, test_size), cap)


def _eval_split_cap(n: int, dc: Any) -> EvalSplitCap:
    val_requested, test_requested = _requested_size(n, dc.val_size), _requested_size(n, dc.test_size)
    n_val, n_test = _split_sizes(n, dc.val_size, dc.test_size, dc.max_eval_share)
    return EvalSplitCap(
        max_share=dc.max_eval_share,
        min_items=MIN_EVAL_ITEMS,
        val_requested=val_requested,
        test_requested=test_requested,
        capped=(n_val, n_test) != (val_requested, test_requested),
    )


def _stratified_order(rows: list[dict[str, Any]], seed: int) -> list[dict[str, Any]]:
    """Shuffle each stratum (identity or not) and interleave them evenly, so any prefix has both."""
    rng = random.Random(seed)
    strata: dict[bool, list[dict[str, Any]]] = {}
    for row in rows:
        strata.setdefault(row["identity"], []).append(row)
    keyed = []
    for key in sorted(strata):
        group = strata[key]
        rng.shuffle(group)
        keyed.extend(((i + 0.5) / len(group), key, row) for i, row in enumerate(group))
    keyed.sort(key=lambda t: (t[0], t[1]))
    return [row for _, _, row in keyed]


def _describe_rejections(rejections: list[Rejection], limit: int = 5) -> str:
    lines = [f"  {r.source}: record at line {r.line}: {r.reason}: {r.detail}" for r in rejections[:limit]]
    if len(rejections) > limit:
        lines.append(f"  ... and {len(rejections) - limit} more (see data/rejected.jsonl)")
    return "\n".join(lines)


def _stop_if_strict(strict: bool, rejections: list[Rejection]) -> None:
    if strict and rejections:
        r = rejections[0]
        raise UserError(
            f"{r.source}: record at line {r.line}: {r.detail} ({r.reason}).",
            fix="fix or remove the record, or set data.strict=false to skip bad records",
        )


def _truncate_answer(tokenizer: Any, answer: str, room: int) -> str | None:
    """The longest character prefix of `answer` that encodes to at most `room` tokens.

    Searching over characters (not cutting token ids and decoding) never splits a multi-byte
    character into byte-fallback pieces, which would decode to U+FFFD.
    """

    def fits(k: int) -> bool:
        return len(tokenizer(answer[:k].rstrip(), add_special_tokens=False)["input_ids"]) <= room

    lo, hi = 0, len(answer)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid - 1
    return answer[:lo].rstrip() or None


# More than this share of the input dropped is a warning: the user trains on less than they think.
DROP_WARNING_SHARE = 0.2
_DROP_FIXES = {
    "too_long": "raise data.max_length (e.g. data.max_length=1024) or keep them shortened with "
    "data.overlong=truncate",
    "duplicate": "check that no file is listed twice in data.files and that the data has no copies",
    "placeholder": "fill or remove the {{...}} placeholders named in data/rejected.jsonl",
    "invalid_record": "fix the records listed in data/rejected.jsonl (missing or non-text fields)",
    "empty_output": "fill the empty answers listed in data/rejected.jsonl",
    "empty_instruction": "fill the empty questions listed in data/rejected.jsonl",
}


def _drop_warning(dropped: dict[str, int], records_in: int, max_length: int) -> DropWarning | None:
    """When more than DROP_WARNING_SHARE of the records were dropped: the share, the main cause
    and its fix (None otherwise)."""
    total = sum(dropped.values())
    if not records_in or total / records_in <= DROP_WARNING_SHARE:
        return None
    cause = max(dropped, key=lambda k: dropped[k])
    share_pct = round(100 * total / records_in, 1)
    fix = _DROP_FIXES.get(cause, "see data/rejected.jsonl")
    detail = f" longer than data.max_length={max_length} tokens" if cause == "too_long" else f" {cause}"
    return DropWarning(
        dropped=total,
        records_in=records_in,
        share_pct=share_pct,
        main_cause=cause,
        main_cause_count=dropped[cause],
        fix=fix,
        message=f"{total} of {records_in} records ({share_pct}%) were dropped, {dropped[cause]} of them as"
        f"{detail}: training uses only {records_in - total}. To keep them: {fix}.",
    )


if __name__ == "__main__":
    # The command line is run.py's: hand over to it as a program (a stage module never imports it).
    run_py = str(ROOT / "run.py")
    os.execv(sys.executable, [sys.executable, run_py, "prepare", *sys.argv[1:]])
