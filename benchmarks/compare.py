"""Same-run comparison: an exported GGUF through llama.cpp vs the in-process transformers baseline.

    python -m benchmarks.compare --gguf outputs/default/models/gguf/model-Q4_K_M.gguf \\
        --hf outputs/default/models/finetuned --prompt-format outputs/default/prompt_format.json

Runs the procedure of `python -m benchmarks` for each contestant back to back with the same prompts,
output length, context, threads and concurrency level, `--rounds` times in alternation (A B C A B C)
so that a change in machine load hits every contestant. Contestants: llama.cpp's own llama-server
(`native`, when installed), llama-cpp-python's server (`python`), and transformers in-process on
the Hugging Face folder (the baseline, float32 on the CPU). Prints a table (decode tokens/s, TTFT
and E2E p50, peak RSS, roofline fraction; per round, then the mean) with each contestant's speed-up
over the baseline, and writes a JSON with every round's full results (`--out`). Exit status 0, or
2 with a message on a problem to fix (missing model, no free port, ...).
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from trainer.errors import UserError
from trainer.metrics import mean

BASELINE = "transformers"


def _contestants(gguf: Path, hf: Path, servers: list[str]) -> list[tuple[str, str, str, str]]:
    """(label, engine, model, llama.cpp server) for each contestant, the baseline last."""
    from benchmarks.engines.llamacpp import find_native_server

    native, where = find_native_server()
    out = []
    for server in servers:
        if server == "native" and native is None:
            print(f"skipping llama.cpp native: {where}", file=sys.stderr)
            continue
        out.append((f"llamacpp-{server}", "llamacpp", str(gguf), server))
    out.append((BASELINE, BASELINE, str(hf), "auto"))
    return out


def _row(label: str, round_no: int, results: dict[str, Any]) -> dict[str, Any]:
    level = min(results["summary"], key=lambda r: r["concurrency"]) if results["summary"] else {}
    roof = results.get("roofline") or {}
    return {
        "contestant": label,
        "round": round_no,
        "quantization": results.get("quantization"),
        "concurrency": level.get("concurrency"),
        "completed": level.get("completed"),
        "failures": results.get("failures_total"),
        "decode_tokens_per_s": level.get("decode_tokens_per_s"),
        "server_decode_tokens_per_s": level.get("server_decode_tokens_per_s"),
        "ttft_ms_p50": (level.get("ttft_ms") or {}).get("p50"),
        "e2e_ms_p50": (level.get("e2e_ms") or {}).get("p50"),
        "aggregate_tokens_per_s": level.get("aggregate_tokens_per_s"),
        "peak_rss_bytes": (results.get("memory") or {}).get("server_peak_rss_bytes"),
        "roofline_limit_tokens_per_s": roof.get("limit_tokens_per_s"),
        "roofline_fraction": roof.get("achieved_fraction"),
        "bandwidth_bytes_per_s": roof.get("bandwidth_bytes_per_s"),
        "busy_cores_before": (results.get("machine_load") or {}).get("before", {}).get("busy_cores"),
    }


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean of each contestant's rounds, with the speed-up over the baseline's mean decode speed."""
    labels = list(dict.fromkeys(r["contestant"] for r in rows))
    out = []
    for label in labels:
        mine = [r for r in rows if r["contestant"] == label]
        keys = ("decode_tokens_per_s", "ttft_ms_p50", "e2e_ms_p50", "peak_rss_bytes", "roofline_fraction")
        out.append(
            {"contestant": label, "rounds": len(mine), **{k: mean([r[k] for r in mine]) for k in keys}}
        )
    base = next((r["decode_tokens_per_s"] for r in out if r["contestant"] == BASELINE), None)
    for r in out:
        r["speedup_vs_baseline"] = (
            r["decode_tokens_per_s"] / base if base and r["decode_tokens_per_s"] else None
        )
    return out


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from rich.console import Console

    from benchmarks.runner import resolve_threads
    from trainer.runfolder import environment, write_json

    console = Console() if sys.stdout.isatty() else Console(width=140)
    out = (
        Path(args.out)
        if args.out
        else Path("benchmark-results") / f"compare-{datetime.now():%Y%m%d-%H%M%S}.json"
    )
    threads, threads_reason = resolve_threads(args.threads, "--threads")
    try:
        rows, runs = _run_rounds(args, threads, threads_reason, out, console)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    summary = summarize(rows)
    _print_comparison(console, rows, summary, threads, args.max_tokens)
    write_json(
        out,
        {
            "environment": environment(),
            "command": "python -m benchmarks.compare " + " ".join(argv if argv is not None else sys.argv[1:]),
            "threads": threads,
            "threads_reason": threads_reason,
            "rows": rows,
            "summary": summary,
            "runs": runs,
        },
    )
    console.print(f"wrote {out}")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.compare", description=__doc__.split("\n")[0])
    parser.add_argument("--gguf", required=True, help="the exported GGUF (llama.cpp contestants)")
    parser.add_argument("--hf", required=True, help="the same model as a Hugging Face folder (baseline)")
    parser.add_argument(
        "--servers", default="native,python", help="llama.cpp servers to include (default: native,python)"
    )
    parser.add_argument(
        "--prompt-format", default="auto", help="as in python -m benchmarks (e.g. a run's prompt_format.json)"
    )
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds (default: 2)")
    parser.add_argument("--num-requests", type=int, default=8, help="requests per round (default: 8)")
    parser.add_argument("--max-tokens", type=int, default=64, help="fixed output length (default: 64)")
    parser.add_argument("--concurrency", type=int, default=1, help="concurrency level (default: 1)")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads; 0: free physical cores")
    parser.add_argument("--no-roofline", action="store_true", help="skip the bandwidth/matmul measurement")
    parser.add_argument(
        "--out", default=None, help="JSON path (default: benchmark-results/compare-<time>.json)"
    )
    return parser


def _run_rounds(
    args: argparse.Namespace, threads: int, threads_reason: str, out: Path, console: Any
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every contestant once per round, in the same order each round: (table rows, full results)."""
    from benchmarks.__main__ import resolve_prompt_format
    from benchmarks.prompts import load_prompts
    from benchmarks.runner import run_benchmark
    from benchmarks.spec import BenchSettings

    servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    contestants = _contestants(Path(args.gguf).resolve(), Path(args.hf).resolve(), servers)
    rows: list[dict[str, Any]] = []
    runs: list[dict[str, Any]] = []
    for round_no in range(1, args.rounds + 1):
        for label, engine, model, server in contestants:
            fmt, fmt_source = resolve_prompt_format(args.prompt_format, engine, model, None)
            settings = BenchSettings(
                engine=engine, engine_reason="benchmarks.compare", model=model, prompts=load_prompts(),
                prompt_format=fmt, prompt_format_source=fmt_source, concurrency=[args.concurrency],
                num_requests=args.num_requests, max_tokens=args.max_tokens, threads=threads,
                threads_reason=threads_reason, llamacpp_server=server, measure_roofline=not args.no_roofline,
                server_log=out.with_name(f"{out.stem}_{label}_server.log") if engine == "llamacpp" else None,
            )  # fmt: skip
            console.print(f"[dim]round {round_no}: {label}[/dim]")
            results = run_benchmark(settings)
            rows.append(_row(label, round_no, results))
            runs.append({"contestant": label, "round": round_no, "results": results})
    return rows, runs


def _print_comparison(
    console: Any, rows: list[dict[str, Any]], summary: list[dict[str, Any]], threads: int, max_tokens: int
) -> None:
    """Each round, then each contestant's mean, and the speed-ups over the baseline."""
    from rich.table import Table

    table = Table(title=f"same-run comparison, {threads} thread(s), {max_tokens} tokens out")
    for name in (
        "contestant",
        "round",
        "decode tok/s",
        "TTFT p50 ms",
        "E2E p50 ms",
        "peak RSS MiB",
        "roofline %",
    ):
        table.add_column(name, justify="right")

    def fmt(value: Any, digits: int = 1, scale: float = 1.0) -> str:
        return f"{value / scale:.{digits}f}" if isinstance(value, int | float) else "—"

    def cells(r: dict[str, Any]) -> list[str]:
        return [
            fmt(r["decode_tokens_per_s"]), fmt(r["ttft_ms_p50"], 0), fmt(r["e2e_ms_p50"], 0),
            fmt(r["peak_rss_bytes"], 0, 2**20), fmt(r["roofline_fraction"], 1, 0.01),
        ]  # fmt: skip

    for r in rows:
        table.add_row(r["contestant"], str(r["round"]), *cells(r))
    for r in summary:
        table.add_row(f"[bold]{r['contestant']}[/bold]", "mean", *cells(r))
    console.print(table)
    for r in summary:
        if r["contestant"] != BASELINE and r["speedup_vs_baseline"]:
            console.print(
                f"{r['contestant']}: {r['speedup_vs_baseline']:.2f}x the {BASELINE} baseline's decode speed"
            )


if __name__ == "__main__":
    sys.exit(main())
