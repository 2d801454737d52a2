"""The terminal of run.py (trainer/console.py): one line per stage, the details in logs/training.log."""

from __future__ import annotations

import io
import logging
import warnings

from trainer import console
from trainer.runfolder import RunDir


def test_a_stage_line_in_a_file_is_written_once_with_its_count_and_last_words():
    out = io.StringIO()
    with console.stage_line("train", file=out) as line:
        assert console.line() is line
        line.total(4)
        for _ in range(4):
            line.advance()
        line.status("loss 1.234 · 99 tokens/s")
    assert console.line() is not line  # outside the runner: a line that draws nothing
    console.line().status("nobody sees this")
    text = out.getvalue()
    assert text.count("\n") == 1 and text.startswith("train ")
    assert "4/4" in text and "loss 1.234 · 99 tokens/s" in text


def test_a_long_status_is_cut_to_the_line_not_wrapped():
    out = io.StringIO()
    with console.stage_line("deploy", file=out) as line:
        line.conclude("not deployed: " + "x" * 400)
    (only,) = out.getvalue().splitlines()
    assert only.startswith("deploy ") and only.endswith("…") and len(only) <= 120


def test_library_logs_and_warnings_go_to_the_run_log_not_the_terminal(tmp_path, capfd):
    run_dir = RunDir(tmp_path)
    before = logging.getLogger("transformers").handlers[:]
    with console.details_to_log(run_dir):
        logging.getLogger("transformers.trainer_utils").warning("mtime may not be reliable")
        logging.getLogger("bitsandbytes.backends.cpu.ops").warning("Failed to load a kernel")
        logging.getLogger("trainer.train").info("step 1 loss 2.0")
        warnings.warn("a library's deprecation", UserWarning, stacklevel=1)
    captured = capfd.readouterr()
    assert captured.out == "" and captured.err == ""
    log = (tmp_path / "logs" / "training.log").read_text(encoding="utf-8")
    for text in (
        "mtime may not be reliable",
        "Failed to load a kernel",
        "step 1 loss 2.0",
        "a library's deprecation",
    ):
        assert text in log
    assert logging.getLogger("transformers").handlers == before  # restored after the stage


def test_what_a_library_prints_itself_goes_to_the_log(tmp_path, capfd):
    with console.printed_to_log(RunDir(tmp_path)):
        print("llama_model_loader: loaded meta data")
    assert capfd.readouterr().out == ""
    assert "llama_model_loader" in (tmp_path / "logs" / "training.log").read_text(encoding="utf-8")
