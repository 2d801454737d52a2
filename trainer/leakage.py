"""Train/test leakage: evaluation questions that the train split also holds, exactly or nearly.

Not a stage: `trainer/prepare_data.py` calls `check` after the split, before it writes the files.
Reads and writes nothing; prepare writes `data/leakage.jsonl` (every pair found) and the counts and
first examples into `prepare.json` (`leakage`).

A question is the user side of a record: the earlier turns' questions, the instruction and the
input, joined. Similarity is `trainer.near_duplicates` (character 2-gram Jaccard >= 0.7, or the
same normalised text). With `data.leakage=remove` a leaked val/test record moves to the train split
(it is a copy of a training question, so it measures memory, not generalisation); with `flag` it
stays, marked with `leak`, and the evaluation stage leaves it out of the metrics.
"""

from __future__ import annotations

from typing import Any

from trainer import near_duplicates
from trainer.results import Leakage, LeakExample, Splits

EXAMPLES = 5
EVAL_SPLITS = ("test", "val")


def question_text(row: dict[str, Any]) -> str:
    """The user side of a prepared row: earlier questions, instruction and input."""
    earlier = [q for q, _ in row.get("history", [])]
    return "\n".join(t for t in (*earlier, row["instruction"], row.get("input", "")) if t)


def check(splits: dict[str, list[dict[str, Any]]], mode: str) -> tuple[Leakage, list[dict[str, Any]]]:
    """Find the leaked val/test rows and apply `mode` to `splits` in place.

    Returns the summary for prepare.json and one row per leaked record for data/leakage.jsonl.
    """
    train = list({r["id"]: r for r in splits["train"]}.values())  # oversampled copies once
    train_questions = [question_text(r) for r in train]
    pairs: list[dict[str, Any]] = []
    checked, found = {}, {}
    for split in EVAL_SPLITS:
        rows = splits[split]
        matches = near_duplicates.find_matches([question_text(r) for r in rows], train_questions)
        checked[split], found[split] = len(rows), len(matches)
        leaked_ids = set()
        for m in matches:
            row, twin = rows[m.query_index], train[m.corpus_index]
            leaked_ids.add(row["id"])
            pair = {
                "split": split,
                "id": row["id"],
                "question": question_text(row),
                "train_id": twin["id"],
                "train_question": train_questions[m.corpus_index],
                "similarity": m.similarity,
                "exact": m.exact,
            }
            pairs.append(pair)
            row["leak"] = {k: pair[k] for k in ("train_id", "similarity", "exact")}
        if mode == "remove" and leaked_ids:
            moved = [r for r in rows if r["id"] in leaked_ids]
            splits[split] = [r for r in rows if r["id"] not in leaked_ids]
            splits["train"] = splits["train"] + [{k: v for k, v in r.items() if k != "leak"} for r in moved]
    summary = Leakage(
        mode=mode,
        method=near_duplicates.METHOD,
        threshold=near_duplicates.THRESHOLD,
        checked=Splits(**checked),
        found=Splits(**found),
        exact=sum(p["exact"] for p in pairs),
        near=sum(not p["exact"] for p in pairs),
        moved_to_train=len(pairs) if mode == "remove" else 0,
        examples=[LeakExample(**p) for p in pairs[:EXAMPLES]],
    )
    return summary, pairs
