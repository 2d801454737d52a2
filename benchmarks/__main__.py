"""Benchmark any model without a run folder: a GGUF file, an Ollama model or a Hugging Face folder.

    python -m benchmarks --engine llamacpp --model model.gguf
    python -m benchmarks --engine ollama --model llama2-finetuned --concurrency 1,2,4
    python -m benchmarks --engine transformers --model outputs/default/models/finetuned
    python -m benchmarks --help

Prints a table and writes the results JSON (`--out`, default benchmark-results/<timestamp>.json:
environment, settings, per-request samples, summary, memory, roofline), a CSV of the requests
beside it (`<name>_requests.csv`), the llama.cpp server log (`<name>_server.log`) and, with
`--charts`, two PNG charts. Exit status: 0 all requests succeeded, 1 some failed (files still
written), 2 a problem to fix (message printed), 130 interrupted (partial files written).
In the pipeline the same benchmark is `python run.py benchmark` (benchmarks/pipeline.py).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from trainer.config import BenchmarkConfig, choices
from trainer.errors import UserError

EXIT_FAILURES = 1
EXIT_INTERRUPTED = 130


def _levels(text: str) -> list[int]:
    try:
        levels = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a comma-separated list of integers") from None
    if not levels or min(levels) < 1:
        raise argparse.ArgumentTypeError("concurrency levels must be integers >= 1, e.g. 1,2,4")
    return levels


def _positive(kind: type) -> Any:
    def parse(text: str) -> Any:
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Serving benchmark (TTFT, TPOT, ITL, latency percentiles, tokens/s, memory, roofline) "
        "of a GGUF file (llama.cpp server), an Ollama model, or a Hugging Face folder (in-process).",
        epilog="Example: python -m benchmarks --engine llamacpp --model model.gguf --concurrency 1,2 "
        "--num-requests 4 --max-tokens 32",
    )
    defaults = BenchmarkConfig()
    _add_model_options(p)
    for flag, kind, default, text in _load_options(defaults):
        p.add_argument(flag, type=kind, default=default, help=text)
    _add_server_and_output_options(p, defaults)
    return p


def _add_model_options(p: argparse.ArgumentParser) -> None:
    """What to benchmark, where, and how its prompts are written."""
    p.add_argument(
        "--engine",
        choices=choices(BenchmarkConfig, "engine"),
        default=BenchmarkConfig.engine,
        help="serving engine; auto: a folder -> transformers, a file -> llamacpp, else Ollama "
        "(default: auto)",
    )
    p.add_argument(
        "--model",
        required=True,
        help="a .gguf file (llamacpp), an Ollama model name (ollama), or a Hugging Face folder "
        "or .gguf file (transformers)",
    )
    p.add_argument(
        "--host", default=None, help="Ollama server URL (default: $OLLAMA_HOST, else http://127.0.0.1:11434)"
    )
    p.add_argument(
        "--prompt-format",
        default="auto",
        help="chatml, llama2, none (bare question; Ollama applies its template), a path to a "
        "prompt_format.json (e.g. outputs/default/prompt_format.json), or auto: from the model's "
        "chat template (GGUF header / tokenizer); for Ollama auto means none (default: auto)",
    )
    p.add_argument(
        "--system",
        default=None,
        help="system prompt for chatml/llama2 (default: the toolkit's default system prompt)",
    )


def _load_options(d: BenchmarkConfig) -> list[tuple[str, Callable[[str], Any], Any, str]]:
    """(flag, type, default, help) of the options that shape the load and bound the run; the
    defaults the pipeline has are BenchmarkConfig's (`d`), so both runs measure the same thing."""
    return [
        ("--concurrency", _levels, list(d.concurrency),
         f"comma-separated concurrency levels (default: {','.join(map(str, d.concurrency))})"),
        ("--num-requests", _positive(int), d.num_requests,
         f"requests per concurrency level and repetition (default: {d.num_requests})"),
        ("--repetitions", _positive(int), 1, "run every concurrency level this many times (default: 1)"),
        ("--max-tokens", _positive(int), d.max_tokens, f"fixed output length in tokens (default: {d.max_tokens})"),
        ("--num-ctx", _positive(int), d.num_ctx, f"context size pinned on the server (default: {d.num_ctx})"),
        ("--threads", int, d.threads,
         "CPU threads for llama.cpp / Ollama / torch; 0: physical cores not busy with other "
         "processes right now (default: 0)"),
        ("--warmup", int, d.warmup_requests,
         f"warm-up requests after the sanity request, not measured (default: {d.warmup_requests})"),
        ("--request-timeout", _positive(float), d.request_timeout_s,
         f"seconds before one request counts as failed (default: {d.request_timeout_s:g})"),
        ("--max-duration", _positive(float), 1800.0,
         "send no new request after this many seconds; results are then marked partial (default: 1800)"),
        ("--startup-timeout", _positive(float), 120.0,
         "seconds to wait for the llama.cpp server or the model to load (default: 120)"),
        ("--seed", int, 42, "sampling seed sent with every request (default: 42)"),
        ("--port", int, 0, "llama.cpp server port on 127.0.0.1; 0 picks a free one (default: 0)"),
    ]  # fmt: skip


def _add_server_and_output_options(p: argparse.ArgumentParser, d: BenchmarkConfig) -> None:
    """Which llama.cpp server, and what is written besides the results JSON."""
    p.add_argument(
        "--server",
        choices=choices(BenchmarkConfig, "llamacpp_server"),
        default=d.llamacpp_server,
        help="llama.cpp server: native (llama.cpp's llama-server, built into .venv/bin by the "
        "bootstrap; $LLAMA_SERVER overrides; batches concurrent requests and reports its own "
        "timings), python (llama-cpp-python's server), auto: native when installed (default: auto)",
    )
    p.add_argument(
        "--n-gpu-layers",
        type=int,
        default=-1,
        help="llama.cpp layers on the GPU, -1 all; ignored by CPU builds (default: -1)",
    )
    p.add_argument(
        "--gguf",
        default=None,
        help="a local GGUF of the Ollama model, for exact tensor bytes in the roofline (optional)",
    )
    p.add_argument(
        "--prompts",
        default=None,
        help="prompt set, JSONL with version/id/prompt (default: benchmarks/prompts_zh.jsonl)",
    )
    p.add_argument(
        "--out",
        default=None,
        help="results JSON path (default: benchmark-results/<timestamp>.json); the CSV, server log "
        "and charts go beside it",
    )
    p.add_argument(
        "--charts", action="store_true", help="also write <name>_latency.png and <name>_tokens_per_s.png"
    )
    p.add_argument("--markdown", action="store_true", help="also print the summary as a Markdown table")
    p.add_argument(
        "--no-roofline",
        action="store_true",
        help="skip the bandwidth/matmul measurement and the roofline limit",
    )


def _template_of(model: Path) -> str | None:
    """The chat template of a GGUF file or a Hugging Face folder, if it has one."""
    if model.is_file():
        from trainer.gguf_info import read_gguf

        return read_gguf(model).chat_template
    jinja = model / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    config = model / "tokenizer_config.json"
    if config.is_file():
        template = json.loads(config.read_text(encoding="utf-8")).get("chat_template")
        return template if isinstance(template, str) else None
    return None


def resolve_prompt_format(choice: str, engine: str, model: str, system: str | None) -> tuple[Any, str]:
    from trainer import prompt_format
    from trainer.config import PipelineConfig

    system = system if system is not None else PipelineConfig().system_prompt()
    if choice == "none":
        return None, "none: bare question"
    path = Path(choice)
    if choice.endswith(".json") or path.is_file():
        if not path.is_file():
            raise UserError(
                f"prompt format file {path} does not exist.",
                fix="pass a run folder's prompt_format.json, or chatml / llama2 / none / auto",
            )
        return _load_format_file(path), f"file {path}"
    if choice in prompt_format.names():
        return prompt_format.build(choice, system), f"--prompt-format {choice}"
    if choice != "auto":
        raise UserError(
            f"--prompt-format {choice!r} is not known.",
            fix=f"use auto, none, {', '.join(prompt_format.names())}, or a prompt_format.json path",
        )
    if engine == "ollama":
        return None, "auto: Ollama applies the model's own template"
    model_path = Path(model)
    if not model_path.exists():
        return None, "auto: model not found (checked later)"
    name = prompt_format.detect(_template_of(model_path))
    return prompt_format.build(name, system), f"auto: {name} from the model's chat template"


def _load_format_file(path: Path) -> Any:
    from trainer.prompt_format import PromptFormat
    from trainer.runfolder import read_json

    data = read_json(path)
    data["stop"] = tuple(data["stop"])
    return PromptFormat(**data)


def settings_from_args(args: argparse.Namespace) -> Any:
    from benchmarks.engines import resolve_auto
    from benchmarks.prompts import load_prompts
    from benchmarks.runner import resolve_threads
    from benchmarks.spec import BenchSettings
    from trainer.ollama_client import resolve_host

    host = resolve_host(args.host)
    engine, reason = (args.engine, "--engine") if args.engine != "auto" else resolve_auto(args.model, host)
    fmt, fmt_source = resolve_prompt_format(args.prompt_format, engine, args.model, args.system)
    threads, threads_reason = resolve_threads(args.threads, "--threads")
    model = str(Path(args.model).resolve()) if engine != "ollama" else args.model
    return BenchSettings(
        engine=engine, engine_reason=reason, model=model, prompts=load_prompts(args.prompts),
        prompt_format=fmt, prompt_format_source=fmt_source, concurrency=args.concurrency,
        num_requests=args.num_requests, repetitions=args.repetitions, max_tokens=args.max_tokens,
        num_ctx=args.num_ctx, threads=threads, threads_reason=threads_reason, warmup_requests=args.warmup,
        request_timeout_s=args.request_timeout, max_duration_s=args.max_duration,
        startup_timeout_s=args.startup_timeout, seed=args.seed, host=host, port=args.port,
        n_gpu_layers=args.n_gpu_layers, gguf_path=args.gguf, measure_roofline=not args.no_roofline,
        llamacpp_server=args.server,
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from rich.console import Console

    from benchmarks import outputs
    from benchmarks.runner import INTERRUPTED, run_benchmark
    from trainer.runfolder import environment, write_json

    # Piped output gets rich's 80 columns, too narrow for the table.
    console = Console() if sys.stdout.isatty() else Console(width=140)
    out = Path(args.out) if args.out else Path("benchmark-results") / f"{datetime.now():%Y%m%d-%H%M%S}.json"
    try:
        settings = settings_from_args(args)
        settings.server_log = (
            out.with_name(f"{out.stem}_server.log") if settings.engine == "llamacpp" else None
        )
        results = run_benchmark(settings, progress=lambda msg: console.print(f"[dim]{msg}[/dim]"))
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("\ninterrupted before any request finished: nothing written", file=sys.stderr)
        return EXIT_INTERRUPTED
    csv_path = out.with_name(f"{out.stem}_requests.csv")
    files: dict[str, Any] = {"json": str(out), "csv": str(csv_path), "charts": []}
    if settings.server_log:
        files["server_log"] = str(settings.server_log)
    outputs.write_csv(csv_path, results["samples"])
    if args.charts:
        from benchmarks.charts import write_charts

        files["charts"] = [str(p) for p in write_charts(results, out.parent, prefix=out.stem)]
    results["files"] = files
    write_json(out, {"environment": environment(), **results})
    outputs.print_table(results, console)
    if args.markdown:
        print(outputs.markdown_table(results))
    console.print(f"wrote {out} and {csv_path}")
    if results.get("partial_reason") == INTERRUPTED:
        return EXIT_INTERRUPTED
    if results["failures_total"] or results.get("partial"):
        print(
            f"error: {results['failures_total']} of {results['requests_total']} requests failed"
            + (f"; partial results: {results['partial_reason']}" if results.get("partial") else "")
            + f" (details: {csv_path})",
            file=sys.stderr,
        )
        return EXIT_FAILURES
    return 0


if __name__ == "__main__":
    sys.exit(main())
