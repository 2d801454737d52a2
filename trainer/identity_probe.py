"""The identity probe: a fixed set of "who are you" questions asked of the base and the tuned model.

Not a stage: `trainer/evaluate.py` loads the probe file (`evaluate.identity_probe`, by default
data/eval/identity_probe.jsonl), drops any question that the train split also holds (exactly or
nearly, `trainer.near_duplicates`) and scores the answers with `is_hit`. Reads only the probe file.

A probe record is `{"question": ..., "asks_author": true|false}`; `{{assistant_name}}` (or `{{name}}`)
and `{{author}}` in a question are filled from the data section by the training data's own rule
(`trainer.data_formats.fill_placeholders`).

Scoring rule of one answer (`is_hit`):
1. it names the assistant (`trainer.metrics.contains_name`: NFKC, case-insensitive);
2. where the question asks who made the assistant (`asks_author`), it also names the author;
3. it does not claim to be, or to be made by, another model or company: a name from
   `OTHER_MODELS` counts as a claim unless its clause (the text since the last 。，,；;！!？? or
   newline) says 不/非/没/not before it ("我不是 ChatGPT" is fine, "我是 ChatGPT 的一个版本" is a miss).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from trainer import metrics, near_duplicates
from trainer.data_formats import fill_placeholders
from trainer.errors import UserError

OTHER_MODELS: tuple[str, ...] = (
    "ChatGPT", "GPT-4", "GPT-3", "GPT", "OpenAI", "Claude", "Anthropic", "文心一言", "文心", "百度",
    "通义千问", "通义", "千问", "Qwen", "阿里", "Llama", "Meta", "Gemini", "Bard", "Google", "谷歌",
    "Kimi", "月之暗面", "Siri", "苹果", "SmolLM", "Hugging Face", "HuggingFace", "DeepSeek",
    "深度求索", "ChatGLM", "智谱", "Copilot", "微软", "Microsoft", "讯飞", "星火", "豆包", "字节",
)  # fmt: skip
_CLAUSE_END = re.compile(r"[。，,；;！!？?\n]")
_NEGATION = re.compile(r"不|非|没|\bnot\b|n't|\bno\b")


@dataclass(frozen=True)
class ProbeQuestion:
    line: int  # line in the probe file
    question: str
    asks_author: bool


def load(path: Path, assistant_name: str, author: str) -> list[ProbeQuestion]:
    """The probe questions with placeholders filled; a broken file is a UserError naming the line."""
    if not path.exists():
        raise UserError(
            f"{path}: the identity probe file is missing.",
            fix="restore data/eval/identity_probe.jsonl or set evaluate.identity_probe='' to skip the probe",
        )
    questions, problems = [], []
    for n, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            rec = json.loads(raw)
        except json.JSONDecodeError as exc:
            problems.append(f"line {n}: invalid JSON ({exc.msg})")
            continue
        question = rec.get("question") if isinstance(rec, dict) else None
        if not isinstance(question, str) or not question.strip():
            problems.append(f"line {n}: field 'question' must be a non-empty string")
            continue
        filled = fill_placeholders(question, assistant_name, author)
        if "{{" in filled:
            problems.append(f"line {n}: unknown placeholder in {question!r}")
            continue
        questions.append(ProbeQuestion(n, filled.strip(), bool(rec.get("asks_author", False))))
    if problems:
        raise UserError(
            f"{path}: " + "; ".join(problems[:5]),
            fix='write one {"question": ..., "asks_author": true|false} object per line',
        )
    return questions


def split_trained(
    questions: list[ProbeQuestion], train_questions: list[str]
) -> tuple[list[ProbeQuestion], list[dict[str, object]]]:
    """(the questions no training question copies, the overlaps found with their training twin)."""
    matches = near_duplicates.find_matches([q.question for q in questions], train_questions)
    overlapping = {m.query_index: m for m in matches}
    kept = [q for i, q in enumerate(questions) if i not in overlapping]
    overlaps = [
        {
            "question": questions[i].question,
            "train_question": train_questions[m.corpus_index],
            "similarity": m.similarity,
        }
        for i, m in sorted(overlapping.items())
    ]
    return kept, overlaps


def claims_other_model(answer: str) -> bool:
    """Whether the answer names another model or company outside a negated clause."""
    lowered = answer.casefold()
    for name in OTHER_MODELS:
        start = lowered.find(name.casefold())
        while start >= 0:
            clause = _CLAUSE_END.split(lowered[:start])[-1]
            if not _NEGATION.search(clause):
                return True
            start = lowered.find(name.casefold(), start + 1)
    return False


def is_hit(answer: str, question: ProbeQuestion, assistant_name: str, author: str) -> bool:
    """The module docstring's rule: the name, the author where asked, no claim to be another model."""
    if not metrics.contains_name(answer, assistant_name):
        return False
    if question.asks_author and not metrics.contains_name(answer, author):
        return False
    return not claims_other_model(answer)
