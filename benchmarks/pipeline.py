"""The benchmark stage: `python run.py benchmark` (entry point `run(cfg, run_dir)`).

Reads from the run folder: `export.json` (results.gguf.path: the exported GGUF, relative to the run
folder; results.merged.path for the transformers baseline), `deploy.json` (the Ollama model name
and host when deployed) and `prompt_format.json` (the prompt text is rendered exactly as in
training). Engine: `benchmark.engine`; "auto" is Ollama when the model was deployed and the server
answers, else the llama.cpp server on the GGUF; an Ollama chosen by "auto" that fails the benchmark
(its sanity request) is recorded in `settings.engine_reason` and llama.cpp measures instead.

Writes `benchmark_requests.csv` (one row per request), `report_assets/benchmark_latency.png`,
`report_assets/benchmark_tokens_per_s.png` and `logs/benchmark_server.log` (llama.cpp); returns
the `BenchmarkResult` the runner stores in `benchmark.json` (docs/ARTIFACTS.md). Failed requests are
counted, not raised; if every request failed the stage fails. Ctrl-C keeps what was measured in
`benchmark_requests.csv` and `benchmark.partial.json`, then stops.
"""

from __future__ import annotations

import logging
from typing import Any

from benchmarks import outputs
from benchmarks.prompts import load_prompts
from benchmarks.runner import INTERRUPTED, measure, resolve_threads
from benchmarks.spec import BenchSettings
from trainer import console, prompt_format
from trainer.config import PipelineConfig
from trainer.errors import UserError
from trainer.ollama_client import answers, resolve_host
from trainer.results import BenchFiles, BenchmarkResult, NotMeasured, Reason
from trainer.runfolder import RunDir, write_json

log = logging.getLogger("benchmarks.pipeline")

CSV_NAME = "benchmark_requests.csv"
ASSETS = "report_assets"


def _stage_results(run_dir: RunDir, stage: str) -> dict[str, Any] | None:
    done = run_dir.completed(stage)
    return (done or {}).get("results")


# English for the terminal and benchmark.json `engine_reason`, by `engine_code` (the report words
# the code in Chinese, reporting/wording.py).
ENGINE_REASONS = {
    "configured": "benchmark.engine={engine}",
    "ollama_deployed": "auto: deployed as '{model}' and Ollama answers at {host}",
    "ollama_not_answering": "auto: Ollama does not answer at {host}",
    "not_deployed": "auto: the model was not deployed to Ollama",
    "ollama_failed_benchmark": "auto: Ollama at {host} failed the benchmark ({error}); llama.cpp on the same GGUF",
}


def engine_reason(code: Reason) -> str:
    """The English line of an engine choice."""
    return ENGINE_REASONS[code.code].format(**code.params)


def choose_engine(cfg: PipelineConfig, run_dir: RunDir) -> tuple[str, Reason, str, str | None]:
    """(engine, why as a code, model, gguf path) from the config and the export/deploy results."""
    export = _stage_results(run_dir, "export")
    if export is None:
        raise UserError(
            f"no completed export stage in {run_dir.path} (export.json): nothing to benchmark.",
            fix="run `python run.py export` first (or `python run.py all`)",
        )
    gguf_rel = (export.get("gguf") or {}).get("path")
    gguf = str((run_dir.path / gguf_rel).resolve()) if gguf_rel else None
    deploy = _stage_results(run_dir, "deploy") or {}
    deployed = deploy.get("status") == "deployed" and deploy.get("model_name")
    host = resolve_host(deploy.get("host") or cfg.deploy.host or None)
    engine = cfg.benchmark.engine

    if engine == "transformers":
        merged = (export.get("merged") or {}).get("path")
        if not merged:
            raise UserError(
                "export.json has no merged model folder (results.merged.path).",
                fix="re-run `python run.py export`, or use benchmark.engine=llamacpp",
            )
        return (
            engine,
            Reason(code="configured", params={"engine": engine}),
            str((run_dir.path / merged).resolve()),
            gguf,
        )
    if engine == "ollama":
        if not deployed:
            raise UserError(
                f"benchmark.engine=ollama but the model was not deployed (deploy.json status: "
                f"{deploy.get('status', 'missing')}).",
                fix="run `python run.py deploy` with Ollama running, or use benchmark.engine=llamacpp",
            )
        return engine, Reason(code="configured", params={"engine": engine}), str(deploy["model_name"]), gguf
    if engine == "auto" and deployed and answers(host):
        why = Reason(code="ollama_deployed", params={"model": str(deploy["model_name"]), "host": host})
        return "ollama", why, str(deploy["model_name"]), gguf
    if not gguf:
        raise UserError(
            "export.json has no GGUF file (results.gguf.path).", fix="re-run `python run.py export`"
        )
    if engine == "llamacpp":
        why = Reason(code="configured", params={"engine": engine})
    elif deployed:
        why = Reason(code="ollama_not_answering", params={"host": host})
    else:
        why = Reason(code="not_deployed")
    return "llamacpp", why, gguf, gguf


def _settings(
    cfg: PipelineConfig, run_dir: RunDir, engine: str, reason: Reason, model: str, gguf: str | None
) -> BenchSettings:
    bench = cfg.benchmark
    threads, threads_reason = resolve_threads(bench.threads, "benchmark.threads")
    deploy = _stage_results(run_dir, "deploy") or {}
    return BenchSettings(
        engine=engine, engine_reason=engine_reason(reason), engine_code=reason, model=model, prompts=load_prompts(),
        prompt_format=prompt_format.load(run_dir.path), prompt_format_source="run folder prompt_format.json",
        concurrency=list(bench.concurrency), num_requests=bench.num_requests, max_tokens=bench.max_tokens,
        num_ctx=bench.num_ctx, threads=threads, threads_reason=threads_reason,
        warmup_requests=bench.warmup_requests, request_timeout_s=bench.request_timeout_s,
        host=resolve_host(deploy.get("host") or cfg.deploy.host or None), gguf_path=gguf,
        server_log=run_dir / "logs" / "benchmark_server.log" if engine == "llamacpp" else None,
        llamacpp_server=bench.llamacpp_server,
    )  # fmt: skip


def _say(message: str) -> None:
    """The benchmark's progress: on the stage's line, and in full in logs/training.log."""
    log.info(message)
    console.line().status(message)


def _measure(cfg: PipelineConfig, run_dir: RunDir) -> tuple[BenchSettings, BenchmarkResult]:
    """Measure on the chosen engine. An Ollama that `auto` chose but that fails the benchmark (its
    sanity request ends badly: HTTP 500, a stream cut short) is recorded as the reason, and the same
    GGUF is measured with llama.cpp instead: a misbehaving server never ends the pipeline here."""
    engine, reason, model, gguf = choose_engine(cfg, run_dir)
    settings = _settings(cfg, run_dir, engine, reason, model, gguf)
    say = _say
    try:
        return settings, measure(settings, progress=say)
    except UserError as exc:
        if not (cfg.benchmark.engine == "auto" and engine == "ollama" and gguf):
            raise
        error = str(exc).split("\n")[0]
        say(f"Ollama failed the benchmark ({error}); measuring the same GGUF with llama.cpp")
    reason = Reason(code="ollama_failed_benchmark", params={"host": settings.host, "error": error})
    settings = _settings(cfg, run_dir, "llamacpp", reason, gguf, gguf)
    return settings, measure(settings, progress=say)


def run(cfg: PipelineConfig, run_dir: RunDir) -> BenchmarkResult:
    """Benchmark the exported model on the chosen engine; the results of benchmark.json."""
    run_dir = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
    settings, result = _measure(cfg, run_dir)

    samples = list(result.samples)
    outputs.write_csv(run_dir / CSV_NAME, samples)
    from benchmarks.charts import write_charts

    charts = write_charts(result.to_dict(), run_dir / ASSETS)
    result.files = BenchFiles(
        csv=CSV_NAME,
        charts=[str(p.relative_to(run_dir.path)) for p in charts],
        server_log=str(settings.server_log.relative_to(run_dir.path))
        if settings.server_log
        else NotMeasured(absent=True),
    )
    if result.partial_reason == INTERRUPTED:
        write_json(run_dir / "benchmark.partial.json", result.to_dict())
        raise KeyboardInterrupt
    if result.requests_total and result.failures_total == result.requests_total:
        first = next(s["error"] for s in samples if not s["ok"])
        raise UserError(
            f"all {result.requests_total} benchmark requests failed (first error: {first}); "
            f"details in {run_dir / CSV_NAME}.",
            fix="raise benchmark.request_timeout_s for a slow machine, or check the server log",
        )
    return result
