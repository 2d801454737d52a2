"""Evaluation stage: `python run.py evaluate` — the base and the fine-tuned model on the test split.

Reads `data/test.jsonl`, `data/train.jsonl` (domain terms), `prompt_format.json` and `adapter/`.
Both models are the same loaded weights: answers "before" come from the base with the adapter
disabled, "after" with it enabled, so memory is not doubled and decoding is identical (greedy by
default, same `max_new_tokens`, same seed). Writes `evaluation_results.csv` (one row per test
record, UTF-8 with BOM for spreadsheet programs) and returns the summary for `evaluate.json`:
metrics by key, example comparisons, measured proxies for the qualitative lines, and the optional
blind judge's grades (trainer/judge.py; off unless `evaluate.judge_model` is set).

`run` reads top to bottom: `_setup` (test records, prompt format), `_load_model`, `_answer_both`
(generation and answer loss, adapter off then on), `_probe` (the identity probe,
trainer/identity_probe.py, adapter off then on), `_score` (per-record metrics), `_write_csv` (the
save step), the judge, `_summarize` (the `evaluate.json` results: trainer/eval_table.py builds the
metrics table with each change's paired bootstrap 95 % interval).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from trainer import console, eval_table, identity_probe, judge, leakage, metrics, prompt_format, significance
from trainer.config import PipelineConfig, data_path
from trainer.errors import UserError
from trainer.eval_table import Triple, rounded
from trainer.models import load_tokenizer
from trainer.results import (
    EvalExample,
    EvalSettings,
    EvaluateResult,
    IdentityCheck,
    IdentityProbe,
    NotMeasured,
    ProbeOverlap,
    Qualitative,
    QualitativeMeasure,
    Reason,
    measured,
    or_not_measured,
)
from trainer.runfolder import RunDir, read_jsonl, write_text

CSV_NAME = "evaluation_results.csv"
PROBE_CSV_NAME = "identity_probe_results.csv"


def run(cfg: PipelineConfig, run_dir: RunDir) -> EvaluateResult:
    """Evaluate before/after on the test split; returns the results that go into `evaluate.json`."""
    rows, fmt, leaked = _setup(cfg, run_dir)
    model, tokenizer = _load_model(run_dir, cfg)
    answers = _answer_both(model, tokenizer, rows, cfg, fmt)
    probe = _probe(model, tokenizer, cfg, fmt, run_dir)
    per = _score(run_dir, rows, answers, fmt, cfg.data.assistant_name)
    if all(not p["answer_before"] and not p["answer_after"] for p in per):
        raise UserError(
            "both models produced empty answers for every test record.",
            fix="check the prompt format (prompt_format.json) and evaluate.max_new_tokens",
        )
    _write_csv(run_dir / CSV_NAME, per)  # the save step: one row per test record
    judged = judge.grade(cfg, per)  # optional, off unless evaluate.judge_model names an Ollama model
    return _summarize(cfg, rows, per, answers, judged, probe, leaked)


def _setup(
    cfg: PipelineConfig, run_dir: RunDir
) -> tuple[list[dict[str, Any]], prompt_format.PromptFormat, int]:
    """The test records (at most `evaluate.max_samples`, none flagged as leaked by prepare), the
    prompt format of the run and the number of leaked records left out."""
    test_path = run_dir / "data" / "test.jsonl"
    if not test_path.exists():
        raise UserError(f"{test_path} is missing.", fix="run `python run.py prepare` first")
    everything = read_jsonl(test_path)
    rows = [r for r in everything if not r.get("leak")]  # data.leakage=flag: copies of train questions
    if cfg.evaluate.max_samples > 0:
        rows = rows[: cfg.evaluate.max_samples]
    if not rows:
        raise UserError(
            f"{test_path} has no test record to evaluate ({len(everything)} flagged as leaked).",
            fix="raise data.test_size and rerun prepare",
        )
    return rows, prompt_format.load(run_dir), len(everything) - len(rows)


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
        losses_before = _answer_losses(model, tokenizer, rows, bs)
    after = _answers(model, tokenizer, rows, cfg, fmt, "after")
    losses_after = _answer_losses(model, tokenizer, rows, bs)
    return {
        "before": before,
        "after": after,
        "losses_before": losses_before,  # (nats summed over the answer, answer tokens) per record
        "losses_after": losses_after,
        "loss_before": _mean_loss(losses_before),
        "loss_after": _mean_loss(losses_after),
        "generation_s": time.perf_counter() - t0,
    }


def _mean_loss(losses: list[tuple[float, int]]) -> float | None:
    """Token-weighted mean cross-entropy over all answers (nats/token)."""
    count = sum(n for _, n in losses)
    return sum(total for total, _ in losses) / count if count else None


def _probe(
    model: Any, tokenizer: Any, cfg: PipelineConfig, fmt: prompt_format.PromptFormat, run_dir: RunDir
) -> dict[str, Any] | None:
    """The identity probe's questions (those not copied in the train split) answered before and after;
    None when `evaluate.identity_probe` is empty."""
    ec, dc = cfg.evaluate, cfg.data
    if not ec.identity_probe:
        return None
    path = data_path(ec.identity_probe)
    questions = identity_probe.load(path, dc.assistant_name, dc.author)
    train_path = run_dir / "data" / "train.jsonl"
    train = read_jsonl(train_path) if train_path.exists() else []
    train_questions = list(dict.fromkeys(leakage.question_text(r) for r in train))
    asked, overlaps = identity_probe.split_trained(questions, train_questions)
    rows = [{"prompt": fmt.prompt(q.question)} for q in asked]
    short = dataclasses.replace(
        cfg, evaluate=dataclasses.replace(ec, max_new_tokens=ec.identity_max_new_tokens)
    )
    with model.disable_adapter():
        before = _answers(model, tokenizer, rows, short, fmt, "identity probe, before")
    after = _answers(model, tokenizer, rows, short, fmt, "identity probe, after")
    scored = [
        {
            "question": q.question,
            "asks_author": q.asks_author,
            "answer_before": b["text"],
            "answer_after": a["text"],
            "hit_before": identity_probe.is_hit(b["text"], q, dc.assistant_name, dc.author),
            "hit_after": identity_probe.is_hit(a["text"], q, dc.assistant_name, dc.author),
        }
        for q, b, a in zip(asked, before, after, strict=True)
    ]
    write_text(run_dir / PROBE_CSV_NAME, _csv_text(scored) if scored else "")
    return {"file": str(ec.identity_probe), "rows": scored, "overlaps": overlaps}


def _score(
    run_dir: RunDir,
    rows: list[dict[str, Any]],
    answers: dict[str, Any],
    fmt: prompt_format.PromptFormat,
    name: str,
) -> list[dict[str, Any]]:
    """One CSV row per test record: both answers and their per-record metrics."""
    train_path = run_dir / "data" / "train.jsonl"
    train_rows = read_jsonl(train_path) if train_path.exists() else []
    terms = metrics.domain_terms_from([r["output"] for r in train_rows])
    per: list[dict[str, Any]] = []
    losses = zip(answers["losses_before"], answers["losses_after"], strict=True)
    for r, b, a, (lb, la) in zip(rows, answers["before"], answers["after"], losses, strict=False):
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
                "identity_before": metrics.contains_name(b["text"], name),
                "identity_after": metrics.contains_name(a["text"], name),
                "answer_tokens": lb[1],
                "loss_before": round(lb[0] / lb[1], 4) if lb[1] else None,
                "loss_after": round(la[0] / la[1], 4) if la[1] else None,
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


def _counted(batches: range, what: str) -> Iterator[int]:
    """The batches, counted on the stage's progress line."""
    line = console.line()
    line.total(len(batches))
    line.status(what)
    for start in batches:
        yield start
        line.advance()


def _answers(model: Any, tokenizer: Any, rows: list[dict[str, Any]], cfg: PipelineConfig, fmt, label: str):
    """Batched generation; a failing batch is retried one by one so one bad sample loses nothing else."""
    answers: list[dict[str, Any]] = []
    bs = max(1, cfg.evaluate.batch_size)
    for start in _counted(range(0, len(rows), bs), f"generate ({label})"):
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


def _answer_losses(
    model: Any, tokenizer: Any, rows: list[dict[str, Any]], batch_size: int
) -> list[tuple[float, int]]:
    """(cross-entropy summed over the reference answer in nats, answer tokens) of each record given its
    prompt, teacher-forced."""
    import torch

    out: list[tuple[float, int]] = []
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
            token_loss = torch.nn.functional.cross_entropy(
                shift_logits.transpose(1, 2), shift_labels, ignore_index=-100, reduction="none"
            )
            counts = (shift_labels != -100).sum(dim=1)
            out += [(float(t), int(n)) for t, n in zip(token_loss.sum(dim=1), counts, strict=True)]
    finally:
        tokenizer.padding_side = tokenizer_side
    return out


def _qualitative(per: list[dict[str, Any]], values: dict[str, Triple]) -> Qualitative:
    """Measured proxies for the report's qualitative lines (accuracy, relevance, fluency, terms);
    what stands in for each dimension is worded by the report (reporting/labels.py)."""

    def avg(key: str) -> float | None:
        return metrics.mean(p[key] for p in per)

    return Qualitative(
        accuracy=QualitativeMeasure(
            before=rounded(values["rougeL"][0]),
            after=rounded(values["rougeL"][1]),
            unit="",  # ROUGE-L F1 x100: points
            higher_is_better=True,
        ),
        relevance=QualitativeMeasure(
            before=rounded(avg("relevance_before")),
            after=rounded(avg("relevance_after")),
            unit="%",
            higher_is_better=True,
        ),
        fluency=QualitativeMeasure(
            before=rounded(values["perplexity"][0]),
            after=rounded(values["perplexity"][1]),
            unit="",  # perplexity
            higher_is_better=False,
            distinct2_before=rounded(values["distinct2"][0]),
            distinct2_after=rounded(values["distinct2"][1]),
        ),
        professionalism=QualitativeMeasure(
            before=rounded(avg("terms_before")),
            after=rounded(avg("terms_after")),
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
    probe: dict[str, Any] | None,
    leaked: int,
) -> EvaluateResult:
    """The results for `evaluate.json` (`leaked`: test records left out as copies of train ones)."""
    ec = cfg.evaluate
    probe_rows = probe["rows"] if probe else []
    values = eval_table.metric_values(per, answers, probe_rows)
    table = eval_table.metric_table(
        values, eval_table.paired_values(per, probe_rows), ec.bootstrap_resamples, ec.seed
    )
    identity_rows = [p for p in per if p["identity_question"]]
    rl = next(m for m in table if m.key == "rougeL")
    idp = next(m for m in table if m.key == ("identity_probe_pct" if probe_rows else "identity_pct"))
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
            bootstrap_resamples=ec.bootstrap_resamples,
            confidence=significance.CONFIDENCE,
            leaked_excluded=leaked,
        ),
        metrics=table,
        examples=_examples(per, ec.num_examples, ec.seed),
        qualitative=_qualitative(per, values),
        identity=IdentityCheck(
            questions=len(identity_rows),
            before_hits=sum(p["identity_before"] for p in identity_rows),
            after_hits=sum(p["identity_after"] for p in identity_rows),
        ),
        identity_probe=_probe_result(probe, ec.identity_max_new_tokens),
        failures=failures,
        judge=or_not_measured(judged["judge"]),  # null when no judge ran, with judge_reason beside it
        judge_reason=or_not_measured(judged["judge_reason"]),
        csv=CSV_NAME,
        headline=f"ROUGE-L {_shown(rl.before)} -> {_shown(rl.after)}; "
        f"identity{' probe' if probe_rows else ''} {_shown(idp.before)}% -> {_shown(idp.after)}% "
        f"(change 95% CI [{_shown(idp.change_ci95_low)}, {_shown(idp.change_ci95_high)}]; "
        f"{len(rows)} test records)",
        notes=[f"{failures} sample(s) failed to generate (see {CSV_NAME})"] if failures else [],
        note_codes=[Reason(code="generation_failures", params={"count": failures, "csv": CSV_NAME})]
        if failures
        else [],
    )


def _probe_result(probe: dict[str, Any] | None, max_new_tokens: int) -> IdentityProbe | NotMeasured:
    if probe is None:
        return NotMeasured("evaluate.identity_probe is empty")
    rows = probe["rows"]
    return IdentityProbe(
        file=probe["file"],
        questions=len(rows),
        asks_author=sum(p["asks_author"] for p in rows),
        excluded_trained=len(probe["overlaps"]),
        overlaps=[ProbeOverlap(**o) for o in probe["overlaps"]],
        before_hits=sum(p["hit_before"] for p in rows),
        after_hits=sum(p["hit_after"] for p in rows),
        max_new_tokens=max_new_tokens,
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


def _csv_text(rows: list[dict[str, Any]]) -> str:
    """UTF-8 CSV text with a BOM (spreadsheet programs then read the Chinese correctly)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0].keys()))
    writer.writeheader()
    writer.writerows(rows)
    return "\ufeff" + buf.getvalue()


def _write_csv(path: Path, per: list[dict[str, Any]]) -> None:
    write_text(path, _csv_text(per))
