"""Data-parallel training on 2 CPU processes (gloo) with `accelerate launch`, on the tiny model.

Checks that the processes really trained together (world_size 2, doubled effective batch) and that
only the main process wrote the run folder's files (one train.json, no duplicated log lines).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ACCELERATE_CONFIG = ROOT / "configs" / "accelerate" / "ddp_cpu.yaml"


def _accelerate() -> str:
    exe = Path(sys.executable).parent / "accelerate"  # .venv/bin/accelerate beside the venv's python
    if not exe.exists():
        pytest.skip(f"no accelerate launcher beside {sys.executable}")
    return str(exe)


@pytest.mark.slow
def test_two_processes_train_together_and_only_rank0_writes(tiny_cfg, tmp_path):
    from stages import by_name
    from trainer.pipeline import prepare_run_dir, run_stage
    from trainer.runfolder import RunDir

    run_dir = RunDir(tmp_path / "run")
    prepare_run_dir(tiny_cfg, run_dir, "prepare")
    run_stage(by_name("prepare"), tiny_cfg, run_dir)
    cmd = [
        _accelerate(),
        "launch",
        "--config_file",
        str(ACCELERATE_CONFIG),
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        str(ROOT / "run.py"),
        "train",
        "--config",
        str(ROOT / "configs" / "tiny.yaml"),
        "--run-dir",
        str(run_dir.path),
        "train.max_steps=4",
        "train.eval_steps=2",
        "train.save_steps=2",
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT, env=env)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]

    record = json.loads((run_dir / "train.json").read_text())
    assert record["status"] == "completed"
    res = record["results"]
    hp = res["hyperparameters"]
    assert hp["world_size"] == 2
    assert hp["effective_batch_size"] == 2 * hp["per_device_batch_size"] * hp["gradient_accumulation_steps"]
    assert res["global_step"] == 4
    assert math.isfinite(res["train_loss_last"])
    assert any("2 processes" in n for n in res["notes"])
    assert (run_dir / "adapter" / "adapter_model.safetensors").exists()
    assert (run_dir / "config.resolved.yaml").exists() and (run_dir / "env.json").exists()
    assert [c["step"] for c in res["checkpoints"]] == [2, 4]

    rows = [json.loads(line) for line in (run_dir / "logs" / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in rows if "loss" in r]
    assert steps == [1, 2, 3, 4]  # one writer: no line twice
    log_text = (run_dir / "logs" / "training.log").read_text()
    assert log_text.count("trainer.train: backend=peft") == 1, log_text  # one process logged


def test_only_train_and_prepare_run_in_a_multi_process_launch(monkeypatch, tmp_path, capsys):
    import run

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    config = str(ROOT / "configs" / "tiny.yaml")
    code = run.main(["evaluate", "--config", config, "--run-dir", str(tmp_path / "a")])
    assert code == 2
    assert "multi-process launch" in capsys.readouterr().err
    assert not (tmp_path / "a").exists()


def test_prepare_runs_only_on_the_main_process(monkeypatch, tmp_path):
    import run

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    config = str(ROOT / "configs" / "tiny.yaml")
    assert run.main(["prepare", "--config", config, "--run-dir", str(tmp_path / "b")]) == 0
    assert not (tmp_path / "b").exists()  # rank 1 wrote nothing: rank 0 prepares


def test_a_non_main_process_writes_no_stage_record(monkeypatch, tmp_path):
    from trainer import pipeline, results
    from trainer.config import load_config
    from trainer.runfolder import RunDir

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    run_dir = RunDir(tmp_path / "c")
    cfg = load_config(ROOT / "configs" / "tiny.yaml")
    pipeline.prepare_run_dir(cfg, run_dir, "train")
    noop = pipeline.Stage("noop", run, results.StageResult, (), "a stage that does nothing", "空")
    outcome = pipeline.run_stage(noop, cfg, run_dir)
    assert outcome.status == "completed"
    assert not run_dir.path.exists()


def run(cfg, run_dir):  # the "noop" stage of the test above
    return {"ok": True}
