"""`python run.py sweep`: bad grids are refused before anything runs; a 2×2 grid on the tiny config
shares one prepared split, trains and evaluates every point, resumes, and ends in a comparison
report rendered to PDF (slow: ~1 min on 2 cores)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import run
from tests.reporting.helpers import pdf_text, rows_by_first_cell, section
from trainer import sweep

ROOT = Path(__file__).resolve().parent.parent
TINY = str(ROOT / "configs" / "tiny.yaml")
POINTS = (
    "lora_r-4__learning_rate-1e-3",
    "lora_r-4__learning_rate-5e-3",
    "lora_r-8__learning_rate-1e-3",
    "lora_r-8__learning_rate-5e-3",
)
GRID = ["train.max_steps=3", "evaluate.max_samples=4", "train.lora_r=4,8", "train.learning_rate=1e-3,5e-3"]


def test_values_split_on_commas_outside_brackets():
    assert sweep.split_values("8,16") == ["8", "16"]
    assert sweep.split_values("[q_proj,v_proj],[q_proj]") == ["[q_proj,v_proj]", "[q_proj]"]


@pytest.mark.parametrize(
    ("grid", "message"),
    [
        (["train.lora_rr=4,8"], "unknown config key 'train.lora_rr'"),
        (["train.lora_r=4,eight"], "'train.lora_r' must be an integer, got 'eight'"),
        (["data.max_length=128,256"], "'data.max_length' cannot be swept"),
        (["model.prompt_format=llama2,chatml"], "'model.prompt_format' cannot be swept"),
        (["train.lora_r=8"], "a sweep needs at least two points"),
        (["train.lora_r=4,4"], "needs distinct values"),
        (["train.lora_r"], "is not key=value"),
    ],
)
def test_bad_grid_is_refused_before_anything_runs(tmp_path, capsys, grid, message):
    code = run.main(["sweep", "--config", TINY, "--sweep-dir", str(tmp_path / "sw"), *grid])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "nothing was run" in err
    assert not (tmp_path / "sw").exists()


def test_every_problem_is_listed_at_once(tmp_path, capsys):
    grid = ["train.lora_rr=4,8", "train.learning_rate=fast,1e-3", "data.seed=1,2"]
    assert run.main(["sweep", "--config", TINY, "--sweep-dir", str(tmp_path / "sw"), *grid]) == 2
    assert "3 problems" in capsys.readouterr().err


def test_time_budget_spent_starts_no_training(tmp_path, capsys):
    sw = tmp_path / "sw"
    code = run.main(["sweep", "--config", TINY, "--sweep-dir", str(sw), "--max-minutes", "0.000001", *GRID])
    assert code == 1
    state = json.loads((sw / "sweep.json").read_text())
    assert state["points"][0]["status"] == "not started" and "--max-minutes" in state["stopped"]
    assert not any((sw / p / "train.json").exists() for p in POINTS)
    assert "run the same command again" in capsys.readouterr().out


def test_ctrl_c_stops_cleanly_and_records_the_point(tmp_path, monkeypatch):
    sw = tmp_path / "sw"

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(sweep, "run_all", interrupted)
    assert run.main(["sweep", "--config", TINY, "--sweep-dir", str(sw), *GRID]) == 130
    state = json.loads((sw / "sweep.json").read_text())
    assert [p["status"] for p in state["points"]] == ["interrupted", "pending", "pending", "pending"]
    assert state["stopped"] == "interrupted (Ctrl-C)"


@pytest.fixture(scope="module")
def tiny_sweep(tmp_path_factory):
    sw = tmp_path_factory.mktemp("sweep") / "sw"
    assert run.main(["sweep", "--config", TINY, "--sweep-dir", str(sw), *GRID]) == 0
    return sw


@pytest.mark.slow
def test_two_by_two_sweep_shares_one_prepared_split(tiny_sweep):
    shared = json.loads((tiny_sweep / "prepared" / "prepare.json").read_text())
    test_split = (tiny_sweep / "prepared" / "data" / "test.jsonl").read_bytes()
    for name in POINTS:
        point = tiny_sweep / name
        assert json.loads((point / "prepare.json").read_text()) == shared
        assert (point / "data" / "test.jsonl").read_bytes() == test_split
        train = json.loads((point / "train.json").read_text())
        assert train["status"] == "completed" and train["results"]["global_step"] == 3
        assert train["results"]["lora"]["r"] == int(name.split("-")[1].split("_")[0])
        assert json.loads((point / "evaluate.json").read_text())["status"] == "completed"
        assert not (point / "export.json").exists()  # export/deploy/benchmark only with --full
    state = json.loads((tiny_sweep / "sweep.json").read_text())
    assert [p["status"] for p in state["points"]] == ["completed"] * 4
    assert state["best_by_val_loss"].split(" ")[0] in POINTS and state["best_by_primary"]


@pytest.mark.slow
def test_sweep_comparison_report_covers_the_four_points(tiny_sweep):
    md = (tiny_sweep / "comparison" / "comparison.md").read_text(encoding="utf-8")
    config = rows_by_first_cell(section(md, "配置差异"), "配置项")
    assert set(config) == {"train.lora_r", "train.learning_rate"}
    assert config["train.lora_r"][1:] == ["4", "4", "8", "8"]
    assert list(rows_by_first_cell(section(md, "训练过程"), "运行")) == list(POINTS)
    assert "注意" not in md  # one shared split: every point was evaluated on the same items
    # The verdict (paragraphs, not table cells) names every point; wrapped lines are joined again.
    text = "".join(pdf_text(tiny_sweep / "comparison" / "comparison.pdf").split())
    assert "微调运行对比报告" in text and "配置差异" in text
    for name in POINTS:
        assert name in text


@pytest.mark.slow
def test_a_second_sweep_skips_completed_points(tiny_sweep, capsys):
    before = {p: json.loads((tiny_sweep / p / "train.json").read_text())["finished_at"] for p in POINTS}
    assert run.main(["sweep", "--config", TINY, "--sweep-dir", str(tiny_sweep), *GRID]) == 0
    state = json.loads((tiny_sweep / "sweep.json").read_text())
    assert [p["status"] for p in state["points"]] == ["skipped"] * 4
    after = {p: json.loads((tiny_sweep / p / "train.json").read_text())["finished_at"] for p in POINTS}
    assert before == after
    assert "best point by validation loss" in capsys.readouterr().out
