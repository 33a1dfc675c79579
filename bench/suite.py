"""Run every performance benchmark one after the other and write docs/benchmarks.md.

    .venv/bin/python -m bench.suite              # the full suite: about 40 minutes on 2 cores
    .venv/bin/python -m bench.suite --quick --output /tmp/benchmarks.md   # smoke test, about 2 minutes

Each benchmark runs in its own process, alone on the machine (as far as this script can arrange: nothing else
of the suite runs beside it), and prints a markdown section; the page gets them in order under a header with the
date, the machine (cores, CPU, memory, load average at the start) and the exact command. The embedded PostgreSQL
and Valkey live in ``$LOOKALIKE_STATE_DIR`` (default: ``$BENCH_CACHE_DIR/state``, away from the project's own
``.state``): the bench catalogs take several GB and are kept between runs.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from bench.datasets import CACHE_DIR

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = [  # (module, full-run arguments); --quick replaces the arguments with the smoke mode
    ("bench.photo_search", ["--products", "877"]),  # the demo catalog's size
    ("bench.photo_search", ["--products", "200000"]),
    ("bench.ann", ["--rows", "200000", "--rows", "1000000"]),
    ("bench.http", ["--products", "200000"]),
    ("bench.ingest", ["--products", "10000"]),
]


def machine_lines() -> list[str]:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.machine())
    memory_kb = int(next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
                         if line.startswith("MemTotal")))
    load = " ".join(f"{value:.2f}" for value in os.getloadavg())
    matrix_ms, python_ms = speed_reference()
    return [
        f"- Date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"- Machine: {os.cpu_count()} cores ({cpu}), {memory_kb / 2**20:.0f} GiB memory, "
        f"Python {platform.python_version()}, {platform.platform()}",
        f"- Load average before the run: {load} (the machine is shared; see each section's notes)",
        f"- Speed reference (to compare runs on different machines): numpy 200,000 x 384 float32 matrix times a"
        f" vector {matrix_ms:.1f} ms, Python `sum(range(10**6))` {python_ms:.1f} ms (medians of 20)",
    ]


def speed_reference() -> tuple[float, float]:
    """Two fixed workloads, memory-bound and interpreter-bound: the machines these run on differ by 2-3x."""
    import numpy as np

    matrix = np.random.default_rng(0).standard_normal((200_000, 384), dtype=np.float32)
    vector = matrix[0].copy()

    def median_ms(work) -> float:
        timings = []
        for _ in range(20):
            started = time.perf_counter()
            work()
            timings.append(time.perf_counter() - started)
        return float(np.median(timings) * 1000)

    return median_ms(lambda: matrix @ vector), median_ms(lambda: sum(range(10**6)))


def run_benchmark(module: str, arguments: list[str], *, env: dict) -> tuple[str, float]:
    started = time.monotonic()
    print(f"--- {module} {' '.join(arguments)}", file=sys.stderr, flush=True)
    result = subprocess.run([sys.executable, "-m", module, *arguments], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            text=True)
    section = result.stdout.strip()
    if result.returncode != 0:
        section += f"\n\n**{module} exited with status {result.returncode}**"
    return section, time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="every benchmark in its smoke mode")
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "benchmarks.md")
    args = parser.parse_args()

    env = {**os.environ}
    own_services = "LOOKALIKE_STATE_DIR" not in env
    env.setdefault("LOOKALIKE_STATE_DIR", str(CACHE_DIR / "state"))
    command = " ".join(["python -m bench.suite", *map(shlex.quote, sys.argv[1:])])
    header = [f"- Command: `{command}` (from the repository root, with `.venv/bin/python`)", *machine_lines()]
    sections, failed = [], []
    benchmarks = dict(BENCHMARKS).items() if args.quick else BENCHMARKS  # one smoke run per module
    for module, arguments in benchmarks:
        arguments = ["--quick"] if args.quick else arguments
        section, seconds = run_benchmark(module, arguments, env=env)
        sections.append(f"{section}\n\n_{module} took {seconds / 60:.1f} minutes._")
        if "exited with status" in section:
            failed.append(module)

    page = [
        "# Performance benchmarks",
        "Written by `bench/suite.py`; do not edit by hand. Which targets are met, by how much the others are missed, "
        "what was tried and what would close the gaps: [performance.md](performance.md). The embedding model's own "
        "benchmarks (relevance, reduction, model throughput) are in [embeddings-benchmarks.md](embeddings-benchmarks.md).",
        "\n".join(header),
        *sections,
    ]
    args.output.write_text("\n\n".join(page) + "\n")
    if own_services:  # the embedded servers this run started; the bench catalogs stay on disk
        subprocess.run([sys.executable, "-m", "config.embedded", "stop"], cwd=ROOT, env=env, check=False)
    print(f"wrote {args.output}", file=sys.stderr)
    if failed:
        sys.exit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
