"""The complete fixture's split cap, leakage check and identity probe, as prepare and evaluate write
them (kept apart so that tests/reporting/complete_run.py stays readable)."""

from __future__ import annotations

from typing import Any

LEAK_EXAMPLE = {
    "split": "test",
    "id": "zh_general-88-1a2b3c4d5e",
    "question": "什么是机器学习？",
    "train_id": "zh_general-12-5e4d3c2b1a",
    "train_question": "请问，什么是机器学习",
    "similarity": 0.778,
    "exact": False,
}

PREPARE_CHECKS: dict[str, Any] = {
    "eval_split_cap": {
        "max_share": 0.1,
        "min_items": 3,
        "val_requested": 120,
        "test_requested": 120,
        "capped": False,
    },
    "min_useful_train": 100,
    "leakage": {
        "mode": "remove",
        "method": "character 2-gram Jaccard",
        "threshold": 0.7,
        "checked": {"test": 122, "val": 121},
        "found": {"test": 2, "val": 1},
        "exact": 1,
        "near": 2,
        "moved_to_train": 3,
        "refilled": {"test": 2, "val": 1},
        "examples": [LEAK_EXAMPLE],
    },
}

IDENTITY_PROBE = {
    "file": "data/eval/identity_probe.jsonl",
    "questions": 34,
    "asks_author": 9,
    "excluded_trained": 0,
    "overlaps": [],
    "before_hits": 1,
    "after_hits": 30,
    "max_new_tokens": 48,
}
