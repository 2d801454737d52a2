"""The optional blind judge of `python run.py evaluate`: a local Ollama model grades the answers
before and after fine-tuning against the reference, without knowing which is which.

Off by default (`evaluate.judge_model` empty). When on, every test record is sent once to Ollama's
`/api/generate` with the two answers as A/B in a seeded random order; the raw replies are kept, and
only replies that hold a JSON object with numeric "A" and "B" count as grades (nothing is invented
for the others). The server is `deploy.host`.
"""

from __future__ import annotations

import json
import random
import re
from typing import Any

from trainer import metrics
from trainer.config import PipelineConfig

JUDGE_PROMPT = (
    "你是严格、公正的中文问答评审。请根据问题和参考答案，分别为两个回答的准确性、相关性和流畅度打一个"
    '1到10的总分。只输出一行JSON，例如 {{"A": 7, "B": 4}}，不要输出其他内容。\n\n'
    "问题：{question}\n\n参考答案：{reference}\n\n回答A：{a}\n\n回答B：{b}\n"
)


def grade(cfg: PipelineConfig, per: list[dict[str, Any]]) -> dict[str, Any]:
    """Blind pairwise grading by a local Ollama model; before/after shown as A/B in seeded random order.

    `per` are the evaluation's per-record rows (instruction, input, reference, answer_before,
    answer_after). Returns `{"judge": ..., "judge_reason": ...}` for `evaluate.json`: the judge is
    None with the reason when it is off or Ollama does not answer.
    """
    from trainer import ollama_client

    model = cfg.evaluate.judge_model
    if not model:
        return {"judge": None, "judge_reason": "evaluate.judge_model is empty (off by default)"}
    host = ollama_client.resolve_host(cfg.deploy.host)
    try:
        ollama_client.check_server(host)
    except ollama_client.OllamaError as exc:
        return {"judge": None, "judge_reason": f"judge {model} not run: {exc}"}
    rng = random.Random(cfg.evaluate.seed)
    grades = []
    for p in per:
        swap = rng.random() < 0.5
        a, b = (p["answer_after"], p["answer_before"]) if swap else (p["answer_before"], p["answer_after"])
        prompt = JUDGE_PROMPT.format(
            question=p["instruction"] + (f"\n{p['input']}" if p["input"] else ""),
            reference=p["reference"],
            a=a,
            b=b,
        )
        try:
            raw = ollama_client.generate(host, model, prompt, {"temperature": 0, "num_predict": 40}).text
        except ollama_client.OllamaError as exc:
            raw = f"error: {exc}"
        match = re.search(r"\{[^{}]*\}", raw)
        scores: dict[str, Any] = {}
        if match:
            try:
                scores = json.loads(match.group(0))
            except json.JSONDecodeError:
                scores = {}
        sa, sb = scores.get("A"), scores.get("B")
        ok = isinstance(sa, (int, float)) and isinstance(sb, (int, float))
        before, after = ((sb, sa) if swap else (sa, sb)) if ok else (None, None)
        grades.append(
            {
                "id": p["id"],
                "order": "after,before" if swap else "before,after",
                "raw": raw,
                "before": before,
                "after": after,
            }
        )
    valid = [g for g in grades if g["before"] is not None]
    return {
        "judge": {
            "model": model,
            "host": host,
            "prompt_template": JUDGE_PROMPT,
            "graded": len(valid),
            "unparsed": len(grades) - len(valid),
            "mean_before": metrics.mean(g["before"] for g in valid),
            "mean_after": metrics.mean(g["after"] for g in valid),
            "after_wins_pct": metrics.percent_true(g["after"] > g["before"] for g in valid),
            "grades": grades,
        },
        "judge_reason": None,
    }
