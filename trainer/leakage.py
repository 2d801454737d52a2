"""Train/test leakage: evaluation questions that the train split also holds, exactly or nearly.

Not a stage: `trainer/prepare_data.py` calls `check` after the split, before it writes the files.
Reads and writes nothing; prepare writes `data/leakage.jsonl` (every pair found) and the counts and
first examples into `prepare.json` (`leakage`).

A question is the user side of a record: the earlier turns' questions, the instruction and the
input, joined. Similarity is `trainer.near_duplicates` (character 2-gram Jaccard >= 0.7, or the
same normalised text). With `data.leakage=remove` a leaked val/test record moves to the train split
(it is a copy of a training question, so it measures memory, not generalisation) and the split is
refilled to its size from train records whose question has no copy in train; with `flag` it stays,
marked with `leak`, and the evaluation stage leaves it out of the metrics.
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
        for m in matches:
            row, twin = rows[m.query_index], train[m.corpus_index]
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
    refilled = _move_to_train(splits) if mode == "remove" else dict.fromkeys(EVAL_SPLITS, 0)
    summary = Leakage(
        mode=mode,
        method=near_duplicates.METHOD,
        threshold=near_duplicates.THRESHOLD,
        checked=Splits(**checked),
        found=Splits(**found),
        exact=sum(p["exact"] for p in pairs),
        near=sum(not p["exact"] for p in pairs),
        moved_to_train=len(pairs) if mode == "remove" else 0,
        refilled=Splits(**refilled),
        examples=[LeakExample(**p) for p in pairs[:EXAMPLES]],
    )
    return summary, pairs


def _move_to_train(splits: dict[str, list[dict[str, Any]]]) -> dict[str, int]:
    """Move the leaked val/test rows to train, then refill each split to its size from train rows
    whose question has no copy in train (so a refilled row is not a leak either). Returns the rows
    refilled per split (fewer than moved when train has too few such rows)."""
    sizes = {split: len(splits[split]) for split in EVAL_SPLITS}
    for split in EVAL_SPLITS:
        moved = [r for r in splits[split] if r.get("leak")]
        splits[split] = [r for r in splits[split] if not r.get("leak")]
        splits["train"] = splits["train"] + [{k: v for k, v in r.items() if k != "leak"} for r in moved]
    train = splits["train"]
    twinned = near_duplicates.has_twin([question_text(r) for r in train])
    spare = [r for r, twin in zip(train, twinned, strict=True) if not twin]
    refilled = {}
    for split in EVAL_SPLITS:
        take, spare = spare[: sizes[split] - len(splits[split])], spare[sizes[split] - len(splits[split]) :]
        splits[split] = splits[split] + take
        refilled[split] = len(take)
    taken = {id(r) for split in EVAL_SPLITS for r in splits[split]}
    splits["train"] = [r for r in train if id(r) not in taken]
    return refilled
