"""The nearest-vectors statement with PostgreSQL's shared buffers sized for the index, and at the 128 MB default.

    LOOKALIKE_STATE_DIR=... .venv/bin/python -m bench.shared_buffers [--rows 1000000] [--queries 100]

On the embedded server (config.embedded) only, since it restarts it: times the statement alone (as bench.ann does)
for no filter and the 1-in-20 category with the shipped tuning, then with shared_buffers = 128MB, each after a
restart and 500 untimed queries (the OS cache is warm for both), then restores the tuning. Side by side in one run.
"""

from __future__ import annotations

import argparse
import time

from bench.ann import percentile_ms, raw_sql_search
from bench.catalog import ensure_catalog, query_vectors
from bench.common import machine, table


def measure(catalog, queries, ef_search: int) -> dict[str, tuple[float, float]]:
    import psycopg
    from pgvector.psycopg import register_vector

    figures = {}
    with psycopg.connect(catalog.database_url, prepare_threshold=None) as connection:
        register_vector(connection)
        for case, category_id in (("no filter", None), ("1 in 20 category", catalog.clearance_category_id)):
            timings = []
            for query in queries:
                started = time.perf_counter()
                raw_sql_search(connection, catalog.model, query, category_id, False, ef_search)
                timings.append(time.perf_counter() - started)
            figures[case] = (percentile_ms(timings, 50), percentile_ms(timings, 95))
    return figures


def restart_with(shared_buffers: str) -> None:
    from config.embedded import postgres_restart_with

    postgres_restart_with({"shared_buffers": shared_buffers})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=500, help="untimed queries after each restart")
    parser.add_argument("--ef-search", type=int, default=100, help="SEARCH_HNSW_EF_SEARCH's default")
    args = parser.parse_args()

    from config.embedded import tuning

    catalog = ensure_catalog(args.rows)
    queries, _ = query_vectors(args.queries + args.warmup)
    warmup, measured = queries[: args.warmup], queries[args.warmup :]
    tuned = tuning()["shared_buffers"]
    runs = []
    try:
        for shared_buffers in (tuned, "128MB"):
            restart_with(shared_buffers)
            # Until the index is in memory (there is no pg_prewarm in the embedded build): queries of their own.
            measure(catalog, warmup, args.ef_search)
            runs.append((shared_buffers, measure(catalog, measured, args.ef_search)))
    finally:
        restart_with(tuned)
    print(f"## shared_buffers and the nearest-vectors statement\n\n`.venv/bin/python -m bench.shared_buffers "
          f"--rows {args.rows} --queries {args.queries}` ({machine()}; {catalog.index_bytes / 1e6:.0f} MB HNSW index)\n")
    rows = [[label + (" (shipped tuning)" if label == tuned else ""), case, f"{p50:.2f}", f"{p95:.2f}"]
            for label, figures in runs for case, (p50, p95) in figures.items()]
    print(table(["shared_buffers", "case", "p50 ms", "p95 ms"], rows))


if __name__ == "__main__":
    main()
