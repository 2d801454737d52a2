"""Typed results of the training half of the pipeline: prepare.json, train.json, evaluate.json.

Part of the run folder contract (`trainer.results`, docs/ARTIFACTS.md); stdlib only, reads and writes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from trainer.results.base import ABSENT, NotMeasured, OptNum, OptStr, Reason, Record, StageResult

# ---- prepare.json ---------------------------------------------------------------------------------


@dataclass(kw_only=True)
class InputFile(Record):
    path: OptStr = ABSENT
    format: OptStr = ABSENT
    records: OptNum = ABSENT


@dataclass(kw_only=True)
class Splits(Record):
    """Records per split, in the order prepare writes them (test and val are cut first)."""

    test: OptNum = ABSENT
    val: OptNum = ABSENT
    train: OptNum = ABSENT


@dataclass(kw_only=True)
class DropWarning(Record):
    """Set when more than 20 % of the records were dropped; `fix` and `message` are English."""

    dropped: OptNum = ABSENT
    records_in: OptNum = ABSENT
    share_pct: OptNum = ABSENT
    main_cause: OptStr = ABSENT
    main_cause_count: OptNum = ABSENT
    fix: OptStr = ABSENT
    message: OptStr = ABSENT


@dataclass(kw_only=True)
class Augmentation(Record):
    method: OptStr = ABSENT
    factor: OptNum = ABSENT
    records_added: OptNum = ABSENT
    # written by older versions; not written now; the report uses its own wording
    description: OptStr = ABSENT


@dataclass(kw_only=True)
class LengthStats(Record):
    min: OptNum = ABSENT
    mean: OptNum = ABSENT
    p50: OptNum = ABSENT
    p95: OptNum = ABSENT
    max: OptNum = ABSENT


@dataclass(kw_only=True)
class LengthChars(Record):
    prompt: LengthStats | NotMeasured = ABSENT
    output: LengthStats | NotMeasured = ABSENT


@dataclass(kw_only=True)
class LengthTokens(Record):
    total: LengthStats | NotMeasured = ABSENT


@dataclass(kw_only=True)
class EvalSplitCap(Record):
    """How big val and test were asked to be and the cap that applies (data.max_eval_share)."""

    max_share: OptNum = ABSENT  # each of val and test at most this share of the kept records
    min_items: OptNum = ABSENT  # ... but at least this many
    val_requested: OptNum = ABSENT  # records data.val_size asked for
    test_requested: OptNum = ABSENT
    capped: bool | NotMeasured = ABSENT  # true: val or test got fewer than requested


@dataclass(kw_only=True)
class LeakExample(Record):
    split: OptStr = ABSENT  # test | val
    id: OptStr = ABSENT
    question: OptStr = ABSENT
    train_id: OptStr = ABSENT
    train_question: OptStr = ABSENT
    similarity: OptNum = ABSENT  # Jaccard of the character n-gram sets, 0-1
    exact: bool | NotMeasured = ABSENT  # the same question after normalisation


@dataclass(kw_only=True)
class Leakage(Record):
    """Test/val questions that also occur in train, exactly or nearly (trainer/near_duplicates.py)."""

    mode: OptStr = ABSENT  # remove (moved to train) | flag (kept, marked `leak`, left out of metrics)
    method: OptStr = ABSENT  # e.g. "character 2-gram Jaccard"
    threshold: OptNum = ABSENT
    checked: Splits | NotMeasured = ABSENT  # questions compared, per evaluation split
    found: Splits | NotMeasured = ABSENT  # of them, copies of a training question
    exact: OptNum = ABSENT
    near: OptNum = ABSENT
    moved_to_train: OptNum = ABSENT  # mode remove
    refilled: Splits | NotMeasured = ABSENT  # mode remove: train records without a copy moved in instead
    examples: list[LeakExample] | NotMeasured = ABSENT  # the first few pairs (all: data/leakage.jsonl)


@dataclass(kw_only=True)
class PrepareResult(StageResult):
    dataset_name: OptStr = ABSENT
    inputs: list[InputFile] | NotMeasured = ABSENT
    records_in: OptNum = ABSENT
    records_kept: OptNum = ABSENT
    splits: Splits | NotMeasured = ABSENT
    dropped: dict[str, int] | NotMeasured = ABSENT  # reason -> count
    truncated: OptNum = ABSENT
    augmented: list[Augmentation] | NotMeasured = ABSENT
    normalized: OptNum = ABSENT
    drop_warning: DropWarning | NotMeasured = ABSENT
    warnings: list[str] | NotMeasured = ABSENT
    record_formats: dict[str, int] | NotMeasured = ABSENT
    multi_turn_records: OptNum = ABSENT
    identity_records: Splits | NotMeasured = ABSENT
    length_chars: LengthChars | NotMeasured = ABSENT
    length_tokens: LengthTokens | NotMeasured = ABSENT
    max_length: OptNum = ABSENT
    overlong: OptStr = ABSENT
    prompt_format: OptStr = ABSENT
    files: dict[str, str] | NotMeasured = ABSENT
    eval_split_cap: EvalSplitCap | NotMeasured = ABSENT
    min_useful_train: OptNum = ABSENT  # fewer train records than this: a warning with the fix
    leakage: Leakage | NotMeasured = ABSENT
    trailing_keys: ClassVar[tuple[str, ...]] = ("headline", "notes", "note_codes", "warnings")


# ---- train.json -----------------------------------------------------------------------------------


@dataclass(kw_only=True)
class LoraSettings(Record):
    r: OptNum = ABSENT
    alpha: OptNum = ABSENT
    dropout: OptNum = ABSENT
    target_modules: list[str] | NotMeasured = ABSENT


@dataclass(kw_only=True)
class Hyperparameters(Record):
    epochs: OptNum = ABSENT
    max_steps: OptNum = ABSENT
    per_device_batch_size: OptNum = ABSENT
    gradient_accumulation_steps: OptNum = ABSENT
    effective_batch_size: OptNum = ABSENT
    learning_rate: OptNum = ABSENT
    warmup_steps: OptNum = ABSENT
    lr_scheduler: OptStr = ABSENT
    optimizer: OptStr = ABSENT
    max_length: OptNum = ABSENT
    world_size: OptNum = ABSENT
    seed: OptNum = ABSENT


@dataclass(kw_only=True)
class Checkpoint(Record):
    step: OptNum = ABSENT
    train_loss: OptNum = ABSENT
    eval_loss: OptNum = ABSENT
    path: OptStr = ABSENT


@dataclass(kw_only=True)
class TrainResources(Record):
    wall_time_s: OptNum = ABSENT
    trained_tokens: OptNum = ABSENT
    tokens_per_s: OptNum = ABSENT
    s_per_step: OptNum = ABSENT
    peak_rss_bytes: OptNum = ABSENT
    peak_gpu_reserved_bytes: OptNum = field(
        default=ABSENT, metadata={"reason_key": "gpu_reason"}
    )  # null on CPU
    peak_gpu_allocated_bytes: OptNum = field(default=ABSENT, metadata={"reason_key": "gpu_reason"})
    gpu_reason: OptStr = ABSENT
    gpu_name: OptStr = field(default=ABSENT, metadata={"reason_key": "gpu_reason"})
    cpu_model: OptStr = ABSENT
    disk_bytes: OptNum = ABSENT


@dataclass(kw_only=True)
class TrainFiles(Record):
    adapter: OptStr = ABSENT
    metrics: OptStr = ABSENT
    log: OptStr = ABSENT
    tensorboard: OptStr = ABSENT


@dataclass(kw_only=True)
class TrainTimeBudget(Record):
    max_minutes: OptNum = ABSENT  # null: no budget (train.max_minutes=0)
    stopped_early: bool | NotMeasured = ABSENT
    stopped_at_step: OptNum = ABSENT  # null: the budget did not stop training
    planned_steps: OptNum = ABSENT


@dataclass(kw_only=True)
class ProbeRun(Record):
    """One backend's short training in the backend probe (trainer/backend_probe.py)."""

    backend: OptStr = ABSENT
    tokens_per_s: OptNum = ABSENT  # trained (non-padding) tokens/s over the timed steps; null: failed
    s_per_step: OptNum = ABSENT
    timed_tokens: OptNum = ABSENT
    process_s: OptNum = ABSENT  # the child process, start to end (imports and model load included)
    error: OptStr = ABSENT


@dataclass(kw_only=True)
class BackendProbe(Record):
    """The probe behind `train.backend=auto` on a CPU: each backend's tokens/s on this machine."""

    key: OptStr = ABSENT  # cache key: machine, libraries, model and speed settings (key_fields)
    key_fields: dict[str, Any] | NotMeasured = ABSENT
    measured_at: OptStr = ABSENT
    steps: OptNum = ABSENT  # optimizer steps per backend; the first is warm-up, not timed
    cached: bool | NotMeasured = ABSENT  # true: read from .cache/backend_probe/, measured earlier
    cost_s: OptNum = ABSENT  # seconds this run spent probing (0 when cached)
    runs: list[ProbeRun] | NotMeasured = ABSENT


@dataclass(kw_only=True)
class BackendChoice(Record):
    """Which backend trained and why, as a code the report words (reporting/sections/training.py)."""

    backend: OptStr = ABSENT  # unsloth | peft
    # config (train.backend set explicitly) | probe_faster | probe_other_failed | probe_failed |
    # unsloth_unavailable | cuda_default (auto on a CUDA GPU: Unsloth, not probed)
    reason: OptStr = ABSENT
    detail: OptStr = ABSENT  # e.g. why Unsloth is unavailable or which probe failed
    probe: BackendProbe | NotMeasured = ABSENT  # null: no probe (reason says why)


@dataclass(kw_only=True)
class Utilisation(Record):
    """Achieved training FLOP/s against this machine's measured matrix-multiply peak."""

    model_flops_per_token: OptNum = ABSENT  # 4 x N_frozen + 6 x N_lora (flops_method)
    achieved_flops_per_s: OptNum = ABSENT  # model_flops_per_token x resources.tokens_per_s
    peak_flops_per_s: OptNum = ABSENT  # measured matmul peak in the training dtype
    peak_dtype: OptStr = ABSENT  # bf16 | fp16 | fp32
    peak_method: OptStr = ABSENT
    utilisation: OptNum = ABSENT  # achieved / peak, 0-1
    flops_method: OptStr = ABSENT


@dataclass(kw_only=True)
class TrainResult(StageResult):
    backend: OptStr = ABSENT
    backend_reason: OptStr = ABSENT
    backend_choice: BackendChoice | NotMeasured = ABSENT  # the reason as a code, and the probe's numbers
    precision: OptStr = ABSENT
    precision_reason: OptStr = ABSENT  # English; precision_code is the same reason as data
    precision_code: Reason | NotMeasured = ABSENT
    device: OptStr = ABSENT
    quantization: OptStr = ABSENT  # "none" | "4-bit NF4"
    quantization_reason: OptStr = ABSENT
    quantization_code: Reason | NotMeasured = ABSENT
    base_model: OptStr = ABSENT
    base_model_path: OptStr = ABSENT
    params_total: OptNum = ABSENT
    params_trainable: OptNum = ABSENT
    lora: LoraSettings | NotMeasured = ABSENT
    hyperparameters: Hyperparameters | NotMeasured = ABSENT
    global_step: OptNum = ABSENT
    train_loss_first: OptNum = ABSENT
    train_loss_last: OptNum = ABSENT
    eval_loss_first: OptNum = ABSENT
    eval_loss_last: OptNum = ABSENT
    checkpoints: list[Checkpoint] | NotMeasured = ABSENT
    best_checkpoint: Checkpoint | NotMeasured = ABSENT
    resumed_from: OptStr = ABSENT  # null: trained from scratch
    resources: TrainResources | NotMeasured = ABSENT
    utilisation: Utilisation | NotMeasured = ABSENT  # null with utilisation_reason when not measured
    utilisation_reason: OptStr = ABSENT  # four_bit | no_tokens_per_s
    time_budget: TrainTimeBudget | NotMeasured = ABSENT  # train.max_minutes
    files: TrainFiles | NotMeasured = ABSENT


# ---- evaluate.json --------------------------------------------------------------------------------


@dataclass(kw_only=True)
class EvalSettings(Record):
    max_new_tokens: OptNum = ABSENT
    do_sample: bool | NotMeasured = ABSENT
    temperature: OptNum = ABSENT
    top_p: OptNum = ABSENT
    seed: OptNum = ABSENT
    samples: OptNum = ABSENT
    batch_size: OptNum = ABSENT
    generation_s: OptNum = ABSENT  # both models' answers to the test split
    bootstrap_resamples: OptNum = ABSENT  # paired bootstrap of every change (trainer/significance.py)
    confidence: OptNum = ABSENT  # of the change intervals, e.g. 0.95
    leaked_excluded: OptNum = ABSENT  # test records flagged as leaked (data.leakage=flag), not scored


@dataclass(kw_only=True)
class EvalMetric(Record):
    """One before/after metric, by key; the report names and defines each key (reporting/labels.py)."""

    key: OptStr = ABSENT  # avg_answer_chars, bleu4, rouge1, rouge2, rougeL, loss, perplexity, ...
    # written by older versions; not written now; the report uses its own wording
    name_zh: OptStr = ABSENT
    # null with `reason` when there was nothing to score (e.g. no identity question, probe off)
    before: OptNum = field(default=ABSENT, metadata={"reason_key": "reason"})
    after: OptNum = field(default=ABSENT, metadata={"reason_key": "reason"})
    reference: OptNum = ABSENT
    improvement: OptNum = field(default=ABSENT, metadata={"reason_key": "reason"})
    reason: OptStr = ABSENT
    improvement_kind: OptStr = ABSENT  # "relative_pct" | "points"
    higher_is_better: bool | NotMeasured = ABSENT  # null: neither direction is better
    # written by older versions; not written now; the report uses its own wording
    definition: OptStr = ABSENT
    # The 95 % paired bootstrap interval of `improvement` (same units and orientation), the verdict
    # it allows (improved | worsened | increased | decreased | no_significant_change) and the
    # number of paired items; null with `interval_reason` for a corpus-level metric.
    change_ci95_low: OptNum = field(default=ABSENT, metadata={"reason_key": "interval_reason"})
    change_ci95_high: OptNum = field(default=ABSENT, metadata={"reason_key": "interval_reason"})
    significance: OptStr = field(default=ABSENT, metadata={"reason_key": "interval_reason"})
    paired_items: OptNum = field(default=ABSENT, metadata={"reason_key": "interval_reason"})
    interval_reason: OptStr = ABSENT


@dataclass(kw_only=True)
class EvalExample(Record):
    id: Any = ABSENT
    kind: OptStr = ABSENT  # largest_gain | regression | random
    instruction: OptStr = ABSENT
    input: OptStr = ABSENT
    reference: OptStr = ABSENT
    before: OptStr = ABSENT
    after: OptStr = ABSENT
    rougeL_before: OptNum = ABSENT
    rougeL_after: OptNum = ABSENT
    # written by older versions; not written now; the report uses its own wording
    verdict: OptStr = ABSENT


@dataclass(kw_only=True)
class QualitativeMeasure(Record):
    before: OptNum = ABSENT
    after: OptNum = ABSENT
    unit: OptStr = ABSENT
    # written by older versions; not written now; the report uses its own wording
    measure: OptStr = ABSENT
    higher_is_better: bool | NotMeasured = ABSENT
    reason: OptStr = ABSENT  # why before or after is missing
    distinct2_before: OptNum = ABSENT  # fluency only: the repetition side of it
    distinct2_after: OptNum = ABSENT


@dataclass(kw_only=True)
class Qualitative(Record):
    """The four qualitative dimensions, each measured by a stand-in metric."""

    accuracy: QualitativeMeasure | NotMeasured = ABSENT
    relevance: QualitativeMeasure | NotMeasured = ABSENT
    fluency: QualitativeMeasure | NotMeasured = ABSENT
    professionalism: QualitativeMeasure | NotMeasured = ABSENT


@dataclass(kw_only=True)
class IdentityCheck(Record):
    questions: OptNum = ABSENT
    before_hits: OptNum = ABSENT
    after_hits: OptNum = ABSENT


@dataclass(kw_only=True)
class ProbeOverlap(Record):
    question: OptStr = ABSENT
    train_question: OptStr = ABSENT
    similarity: OptNum = ABSENT


@dataclass(kw_only=True)
class IdentityProbe(Record):
    """The identity probe (trainer/identity_probe.py): questions asked, hits before and after."""

    file: OptStr = ABSENT
    questions: OptNum = ABSENT  # asked and scored
    asks_author: OptNum = ABSENT  # of them, questions whose answer must also name the author
    excluded_trained: OptNum = ABSENT  # probe questions dropped: (near-)copies of a training question
    overlaps: list[ProbeOverlap] | NotMeasured = ABSENT
    before_hits: OptNum = ABSENT
    after_hits: OptNum = ABSENT
    max_new_tokens: OptNum = ABSENT


@dataclass(kw_only=True)
class EvaluateResult(StageResult):
    settings: EvalSettings | NotMeasured = ABSENT
    metrics: list[EvalMetric] | NotMeasured = ABSENT
    examples: list[EvalExample] | NotMeasured = ABSENT
    qualitative: Qualitative | NotMeasured = ABSENT
    identity: IdentityCheck | NotMeasured = ABSENT
    identity_probe: IdentityProbe | NotMeasured = ABSENT  # null: evaluate.identity_probe is empty
    failures: Any = ABSENT  # a count, or a list of failed samples
    judge: Any = ABSENT  # null when no judge ran (see judge_reason)
    judge_reason: OptStr = ABSENT
    csv: OptStr = ABSENT
