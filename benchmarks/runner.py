"""The benchmark procedure shared by `python -m benchmarks` and `python run.py benchmark`.

1. Start the engine (`benchmarks.engines`); a start-up problem is a UserError.
2. One sanity request (a short answer must come back, else UserError), then warm-up requests.
3. For each repetition and each concurrency level: `num_requests` requests through a thread pool
   of that size (closed loop: a new request starts when one finishes), prompts from the shipped
   set in order, each with a unique cache-busting tag. Every request's result is kept; failures
   are counted, never raised. Bounded: per-request timeout, and no new request after
   `max_duration_s` (the run is then `partial`).
4. Stop the engine (also on Ctrl-C: results so far are returned with `partial: true`).
5. Summaries per level (`benchmarks.metrics`), memory, and the roofline limit.

`measure` returns the typed `benchmark.json` result (`trainer.results.BenchmarkResult`,
docs/ARTIFACTS.md), `run_benchmark` the same as a dict (for `python -m benchmarks`); writes nothing
itself.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

import psutil

from benchmarks import metrics, outputs, roofline
from benchmarks.engines import open_engine
from benchmarks.prompts import SANITY_PROMPT, cache_tag, render
from benchmarks.spec import BenchSettings, Engine, RawResult, RequestSpec
from trainer.errors import UserError
from trainer.results import (
    BenchmarkResult,
    BenchMemory,
    EngineDetails,
    LevelSummary,
    Reason,
    Roofline,
    TimingAgreement,
    note,
    or_not_measured,
)
from trainer.results import BenchSettings as SettingsRecord

INTERRUPTED = "interrupted (Ctrl-C)"
SANITY_TOKENS = 8

Progress = Callable[[str], None]


def machine_load(interval_s: float = 0.5) -> dict[str, Any]:
    """Load average and how many cores are busy right now (all processes)."""
    busy_pct = psutil.cpu_percent(interval=interval_s)
    count = psutil.cpu_count() or 1
    return {
        "loadavg_1m": round(os.getloadavg()[0], 2),
        "cpu_count": count,
        "busy_cores": round(busy_pct * count / 100.0, 2),
    }


def default_threads(load: dict[str, Any] | None = None) -> tuple[int, str]:
    """Physical cores available to us, minus cores other processes keep busy right now.

    ggml threads spin-wait: a thread that shares its core with another busy process slows every
    other thread down (1 thread was 10x faster than 2 with one core taken), so do not count busy
    cores.
    """
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 1
    physical = psutil.cpu_count(logical=False) or usable
    cores = max(1, min(usable, physical))
    load = load or machine_load()
    busy = load["busy_cores"]
    free = max(1, cores - round(busy))
    return free, f"{cores} physical core(s) usable, {busy:.1f} busy before the run -> {free} thread(s)"


def resolve_threads(requested: int, source: str) -> tuple[int, str]:
    """(threads, why): `requested` when > 0 (named by `source`, e.g. "--threads"), else
    `default_threads()` (0 means the free physical cores)."""
    return (requested, source) if requested > 0 else default_threads()


class _Requests:
    """Builds the request specs: unique numbers and tags, prompts in order."""

    def __init__(self, settings: BenchSettings) -> None:
        self.settings = settings
        self.number = 0
        self.next_prompt = 0
        self.warmups = 0

    def make(
        self, phase: str, item: dict[str, str] | None = None, max_tokens: int | None = None
    ) -> RequestSpec:
        self.number += 1
        items = self.settings.prompts.items
        if item is None and phase == "warmup":
            # From the end of the set, so the measured requests always start at the first prompt.
            item = items[-1 - (self.warmups % len(items))]
            self.warmups += 1
        elif item is None:
            item = items[self.next_prompt % len(items)]
            self.next_prompt += 1
        tag = cache_tag(self.number)
        return RequestSpec(
            number=self.number,
            phase=phase,
            prompt_id=item["id"],
            question=item["prompt"],
            text=render(self.settings.prompt_format, item["prompt"], tag),
            tag=tag,
            max_tokens=max_tokens or self.settings.max_tokens,
            timeout_s=self.settings.request_timeout_s,
            seed=self.settings.seed,
        )


def _sample(
    spec: RequestSpec, raw: RawResult, level_t0: float, concurrency: int, repetition: int
) -> dict[str, Any]:
    """One flat per-request record (the JSON `samples` and the CSV rows)."""
    record: dict[str, Any] = {
        "phase": spec.phase,
        "repetition": repetition,
        "concurrency": concurrency,
        "request": spec.number,
        "prompt_id": spec.prompt_id,
        "ok": raw.ok,
        "error": raw.error,
        "start_offset_s": raw.start_s - level_t0,
        "prompt_tokens": raw.prompt_tokens,
        "output_tokens": raw.output_tokens,
        "output_tokens_source": raw.output_tokens_source,
        "finish_reason": raw.finish_reason,
    }
    if raw.ok:
        record.update(
            metrics.request_metrics(raw.start_s, raw.end_s, raw.first_token_s, raw.chunk_times_s,
                                    raw.output_tokens, raw.prompt_tokens)
        )  # fmt: skip
    else:
        record.update(
            ttft_ms=None,
            e2e_ms=(raw.end_s - raw.start_s) * 1000.0,
            tpot_ms=None,
            itl_ms=[],
            decode_tokens_per_s=None,
            prompt_tokens_per_s=None,
        )
    record["first_chunk_tokens"] = raw.first_chunk_tokens
    record["server"] = raw.server
    record["output_text"] = raw.text
    return record


def _fill_counts(engine: Engine, spec: RequestSpec, raw: RawResult) -> None:
    """Token counts the stream did not give, counted after the level (outside the timing)."""
    if raw.prompt_tokens is None:
        raw.prompt_tokens = engine.count_tokens(spec.text)
    if raw.ok and raw.output_tokens is None:
        counted = engine.count_tokens(raw.text) if raw.text else 0
        raw.output_tokens = counted
        raw.output_tokens_source = "retokenized"


def _run_level(
    engine: Engine, specs: list[RequestSpec], concurrency: int, deadline: float
) -> tuple[list[tuple[RequestSpec, RawResult]], float, float, int, bool]:
    """Closed loop at `concurrency`.

    Returns (finished requests, level start, wall s, requests not sent, interrupted). On Ctrl-C the
    requests finished so far are returned and the rest are abandoned (the engine's close() ends
    them).
    """
    pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix=f"bench-c{concurrency}")
    pending: dict[Future[RawResult], RequestSpec] = {}
    queue = list(specs)
    done: list[tuple[RequestSpec, RawResult]] = []
    interrupted = False
    t0 = time.perf_counter()
    try:
        while queue or pending:
            while queue and len(pending) < concurrency and time.perf_counter() < deadline and engine.alive():
                spec = queue.pop(0)
                pending[pool.submit(engine.generate, spec)] = spec
            if not pending:
                break  # time budget reached, or the server died, with requests left in the queue
            finished, _ = wait(list(pending), return_when=FIRST_COMPLETED)
            for fut in finished:
                done.append((pending.pop(fut), fut.result()))
    except KeyboardInterrupt:
        interrupted = True
    pool.shutdown(wait=not interrupted, cancel_futures=True)
    end = max((raw.end_s for _, raw in done), default=t0)
    return done, t0, end - t0, len(queue), interrupted


@dataclass
class _Collected:
    """What the measuring part of a run gathers, kept when it stops early (Ctrl-C, time budget)."""

    sanity: dict[str, Any] = field(default_factory=dict)
    warmup_failures: int = 0
    samples: list[dict[str, Any]] = field(default_factory=list)
    walls: dict[int, float] = field(default_factory=dict)  # concurrency -> summed wall s
    machine_samples: list[dict[str, Any]] = field(default_factory=list)
    partial_reason: str | None = None


def run_benchmark(settings: BenchSettings, progress: Progress | None = None) -> dict[str, Any]:
    """Run the whole procedure; the results of benchmark.json as a dict."""
    return measure(settings, progress).to_dict()


def measure(settings: BenchSettings, progress: Progress | None = None) -> BenchmarkResult:
    """Run the whole procedure; the results of benchmark.json (`partial` when it stopped early)."""
    say = progress or (lambda _msg: None)
    load_before = machine_load()
    say(f"starting {settings.engine} with {settings.model}")
    engine = open_engine(settings)
    t_start = time.perf_counter()
    got = _Collected()
    try:
        try:
            requests = _Requests(settings)
            got.sanity = _sanity(settings, engine, requests, say)
            _warm_up(settings, engine, requests, got, say)
            _measure(settings, engine, requests, t_start + settings.max_duration_s, got, say)
        except KeyboardInterrupt:
            got.partial_reason = INTERRUPTED
        memory = engine.memory()
        model = engine.describe()
    finally:
        engine.close()
    duration_s = time.perf_counter() - t_start
    machine = {"before": load_before, "after": machine_load()}
    return _results(settings, got, memory, model, duration_s, machine)


def _sanity(settings: BenchSettings, engine: Engine, requests: _Requests, say: Progress) -> dict[str, Any]:
    """One short request that must answer with tokens, else a UserError; its sample record."""
    spec = requests.make("sanity", SANITY_PROMPT, max_tokens=min(SANITY_TOKENS, settings.max_tokens))
    raw = engine.generate(spec)
    if not raw.ok:
        raise UserError(
            f"the sanity request to {settings.engine} ({settings.model}) failed: {raw.error}",
            fix="check that the server runs and the model loads; a timeout: raise --request-timeout",
        )
    _fill_counts(engine, spec, raw)
    if not raw.output_tokens:
        raise UserError(f"the sanity request to {settings.engine} returned no tokens.")
    say(f"sanity: {raw.output_tokens} tokens in {(raw.end_s - raw.start_s) * 1000:.0f} ms: {raw.text[:60]!r}")
    return _sample(spec, raw, raw.start_s, 1, 0)


def _warm_up(
    settings: BenchSettings, engine: Engine, requests: _Requests, got: _Collected, say: Progress
) -> None:
    """The warm-up requests (not recorded); failures are counted in `got`."""
    for _ in range(settings.warmup_requests):
        got.warmup_failures += 0 if engine.generate(requests.make("warmup")).ok else 1
    say(f"warm-up: {settings.warmup_requests} request(s), {got.warmup_failures} failed")


def _measure(
    settings: BenchSettings,
    engine: Engine,
    requests: _Requests,
    deadline: float,
    got: _Collected,
    say: Progress,
) -> None:
    """Every repetition of every concurrency level into `got`, until done or a reason to stop."""
    # The machine's bandwidth drifts (neighbours on a shared host): measure it right before and
    # right after the level the roofline compares with, the engine idle.
    roofline_level = min(settings.concurrency)
    if settings.measure_roofline:
        got.machine_samples.append(_measure_machine(settings, engine))
    for repetition in range(settings.repetitions):
        for concurrency in settings.concurrency:
            if time.perf_counter() >= deadline:
                got.partial_reason = f"time budget of {settings.max_duration_s:g} s reached"
                return
            specs = [requests.make("measured") for _ in range(settings.num_requests)]
            done, t0, wall, unsent, interrupted = _run_level(engine, specs, concurrency, deadline)
            for spec, raw in done:
                _fill_counts(engine, spec, raw)
                got.samples.append(_sample(spec, raw, t0, concurrency, repetition))
            got.walls[concurrency] = got.walls.get(concurrency, 0.0) + wall
            failed = sum(1 for _, r in done if not r.ok)
            say(
                f"concurrency {concurrency} (repetition {repetition + 1}/{settings.repetitions}): "
                f"{len(done)} requests, {failed} failed, {wall:.1f} s"
            )
            if settings.measure_roofline and repetition == 0 and concurrency == roofline_level:
                got.machine_samples.append(_measure_machine(settings, engine))
            got.partial_reason = _stop_reason(settings, engine, unsent, interrupted)
            if got.partial_reason:
                return


def _stop_reason(settings: BenchSettings, engine: Engine, unsent: int, interrupted: bool) -> str | None:
    """Why the run must stop after a level (the results are then partial); None to go on."""
    if interrupted:
        return INTERRUPTED
    if not engine.alive():
        return "the server process exited during the run" + (
            f": {unsent} request(s) not sent" if unsent else ""
        )
    if unsent:
        return f"time budget of {settings.max_duration_s:g} s reached: {unsent} request(s) not sent"
    return None


def _notes(settings: BenchSettings, got: _Collected, model: dict[str, Any]) -> tuple[list[str], list[Reason]]:
    """What a reader of the numbers must know: failures, partial results, queueing, early stops
    (English `notes` and the same as `note_codes`)."""
    notes: list[str] = []
    codes: list[Reason] = []
    failed = [s for s in got.samples if not s["ok"]]
    if failed:
        reasons = Counter(s["error"] for s in failed)
        errors = "; ".join(f"{n} x {reason}" for reason, n in reasons.items())
        english = f"{len(failed)} of {len(got.samples)} requests failed: {errors}"
        note(
            notes,
            codes,
            "requests_failed",
            english,
            failed=len(failed),
            total=len(got.samples),
            errors=errors,
        )
    if got.warmup_failures:
        english = f"{got.warmup_failures} warm-up request(s) failed"
        note(notes, codes, "warmup_failed", english, count=got.warmup_failures)
    if got.partial_reason:
        note(notes, codes, "partial", f"partial results: {got.partial_reason}", text=got.partial_reason)
    batched = settings.engine == "ollama" or model.get("server_parallel_slots", 1) > 1
    if not batched and max(settings.concurrency) > 1:
        server = "llama-cpp-python's server" if settings.engine == "llamacpp" else settings.engine
        english = f"{server} serves one request at a time: concurrency > 1 measures queueing (TTFT grows), not batching"
        note(notes, codes, "queueing", english, server=server)
    short = [s for s in got.samples if s["ok"] and s.get("finish_reason") != "length"]
    if short:
        english = (
            f"{len(short)} request(s) stopped before max_tokens (finish_reason != length); "
            "their actual token counts are used"
        )
        note(notes, codes, "stopped_early", english, count=len(short))
    return notes, codes


def _results(
    settings: BenchSettings, got: _Collected, memory: dict[str, Any], model: dict[str, Any],
    duration_s: float, load: dict[str, Any],
) -> BenchmarkResult:  # fmt: skip
    """The results of benchmark.json: summaries per level, memory, roofline, notes, samples. The
    parts measured by the shared helpers (benchmarks.metrics, the engines) are typed here."""
    samples, walls = got.samples, got.walls
    summary = [
        metrics.summarize_level([s for s in samples if s["concurrency"] == c], c, walls[c])
        for c in settings.concurrency
        if c in walls
    ]
    notes, note_codes = _notes(settings, got, model)
    roof = _roofline(settings, model, memory, summary, samples, got.machine_samples)
    arch = model.pop("arch", {})
    result = BenchmarkResult(
        engine=settings.engine,
        model=model.pop("model"),
        model_size_bytes=or_not_measured(model.pop("model_size_bytes")),
        quantization=or_not_measured(model.pop("quantization")),
        engine_details=EngineDetails.from_dict({**model, "arch": arch}),
        settings=SettingsRecord.from_dict(settings.to_dict()),
        summary=[LevelSummary.from_dict(row) for row in summary],
        memory=BenchMemory.from_dict(memory),
        roofline=Roofline.from_dict(roof),
        timing_agreement=TimingAgreement.from_dict(metrics.timing_agreement(samples, min(walls, default=1))),
        sanity=got.sanity,
        requests_total=len(samples),
        failures_total=sum(1 for s in samples if not s["ok"]),
        partial=got.partial_reason is not None,
        partial_reason=or_not_measured(got.partial_reason),
        duration_s=duration_s,
        machine_load=load,
        samples=samples,
        notes=notes,
        note_codes=note_codes,
    )
    result.headline = outputs.headline(result)
    return result


def _device(model: dict[str, Any], memory: dict[str, Any]) -> str:
    return "cuda" if (memory.get("vram_bytes") or 0) > 0 or model.get("device") == "cuda" else "cpu"


# Each figure of a machine measurement with the key of the method that produced it.
MACHINE_FIGURES = (
    ("bandwidth_bytes_per_s", "bandwidth_method"),
    ("copy_bandwidth_bytes_per_s", "copy_bandwidth_method"),
    ("peak_flops_per_s", "peak_flops_method"),
)


def _measure_machine(settings: BenchSettings, engine: Engine) -> dict[str, Any]:
    """Bandwidth and matmul peak now, with the engine idle (on the GPU when the engine uses VRAM)."""
    return roofline.measure(settings.threads, _device({}, engine.memory()))


def _best_machine(machine_samples: list[dict[str, Any]]) -> dict[str, Any]:
    """The highest bandwidth and matmul peak of the samples: the limit is an upper bound."""
    best: dict[str, Any] = {}
    for key, method in MACHINE_FIGURES:
        valid = [m for m in machine_samples if m.get(key)]
        if valid:
            top = max(valid, key=lambda m: m[key])
            best[key], best[method] = top[key], top.get(method)
    reasons = [m["reason"] for m in machine_samples if m.get("reason")]
    if reasons and not best.get("bandwidth_bytes_per_s"):
        best["reason"] = reasons[0]
    return best


def _roofline(
    settings: BenchSettings, model: dict[str, Any], memory: dict[str, Any],
    summary: list[dict[str, Any]], samples: list[dict[str, Any]],
    machine_samples: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:  # fmt: skip
    arch = dict(model.get("arch") or {})
    # A local GGUF of the same model gives exact tensor bytes even when Ollama serves it.
    if settings.gguf_path and arch.get("weight_bytes_source") != "GGUF tensor bytes":
        from trainer.gguf_info import read_gguf

        try:
            info = read_gguf(settings.gguf_path)
        except UserError as exc:  # never lose a finished benchmark over the roofline
            return {"limit_tokens_per_s": None, "achieved_fraction": None, "reason": str(exc)}
        arch.update(
            params=info.params,
            weight_bytes=info.tensor_bytes,
            weight_bytes_source="GGUF tensor bytes",
            kv_bytes_per_position=info.kv_bytes_per_position(2),
        )
    if not settings.measure_roofline:
        return {
            "limit_tokens_per_s": None,
            "achieved_fraction": None,
            "reason": "not measured (--no-roofline)",
        }
    rows = [r for r in summary if r.get("decode_tokens_per_s")]
    if not rows:
        return {"limit_tokens_per_s": None, "achieved_fraction": None, "reason": "no successful request"}
    base = min(rows, key=lambda r: r["concurrency"])
    ok = [s for s in samples if s["ok"] and s["concurrency"] == base["concurrency"]]
    prompt_mean = metrics.distribution(s.get("prompt_tokens") for s in ok)["mean"] or 0.0
    output_mean = metrics.distribution(s.get("output_tokens") for s in ok)["mean"] or 0.0
    # Average context during decoding: the prompt plus half the answer.
    context_tokens = prompt_mean + output_mean / 2
    kv = arch.get("kv_bytes_per_position")
    weights = arch.get("weight_bytes")
    bytes_per_token = weights + (kv or 0) * context_tokens if weights else None
    device = _device(model, memory)
    # One sample before the level, one after it (only the first if the run stopped inside it).
    around = "before and after" if len(machine_samples or []) > 1 else "before"
    when = f"{around} the concurrency {base['concurrency']} level, engine idle"
    if not machine_samples:  # interrupted before the level, or called without samples
        machine_samples = [roofline.measure(settings.threads, device)]
        when = "after the run"
    machine = _best_machine(machine_samples)
    out = metrics.roofline(
        machine.get("bandwidth_bytes_per_s"),
        bytes_per_token,
        machine.get("peak_flops_per_s"),
        arch.get("params"),
        base["decode_tokens_per_s"],
    )
    out.update(
        achieved_source=f"mean client-side decode tokens/s per request at concurrency {base['concurrency']}",
        weight_bytes=weights,
        weight_bytes_source=arch.get("weight_bytes_source"),
        kv_bytes_per_position=kv,
        context_tokens=context_tokens,
        device=device,
        threads=settings.threads,
        bandwidth_method=machine.get("bandwidth_method"),
        peak_flops_method=machine.get("peak_flops_method"),
        machine_samples=[{key: m.get(key) for key, _ in MACHINE_FIGURES} for m in machine_samples],
        machine_samples_note=f"measured {len(machine_samples)} time(s) ({when}); the highest values count",
    )
    copy_bw = machine.get("copy_bandwidth_bytes_per_s")
    if copy_bw and bytes_per_token:
        # For reference: the limit if the copy figure (read + write) were the bandwidth.
        out.update(
            copy_bandwidth_bytes_per_s=copy_bw,
            copy_bandwidth_method=machine.get("copy_bandwidth_method"),
            copy_memory_limit_tokens_per_s=copy_bw / bytes_per_token,
            achieved_fraction_of_copy_limit=base["decode_tokens_per_s"] / (copy_bw / bytes_per_token),
        )
    if machine.get("reason"):
        out["reason"] = machine["reason"]
    return out
