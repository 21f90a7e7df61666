"""Benchmark of the compiler front to back; prints figures (not a pass/fail test).

(a) whole-process wall time of `symbic check` on a typical 100-line file (median of 7 runs);
(b) parse + validate throughput on a generated 10,000-line file (lines/s, in process);
(c) compile throughput (parse + validate + lower + write the bundle) on the same file.

Run: .venv/bin/python bench/bench_check.py
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BLOCK = '''// job {i}
agent "worker-{i}" {{
  command: ["sh", "-c", "echo run {i}"]
  capabilities: ["read", "write"]
  timeout: "5m"
}}

schedule {{
  name: "job-{i}"
  agent: "worker-{i}"
  cron: "{m} {h} * * 1-5"
  timezone: "Europe/Berlin"
  delivery: ["stdout", "log_file", "webhook"]
  webhook_url: "https://hooks.example.com/{i}"
  webhook_headers: {{ "Authorization": "Bearer ${{TOKEN}}" }}
  max_retries: 3
  retry_backoff: "1m"
  policy {{
    max_runtime: "30m"
    allowed_hours {{ start: "08:00", end: "18:00" }}
  }}
}}

'''


def make_source(lines: int) -> str:
    """A realistic file of about ``lines`` lines (agents + schedules with the usual keys)."""
    parts: list[str] = []
    i = n = 0
    while n < lines:
        chunk = BLOCK.format(i=i, m=i % 60, h=(i // 60) % 24)
        parts.append(chunk)
        n += chunk.count("\n")
        i += 1
    return "".join(parts)


def bench_process(path: Path, runs: int = 7) -> float:
    symbic = Path(sys.executable).parent / "symbic"
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        proc = subprocess.run([str(symbic), "check", str(path)], capture_output=True)
        times.append(time.perf_counter() - t0)
        if proc.returncode != 0:
            raise SystemExit(f"symbic check failed:\n{proc.stdout.decode()}{proc.stderr.decode()}")
    return statistics.median(times)


def bench_throughput(text: str, compile_bundle: bool, out: Path) -> float:
    from compiler import __version__
    from compiler.bundle import write_bundle
    from compiler.compile import compile_sources
    from compiler.source import SourceFile

    lines = text.count("\n")
    now = datetime.now(UTC)
    compile_sources([SourceFile("warmup.symbi", BLOCK.format(i=0, m=0, h=0))], now=now)  # lark/cron caches
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        src = SourceFile("big.symbi", text)
        result = compile_sources([src], mode="compile" if compile_bundle else "check", now=now)
        if result.errors:
            raise SystemExit(f"generated file has errors: {result.diagnostics[0].message}")
        if compile_bundle:
            write_bundle(out, list(result.jobs), list(result.agents), list(result.sources), __version__)
        best = min(best, time.perf_counter() - t0)
    return lines / best


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        small = Path(tmp) / "typical.symbi"
        small.write_text(make_source(100))
        big_text = make_source(10_000)
        n_small = small.read_text().count("\n")
        wall = bench_process(small)
        print(f"(a) symbic check, whole process, {n_small}-line file: median {wall * 1000:.0f} ms of 7 runs")
        rate = bench_throughput(big_text, False, Path(tmp) / "x.db")
        print(f"(b) parse + validate, {big_text.count(chr(10))}-line file: {rate:,.0f} lines/s")
        rate = bench_throughput(big_text, True, Path(tmp) / "big.db")
        print(f"(c) compile to bundle, {big_text.count(chr(10))}-line file: {rate:,.0f} lines/s")


if __name__ == "__main__":
    main()
