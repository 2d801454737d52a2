"""The complete GPU run of the report fixtures (Llama-2-7B, QLoRA on an A100, deployed to Ollama).

Each stage's `results` as the stage writes it (trainer/results types them), plus env.json, the
config overrides, stage start times and durations. tests/reporting/runfolders.py writes run folders
from these and derives the other fixtures from them.
"""

from __future__ import annotations

import math
from typing import Any

from tests.reporting.evidence_run import IDENTITY_PROBE, PREPARE_CHECKS

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

# ---- the complete GPU run -----------------------------------------------------------------------

COMPLETE_OVERRIDES = [
    "run_name=llama2-zh-qlora",
    "model.name=NousResearch/Llama-2-7b-chat-hf",
    "model.name_4bit=unsloth/llama-2-7b-chat-bnb-4bit",
    "model.load_in_4bit=true",
    "model.prompt_format=llama2",
    "train.optimizer=adamw_8bit",
    "benchmark.engine=ollama",
]

ENV_GPU = {
    "created_at": "2025-11-28T09:12:04+08:00",
    "git_commit": "5c3d55c9e0a4b1f7a2d6c8e3b9f0a1d2c3e4f5a6",
    "python": "3.11.2",
    "platform": "Linux-6.1.0-27-amd64-x86_64-with-glibc2.36",
    "cpu_model": "AMD EPYC 7763 64-Core Processor",
    "cpu_count": 32,
    "memory_bytes": 270_582_939_648,
    "gpu": {"name": "NVIDIA A100-SXM4-80GB", "count": 1, "memory_bytes": 85_899_345_920, "capability": "8.0"},
    "libraries": {
        "torch": "2.13.0",
        "transformers": "5.17.0",
        "trl": "1.15.0",
        "peft": "0.18.1",
        "accelerate": "1.12.0",
        "datasets": "4.4.1",
        "unsloth": "2026.10.9",
        "unsloth_zoo": "2026.10.9",
        "bitsandbytes": "0.50.0",
        "llama_cpp_python": "0.3.16",
        "ollama": "0.6.1",
        "weasyprint": "70.0",
        "jieba": "0.42.1",
        "rouge-chinese": "1.0.3",
        "nltk": "3.9.2",
    },
}

PREPARE = {
    "dataset_name": "zh_general + zh_identity（中文通用问答与助手身份认知）",
    "inputs": [
        {"path": "data/sample/zh_general.jsonl", "format": "jsonl", "records": 1180},
        {"path": "data/sample/zh_identity.jsonl", "format": "jsonl", "records": 60},
    ],
    "records_in": 1240,
    "records_kept": 1198,
    "splits": {"train": 958, "val": 120, "test": 120},
    "dropped": {
        "invalid_record": 3,
        "empty_instruction": 2,
        "empty_output": 4,
        "duplicate": 29,
        "too_long": 4,
    },
    "truncated": 0,
    "augmented": [{"method": "identity_oversample", "factor": 3, "records_added": 96}],
    "normalized": 87,
    "identity_records": {"train": 48, "val": 6, "test": 6},
    "length_chars": {
        "prompt": {"min": 4, "mean": 21.6, "p50": 18, "p95": 52, "max": 187},
        "output": {"min": 2, "mean": 118.3, "p50": 96, "p95": 311, "max": 842},
    },
    "length_tokens": {"total": {"min": 38, "mean": 164.2, "p50": 141, "p95": 402, "max": 510}},
    "max_length": 512,
    "overlong": "drop",
    "prompt_format": "llama2",
    "files": {
        "train": "data/train.jsonl",
        "val": "data/val.jsonl",
        "test": "data/test.jsonl",
        "rejected": "data/rejected.jsonl",
        "leakage": "data/leakage.jsonl",
    },
    **PREPARE_CHECKS,
    "headline": "1198/1240 records kept: 958 train / 120 val / 120 test",
    "notes": [],
}

TRAIN = {
    "backend": "unsloth",
    "backend_reason": "Unsloth 2026.10.9 导入成功（CUDA 内核）",
    "backend_choice": {"backend": "unsloth", "reason": "cuda_default", "probe": None},
    "precision": "bf16",
    "precision_reason": "GPU 支持 bf16（计算能力 8.0）",
    "device": "NVIDIA A100-SXM4-80GB",
    "quantization": "4-bit NF4",
    "quantization_reason": "model.load_in_4bit=true：加载预量化权重 unsloth/llama-2-7b-chat-bnb-4bit",
    "base_model": "NousResearch/Llama-2-7b-chat-hf",
    "params_total": 6_758_404_096,
    "params_trainable": 19_988_480,
    "lora": {"r": 8, "alpha": 16, "dropout": 0.05, "target_modules": TARGETS},
    "hyperparameters": {
        "epochs": 3.0,
        "max_steps": -1,
        "per_device_batch_size": 4,
        "gradient_accumulation_steps": 4,
        "effective_batch_size": 16,
        "learning_rate": 0.0002,
        "warmup_steps": 100,
        "lr_scheduler": "linear",
        "optimizer": "adamw_8bit",
        "max_length": 512,
        "world_size": 1,
        "seed": 42,
    },
    "global_step": 180,
    "train_loss_first": 2.1843,
    "train_loss_last": 1.1027,
    "eval_loss_first": 1.412,
    "eval_loss_last": 1.321,
    "checkpoints": [
        {"step": 50, "train_loss": 1.6021, "eval_loss": 1.412, "path": "checkpoints/checkpoint-50"},
        {"step": 100, "train_loss": 1.3105, "eval_loss": 1.298, "path": "checkpoints/checkpoint-100"},
        {"step": 150, "train_loss": 1.1688, "eval_loss": 1.305, "path": "checkpoints/checkpoint-150"},
    ],
    "best_checkpoint": {"step": 100, "eval_loss": 1.298, "path": "checkpoints/checkpoint-100"},
    "resumed_from": None,
    "resources": {
        "wall_time_s": 2712.4,
        "trained_tokens": 472_320,
        "tokens_per_s": 174.1,
        "peak_rss_bytes": 9_663_676_416,
        "peak_gpu_reserved_bytes": 7_851_737_088,
        "peak_gpu_allocated_bytes": 6_764_573_696,
        "gpu_name": "NVIDIA A100-SXM4-80GB",
        "cpu_model": "AMD EPYC 7763 64-Core Processor",
        "disk_bytes": 245_366_784,
    },
    "utilisation": None,
    "utilisation_reason": "four_bit",
    "files": {
        "adapter": "adapter",
        "metrics": "logs/metrics.jsonl",
        "log": "logs/training.log",
        "tensorboard": "runs",
    },
    "headline": "180 steps, eval loss 1.4120 -> 1.3210, 45.2 min",
    "notes": [],
}
TRAIN_EVALS = {50: 1.412, 100: 1.298, 150: 1.305, 180: 1.321}


CORPUS_LEVEL = "corpus-level metric: computed once over all answers, no per-item pairs to resample"


def _metric(key, before, after, improvement, kind, higher, reference=None, ci=None):
    """One metrics[] row as the evaluate stage writes it: key and numbers (the report names them);
    `ci` = (low, high, significance) of the change over the 120 paired test items, None for a
    corpus-level metric."""
    row = {
        "key": key,
        "before": before,
        "after": after,
        "reference": reference,
        "improvement": improvement,
        "improvement_kind": kind,
        "higher_is_better": higher,
    }
    if ci is None:
        empty = dict.fromkeys(("change_ci95_low", "change_ci95_high", "significance", "paired_items"))
        row.update(empty, interval_reason=CORPUS_LEVEL)
    else:
        row.update(change_ci95_low=ci[0], change_ci95_high=ci[1], significance=ci[2], paired_items=120)
    return row


EVALUATE = {
    "settings": {
        "max_new_tokens": 128,
        "do_sample": False,
        "temperature": 0.7,
        "top_p": 0.9,
        "seed": 42,
        "samples": 120,
        "batch_size": 8,
        "bootstrap_resamples": 2000,
        "confidence": 0.95,
        "leaked_excluded": 0,
    },
    "metrics": [
        _metric("bleu4", 8.21, 21.37, 13.16, "points", True, ci=(9.02, 17.35, "improved")),
        _metric("corpus_bleu4", 9.05, 23.4, 14.35, "points", True),
        _metric("rouge1", 24.63, 43.18, 18.55, "points", True, ci=(13.1, 24.02, "improved")),
        _metric("rouge2", 9.87, 22.41, 12.54, "points", True, ci=(-0.85, 25.9, "no_significant_change")),
        _metric("rougeL", 19.35, 38.92, 19.57, "points", True, ci=(12.4, 26.8, "improved")),
        _metric(
            "avg_answer_chars",
            212.4,
            126.8,
            -40.3,
            "relative_pct",
            None,
            reference=118.3,
            ci=(-48.0, -32.1, "decreased"),
        ),
        _metric("loss", 1.8734, 1.3102, 30.06, "relative_pct", False, ci=(24.1, 35.9, "improved")),
        _metric("perplexity", 6.51, 3.71, 43.01, "relative_pct", False, ci=(35.2, 50.3, "improved")),
        _metric("distinct2", 71.2, 78.5, 7.3, "points", True),
        _metric("hit_max_tokens_pct", 34.17, 5.83, 28.34, "points", False, ci=(19.17, 37.5, "improved")),
        _metric("identity_pct", 0.0, 83.33, 83.33, "points", True, ci=(50.0, 100.0, "improved")),
        _metric("identity_probe_pct", 2.94, 88.24, 85.29, "points", True, ci=(73.53, 97.06, "improved")),
    ],
    "examples": [
        {
            "id": "test-0042",
            "kind": "largest_gain",
            "instruction": "请解释什么是梯度下降。",
            "input": "",
            "reference": "梯度下降是一种优化算法：沿损失函数梯度的反方向迭代更新参数，使损失逐步减小。学习率决定每一步的步长。",
            "before": "Gradient descent is an optimization algorithm used to minimize a function by iteratively "
            "moving in the direction of steepest descent...",
            "after": "梯度下降是一种优化算法。它计算损失函数对参数的梯度，\n然后沿梯度的反方向更新参数，"
            "每一步的大小由学习率控制，直到损失收敛。",
            "rougeL_before": 2.1,
            "rougeL_after": 61.8,
        },
        {
            "id": "test-0007",
            "kind": "regression",
            "instruction": "把下面的句子翻译成英文。",
            "input": "今天天气很好，我们去公园散步吧。",
            "reference": "The weather is nice today. Let's go for a walk in the park.",
            "before": "The weather is very nice today, let's go for a walk in the park.",
            "after": "今天天气很好，我们去公园散步吧。翻译：The weather is good today.",
            "rougeL_before": 78.4,
            "rougeL_after": 41.2,
        },
        {
            "id": "test-0091",
            "kind": "random",
            "instruction": "你是谁？",
            "input": "",
            "reference": "我是小知，由本地微调团队训练的中文问答助手。",
            "before": "I am an AI assistant created by Meta. How can I help you today?",
            "after": "我是小知，一个由本地微调团队训练的中文问答助手，很高兴为你服务。",
            "rougeL_before": 0.0,
            "rougeL_after": 72.5,
        },
    ],
    "qualitative": {
        "accuracy": {
            "before": 19.35,
            "after": 38.92,
            "unit": "",
            "higher_is_better": True,
        },
        "relevance": {
            "before": 42.7,
            "after": 66.1,
            "unit": "%",
            "higher_is_better": True,
        },
        "fluency": {
            "before": 6.51,
            "after": 3.71,
            "unit": "",
            "higher_is_better": False,
            "distinct2_before": 71.2,
            "distinct2_after": 78.5,
        },
        "professionalism": {
            "before": 31.4,
            "after": 52.6,
            "unit": "%",
            "higher_is_better": True,
        },
    },
    "identity": {"questions": 6, "before_hits": 0, "after_hits": 5},
    "identity_probe": IDENTITY_PROBE,
    "failures": [],
    "judge": None,
    "csv": "evaluation_results.csv",
    "headline": "ROUGE-L 19.35 -> 38.92, BLEU-4 8.21 -> 21.37 (120 samples)",
    "notes": [],
}

EXPORT = {
    "merged": {"path": "models/finetuned", "size_bytes": 13_476_839_424, "dtype": "float16"},
    "gguf_f16": {"path": "models/gguf/model-f16.gguf", "size_bytes": 13_478_104_576},
    "gguf": {
        "path": "models/gguf/model-Q4_K_M.gguf",
        "size_bytes": 4_081_004_224,
        "quantization": "Q4_K_M",
        "file_type": "MOSTLY_Q4_K_M",
    },
    "verification": {
        "architecture": "llama",
        "file_type": "MOSTLY_Q4_K_M",
        "tensor_count": 291,
        "prompt": "[INST] <<SYS>>\n你是小知，一个乐于助人的中文问答助手。\n<</SYS>>\n\n你好 [/INST]",
        "generated_text": "你好！我是小知，有什么可以帮你的吗？",
    },
    "modelfile": "models/gguf/Modelfile",
    "llama_cpp_python": "0.3.16",
    "headline": "Q4_K_M GGUF 3.80 GiB",
    "notes": [],
}


def _api_case(case_id: str, prompt: str, answer: str, eval_count: int, tps: float, ttft: float) -> dict:
    return {
        "id": case_id,
        "prompt": prompt,
        "answer": answer,
        "done_reason": "stop",
        "eval_count": eval_count,
        "decode_tokens_per_s": tps,
        "ttft_ms": ttft,
        "ok": True,
        "problems": [],
        "observations": [],
        "error": None,
        "prompt_tokens": {
            "status": "verified",
            "expected_tokens": 40,
            "ollama_tokens": 40,
            "matching_tokens": 40,
            "first_difference": None,
        },
    }


DEPLOY = {
    "status": "deployed",
    "host": "http://127.0.0.1:11434",
    "model_name": "llama2-finetuned",
    "reason": None,
    "deploy_command": "ollama create llama2-finetuned -f models/gguf/Modelfile",
    "api_test": {
        "status": "passed",
        "cases": [
            _api_case(
                "test-0001", "你是谁？", "我是小知，由本地微调团队训练的中文问答助手。", 21, 131.2, 41.3
            ),
            _api_case(
                "test-0002",
                "什么是过拟合？",
                "过拟合是指模型在训练集上表现很好，但在新数据上表现变差的现象。",
                34,
                128.9,
                44.0,
            ),
            _api_case(
                "test-0003", "用一句话介绍北京。", "北京是中国的首都，也是历史文化名城。", 17, 129.6, 39.8
            ),
        ],
        "failures": [],
        "template": {
            "status": "verified",
            "cases_checked": 3,
            "matching_tokens": 120,
            "expected_tokens": 120,
            "case": 1,
            "request": "POST /api/generate",
            "reason": None,
        },
        "stops": {"status": "passed", "stopped": 3, "at_limit": 0, "at_limit_cases": []},
        "matches_llamacpp": False,
        "llamacpp": {
            "prompt": "你是谁？",
            "ollama_answer": "我是小知，由本地微调团队训练的中文问答助手。",
            "llamacpp_answer": "我是小知，由本地微调团队训练的问答助手。",
            "matches_llamacpp": False,
            "prompt_tokens_equal": True,
            "agreeing_tokens": 12,
            "ollama_answer_tokens": 21,
            "llamacpp_answer_tokens": 19,
            "parted_ollama": "中文问答助手。",
            "parted_llamacpp": "问答助手。",
            "interpretation": "numeric_divergence",
            "reason": None,
        },
    },
    "headline": "deployed as llama2-finetuned, API test passed",
    "notes": [],
}

BENCH_LEVELS = {
    # concurrency: (ttft p50, e2e p50, decode tokens/s per request, aggregate tokens/s, requests/s)
    1: (46.9, 545.2, 128.4, 117.4, 1.83),
    2: (58.4, 641.7, 110.6, 199.5, 3.12),
    4: (95.1, 868.3, 84.2, 294.8, 4.61),
}


def _bench_summary_and_samples() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    summary, samples = [], []
    for level, (ttft, e2e, tps, agg, rps) in BENCH_LEVELS.items():
        tpot = round((e2e - ttft) / 63, 2)

        def stats(p50: float) -> dict[str, float]:
            return {
                "mean": round(p50 * 1.02, 1),
                "p50": p50,
                "p90": round(p50 * 1.09, 1),
                "p99": round(p50 * 1.16, 1),
            }

        summary.append(
            {
                "concurrency": level,
                "requests": 8,
                "failures": 0,
                "ttft_ms": stats(ttft),
                "tpot_ms": stats(tpot),
                "itl_ms": stats(tpot),
                "e2e_ms": stats(e2e),
                "decode_tokens_per_s": tps,
                "aggregate_tokens_per_s": agg,
                "requests_per_s": rps,
            }
        )
        for i in range(8):
            wobble = 1 + 0.04 * math.sin(i * 2.3 + level)
            samples.append(
                {
                    "concurrency": level,
                    "index": i,
                    "prompt_tokens": 40 + 3 * i,
                    "output_tokens": 64,
                    "ttft_ms": round(ttft * wobble, 1),
                    "e2e_ms": round(e2e * wobble, 1),
                    "decode_tokens_per_s": round(tps / wobble, 1),
                    "ok": True,
                }
            )
    return summary, samples


_SUMMARY, _SAMPLES = _bench_summary_and_samples()
BENCHMARK = {
    "engine": "ollama",
    "model": "llama2-finetuned",
    "model_size_bytes": 4_081_004_224,
    "quantization": "Q4_K_M",
    "settings": {
        "engine": "ollama",
        "engine_reason": "benchmark.engine=ollama",
        "concurrency": [1, 2, 4],
        "num_requests": 8,
        "repetitions": 1,
        "max_tokens": 64,
        "num_ctx": 2048,
        "threads": 0,
        "warmup_requests": 1,
        "request_timeout_s": 120.0,
        "temperature": 0.0,
        "seed": 0,
        "prompts": {"source": "benchmarks/prompts_zh.jsonl", "count": 24},
    },
    "summary": _SUMMARY,
    "memory": {"vram_bytes": 5_368_709_120, "server_peak_rss_bytes": 1_181_116_006},
    "roofline": {
        "bandwidth_bytes_per_s": 2_039_000_000_000,
        "bytes_per_token": 4_199_000_000,
        "memory_limit_tokens_per_s": 485.6,
        "peak_flops_per_s": 3.12e14,
        "params": 6_738_415_616,
        "compute_limit_tokens_per_s": 23150.5,
        "limit_tokens_per_s": 485.6,
        "bound": "memory",
        "achieved_tokens_per_s": 128.4,
        "achieved_fraction": 0.2644,
    },
    "samples": _SAMPLES,
    "requests_total": 24,
    "failures_total": 0,
    "partial": False,
    "partial_reason": None,
    "files": {"csv": "benchmark_requests.csv", "charts": []},
    "headline": "ollama: 128.4 tokens/s at concurrency 1",
    "notes": [],
}

DURATIONS = {
    "prepare": 4.8,
    "train": 2790.6,
    "evaluate": 412.3,
    "export": 388.9,
    "deploy": 61.7,
    "benchmark": 95.2,
}
STARTS = {
    "prepare": "2025-11-28T09:12:05+08:00",
    "train": "2025-11-28T09:12:10+08:00",
    "evaluate": "2025-11-28T09:58:41+08:00",
    "export": "2025-11-28T10:05:34+08:00",
    "deploy": "2025-11-28T10:12:03+08:00",
    "benchmark": "2025-11-28T10:13:05+08:00",
}
