"""Serving benchmarks of the fine-tuned model: `python -m benchmarks` (any GGUF file, Ollama model or
Hugging Face folder; see benchmarks/__main__.py) and the pipeline stage `python run.py benchmark`
(benchmarks/pipeline.py, reads the run folder's export/deploy results, writes benchmark.json,
benchmark_requests.csv and report_assets/benchmark_*.png). Measured numbers: benchmarks/RESULTS.md.
"""
