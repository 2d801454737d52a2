"""Fake run folders for the tests, built from the typed results the stages write (trainer/results).

`complete_run()` is a finished GPU run (Llama-2-7B, QLoRA on an A100, deployed to Ollama, benchmarked
through it); `gpu_less_run()` the embedded SmolLM2 trained on a 2-core CPU, benchmarked with llama.cpp.
Each returns a `FakeRun`: the config overrides, env.json and one typed result per completed stage. A
test changes what it varies (a field, a stage missing or failed, a field `NotMeasured` with its
reason) and calls `write(path)`, which writes the folder as run.py and the stages leave it:
config.resolved.yaml (a `PipelineConfig`), env.json, prompt_format.json, each `<stage>.json` around
`to_dict()` of its result, the logs and files the results name.

Every value goes through the types, so a field name that does not exist fails: a constructor or
`dataclasses.replace` raises TypeError, and `write` refuses an attribute set on a result that is not
one of its fields. The builders below (`BUILDERS`) are the shapes the report handles.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from stages import by_name, reported
from trainer.config import load_config, to_yaml
from trainer.results import (
    ApiCase,
    ApiTest,
    Augmentation,
    BackendChoice,
    BenchFiles,
    BenchmarkResult,
    BenchMemory,
    BenchSettings,
    Checkpoint,
    DeployResult,
    EnvInfo,
    EvalExample,
    EvalMetric,
    EvalSettings,
    EvalSplitCap,
    EvaluateResult,
    ExportResult,
    GgufVerification,
    GpuInfo,
    Hyperparameters,
    IdentityCheck,
    IdentityProbe,
    InputFile,
    Leakage,
    LeakExample,
    LengthChars,
    LengthStats,
    LengthTokens,
    LevelSummary,
    LlamacppComparison,
    LoraSettings,
    ModelFile,
    NotMeasured,
    Percentiles,
    PrepareResult,
    PromptTokens,
    Qualitative,
    QualitativeMeasure,
    Record,
    Roofline,
    Splits,
    StageRecord,
    StageResult,
    StopCheck,
    TemplateCheck,
    TrainFiles,
    TrainResources,
    TrainResult,
    load_result,
)
from trainer.runfolder import write_json

FINGERPRINT = "3f9a1c0d2b7e4a55"
STARTS = {
    "prepare": "2025-11-28T09:12:05+08:00",
    "train": "2025-11-28T09:12:10+08:00",
    "evaluate": "2025-11-28T09:58:41+08:00",
    "export": "2025-11-28T10:05:34+08:00",
    "deploy": "2025-11-28T10:12:03+08:00",
    "benchmark": "2025-11-28T10:13:05+08:00",
}
DURATIONS = {
    "prepare": 4.8,
    "train": 2790.6,
    "evaluate": 412.3,
    "export": 388.9,
    "deploy": 61.7,
    "benchmark": 95.2,
}


@dataclass
class FakeRun:
    """A run folder before it is written: what run.py records, and each completed stage's result
    (None: the stage did not run, or ended as `stopped` says)."""

    overrides: list[str]
    env: EnvInfo
    prepare: PrepareResult | None = None
    train: TrainResult | None = None
    evaluate: EvaluateResult | None = None
    export: ExportResult | None = None
    deploy: DeployResult | None = None
    benchmark: BenchmarkResult | None = None
    # Stages that ended without a result: failed or interrupted, with their error.
    stopped: dict[str, StageRecord] = field(default_factory=dict)
    loss_log: list[dict[str, Any]] | None = None  # logs/metrics.jsonl rows (training writes it as it goes)
    loss_log_tail: str = ""  # appended as written, e.g. the cut-off last line of a crash
    eval_rows: int = 120  # rows of evaluation_results.csv when evaluate completed

    def result(self, stage: str) -> StageResult | None:
        return getattr(self, stage)

    def fail(self, stage: str, error: str, duration_s: float, status: str = "failed") -> None:
        """`stage` ended with `status` (failed | interrupted) and `error` after `duration_s`; no result."""
        setattr(self, stage, None)
        self.stopped[stage] = StageRecord(
            stage=stage,
            status=status,
            config_fingerprint=FINGERPRINT,
            started_at=STARTS[stage],
            finished_at=STARTS[stage],  # the report does not read it
            duration_s=duration_s,
            error=error,
            traceback="Traceback (most recent call last):\n  ...",
        )

    def write(self, path: Path) -> Path:
        """Write the run folder at `path` (created); returns `path`."""
        cfg = load_config(None, self.overrides)
        path.mkdir(parents=True, exist_ok=True)
        (path / "config.resolved.yaml").write_text(to_yaml(cfg), encoding="utf-8")
        write_json(path / "env.json", _checked(self.env).to_dict())
        write_json(path / "prompt_format.json", {"name": cfg.model.prompt_format})
        for stage in (s.name for s in reported()):
            result = self.result(stage)
            if result is not None:
                write_stage(path, stage, result)
            elif stage in self.stopped:
                write_json(path / f"{stage}.json", self.stopped[stage].to_dict())
        if self.loss_log is not None:
            lines = "".join(json.dumps(row) + "\n" for row in self.loss_log)
            _write(path / "logs" / "metrics.jsonl", lines + self.loss_log_tail)
        _write_named_files(self, path)
        return path


def write_stage(path: Path, stage: str, result: StageResult) -> None:
    """`<stage>.json` in the run folder `path`: the completed stage's record around `result`, as the
    runner writes it (also for tests that build the rest of a run folder themselves)."""
    record = StageRecord(
        stage=stage,
        status="completed",
        config_fingerprint=FINGERPRINT,
        started_at=STARTS[stage],
        finished_at=STARTS[stage],  # the report does not read it
        duration_s=DURATIONS[stage],
        results=_checked(result),
    )
    write_json(Path(path) / f"{stage}.json", record.to_dict())


def _checked(record: Record) -> Record:
    """`record`, after checking that no attribute set on it (or on a record inside it) is not one of
    its fields: a plain attribute assignment with a misspelt name would otherwise vanish unwritten."""
    names = {f.name for f in dataclasses.fields(record)}
    stray = sorted(set(vars(record)) - names)
    if stray:
        raise TypeError(f"{type(record).__name__} has no field {', '.join(stray)}")
    for name in names:
        value = getattr(record, name)
        if isinstance(value, dict):
            value = list(value.values())
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, Record):
                _checked(item)
    return record


def _write(path: Path, text: str | bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")


def _write_named_files(run: FakeRun, path: Path) -> None:
    """The files the completed stages name, small stand-ins for the real ones (the report lists them)."""
    if run.train is not None and isinstance(run.train.files, TrainFiles):
        files = run.train.files
        _write(path / str(files.log), "step 5 loss 2.1843\n")
        for folder in (files.adapter, files.tensorboard):
            _write(path / str(folder) / "README", "fixture\n")
    if run.evaluate is not None and isinstance(run.evaluate.csv, str):
        _eval_csv(path / run.evaluate.csv, run.eval_rows)
    if run.export is not None:
        _write(path / str(run.export.merged.path) / "config.json", "{}\n")
        _write(path / str(run.export.gguf.path), b"GGUF")
    if run.benchmark is not None and isinstance(run.benchmark.files.csv, str):
        _write(path / run.benchmark.files.csv, "concurrency,index,ttft_ms,e2e_ms\n")


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


def edit(path: Path, stage: str, change: Callable[[Any], None]) -> None:
    """Change the typed result of `<stage>.json` in a written run folder: read through its type,
    `change(result)`, written back with `to_dict()` (checked as `write` checks)."""
    record = load_result(path, stage, by_name(stage).result)
    assert record is not None and isinstance(record.results, StageResult), stage
    change(record.results)
    _checked(record.results)
    write_json(path / f"{stage}.json", record.to_dict())


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


# ---- the complete GPU run -------------------------------------------------------------------------

COMPLETE_OVERRIDES = [
    "run_name=llama2-zh-qlora",
    "model.name=NousResearch/Llama-2-7b-chat-hf",
    "model.name_4bit=unsloth/llama-2-7b-chat-bnb-4bit",
    "model.load_in_4bit=true",
    "model.prompt_format=llama2",
    "train.optimizer=adamw_8bit",
    "benchmark.engine=ollama",
]
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
TRAIN_EVALS = {50: 1.412, 100: 1.298, 150: 1.305, 180: 1.321}


def env_gpu() -> EnvInfo:
    return EnvInfo(
        created_at="2025-11-28T09:12:04+08:00",
        git_commit="5c3d55c9e0a4b1f7a2d6c8e3b9f0a1d2c3e4f5a6",
        python="3.11.2",
        platform="Linux-6.1.0-27-amd64-x86_64-with-glibc2.36",
        cpu_model="AMD EPYC 7763 64-Core Processor",
        cpu_count=32,
        memory_bytes=270_582_939_648,
        gpu=GpuInfo(name="NVIDIA A100-SXM4-80GB", count=1, memory_bytes=85_899_345_920, capability="8.0"),
        libraries={
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
    )


def _prepare() -> PrepareResult:
    return PrepareResult(
        dataset_name="zh_general + zh_identity（中文通用问答与助手身份认知）",
        inputs=[
            InputFile(path="data/sample/zh_general.jsonl", format="jsonl", records=1180),
            InputFile(path="data/sample/zh_identity.jsonl", format="jsonl", records=60),
        ],
        records_in=1240,
        records_kept=1198,
        splits=Splits(train=958, val=120, test=120),
        dropped={
            "invalid_record": 3,
            "empty_instruction": 2,
            "empty_output": 4,
            "duplicate": 29,
            "too_long": 4,
        },
        truncated=0,
        augmented=[Augmentation(method="identity_oversample", factor=3, records_added=96)],
        normalized=87,
        identity_records=Splits(train=48, val=6, test=6),
        length_chars=LengthChars(
            prompt=LengthStats(min=4, mean=21.6, p50=18, p95=52, max=187),
            output=LengthStats(min=2, mean=118.3, p50=96, p95=311, max=842),
        ),
        length_tokens=LengthTokens(total=LengthStats(min=38, mean=164.2, p50=141, p95=402, max=510)),
        max_length=512,
        overlong="drop",
        prompt_format="llama2",
        files={
            "train": "data/train.jsonl",
            "val": "data/val.jsonl",
            "test": "data/test.jsonl",
            "rejected": "data/rejected.jsonl",
            "leakage": "data/leakage.jsonl",
        },
        eval_split_cap=EvalSplitCap(
            max_share=0.1, min_items=3, val_requested=120, test_requested=120, capped=False
        ),
        min_useful_train=100,
        leakage=Leakage(
            mode="remove",
            method="character 2-gram Jaccard",
            threshold=0.7,
            checked=Splits(test=122, val=121),
            found=Splits(test=2, val=1),
            exact=1,
            near=2,
            moved_to_train=3,
            refilled=Splits(test=2, val=1),
            examples=[
                LeakExample(
                    split="test",
                    id="zh_general-88-1a2b3c4d5e",
                    question="什么是机器学习？",
                    train_id="zh_general-12-5e4d3c2b1a",
                    train_question="请问，什么是机器学习",
                    similarity=0.778,
                    exact=False,
                )
            ],
        ),
        headline="1198/1240 records kept: 958 train / 120 val / 120 test",
        notes=[],
    )


def _train() -> TrainResult:
    return TrainResult(
        backend="unsloth",
        backend_reason="Unsloth 2026.10.9 导入成功（CUDA 内核）",
        backend_choice=BackendChoice(backend="unsloth", reason="cuda_default", probe=NotMeasured()),
        precision="bf16",
        precision_reason="GPU 支持 bf16（计算能力 8.0）",
        device="NVIDIA A100-SXM4-80GB",
        quantization="4-bit NF4",
        quantization_reason="model.load_in_4bit=true：加载预量化权重 unsloth/llama-2-7b-chat-bnb-4bit",
        base_model="NousResearch/Llama-2-7b-chat-hf",
        params_total=6_758_404_096,
        params_trainable=19_988_480,
        lora=LoraSettings(r=8, alpha=16, dropout=0.05, target_modules=list(TARGETS)),
        hyperparameters=Hyperparameters(
            epochs=3.0,
            max_steps=-1,
            per_device_batch_size=4,
            gradient_accumulation_steps=4,
            effective_batch_size=16,
            learning_rate=0.0002,
            warmup_steps=100,
            lr_scheduler="linear",
            optimizer="adamw_8bit",
            max_length=512,
            world_size=1,
            seed=42,
        ),
        global_step=180,
        train_loss_first=2.1843,
        train_loss_last=1.1027,
        eval_loss_first=1.412,
        eval_loss_last=1.321,
        checkpoints=[
            Checkpoint(step=50, train_loss=1.6021, eval_loss=1.412, path="checkpoints/checkpoint-50"),
            Checkpoint(step=100, train_loss=1.3105, eval_loss=1.298, path="checkpoints/checkpoint-100"),
            Checkpoint(step=150, train_loss=1.1688, eval_loss=1.305, path="checkpoints/checkpoint-150"),
        ],
        best_checkpoint=Checkpoint(step=100, eval_loss=1.298, path="checkpoints/checkpoint-100"),
        resumed_from=NotMeasured(),  # trained from scratch
        resources=TrainResources(
            wall_time_s=2712.4,
            trained_tokens=472_320,
            tokens_per_s=174.1,
            peak_rss_bytes=9_663_676_416,
            peak_gpu_reserved_bytes=7_851_737_088,
            peak_gpu_allocated_bytes=6_764_573_696,
            gpu_name="NVIDIA A100-SXM4-80GB",
            cpu_model="AMD EPYC 7763 64-Core Processor",
            disk_bytes=245_366_784,
        ),
        utilisation=NotMeasured("four_bit"),
        files=TrainFiles(
            adapter="adapter", metrics="logs/metrics.jsonl", log="logs/training.log", tensorboard="runs"
        ),
        headline="180 steps, eval loss 1.4120 -> 1.3210, 45.2 min",
        notes=[],
    )


CORPUS_LEVEL = "corpus-level metric: computed once over all answers, no per-item pairs to resample"


def _metric(
    key: str,
    before: float,
    after: float,
    improvement: float,
    kind: str,
    higher: bool | None,
    reference: float | None = None,
    ci: tuple[float, float, str] | None = None,
) -> EvalMetric:
    """One evaluate metric; `ci` = (low, high, significance) of the change over the 120 paired test
    items, None for a corpus-level metric (no interval, and why)."""
    if ci is None:
        interval: dict[str, Any] = dict.fromkeys(
            ("change_ci95_low", "change_ci95_high", "significance", "paired_items"), NotMeasured(CORPUS_LEVEL)
        )
    else:
        interval = {
            "change_ci95_low": ci[0],
            "change_ci95_high": ci[1],
            "significance": ci[2],
            "paired_items": 120,
        }
    return EvalMetric(
        key=key,
        before=before,
        after=after,
        reference=NotMeasured() if reference is None else reference,
        improvement=improvement,
        improvement_kind=kind,
        higher_is_better=NotMeasured() if higher is None else higher,
        **interval,
    )


def _evaluate() -> EvaluateResult:
    return EvaluateResult(
        settings=EvalSettings(
            max_new_tokens=128,
            do_sample=False,
            temperature=0.7,
            top_p=0.9,
            seed=42,
            samples=120,
            batch_size=8,
            bootstrap_resamples=2000,
            confidence=0.95,
            leaked_excluded=0,
        ),
        metrics=[
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
                118.3,
                (-48.0, -32.1, "decreased"),
            ),
            _metric("loss", 1.8734, 1.3102, 30.06, "relative_pct", False, ci=(24.1, 35.9, "improved")),
            _metric("perplexity", 6.51, 3.71, 43.01, "relative_pct", False, ci=(35.2, 50.3, "improved")),
            _metric("distinct2", 71.2, 78.5, 7.3, "points", True),
            _metric("hit_max_tokens_pct", 34.17, 5.83, 28.34, "points", False, ci=(19.17, 37.5, "improved")),
            _metric("identity_pct", 0.0, 83.33, 83.33, "points", True, ci=(50.0, 100.0, "improved")),
            _metric("identity_probe_pct", 2.94, 88.24, 85.29, "points", True, ci=(73.53, 97.06, "improved")),
        ],
        examples=[
            EvalExample(
                id="test-0042",
                kind="largest_gain",
                instruction="请解释什么是梯度下降。",
                input="",
                reference="梯度下降是一种优化算法：沿损失函数梯度的反方向迭代更新参数，使损失逐步减小。学习率决定每一步的步长。",
                before="Gradient descent is an optimization algorithm used to minimize a function by iteratively "
                "moving in the direction of steepest descent...",
                after="梯度下降是一种优化算法。它计算损失函数对参数的梯度，\n然后沿梯度的反方向更新参数，"
                "每一步的大小由学习率控制，直到损失收敛。",
                rougeL_before=2.1,
                rougeL_after=61.8,
            ),
            EvalExample(
                id="test-0007",
                kind="regression",
                instruction="把下面的句子翻译成英文。",
                input="今天天气很好，我们去公园散步吧。",
                reference="The weather is nice today. Let's go for a walk in the park.",
                before="The weather is very nice today, let's go for a walk in the park.",
                after="今天天气很好，我们去公园散步吧。翻译：The weather is good today.",
                rougeL_before=78.4,
                rougeL_after=41.2,
            ),
            EvalExample(
                id="test-0091",
                kind="random",
                instruction="你是谁？",
                input="",
                reference="我是小知，由本地微调团队训练的中文问答助手。",
                before="I am an AI assistant created by Meta. How can I help you today?",
                after="我是小知，一个由本地微调团队训练的中文问答助手，很高兴为你服务。",
                rougeL_before=0.0,
                rougeL_after=72.5,
            ),
        ],
        qualitative=Qualitative(
            accuracy=QualitativeMeasure(before=19.35, after=38.92, unit="", higher_is_better=True),
            relevance=QualitativeMeasure(before=42.7, after=66.1, unit="%", higher_is_better=True),
            fluency=QualitativeMeasure(
                before=6.51,
                after=3.71,
                unit="",
                higher_is_better=False,
                distinct2_before=71.2,
                distinct2_after=78.5,
            ),
            professionalism=QualitativeMeasure(before=31.4, after=52.6, unit="%", higher_is_better=True),
        ),
        identity=IdentityCheck(questions=6, before_hits=0, after_hits=5),
        identity_probe=IdentityProbe(
            file="data/eval/identity_probe.jsonl",
            questions=34,
            asks_author=9,
            excluded_trained=0,
            overlaps=[],
            before_hits=1,
            after_hits=30,
            max_new_tokens=48,
        ),
        failures=[],
        judge=NotMeasured(),
        csv="evaluation_results.csv",
        headline="ROUGE-L 19.35 -> 38.92, BLEU-4 8.21 -> 21.37 (120 samples)",
        notes=[],
    )


def _export() -> ExportResult:
    return ExportResult(
        merged=ModelFile(path="models/finetuned", size_bytes=13_476_839_424, dtype="float16"),
        gguf_f16=ModelFile(path="models/gguf/model-f16.gguf", size_bytes=13_478_104_576),
        gguf=ModelFile(
            path="models/gguf/model-Q4_K_M.gguf",
            size_bytes=4_081_004_224,
            quantization="Q4_K_M",
            file_type="MOSTLY_Q4_K_M",
        ),
        verification=GgufVerification(
            architecture="llama",
            file_type="MOSTLY_Q4_K_M",
            tensor_count=291,
            prompt="[INST] <<SYS>>\n你是小知，一个乐于助人的中文问答助手。\n<</SYS>>\n\n你好 [/INST]",
            generated_text="你好！我是小知，有什么可以帮你的吗？",
        ),
        modelfile="models/gguf/Modelfile",
        llama_cpp_python="0.3.16",
        headline="Q4_K_M GGUF 3.80 GiB",
        notes=[],
    )


def _api_case(case_id: str, prompt: str, answer: str, eval_count: int, tps: float, ttft: float) -> ApiCase:
    return ApiCase(
        id=case_id,
        prompt=prompt,
        answer=answer,
        done_reason="stop",
        eval_count=eval_count,
        decode_tokens_per_s=tps,
        ttft_ms=ttft,
        ok=True,
        problems=[],
        observations=[],
        error=NotMeasured(),
        prompt_tokens=PromptTokens(
            status="verified",
            expected_tokens=40,
            ollama_tokens=40,
            matching_tokens=40,
            first_difference=NotMeasured(),
        ),
    )


def _deploy() -> DeployResult:
    return DeployResult(
        status="deployed",
        host="http://127.0.0.1:11434",
        model_name="llama2-finetuned",
        reason=NotMeasured(),
        deploy_command="ollama create llama2-finetuned -f models/gguf/Modelfile",
        api_test=ApiTest(
            status="passed",
            cases=[
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
            failures=[],
            template=TemplateCheck(
                status="verified",
                cases_checked=3,
                matching_tokens=120,
                expected_tokens=120,
                case=1,
                request="POST /api/generate",
                reason=NotMeasured(),
            ),
            stops=StopCheck(status="passed", stopped=3, at_limit=0, at_limit_cases=[]),
            matches_llamacpp=False,
            llamacpp=LlamacppComparison(
                prompt="你是谁？",
                ollama_answer="我是小知，由本地微调团队训练的中文问答助手。",
                llamacpp_answer="我是小知，由本地微调团队训练的问答助手。",
                matches_llamacpp=False,
                prompt_tokens_equal=True,
                agreeing_tokens=12,
                ollama_answer_tokens=21,
                llamacpp_answer_tokens=19,
                parted_ollama="中文问答助手。",
                parted_llamacpp="问答助手。",
                interpretation="numeric_divergence",
                reason=NotMeasured(),
            ),
        ),
        headline="deployed as llama2-finetuned, API test passed",
        notes=[],
    )


BENCH_LEVELS = {
    # concurrency: (ttft p50, e2e p50, decode tokens/s per request, aggregate tokens/s, requests/s)
    1: (46.9, 545.2, 128.4, 117.4, 1.83),
    2: (58.4, 641.7, 110.6, 199.5, 3.12),
    4: (95.1, 868.3, 84.2, 294.8, 4.61),
}


def _percentiles(p50: float) -> Percentiles:
    return Percentiles(mean=round(p50 * 1.02, 1), p50=p50, p90=round(p50 * 1.09, 1), p99=round(p50 * 1.16, 1))


def _bench_summary() -> list[LevelSummary]:
    summary = []
    for level, (ttft, e2e, tps, agg, rps) in BENCH_LEVELS.items():
        tpot = round((e2e - ttft) / 63, 2)
        summary.append(
            LevelSummary(
                concurrency=level,
                requests=8,
                failures=0,
                ttft_ms=_percentiles(ttft),
                tpot_ms=_percentiles(tpot),
                itl_ms=_percentiles(tpot),
                e2e_ms=_percentiles(e2e),
                decode_tokens_per_s=tps,
                aggregate_tokens_per_s=agg,
                requests_per_s=rps,
            )
        )
    return summary


def _bench_samples() -> list[dict[str, Any]]:
    """One sample per request as the benchmark measures it (a plain object in the contract)."""
    samples = []
    for level, (ttft, e2e, tps, _, _) in BENCH_LEVELS.items():
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
    return samples


def _benchmark() -> BenchmarkResult:
    return BenchmarkResult(
        engine="ollama",
        model="llama2-finetuned",
        model_size_bytes=4_081_004_224,
        quantization="Q4_K_M",
        settings=BenchSettings(
            engine="ollama",
            engine_reason="benchmark.engine=ollama",
            concurrency=[1, 2, 4],
            num_requests=8,
            repetitions=1,
            max_tokens=64,
            num_ctx=2048,
            threads=0,
            warmup_requests=1,
            request_timeout_s=120.0,
            temperature=0.0,
            seed=0,
            prompts={"source": "benchmarks/prompts_zh.jsonl", "count": 24},
        ),
        summary=_bench_summary(),
        memory=BenchMemory(vram_bytes=5_368_709_120, server_peak_rss_bytes=1_181_116_006),
        roofline=Roofline(
            bandwidth_bytes_per_s=2_039_000_000_000,
            bytes_per_token=4_199_000_000,
            memory_limit_tokens_per_s=485.6,
            peak_flops_per_s=3.12e14,
            params=6_738_415_616,
            compute_limit_tokens_per_s=23150.5,
            limit_tokens_per_s=485.6,
            bound="memory",
            achieved_tokens_per_s=128.4,
            achieved_fraction=0.2644,
        ),
        samples=_bench_samples(),
        requests_total=24,
        failures_total=0,
        partial=False,
        partial_reason=NotMeasured(),
        files=BenchFiles(csv="benchmark_requests.csv", charts=[]),
        headline="ollama: 128.4 tokens/s at concurrency 1",
        notes=[],
    )


def complete_run() -> FakeRun:
    """The finished GPU run: every stage completed (fresh objects on every call)."""
    return FakeRun(
        overrides=list(COMPLETE_OVERRIDES),
        env=env_gpu(),
        prepare=_prepare(),
        train=_train(),
        evaluate=_evaluate(),
        export=_export(),
        deploy=_deploy(),
        benchmark=_benchmark(),
        loss_log=loss_log(180, 5, 2.1843, 1.1027, TRAIN_EVALS),
    )


# ---- a CPU-only run of the embedded SmolLM2 -------------------------------------------------------

GPU_LESS_OVERRIDES = [
    "run_name=smollm2-cpu",
    "model.load_in_4bit=true",
    "train.max_steps=60",
    "benchmark.engine=llamacpp",
]
GPU_LESS_EVALS = {20: 1.9523, 40: 1.8871, 60: 1.9512}
CPU_MODEL = "Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz"


def env_cpu() -> EnvInfo:
    return replace(
        env_gpu(), cpu_model=CPU_MODEL, cpu_count=2, memory_bytes=25_769_803_776, gpu=NotMeasured()
    )


def gpu_less_run() -> FakeRun:
    """The complete run's stages as the embedded SmolLM2 on a 2-core CPU without a GPU leaves them."""
    run = complete_run()
    run.overrides = list(GPU_LESS_OVERRIDES)
    run.env = env_cpu()
    run.loss_log = loss_log(60, 5, 2.4107, 1.7342, GPU_LESS_EVALS)
    tr = run.train
    assert tr is not None
    no_gpu = NotMeasured("no CUDA GPU on this machine")
    run.train = replace(
        tr,
        backend="unsloth",
        backend_reason="Unsloth 2026.10.9 的 CPU 后端（transformers + PEFT，分块交叉熵）",
        precision="fp32",
        precision_reason="本次运行无GPU：CPU 上不做混合精度，使用 fp32",
        device=f"CPU ({CPU_MODEL})",
        quantization="none",
        quantization_reason="4-bit NF4 需要 CUDA GPU；本次运行无GPU，基础模型以 fp32 加载",
        base_model="embedded:smollm2-135m-instruct",
        params_total=136_957_248,
        params_trainable=2_442_240,
        hyperparameters=replace(tr.hyperparameters, optimizer="adamw_torch", max_steps=60, epochs=3.0),
        global_step=60,
        train_loss_first=2.4107,
        train_loss_last=1.7342,
        eval_loss_first=1.9523,
        eval_loss_last=1.9512,
        checkpoints=[
            Checkpoint(step=40, train_loss=1.8016, eval_loss=1.8871, path="checkpoints/checkpoint-40"),
            Checkpoint(step=60, train_loss=1.7342, eval_loss=1.9512, path="checkpoints/checkpoint-60"),
        ],
        best_checkpoint=Checkpoint(step=40, eval_loss=1.8871, path="checkpoints/checkpoint-40"),
        resources=TrainResources(
            wall_time_s=1187.5,
            trained_tokens=94_464,
            tokens_per_s=79.5,
            peak_rss_bytes=2_952_790_016,
            peak_gpu_reserved_bytes=no_gpu,
            peak_gpu_allocated_bytes=no_gpu,
            gpu_reason=no_gpu.why,
            gpu_name=no_gpu,
            cpu_model=CPU_MODEL,
            disk_bytes=29_884_416,
        ),
        headline="60 steps on CPU, eval loss 1.9523 -> 1.9512",
        notes=["model.load_in_4bit=true 已忽略：4-bit NF4 需要 CUDA GPU"],
    )
    ex = run.export
    assert ex is not None
    ex.merged = replace(ex.merged, size_bytes=269_060_096)
    ex.gguf_f16 = replace(ex.gguf_f16, size_bytes=270_894_976)
    ex.gguf = replace(ex.gguf, size_bytes=104_947_392)
    ex.verification = replace(ex.verification, tensor_count=272, prompt="<|im_start|>user\n你好<|im_end|>\n")
    assert run.deploy is not None
    run.deploy.api_test.cases = run.deploy.api_test.cases[:2]
    bm = run.benchmark
    assert bm is not None
    run.benchmark = replace(
        bm,
        engine="llamacpp",
        model="models/gguf/model-Q4_K_M.gguf",
        model_size_bytes=104_947_392,
        settings=replace(
            bm.settings, engine="llamacpp", engine_reason="benchmark.engine=llamacpp", threads=1
        ),
        summary=[
            replace(row, decode_tokens_per_s=tps)
            for row, tps in zip(bm.summary, (83.1, 44.7, 22.9), strict=True)
        ],
        memory=BenchMemory(
            vram_bytes=NotMeasured("no GPU"), vram_reason="no GPU", server_peak_rss_bytes=412_090_368
        ),
        roofline=Roofline(
            bandwidth_bytes_per_s=12_800_000_000,
            bytes_per_token=108_003_328,
            memory_limit_tokens_per_s=118.5,
            limit_tokens_per_s=118.5,
            bound="memory",
            achieved_tokens_per_s=83.1,
            achieved_fraction=0.7013,
        ),
        headline="llamacpp: 83.1 tokens/s at concurrency 1",
    )
    return run


# ---- the shapes derived from them -----------------------------------------------------------------

NOT_DEPLOYED_REASON = "无法连接 Ollama 服务（http://127.0.0.1:11434）：Connection refused"


def not_deployed_run() -> FakeRun:
    """The CPU run with Ollama not reachable: not deployed, and the benchmark fell back to llama.cpp."""
    run = gpu_less_run()
    run.overrides = [*GPU_LESS_OVERRIDES[:-1], "benchmark.engine=auto"]
    run.deploy = DeployResult(
        status="not_deployed",
        host="http://127.0.0.1:11434",
        model_name="llama2-finetuned",
        reason=NOT_DEPLOYED_REASON,
        deploy_command="ollama create llama2-finetuned -f models/gguf/Modelfile",
        api_test=ApiTest(
            status="not_run", reason=NOT_DEPLOYED_REASON, cases=[], matches_llamacpp=NotMeasured()
        ),
        headline="not deployed: Ollama not reachable",
        notes=["Ollama 不可达，跳过部署（deploy.required=false）"],
    )
    bm = run.benchmark
    assert bm is not None
    bm.notes = ["Ollama 不可用，改用 llama.cpp（llama_cpp.server）"]
    bm.settings.engine_reason = "engine=auto：Ollama 不可达，改用 llama.cpp"
    return run


def evaluation_missing_run() -> FakeRun:
    run = complete_run()
    run.evaluate = None
    return run


# What evaluate.json carried before the report made its own wording (written by older versions):
# Chinese name_zh / definition per metric, measure per qualitative dimension and a verdict per
# example; prepare.json an augmentation description. Plus metric keys this report does not know.
OLD_NAME_ZH = "旧版指标名"
OLD_VERDICT = "旧版评估阶段写下的结论"


def foreign_metric() -> EvalMetric:
    return EvalMetric(
        key="bertscore_f1",
        name_zh="BERTScore F1（外部）",
        before=80.1,
        after=85.2,
        reference=NotMeasured(),
        improvement=5.1,
        improvement_kind="points",
        higher_is_better=True,
        definition="外部工具写下的定义",
    )


def old_style_run() -> FakeRun:
    """The complete run as older versions wrote it (see OLD_NAME_ZH)."""
    run = complete_run()
    ev, pr = run.evaluate, run.prepare
    assert ev is not None and pr is not None
    for m in ev.metrics:
        m.name_zh, m.definition = OLD_NAME_ZH, "旧版定义"
    ev.metrics.append(foreign_metric())
    ev.metrics.append(EvalMetric(key="chrf", before=30.0, after=31.0, improvement=1.0))
    q = ev.qualitative
    for measure in (q.accuracy, q.relevance, q.fluency, q.professionalism):
        measure.measure = "旧版度量说明"
    for example in ev.examples:
        example.verdict = OLD_VERDICT
    # Without its ROUGE-L only the file's own verdict is left to show.
    ev.examples[2].rougeL_before = ev.examples[2].rougeL_after = NotMeasured(absent=True)
    pr.augmented[0].description = "身份类训练样本重复 3 次（仅训练集）"
    return run


TRAIN_ERROR = "CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 79.15 GiB total capacity)"


def train_failed_run() -> FakeRun:
    """prepare completed, train failed part-way (its loss log ends in a cut-off line), nothing after."""
    run = FakeRun(overrides=list(COMPLETE_OVERRIDES), env=env_gpu(), prepare=_prepare())
    run.fail("train", TRAIN_ERROR + "\nSee logs/training.log", duration_s=511.2)
    run.loss_log = loss_log(180, 5, 2.1843, 1.1027, TRAIN_EVALS)[:14]
    run.loss_log_tail = '{"step": 70, "epo'
    return run


def empty_run() -> FakeRun:
    """Only what run.py writes before the first stage: config.resolved.yaml and env.json."""
    return FakeRun(overrides=list(COMPLETE_OVERRIDES), env=env_gpu())


RUNS: dict[str, Callable[[], FakeRun]] = {
    "complete": complete_run,
    "gpu_less": gpu_less_run,
    "ollama_not_deployed": not_deployed_run,
    "evaluation_missing": evaluation_missing_run,
    "train_failed": train_failed_run,
    "nothing_run": empty_run,
    "old_style": old_style_run,
}


def build(name: str, path: Path) -> Path:
    """Write the fake run `name` (a key of RUNS) at `path`."""
    return RUNS[name]().write(path)
