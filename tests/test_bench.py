"""The benchmark suite keeps working: every benchmark's smoke mode, run through bench.suite as a developer would.

The figures of a smoke run mean nothing (tiny catalogs, a second per measurement); what is asserted is that each
benchmark ran to the end against the real services and wrote its section with its targets.
"""

import os
import subprocess
import sys

import pytest

from config import embedded
from tests.services_support import ROOT
from tests.support import bench_data_missing

# The photo sets come from the package registries once; the benchmarks run on the session's servers, whichever.
pytestmark = [pytest.mark.system, pytest.mark.network, pytest.mark.either_servers]


@pytest.mark.worker
def test_the_suite_runs_every_benchmark_in_smoke_mode(tmp_path):
    if missing := bench_data_missing(fashion_mnist=True, photos=True):  # bench.ann's catalog is Fashion-MNIST
        pytest.skip(missing)
    output = tmp_path / "benchmarks.md"

    # On the session's servers (embedded, or DATABASE_URL/REDIS_URL), in databases of the benchmarks' own.
    env = {**os.environ, "LOOKALIKE_STATE_DIR": str(embedded.STATE_DIR)}
    result = subprocess.run([sys.executable, "-m", "bench.suite", "--quick", "--output", str(output)], cwd=ROOT,
                            env=env, capture_output=True, text=True, timeout=900)

    assert result.returncode == 0, _what_failed(result.stderr)
    page = output.read_text()
    assert "exited with status" not in page
    assert f"{os.cpu_count()} cores" in page
    sections = {section.split("\n", 1)[0]: section for section in page.split("\n## ")[1:]}
    for heading_word, module in (("Photo search", "photo_search"), ("ANN", "ann"), ("HTTP", "http"),
                                 ("Ingest", "ingest")):
        (section,) = [text for heading, text in sections.items() if heading_word in heading]
        table_headers = [line for line in section.splitlines() if line.startswith("| ") and "target" in line]
        assert table_headers, f"the {heading_word} section states no targets"
        assert f"-m bench.{module}" in section  # and the command that measured it
    photo_search = next(text for heading, text in sections.items() if "Photo search" in heading)
    for check in ("in process / (model + ANN)", "3 views / 1 view", "searches/s at", "p50 at 1 client"):
        assert check in photo_search  # the floor, the request and HTTP, each beside its target


def _what_failed(stderr: str) -> str:
    """The failing benchmark's traceback (the suite passes every benchmark's stderr on), else the end of it all."""
    start = stderr.rfind("Traceback (most recent call last)")
    return stderr[start:][:4000] if start >= 0 else stderr[-3000:]
