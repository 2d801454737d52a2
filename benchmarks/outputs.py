"""Benchmark outputs: the per-request CSV, the terminal table and the one-line headline.

Used by `python -m benchmarks` (CSV beside the JSON) and `python run.py benchmark`
(`benchmark_requests.csv` in the run folder). Files are written atomically
(`trainer.runfolder.write_text`).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from trainer.metrics import mean
from trainer.results import BenchmarkResult
from trainer.runfolder import write_text

CSV_COLUMNS = [
    "repetition",
    "concurrency",
    "request",
    "prompt_id",
    "ok",
    "error",
    "start_offset_s",
    "prompt_tokens",
    "output_tokens",
    "output_tokens_source",
    "finish_reason",
    "ttft_ms",
    "tpot_ms",
    "itl_mean_ms",
    "itl_max_ms",
    "e2e_ms",
    "decode_tokens_per_s",
    "prompt_tokens_per_s",
    "server_prompt_eval_count",
    "server_prompt_eval_ms",
    "server_eval_count",
    "server_eval_ms",
    "server_load_ms",
    "server_decode_tokens_per_s",
]


def _round(value: Any) -> Any:
    return round(value, 3) if isinstance(value, float) else value


def csv_rows(samples: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for s in samples:
        itl = s.get("itl_ms") or []
        server = s.get("server") or {}
        row = {k: s.get(k) for k in CSV_COLUMNS if k in s}
        row["itl_mean_ms"] = mean(itl)
        row["itl_max_ms"] = max(itl) if itl else None
        for key in (
            "prompt_eval_count",
            "prompt_eval_ms",
            "eval_count",
            "eval_ms",
            "load_ms",
            "decode_tokens_per_s",
        ):
            row[f"server_{key}"] = server.get(key)
        rows.append({k: _round(row.get(k)) for k in CSV_COLUMNS})
    return rows


def write_csv(path: Path, samples: list[dict[str, Any]]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in csv_rows(samples):
        writer.writerow({k: "" if v is None else v for k, v in row.items()})
    write_text(path, buf.getvalue())


def _fmt(value: Any, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _mib(value: Any) -> str:
    return "-" if value is None else f"{value / 2**20:.1f} MiB"


def print_table(results: dict[str, Any], console: Any = None) -> None:
    """A rich table per concurrency level plus memory, roofline, timing, load and note lines."""
    from rich.console import Console

    console = console or Console()
    console.print(_level_table(results))
    for line in _footer_lines(results):
        console.print(line)


def _level_table(results: dict[str, Any]) -> Any:
    from rich.table import Table

    settings = results["settings"]
    title = (
        f"{results['engine']} | {Path(str(results['model'])).name} | {results.get('quantization')} | "
        f"{settings['max_tokens']} tokens out, ctx {settings['num_ctx']}, {settings['threads']} thread(s)"
    )
    table = Table(title=title)
    for name in (
        "conc",
        "ok/fail",
        "TTFT p50/p99 ms",
        "TPOT p50 ms",
        "ITL p50/p99 ms",
        "E2E p50/p99 ms",
        "decode tok/s",
        "aggregate tok/s",
        "req/s",
    ):
        table.add_column(name, justify="right")
    for row in results["summary"]:
        table.add_row(
            str(row["concurrency"]),
            f"{row['completed']}/{row['failures']}",
            f"{_fmt(row['ttft_ms']['p50'], 0)} / {_fmt(row['ttft_ms']['p99'], 0)}",
            _fmt(row["tpot_ms"]["p50"]),
            f"{_fmt(row['itl_ms']['p50'])} / {_fmt(row['itl_ms']['p99'])}",
            f"{_fmt(row['e2e_ms']['p50'], 0)} / {_fmt(row['e2e_ms']['p99'], 0)}",
            _fmt(row["decode_tokens_per_s"]),
            _fmt(row["aggregate_tokens_per_s"]),
            _fmt(row["requests_per_s"], 2),
        )
    return table


def _footer_lines(results: dict[str, Any]) -> list[str]:
    memory = results.get("memory") or {}
    vram = (
        _mib(memory.get("vram_bytes"))
        if memory.get("vram_bytes") is not None
        else f"null ({memory.get('vram_reason', 'not measured')})"
    )
    lines = [
        f"model file: {_mib(results.get('model_size_bytes'))}   server peak RSS: "
        f"{_mib(memory.get('server_peak_rss_bytes'))}   VRAM: {vram}",
        _roofline_line(results.get("roofline") or {}),
    ]
    agree = results.get("timing_agreement") or {}
    if agree.get("requests"):
        lines.append(_agreement_line(agree))
    load = results.get("machine_load") or {}
    if load:
        b, a = load.get("before", {}), load.get("after", {})
        lines.append(
            f"machine load: loadavg {b.get('loadavg_1m')} -> {a.get('loadavg_1m')}, busy cores "
            f"before {b.get('busy_cores')} / after {a.get('busy_cores')} of {b.get('cpu_count')}"
        )
    lines += [f"[yellow]note[/yellow] {note}" for note in results.get("notes", [])]
    if results.get("partial"):
        lines.append(f"[red]PARTIAL[/red]: {results.get('partial_reason')}")
    return lines


def _roofline_line(roof: dict[str, Any]) -> str:
    if not roof.get("limit_tokens_per_s"):
        return f"roofline: not computed ({roof.get('reason', 'unknown')})"
    return (
        f"roofline: {_fmt(roof.get('bandwidth_bytes_per_s', 0) / 1e9)} GB/s / "
        f"{_mib(roof.get('bytes_per_token'))} per token -> {_fmt(roof.get('memory_limit_tokens_per_s'))} tok/s; "
        f"compute {_fmt((roof.get('peak_flops_per_s') or 0) / 1e9)} GFLOP/s -> "
        f"{_fmt(roof.get('compute_limit_tokens_per_s'))} tok/s; achieved "
        f"{_fmt(roof.get('achieved_tokens_per_s'))} tok/s = "
        f"{_fmt((roof.get('achieved_fraction') or 0) * 100)}% of the {roof.get('bound')} limit"
    )


def _agreement_line(agree: dict[str, Any]) -> str:
    parts = []
    for key, label in (("ttft_ms", "TTFT"), ("decode_tokens_per_s", "decode tok/s")):
        a = agree.get(key) or {}
        if a.get("difference") is not None:
            parts.append(
                f"{label} {_fmt(a['client_mean'])} vs {_fmt(a['server_mean'])} "
                f"({a['difference'] * 100:+.1f}%, worst request {a['worst_request_difference'] * 100:+.1f}%)"
            )
    return (
        f"client vs server timings at concurrency {agree['concurrency']} ({agree['requests']} requests): "
        + "; ".join(parts)
    )


def markdown_table(results: dict[str, Any]) -> str:
    """The per-level summary as a Markdown table (for RESULTS.md and notes)."""
    head = (
        "| concurrency | ok / failed | TTFT p50 / p90 / p99 ms | TPOT p50 ms | ITL p50 / p99 ms "
        "| E2E p50 / p90 / p99 ms | decode tok/s (mean/request) | aggregate tok/s | req/s |"
    )
    lines = [head, "|" + "---:|" * 9]
    for row in results["summary"]:
        t, e, i = row["ttft_ms"], row["e2e_ms"], row["itl_ms"]
        lines.append(
            f"| {row['concurrency']} | {row['completed']} / {row['failures']} "
            f"| {_fmt(t['p50'], 0)} / {_fmt(t['p90'], 0)} / {_fmt(t['p99'], 0)} | {_fmt(row['tpot_ms']['p50'])} "
            f"| {_fmt(i['p50'])} / {_fmt(i['p99'])} | {_fmt(e['p50'], 0)} / {_fmt(e['p90'], 0)} / {_fmt(e['p99'], 0)} "
            f"| {_fmt(row['decode_tokens_per_s'])} | {_fmt(row['aggregate_tokens_per_s'])} "
            f"| {_fmt(row['requests_per_s'], 2)} |"
        )
    return "\n".join(lines) + "\n"


def headline(result: BenchmarkResult) -> str:
    """One English line for the terminal: decode speed and TTFT at the lowest measured concurrency."""
    rows = [r for r in result.summary if r.decode_tokens_per_s]
    if not rows:
        return f"{result.engine}: no successful request"
    first = rows[0]
    text = (
        f"{result.engine} {result.quantization or ''}: "
        f"{first.decode_tokens_per_s:.1f} tok/s decode, TTFT p50 {first.ttft_ms.p50:.0f} ms at concurrency "
        f"{first.concurrency}"
    )
    if result.roofline.achieved_fraction:
        text += f", {result.roofline.achieved_fraction * 100:.0f}% of the roofline limit"
    if result.partial:
        text += " (PARTIAL)"
    return text
