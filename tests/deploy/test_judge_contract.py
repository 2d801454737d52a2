"""The optional blind judge of the evaluation stage (trainer/judge.py), against the replayed Ollama server
(contract)."""

from __future__ import annotations

from pathlib import Path

from trainer.config import load_config
from trainer.judge import grade

ROWS = [
    {
        "id": f"t{i}",
        "instruction": "请用一句话介绍北京。",
        "input": "",
        "reference": "北京是中国的首都。",
        "answer_before": "Beijing.",
        "answer_after": "北京是中国的首都。",
    }
    for i in range(2)
]
ROOT = Path(__file__).resolve().parents[2]


def test_judge_off_by_default():
    assert grade(load_config(None), ROWS) == {
        "judge": None,
        "judge_reason": "evaluate.judge_model is empty (off by default)",
    }


def test_judge_without_ollama_records_why(refused_host):
    cfg = load_config(None, ["evaluate.judge_model=qwen2.5:7b", f"deploy.host={refused_host}"])
    out = grade(cfg, ROWS)
    assert out["judge"] is None and "not run" in out["judge_reason"]


def test_judge_records_prompt_and_raw_grades(start_replay_server):
    server = start_replay_server(
        {"GET /api/version": "version", "POST /api/generate": ["generate_nostream", "generate_stream"]}
    )
    cfg = load_config(None, ["evaluate.judge_model=judge-model", f"deploy.host={server.url}"])
    out = grade(cfg, ROWS)["judge"]
    assert out["model"] == "judge-model" and "回答A" in out["prompt_template"]
    assert len(out["grades"]) == 2 and all(g["raw"] for g in out["grades"])
    # The recorded answers are not score JSON: they are kept raw and counted as unparsed, not invented.
    assert out["unparsed"] == 2 and out["mean_before"] is None
    sent = [r.json for r in server.requests_to("POST", "/api/generate")]
    assert all(s["model"] == "judge-model" and s["options"]["temperature"] == 0 for s in sent)


def test_evaluate_stage_records_the_judge_when_on(tiny_trained, start_replay_server, tmp_path):
    """`python run.py evaluate` with evaluate.judge_model set: the grades land in evaluate.json."""
    import json
    import shutil

    from stages import by_name
    from trainer.pipeline import run_stage
    from trainer.runfolder import RunDir

    _, trained = tiny_trained
    run_dir = RunDir(tmp_path / "run")
    for name in ("data", "adapter"):  # a copy: the session's tiny run stays as other tests expect it
        shutil.copytree(trained / name, run_dir / name)
    shutil.copy(trained / "prompt_format.json", run_dir / "prompt_format.json")
    server = start_replay_server(
        {"GET /api/version": "version", "POST /api/generate": ["generate_nostream", "generate_stream"]}
    )
    cfg = load_config(
        ROOT / "configs" / "tiny.yaml",
        ["evaluate.judge_model=judge-model", f"deploy.host={server.url}", "evaluate.max_samples=2"],
    )
    run_stage(by_name("evaluate"), cfg, run_dir)
    res = json.loads((run_dir / "evaluate.json").read_text())["results"]
    assert res["judge_reason"] is None and res["judge"]["model"] == "judge-model"
    test_ids = [json.loads(line)["id"] for line in (run_dir / "data" / "test.jsonl").read_text().splitlines()]
    assert [g["id"] for g in res["judge"]["grades"]] == test_ids[:2]  # one grade per evaluated record
    assert len(server.requests_to("POST", "/api/generate")) == 2
