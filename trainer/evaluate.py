"""Evaluation stage: `python run.py evaluate` — the base and the fine-tuned model on the test split.

Reads `data/test.jsonl`, `data/train.jsonl` (domain terms), `prompt_format.json` and `adapter/`.
Both models are the same loaded weights: answers "before" come from the base with the adapter
disabled, "after" with it enabled, so memory is not doubled and decoding is identical (greedy by
default, same `max_new_tokens`, same seed). Writes `evaluation_results.csv` (one row per test
record, UTF-8 with BOM for spreadsheet programs) and returns the summary for `evaluate.json`:
metrics by key, example comparisons, measured proxies for the qualitative lines, and the optional
blind judge's grades (trainer/judge.py; off unless `evaluate.judge_model` is set).

`run` reads top to bottom: `_setup` (test records, prompt format), `_load_model`, `_answer_both`
(generation and answer loss, adapter off then on), `_score` (per-record metrics), `_write_csv` (the
save step), the judge, `_summarize` (the `evaluate.json` results).
"""

from __future__ import annotations

import csv
import io
import math
import random
import time
from pathlib import Path
from typing import Any

from trainer import judge, metrics, prompt_format
from trainer.config import PipelineConfig
from trainer.errors import UserError
from trainer.models import load_tokenizer
from trainer.results import (
    EvalExample,
    EvalMetric,
    EvalSettings,
    EvaluateResult,
    IdentityCheck,
    NotMeasured,
    Qualitative,
    QualitativeMeasure,
    measured,
    or_not_measured,
)
from trainer.runfolder import RunDir, read_jsonl, write_text

CSV_NAME = "evaluation_results.csv"


def run(cfg: PipelineConfig, run_dir: RunDir) -> EvaluateResult:
    """Evaluate before/after on the test split; returns the results that go into `evaluate.json`."""
    rows, fmt = _setup(cfg, run_dir)
    model, tokenizer = _load_model(run_dir, cfg)
    answers = _answer_both(model, tokenizer, rows, cfg, fmt)
    per = _score(run_dir, rows, answers, fmt)
    if all(not p["answer_before"] and not p["answer_after"] for p in per):
        raise UserError(
            "both models produced empty answers for every test record.",
            fix="check the prompt format (prompt_format.json) and evaluate.max_new_tokens",
        )
    _write_csv(run_dir / CSV_NAME, per)  # the save step: one row per test record
    judged = judge.grade(cfg, per)  # optional, off unless evaluate.judge_model names an Ollama model
    return _summarize(cfg, rows, per, answers, judged)


def _setup(cfg: PipelineConfig, run_dir: RunDir) -> tuple[list[dict[str, Any]], prompt_format.PromptFormat]:
    """The test records (at most `evaluate.max_samples`) and the prompt format of the run."""
    test_path = run_dir / "data" / "test.jsonl"
    if not test_path.exists():
        raise UserError(f"{test_path} is missing.", fix="run `python run.py prepare` first")
    rows = read_jsonl(test_path)
    if cfg.evaluate.max_samples > 0:
        rows = rows[: cfg.evaluate.max_samples]
    if not rows:
        raise UserError(
            f"{test_path} is empty: nothing to evaluate.", fix="raise data.test_size and rerun prepare"
        )
    return rows, prompt_format.load(run_dir)


def _answer_both(
    model: Any,
    tokenizer: Any,
    rows: list[dict[str, Any]],
    cfg: PipelineConfig,
    fmt: prompt_format.PromptFormat,
) -> dict[str, Any]:
    """Answers and reference-answer loss with the adapter disabled ("before") and enabled ("after")."""
    bs = cfg.evaluate.batch_size
    t0 = time.perf_counter()
    with model.disable_adapter():
        before = _answers(model, tokenizer, rows, cfg, fmt, "before")
        loss_before = _answer_loss(model, tokenizer, rows, bs)
    after = _answers(model, tokenizer, rows, cfg, fmt, "after")
    loss_after = _answer_loss(model, tokenizer, rows, bs)
    return {
        "before": before,
        "after": after,
        "loss_before": loss_before,
        "loss_after": loss_after,
        "generation_s": time.perf_counter() - t0,
    }


def _score(
    run_dir: RunDir, rows: list[dict[str, Any]], answers: dict[str, Any], fmt: prompt_format.PromptFormat
) -> list[dict[str, Any]]:
    """One CSV row per test record: both answers and their per-record metrics."""
    train_path = run_dir / "data" / "train.jsonl"
    train_rows = read_jsonl(train_path) if train_path.exists() else []
    terms = metrics.domain_terms_from([r["output"] for r in train_rows])
    per: list[dict[str, Any]] = []
    for r, b, a in zip(rows, answers["before"], answers["after"], strict=False):
        question = fmt.user_text(r["instruction"], r.get("input", ""))
        rb, ra = metrics.rouge(b["text"], r["output"]), metrics.rouge(a["text"], r["output"])
        per.append(
            {
                "id": r["id"],
                "instruction": r["instruction"],
                "input": r.get("input", ""),
                "reference": r["output"],
                "answer_before": b["text"],
                "answer_after": a["text"],
                "chars_reference": metrics.answer_chars(r["output"]),
                "chars_before": metrics.answer_chars(b["text"]),
                "chars_after": metrics.answer_chars(a["text"]),
                "bleu4_before": round(metrics.bleu4(b["text"], r["output"]), 2),
                "bleu4_after": round(metrics.bleu4(a["text"], r["output"]), 2),
                **{f"{k}_before": round(v, 2) for k, v in rb.items()},
                **{f"{k}_after": round(v, 2) for k, v in ra.items()},
                "hit_max_before": b["hit_max"],
                "hit_max_after": a["hit_max"],
                "identity_question": bool(r.get("identity")),
                "relevance_before": metrics.keyword_overlap(question, b["text"]),
                "relevance_after": metrics.keyword_overlap(question, a["text"]),
                "terms_before": metrics.term_coverage(b["text"], terms),
                "terms_after": metrics.term_coverage(a["text"], terms),
                "error": "; ".join(e for e in (b["error"], a["error"]) if e),
            }
        )
    return per


def _load_model(run_dir: RunDir, cfg: PipelineConfig) -> tuple[Any, Any]:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    adapter = run_dir / "adapter"
    if not (adapter / "adapter_config.json").exists():
        raise UserError(f"{adapter} has no trained adapter.", fix="run `python run.py train` first")
    base_ref = (adapter / "base_model.txt").read_text().strip()
    dtype = torch.float32 if not torch.cuda.is_available() else torch.bfloat16
    base = AutoModelForCausalLM.from_pretrained(
        base_ref, dtype=dtype, trust_remote_code=cfg.model.trust_remote_code
    )
    try:
        model = PeftModel.from_pretrained(base, str(adapter))
    except (ValueError, OSError, RuntimeError) as exc:
        raise UserError(f"{adapter}: the adapter does not fit the base model {base_ref}: {exc}") from None
    model.eval()
    if torch.cuda.is_available():
        model.to("cuda")
    tokenizer = load_tokenizer(str(adapter), cfg.model.trust_remote_code)
    tokenizer.padding_side = "left"
    return model, tokenizer


def _generate(model: Any, tokenizer: Any, prompts: list[str], cfg: PipelineConfig) -> list[tuple[str, bool]]:
    """(answer text, hit max_new_tokens without an end token) for each prompt."""
    import torch

    ec = cfg.evaluate
    enc = tokenizer(prompts, return_tensors="pt", padding=True).to(model.device)
    torch.manual_seed(ec.seed)
    with torch.no_grad():
        out = model.generate(
            **enc,
            max_new_tokens=ec.max_new_tokens,
            do_sample=ec.do_sample,
            temperature=ec.temperature if ec.do_sample else None,
            top_p=ec.top_p if ec.do_sample else None,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
    results = []
    for row in out[:, enc["input_ids"].shape[1] :]:
        ids = row.tolist()
        ended = tokenizer.eos_token_id in ids
        if ended:
            ids = ids[: ids.index(tokenizer.eos_token_id)]
        text = tokenizer.decode(ids, skip_special_tokens=True)
        results.append((text, not ended and len(ids) >= ec.max_new_tokens))
    return results


def _answers(model: Any, tokenizer: Any, rows: list[dict[str, Any]], cfg: PipelineConfig, fmt, label: str):
    """Batched generation; a failing batch is retried one by one so one bad sample loses nothing else."""
    from tqdm.auto import tqdm

    answers: list[dict[str, Any]] = []
    bs = max(1, cfg.evaluate.batch_size)
    for start in tqdm(range(0, len(rows), bs), desc=f"generate ({label})", unit="batch"):
        batch = rows[start : start + bs]
        prompts = [r["prompt"] for r in batch]
        try:
            outs = [(t, h, None) for t, h in _generate(model, tokenizer, prompts, cfg)]
        except Exception:
            outs = []
            for p in prompts:
                try:
                    (t, h), err = _generate(model, tokenizer, [p], cfg)[0], None
                except Exception as exc:
                    t, h, err = "", False, f"{type(exc).__name__}: {exc}"
                outs.append((t, h, err))
        for text, hit_max, err in outs:
            answers.append({"text": fmt.clean_answer(text), "hit_max": hit_max, "error": err})
    return answers


def _answer_loss(model: Any, tokenizer: Any, rows: list[dict[str, Any]], batch_size: int) -> float | None:
    """Mean cross-entropy (nats/token) of the reference answers given their prompts, teacher-forced."""
    import torch

    total, count = 0.0, 0
    tokenizer_side = tokenizer.padding_side
    tokenizer.padding_side = "right"
    try:
        for start in range(0, len(rows), batch_size):
            batch = rows[start : start + batch_size]
            seqs, labels = [], []
            for r in batch:
                p = tokenizer(r["prompt"])["input_ids"]
                c = tokenizer(r["completion"], add_special_tokens=False)["input_ids"]
                seqs.append(p + c)
                labels.append([-100] * len(p) + c)
            width = max(len(s) for s in seqs)
            pad = tokenizer.pad_token_id
            ids = torch.tensor([s + [pad] * (width - len(s)) for s in seqs], device=model.device)
            att = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs], device=model.device)
            lab = torch.tensor([lbl + [-100] * (width - len(lbl)) for lbl in labels], device=model.device)
            with torch.no_grad():
                logits = model(input_ids=ids, attention_mask=att).logits.float()
            shift_logits, shift_labels = logits[:, :-1], lab[:, 1:]
            loss = torch.nn.functional.cross_entropy(
                shift_logits.reshape(-1, shift_logits.size(-1)),
                shift_labels.reshape(-1),
                ignore_index=-100,
                reduction="sum",
            )
            total += loss.item()
            count += int((shift_labels != -100).sum())
    finally:
        tokenizer.padding_side = tokenizer_side
    return total / count if count else None


def _round(v: float | None, nd: int = 2) -> float | NotMeasured:
    """`v` rounded, or not measured (null) when there is no value or it is not finite."""
    return NotMeasured() if v is None or (isinstance(v, float) and not math.isfinite(v)) else round(v, nd)


Triple = tuple[float | None, float | None, float | None]  # (before, after, reference)


def _metric_values(per: list[dict[str, Any]], answers: dict[str, Any], name: str) -> dict[str, Triple]:
    """Every metric of metrics.METRIC_KEYS as (before, after, reference) over the test split."""

    def avg(key: str) -> float | None:
        return metrics.mean(p[key] for p in per)

    identity_rows = [p for p in per if p["identity_question"]]
    loss_before, loss_after = answers["loss_before"], answers["loss_after"]
    return {
        "avg_answer_chars": (avg("chars_before"), avg("chars_after"), avg("chars_reference")),
        "bleu4": (avg("bleu4_before"), avg("bleu4_after"), None),
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
            metrics.percent_true(metrics.contains_name(p["answer_before"], name) for p in identity_rows),
            metrics.percent_true(metrics.contains_name(p["answer_after"], name) for p in identity_rows),
            None,
        ),
    }


def _metric_table(values: dict[str, Triple]) -> list[EvalMetric]:
    """The metrics table of `evaluate.json`: values and improvement of each metric (the report names
    and defines each key itself, reporting/labels.py)."""
    table = []
    for key in metrics.METRIC_KEYS:
        b, a, ref = values[key]
        table.append(
            EvalMetric(
                key=key,
                before=_round(b, 4 if key == "loss" else 2),
                after=_round(a, 4 if key == "loss" else 2),
                reference=_round(ref),
                improvement=_round(
                    metrics.improvement(b, a, metrics.HIGHER_IS_BETTER[key], metrics.IMPROVEMENT_KIND[key])
                ),
                improvement_kind=metrics.IMPROVEMENT_KIND[key],
                # null for answer length: neither direction is better
                higher_is_better=or_not_measured(metrics.HIGHER_IS_BETTER[key]),
            )
        )
    return table


def _qualitative(per: list[dict[str, Any]], values: dict[str, Triple]) -> Qualitative:
    """Measured proxies for the report's qualitative lines (accuracy, relevance, fluency, terms);
    what stands in for each dimension is worded by the report (reporting/labels.py)."""

    def avg(key: str) -> float | None:
        return metrics.mean(p[key] for p in per)

    return Qualitative(
        accuracy=QualitativeMeasure(
            before=_round(values["rougeL"][0]),
            after=_round(values["rougeL"][1]),
            unit="",  # ROUGE-L F1 x100: points
            higher_is_better=True,
        ),
        relevance=QualitativeMeasure(
            before=_round(avg("relevance_before")),
            after=_round(avg("relevance_after")),
            unit="%",
            higher_is_better=True,
        ),
        fluency=QualitativeMeasure(
            before=_round(values["perplexity"][0]),
            after=_round(values["perplexity"][1]),
            unit="",  # perplexity
            higher_is_better=False,
            distinct2_before=_round(values["distinct2"][0]),
            distinct2_after=_round(values["distinct2"][1]),
        ),
        professionalism=QualitativeMeasure(
            before=_round(avg("terms_before")),
            after=_round(avg("terms_after")),
            unit="%",
            higher_is_better=True,
        ),
    )


def _summarize(
    cfg: PipelineConfig,
    rows: list[dict[str, Any]],
    per: list[dict[str, Any]],
    answers: dict[str, Any],
    judged: dict[str, Any],
) -> EvaluateResult:
    """The results for `evaluate.json`."""
    ec = cfg.evaluate
    name = cfg.data.assistant_name
    values = _metric_values(per, answers, name)
    table = _metric_table(values)
    identity_rows = [p for p in per if p["identity_question"]]
    rl = next(m for m in table if m.key == "rougeL")
    idp = next(m for m in table if m.key == "identity_pct")
    failures = sum(1 for p in per if p["error"])
    return EvaluateResult(
        settings=EvalSettings(
            max_new_tokens=ec.max_new_tokens,
            do_sample=ec.do_sample,
            temperature=ec.temperature if ec.do_sample else NotMeasured(),  # null: greedy decoding
            top_p=ec.top_p if ec.do_sample else NotMeasured(),
            seed=ec.seed,
            samples=len(rows),
            batch_size=ec.batch_size,
            generation_s=round(answers["generation_s"], 1),
        ),
        metrics=table,
        examples=_examples(per, ec.num_examples, ec.seed),
        qualitative=_qualitative(per, values),
        identity=IdentityCheck(
            questions=len(identity_rows),
            before_hits=sum(metrics.contains_name(p["answer_before"], name) for p in identity_rows),
            after_hits=sum(metrics.contains_name(p["answer_after"], name) for p in identity_rows),
        ),
        failures=failures,
        judge=or_not_measured(judged["judge"]),  # null when no judge ran, with judge_reason beside it
        judge_reason=or_not_measured(judged["judge_reason"]),
        csv=CSV_NAME,
        headline=f"ROUGE-L {_shown(rl.before)} -> {_shown(rl.after)}; "
        f"identity {_shown(idp.before)}% -> {_shown(idp.after)}% ({len(rows)} test records)",
        notes=[f"{failures} sample(s) failed to generate (see {CSV_NAME})"] if failures else [],
    )


def _shown(value: Any) -> Any:
    """A value for the headline: None (as the headline always showed it) when not measured."""
    return value if measured(value) else None


def _examples(per: list[dict[str, Any]], n: int, seed: int) -> list[EvalExample]:
    """Deterministic picks: the biggest ROUGE-L gains, one regression if any, one random by seed."""
    order = sorted(per, key=lambda p: (p["rougeL_after"] - p["rougeL_before"], p["id"]), reverse=True)
    chosen: list[tuple[str, dict[str, Any]]] = []
    n_gain = max(1, n - 2)
    chosen += [("largest_gain", p) for p in order[:n_gain] if p["rougeL_after"] > p["rougeL_before"]]
    worst = order[-1]
    if worst["rougeL_after"] < worst["rougeL_before"] and all(worst is not c for _, c in chosen):
        chosen.append(("regression", worst))
    rest = [p for p in sorted(per, key=lambda p: p["id"]) if all(p is not c for _, c in chosen)]
    if rest:
        chosen.append(("random", random.Random(seed).choice(rest)))
    return [
        EvalExample(
            id=p["id"],
            kind=kind,
            instruction=p["instruction"],
            input=p["input"],
            reference=p["reference"],
            before=p["answer_before"],
            after=p["answer_after"],
            rougeL_before=p["rougeL_before"],
            rougeL_after=p["rougeL_after"],
        )
        for kind, p in chosen
    ]


def _write_csv(path: Path, per: list[dict[str, Any]]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(per[0].keys()))
    writer.writeheader()
    writer.writerows(per)
    write_text(path, "\ufeff" + buf.getvalue())
