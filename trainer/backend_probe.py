"""Which training backend `train.backend=auto` takes on a CPU: the faster one, measured by a short probe.

Used by `python run.py train` / `all` (trainer/backends.py `choose_backend`, and run.py before any
library that Unsloth patches is imported). Each backend trains `PROBE_STEPS` optimizer steps of the
real recipe on the real training batches (the first batches of the epoch, so their shapes are the
training's own) in its own child process: Unsloth patches transformers, PEFT and TRL when it is
imported, so one process cannot time both fairly, and the parent must not have imported either
before it knows which to load. The child is `python -m trainer.backend_probe --backend B ...`: it
trains in a temporary run folder (a copy of the run's prepared splits, the ones the train stage
will read, or its own `prepare` of the same config when the run has none yet) and writes its tokens/s to a JSON file.

The result is cached in `.cache/backend_probe/<key>.json` (git-ignored; written atomically, so a
killed probe leaves no file), the key being this machine (CPU model and flags, threads), the
library versions, the model and the settings that change the speed (batch, length, LoRA,
precision, data). `train.json` records the probe's numbers and cost either way, so a run folder
copied elsewhere still says why its backend was chosen. An explicit `train.backend=unsloth|peft`
never probes; on a CUDA GPU `auto` stays Unsloth (its published speed-up is a GPU one) without a probe.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from trainer.config import PipelineConfig, TrainConfig, choices
from trainer.paths import ROOT
from trainer.results import BackendChoice, BackendProbe, NotMeasured, ProbeRun
from trainer.runfolder import cpu_flags, cpu_model, now_iso, read_json, write_json

PROBE_STEPS = 3  # the first is warm-up; the others are timed
PROBE_VERSION = 1  # bump when the probe itself changes what it measures
# The code that makes a training step: a change to any of them can change which backend is faster, so
# their contents are part of the cache key (a cached choice never outlives the code it measured).
TRAINING_CODE = tuple(
    ROOT / "trainer" / name for name in ("backends.py", "recipe.py", "speedups.py", "train.py")
)
BACKENDS = tuple(b for b in choices(TrainConfig, "backend") if b != "auto")  # unsloth, peft

_chosen: dict[str, BackendChoice] = {}  # this process's choice, by cache key


def unsloth_installed() -> tuple[bool, str]:
    """Whether Unsloth could be tried, without importing it (importing it patches the libraries)."""
    if os.environ.get("FT_DISABLE_UNSLOTH") == "1":
        return False, "FT_DISABLE_UNSLOTH=1"
    if importlib.util.find_spec("unsloth") is None:
        return False, "unsloth is not installed"
    return True, "unsloth is installed"


def choose_auto(cfg: PipelineConfig, run_dir: Any) -> BackendChoice:
    """The backend of `train.backend=auto` on a CPU: the faster one by the probe (cached per machine,
    model and settings). Probes at most once per process."""
    key, key_fields = probe_key(cfg)
    if key in _chosen:
        return _chosen[key]
    ok, why = unsloth_installed()
    if not ok:
        choice = BackendChoice(backend="peft", reason="unsloth_unavailable", detail=why, probe=NotMeasured())
    else:
        probe = _cached(key) or _probe(cfg, Path(run_dir.path), key, key_fields)
        choice = _decide(probe)
    _chosen[key] = choice
    return choice


def _decide(probe: BackendProbe) -> BackendChoice:
    ok = [r for r in probe.runs if isinstance(r.tokens_per_s, (int, float)) and r.tokens_per_s > 0]
    if len(ok) == len(BACKENDS):
        best = max(ok, key=lambda r: r.tokens_per_s)
        return BackendChoice(backend=best.backend, reason="probe_faster", probe=probe)
    if ok:
        failed = next(r for r in probe.runs if r not in ok)
        return BackendChoice(
            backend=ok[0].backend, reason="probe_other_failed", detail=str(failed.error), probe=probe
        )
    return BackendChoice(
        backend="peft", reason="probe_failed", detail="; ".join(str(r.error) for r in probe.runs), probe=probe
    )


def probe_key(cfg: PipelineConfig) -> tuple[str, dict[str, Any]]:
    """(hash, the fields it hashes): what makes one backend faster than the other here."""
    t = cfg.train
    versions = {}
    for dist in ("torch", "transformers", "peft", "trl", "unsloth", "unsloth_zoo"):
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = None
    code = hashlib.sha1()
    for path in TRAINING_CODE:
        code.update(path.read_bytes() if path.is_file() else b"")
    fields = {
        "probe_version": PROBE_VERSION,
        "training_code_sha1": code.hexdigest()[:12],
        "cpu_model": cpu_model(),
        "cpu_flags_sha1": hashlib.sha1(" ".join(sorted(cpu_flags())).encode()).hexdigest()[:12],
        "cpu_count": os.cpu_count(),
        "num_threads": t.num_threads,
        "versions": versions,
        "model": cfg.model.name,
        "load_in_4bit": cfg.model.load_in_4bit,
        "data_files": list(cfg.data.files),
        "max_length": cfg.data.max_length,
        "per_device_batch_size": t.per_device_batch_size,
        "precision": t.precision,
        "lora": [t.lora_r, t.lora_dropout, sorted(t.target_modules)],
        "gradient_checkpointing": t.gradient_checkpointing,
        "group_by_length": t.group_by_length,
        "optimizer": t.optimizer,
    }
    digest = hashlib.sha1(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]
    return digest, fields


def cache_dir() -> Path:
    """Where probes are cached: $FT_BACKEND_PROBE_CACHE, else .cache/backend_probe/ (git-ignored)."""
    return Path(os.environ.get("FT_BACKEND_PROBE_CACHE") or ROOT / ".cache" / "backend_probe")


def _cached(key: str) -> BackendProbe | None:
    path = cache_dir() / f"{key}.json"
    try:
        probe = BackendProbe.from_dict(read_json(path))
    except (OSError, ValueError):
        return None
    probe.cached = True
    probe.cost_s = 0.0
    return probe


def _probe(cfg: PipelineConfig, run_dir: Path, key: str, key_fields: dict[str, Any]) -> BackendProbe:
    """Each backend's short training in a child process; cached when both ran."""
    t0 = time.perf_counter()
    runs = []
    with tempfile.TemporaryDirectory(prefix="backend-probe-") as tmp:
        for backend in BACKENDS:
            runs.append(_probe_child(cfg, run_dir, backend, Path(tmp)))
    probe = BackendProbe(
        key=key,
        key_fields=key_fields,
        measured_at=now_iso(),
        steps=PROBE_STEPS,
        cached=False,
        cost_s=round(time.perf_counter() - t0, 1),
        runs=runs,
    )
    if all(isinstance(r.tokens_per_s, (int, float)) for r in runs):
        write_json(cache_dir() / f"{key}.json", probe.to_dict())
    return probe


def _probe_child(cfg: PipelineConfig, run_dir: Path, backend: str, tmp: Path) -> ProbeRun:
    out = tmp / f"{backend}.json"
    cmd = [
        sys.executable,
        "-m",
        "trainer.backend_probe",
        "--backend",
        backend,
        "--run-dir",
        str(run_dir),
        "--work-dir",
        str(tmp / backend),
        "--out",
        str(out),
        "--config-yaml",
        str(_write_config(cfg, tmp)),
    ]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1800)
    wall = round(time.perf_counter() - t0, 1)
    if done.returncode != 0 or not out.exists():
        tail = (done.stderr or done.stdout or "").strip().splitlines()[-3:]
        return ProbeRun(
            backend=backend,
            tokens_per_s=NotMeasured(),  # `error` says why
            process_s=wall,
            error=f"exit status {done.returncode}: {' | '.join(tail)[-400:]}",
        )
    got = read_json(out)
    return ProbeRun(
        backend=backend,
        tokens_per_s=got["tokens_per_s"],
        s_per_step=got["s_per_step"],
        timed_tokens=got["timed_tokens"],
        process_s=wall,
    )


def _write_config(cfg: PipelineConfig, tmp: Path) -> Path:
    from trainer.config import to_yaml

    path = tmp / "config.yaml"
    if not path.exists():
        path.write_text(to_yaml(cfg), encoding="utf-8")
    return path


# --- the child: one backend's short training -------------------------------------------------------


def _child(backend: str, run_dir: Path, work: Path, config_yaml: Path) -> dict[str, Any]:
    if backend == "unsloth":
        import unsloth  # noqa: F401  (before trl/transformers/peft, as in the train stage)
    from transformers import TrainerCallback

    from trainer import train
    from trainer.config import load_config
    from trainer.recipe import sft_trainer_class
    from trainer.runfolder import RunDir

    overrides = [
        f"train.backend={backend}",
        f"train.max_steps={PROBE_STEPS}",
        "train.logging_steps=1",
        "train.eval_steps=1000000",  # no evaluation and no checkpoint inside the probe
        "train.save_steps=1000000",
        "train.max_minutes=0",
    ]
    cfg = load_config(config_yaml, overrides)
    probe_dir = RunDir(work)
    source = RunDir(run_dir)
    if (source / "data" / "train.jsonl").exists() and (source / "prompt_format.json").exists():
        (work / "data").mkdir(parents=True, exist_ok=True)
        for split in ("train", "val"):
            shutil.copy2(source / "data" / f"{split}.jsonl", work / "data" / f"{split}.jsonl")
        shutil.copy2(source / "prompt_format.json", work / "prompt_format.json")
    else:  # `all` on a fresh run folder: the same prepare, into the probe's folder
        from trainer import prepare_data

        prepare_data.run(cfg, probe_dir)
    setup = train._setup(cfg, probe_dir)
    os.environ["TENSORBOARD_LOGGING_DIR"] = str(work / "runs")
    clock: dict[int, tuple[float, int]] = {}

    class StepClock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            clock[state.global_step] = (time.perf_counter(), int(state.num_input_tokens_seen or 0))

    trainer = sft_trainer_class(setup.backend)(
        model=setup.model,
        args=train._sft_config(cfg, probe_dir, setup.precision),
        train_dataset=setup.train_ds,
        eval_dataset=setup.val_ds,
        processing_class=setup.tokenizer,
        callbacks=[StepClock()],
    )
    trainer.train()
    last = max(clock)
    (t1, n1), (t2, n2) = clock[1], clock[last]
    return {
        "backend": setup.backend,
        "precision": setup.precision,
        "tokens_per_s": round((n2 - n1) / (t2 - t1), 2),
        "s_per_step": round((t2 - t1) / (last - 1), 3),
        "timed_tokens": n2 - n1,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m trainer.backend_probe", description=__doc__.split("\n")[0])
    p.add_argument("--backend", choices=BACKENDS, required=True)
    p.add_argument("--run-dir", type=Path, required=True, help="the run folder whose prepared splits to use")
    p.add_argument("--work-dir", type=Path, required=True, help="the probe's own temporary run folder")
    p.add_argument("--config-yaml", type=Path, required=True, help="the resolved config of the run")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    write_json(args.out, _child(args.backend, args.run_dir, args.work_dir, args.config_yaml))
    return 0


if __name__ == "__main__":
    sys.exit(main())
