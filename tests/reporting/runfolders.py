"""Fixture run folders for the report tests, in the shapes of the run folder contract (trainer/results).

`complete(path)` is a finished GPU run (tests/reporting/complete_run.py: Llama-2-7B, QLoRA on an
A100, deployed to Ollama); `gpu_less(path)` the embedded SmolLM2 trained on a 2-core CPU; `ollama_not_deployed`,
`evaluation_missing`, `train_failed` and `nothing_run` derive from them; `old_style` is the complete
run with the Chinese texts older versions wrote into evaluate.json and prepare.json. They document the
contract the report is built against: every key the report reads appears here with a realistic
value, and each `null` carries its `*_reason`.
"""

from __future__ import annotations

import copy
import csv
import json
import math
from pathlib import Path
from typing import Any

from stages import by_name
from tests.reporting.complete_run import (
    BENCHMARK,
    COMPLETE_OVERRIDES,
    DEPLOY,
    DURATIONS,
    ENV_GPU,
    EVALUATE,
    EXPORT,
    PREPARE,
    STARTS,
    TRAIN,
    TRAIN_EVALS,
)
from trainer.config import load_config, to_yaml

STAGES = ("prepare", "train", "evaluate", "export", "deploy", "benchmark")


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")


def stage_record(stage: str, results: dict[str, Any], started: str, duration_s: float) -> dict[str, Any]:
    return {
        "stage": stage,
        "status": "completed",
        "config_fingerprint": "3f9a1c0d2b7e4a55",
        "started_at": started,
        "finished_at": started,  # the report does not read it
        "duration_s": duration_s,
        "results": results,
    }


def loss_log(
    steps: int, every: int, first: float, last: float, evals: dict[int, float]
) -> list[dict[str, Any]]:
    """A noisy, falling training loss that starts at `first` and ends at `last`, plus eval rows."""
    rows: list[dict[str, Any]] = []
    logged = list(range(every, steps + 1, every))
    if logged[-1] != steps:
        logged.append(steps)
    for i, step in enumerate(logged):
        frac = i / (len(logged) - 1)
        loss = last + (first - last) * math.exp(-3.2 * frac) - (first - last) * math.exp(-3.2) * frac
        loss += 0.035 * math.sin(step * 1.7)
        if i == 0:
            loss = first
        if i == len(logged) - 1:
            loss = last
        rows.append(
            {
                "step": step,
                "epoch": round(step / steps * 3, 4),
                "loss": round(loss, 4),
                "learning_rate": round(2e-4 * min(1.0, step / 100), 8),
                "grad_norm": round(0.9 + 0.3 * math.cos(step), 4),
                "tokens_seen": step * 2624,
            }
        )
        if step in evals:
            rows.append({"step": step, "epoch": round(step / steps * 3, 4), "eval_loss": evals[step]})
    return rows


def _eval_csv(path: Path, rows: int) -> None:
    with open(path, "w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(
            ["id", "instruction", "input", "reference", "before", "after", "rougeL_before", "rougeL_after"]
        )
        for i in range(rows):
            w.writerow(
                [f"test-{i:04d}", f"问题 {i}", "", f"参考答案 {i}", f"before {i}", f"回答 {i}", 10.0, 30.0]
            )


def write_run(
    path: Path,
    *,
    overrides: list[str],
    env: dict[str, Any],
    results: dict[str, dict[str, Any] | None],
    metrics: list[dict[str, Any]] | None,
    eval_rows: int | None,
) -> Path:
    """Write a run folder: config, env, the given `<stage>.json` results (None: stage not run)."""
    path.mkdir(parents=True, exist_ok=True)
    cfg = load_config(None, overrides)
    (path / "config.resolved.yaml").write_text(to_yaml(cfg), encoding="utf-8")
    _write_json(path / "env.json", env)
    (path / "prompt_format.json").write_text(json.dumps({"name": cfg.model.prompt_format}), encoding="utf-8")
    for stage in STAGES:
        res = results.get(stage)
        if res is not None:
            # Through the stage's type, as a stage writes it: a fixture that does not fit fails here.
            typed = by_name(stage).result.from_dict(res).to_dict()
            _write_json(path / f"{stage}.json", stage_record(stage, typed, STARTS[stage], DURATIONS[stage]))
    if metrics is not None:
        (path / "logs").mkdir(parents=True, exist_ok=True)
        (path / "logs" / "metrics.jsonl").write_text(
            "".join(json.dumps(r) + "\n" for r in metrics), encoding="utf-8"
        )
        (path / "logs" / "training.log").write_text("step 5 loss 2.1843\n", encoding="utf-8")
        for d in ("adapter", "runs"):
            (path / d).mkdir(exist_ok=True)
            (path / d / "README").write_text("fixture\n", encoding="utf-8")
    if eval_rows is not None:
        _eval_csv(path / "evaluation_results.csv", eval_rows)
    bench_csv = ((results.get("benchmark") or {}).get("files") or {}).get("csv")
    if bench_csv:
        (path / bench_csv).parent.mkdir(parents=True, exist_ok=True)
        (path / bench_csv).write_text("concurrency,index,ttft_ms,e2e_ms\n", encoding="utf-8")
    if results.get("export") is not None:
        (path / "models" / "finetuned").mkdir(parents=True, exist_ok=True)
        (path / "models" / "finetuned" / "config.json").write_text("{}\n", encoding="utf-8")
        (path / "models" / "gguf").mkdir(parents=True, exist_ok=True)
        (path / "models" / "gguf" / "model-Q4_K_M.gguf").write_bytes(b"GGUF")
    return path


def complete_results() -> dict[str, dict[str, Any]]:
    return copy.deepcopy(
        {
            "prepare": PREPARE,
            "train": TRAIN,
            "evaluate": EVALUATE,
            "export": EXPORT,
            "deploy": DEPLOY,
            "benchmark": BENCHMARK,
        }
    )


def complete(path: Path) -> Path:
    return write_run(
        path,
        overrides=COMPLETE_OVERRIDES,
        env=ENV_GPU,
        results=complete_results(),
        metrics=loss_log(180, 5, 2.1843, 1.1027, TRAIN_EVALS),
        eval_rows=120,
    )


# ---- a CPU-only run of the embedded SmolLM2 -----------------------------------------------------

GPU_LESS_OVERRIDES = [
    "run_name=smollm2-cpu",
    "model.load_in_4bit=true",
    "train.max_steps=60",
    "benchmark.engine=llamacpp",
]
GPU_LESS_EVALS = {20: 1.9523, 40: 1.8871, 60: 1.9512}


def gpu_less_results() -> dict[str, dict[str, Any]]:
    r = complete_results()
    tr = r["train"]
    tr.update(
        backend="unsloth",
        backend_reason="Unsloth 2026.10.9 的 CPU 后端（transformers + PEFT，分块交叉熵）",
        precision="fp32",
        precision_reason="本次运行无GPU：CPU 上不做混合精度，使用 fp32",
        device="CPU (Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz)",
        quantization="none",
        quantization_reason="4-bit NF4 需要 CUDA GPU；本次运行无GPU，基础模型以 fp32 加载",
        base_model="embedded:smollm2-135m-instruct",
        params_total=136_957_248,
        params_trainable=2_442_240,
        global_step=60,
        train_loss_first=2.4107,
        train_loss_last=1.7342,
        eval_loss_first=1.9523,
        eval_loss_last=1.9512,
        checkpoints=[
            {"step": 40, "train_loss": 1.8016, "eval_loss": 1.8871, "path": "checkpoints/checkpoint-40"},
            {"step": 60, "train_loss": 1.7342, "eval_loss": 1.9512, "path": "checkpoints/checkpoint-60"},
        ],
        best_checkpoint={"step": 40, "eval_loss": 1.8871, "path": "checkpoints/checkpoint-40"},
        headline="60 steps on CPU, eval loss 1.9523 -> 1.9512",
        notes=["model.load_in_4bit=true 已忽略：4-bit NF4 需要 CUDA GPU"],
    )
    tr["hyperparameters"].update(optimizer="adamw_torch", max_steps=60, epochs=3.0)
    tr["resources"] = {
        "wall_time_s": 1187.5,
        "trained_tokens": 94_464,
        "tokens_per_s": 79.5,
        "peak_rss_bytes": 2_952_790_016,
        "peak_gpu_reserved_bytes": None,
        "peak_gpu_allocated_bytes": None,
        "gpu_reason": "no CUDA GPU on this machine",
        "gpu_name": None,
        "cpu_model": "Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz",
        "disk_bytes": 29_884_416,
    }
    r["export"]["merged"].update(size_bytes=269_060_096)
    r["export"]["gguf_f16"].update(size_bytes=270_894_976)
    r["export"]["gguf"].update(size_bytes=104_947_392)
    r["export"]["verification"].update(tensor_count=272, prompt="<|im_start|>user\n你好<|im_end|>\n")
    r["deploy"]["api_test"]["cases"] = r["deploy"]["api_test"]["cases"][:2]
    bm = r["benchmark"]
    bm.update(
        engine="llamacpp",
        model="models/gguf/model-Q4_K_M.gguf",
        model_size_bytes=104_947_392,
        memory={
            "vram_bytes": None,
            "vram_reason": "no GPU",
            "server_peak_rss_bytes": 412_090_368,
        },
        roofline={
            "bandwidth_bytes_per_s": 12_800_000_000,
            "bytes_per_token": 108_003_328,
            "memory_limit_tokens_per_s": 118.5,
            "limit_tokens_per_s": 118.5,
            "bound": "memory",
            "achieved_tokens_per_s": 83.1,
            "achieved_fraction": 0.7013,
        },
        headline="llamacpp: 83.1 tokens/s at concurrency 1",
    )
    bm["settings"].update(engine="llamacpp", engine_reason="benchmark.engine=llamacpp", threads=1)
    for row, tps in zip(bm["summary"], (83.1, 44.7, 22.9), strict=True):
        row["decode_tokens_per_s"] = tps
    return r


ENV_CPU = {
    **ENV_GPU,
    "cpu_model": "Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz",
    "cpu_count": 2,
    "memory_bytes": 25_769_803_776,
    "gpu": None,
}


def gpu_less(path: Path) -> Path:
    return write_run(
        path,
        overrides=GPU_LESS_OVERRIDES,
        env=ENV_CPU,
        results=gpu_less_results(),
        metrics=loss_log(60, 5, 2.4107, 1.7342, GPU_LESS_EVALS),
        eval_rows=120,
    )


NOT_DEPLOYED_REASON = "无法连接 Ollama 服务（http://127.0.0.1:11434）：Connection refused"


def ollama_not_deployed(path: Path) -> Path:
    r = gpu_less_results()
    r["deploy"] = {
        "status": "not_deployed",
        "host": "http://127.0.0.1:11434",
        "model_name": "llama2-finetuned",
        "reason": NOT_DEPLOYED_REASON,
        "deploy_command": "ollama create llama2-finetuned -f models/gguf/Modelfile",
        "api_test": {
            "status": "not_run",
            "reason": NOT_DEPLOYED_REASON,
            "cases": [],
            "matches_llamacpp": None,
        },
        "headline": "not deployed: Ollama not reachable",
        "notes": ["Ollama 不可达，跳过部署（deploy.required=false）"],
    }
    r["benchmark"]["notes"] = ["Ollama 不可用，改用 llama.cpp（llama_cpp.server）"]
    r["benchmark"]["settings"]["engine_reason"] = "engine=auto：Ollama 不可达，改用 llama.cpp"
    return write_run(
        path,
        overrides=[*GPU_LESS_OVERRIDES[:-1], "benchmark.engine=auto"],
        env=ENV_CPU,
        results=r,
        metrics=loss_log(60, 5, 2.4107, 1.7342, GPU_LESS_EVALS),
        eval_rows=120,
    )


def evaluation_missing(path: Path) -> Path:
    r: dict[str, Any] = complete_results()
    r["evaluate"] = None
    return write_run(
        path,
        overrides=COMPLETE_OVERRIDES,
        env=ENV_GPU,
        results=r,
        metrics=loss_log(180, 5, 2.1843, 1.1027, TRAIN_EVALS),
        eval_rows=None,
    )


# What evaluate.json carried before the report made its own wording (written by older versions):
# Chinese name_zh / definition per metric, measure per qualitative dimension and a verdict per
# example; prepare.json an augmentation description. Plus a metric key this report does not know.
OLD_NAME_ZH = "旧版指标名"
OLD_VERDICT = "旧版评估阶段写下的结论"
FOREIGN_METRIC = {
    "key": "bertscore_f1",
    "name_zh": "BERTScore F1（外部）",
    "before": 80.1,
    "after": 85.2,
    "reference": None,
    "improvement": 5.1,
    "improvement_kind": "points",
    "higher_is_better": True,
    "definition": "外部工具写下的定义",
}


def old_style_results() -> dict[str, dict[str, Any]]:
    r = complete_results()
    ev = r["evaluate"]
    for m in ev["metrics"]:
        m["name_zh"], m["definition"] = OLD_NAME_ZH, "旧版定义"
    ev["metrics"].append(copy.deepcopy(FOREIGN_METRIC))
    ev["metrics"].append({"key": "chrf", "before": 30.0, "after": 31.0, "improvement": 1.0})
    for q in ev["qualitative"].values():
        q["measure"] = "旧版度量说明"
    for e in ev["examples"]:
        e["verdict"] = OLD_VERDICT
    # Without its ROUGE-L only the file's own verdict is left to show.
    del ev["examples"][2]["rougeL_before"], ev["examples"][2]["rougeL_after"]
    r["prepare"]["augmented"][0]["description"] = "身份类训练样本重复 3 次（仅训练集）"
    return r


def old_style(path: Path) -> Path:
    """The complete run as older versions wrote it (see old_style_results)."""
    return write_run(
        path,
        overrides=COMPLETE_OVERRIDES,
        env=ENV_GPU,
        results=old_style_results(),
        metrics=loss_log(180, 5, 2.1843, 1.1027, TRAIN_EVALS),
        eval_rows=120,
    )


TRAIN_ERROR = "CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 79.15 GiB total capacity)"


def train_failed(path: Path) -> Path:
    """prepare completed, train failed part-way (its loss log ends in a cut-off line), nothing after."""
    r: dict[str, Any] = {"prepare": copy.deepcopy(PREPARE)}
    write_run(path, overrides=COMPLETE_OVERRIDES, env=ENV_GPU, results=r, metrics=None, eval_rows=None)
    _write_json(
        path / "train.json",
        {
            "stage": "train",
            "status": "failed",
            "config_fingerprint": "3f9a1c0d2b7e4a55",
            "started_at": STARTS["train"],
            "finished_at": "2025-11-28T09:20:41+08:00",
            "duration_s": 511.2,
            "error": TRAIN_ERROR + "\nSee logs/training.log",
            "traceback": "Traceback (most recent call last):\n  ...",
        },
    )
    rows = loss_log(180, 5, 2.1843, 1.1027, TRAIN_EVALS)[:14]
    (path / "logs").mkdir(parents=True, exist_ok=True)
    (path / "logs" / "metrics.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in rows) + '{"step": 70, "epo', encoding="utf-8"
    )
    return path


def nothing_run(path: Path) -> Path:
    """Only what run.py writes before the first stage: config.resolved.yaml and env.json."""
    return write_run(
        path, overrides=COMPLETE_OVERRIDES, env=ENV_GPU, results={}, metrics=None, eval_rows=None
    )


BUILDERS = {
    "complete": complete,
    "gpu_less": gpu_less,
    "ollama_not_deployed": ollama_not_deployed,
    "evaluation_missing": evaluation_missing,
    "train_failed": train_failed,
    "nothing_run": nothing_run,
    "old_style": old_style,
}

__all__ = [
    "BENCHMARK",
    "BUILDERS",
    "COMPLETE_OVERRIDES",
    "DEPLOY",
    "DURATIONS",
    "ENV_CPU",
    "ENV_GPU",
    "EVALUATE",
    "EXPORT",
    "FOREIGN_METRIC",
    "NOT_DEPLOYED_REASON",
    "OLD_NAME_ZH",
    "OLD_VERDICT",
    "PREPARE",
    "STAGES",
    "STARTS",
    "TRAIN",
    "TRAIN_EVALS",
    "complete",
    "complete_results",
    "gpu_less",
    "gpu_less_results",
    "loss_log",
    "old_style",
    "old_style_results",
    "write_run",
]
