"""Vector bytes per image, HNSW index size, build time and query latency for N images in pgvector.

    LOOKALIKE_STATE_DIR=/tmp/state-bench .venv/bin/python -m bench.index_size [--rows 200000] [--quick]

Vectors shaped like real ones: the shipped embeddings of the 10,000 Fashion-MNIST test images, then
copies of them with small random perturbations (re-normalised) up to --rows. They go into a scratch
table in the (embedded, unless DATABASE_URL is set) PostgreSQL, with the same column type and HNSW
parameters as ``search.ImageEmbedding``; the table is dropped at the end.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from bench.common import cached_raw_features, embedder, machine, table
from bench.datasets import fashion_mnist, fashion_mnist_pil
from search.embeddings import VECTOR_DIMENSIONS

TABLE = "bench_index_size_vectors"


def database_url() -> str:
    if os.environ.get("DATABASE_URL"):
        return os.environ["DATABASE_URL"]
    from config.embedded import postgres_url

    return postgres_url()


def make_vectors(rows: int, *, model_name: str, quick: bool) -> np.ndarray:
    model = embedder(model_name)
    images, _ = fashion_mnist("test", limit=300 if quick else 10_000)
    base = model.reduction.project(cached_raw_features(model, f"fm-test-{len(images)}", lambda: fashion_mnist_pil(images)))
    rng = np.random.default_rng(0)
    copies = [base]
    while sum(len(c) for c in copies) < rows:
        # Per-copy noise of 0.2-0.6 of the vector's length: neighbours, not duplicates.
        noise = rng.standard_normal(base.shape).astype(np.float32) * rng.uniform(0.2, 0.6) / np.sqrt(base.shape[1])
        copies.append(base + noise)
    vectors = np.concatenate(copies)[:rows]
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float16)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="efficientnet-lite0")
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--maintenance-work-mem", default="1GB")
    parser.add_argument("--quick", action="store_true", help="smoke test: 3,000 rows")
    args = parser.parse_args()
    if args.quick:
        args.rows = 3000

    import psycopg
    from pgvector import HalfVector
    from pgvector.psycopg import register_vector

    vectors = make_vectors(args.rows, model_name=args.model, quick=args.quick)
    dims = vectors.shape[1]
    with psycopg.connect(database_url(), autocommit=True) as connection:
        connection.execute("CREATE EXTENSION IF NOT EXISTS vector")
        register_vector(connection)
        connection.execute(f"DROP TABLE IF EXISTS {TABLE}")
        # Same column as search.ImageEmbedding.vector.
        connection.execute(f"CREATE TABLE {TABLE} (id bigserial PRIMARY KEY, vector halfvec({dims}) NOT NULL)")
        started = time.perf_counter()
        with connection.cursor() as cursor, cursor.copy(f"COPY {TABLE} (vector) FROM STDIN WITH (FORMAT BINARY)") as copy:
            copy.set_types(["halfvec"])
            for vector in vectors:
                copy.write_row([HalfVector(vector)])
        load_seconds = time.perf_counter() - started
        connection.execute(f"VACUUM ANALYZE {TABLE}")
        connection.execute(f"SET maintenance_work_mem = '{args.maintenance_work_mem}'")
        started = time.perf_counter()
        connection.execute(
            f"CREATE INDEX {TABLE}_hnsw ON {TABLE} USING hnsw (vector halfvec_cosine_ops) WITH (m = 16, ef_construction = 64)"
        )
        build_seconds = time.perf_counter() - started
        value_bytes, table_bytes, index_bytes = connection.execute(
            f"SELECT avg(pg_column_size(vector)), pg_total_relation_size('{TABLE}') - pg_indexes_size('{TABLE}'),"
            f" pg_relation_size('{TABLE}_hnsw') FROM {TABLE}"
        ).fetchone()

        # Latency and recall@20 of the index against exact search, for 100 stored vectors as queries.
        exact = vectors.astype(np.float32)
        queries = np.random.default_rng(1).choice(len(vectors), size=100, replace=False)
        latencies, recalls = [], []
        for query in queries:
            started = time.perf_counter()
            rows = connection.execute(
                f"SELECT id FROM {TABLE} ORDER BY vector <=> %s LIMIT 20", (HalfVector(vectors[query]),)
            ).fetchall()
            latencies.append(time.perf_counter() - started)
            truth = set(np.argsort(-(exact @ exact[query]))[:20] + 1)
            recalls.append(len(truth & {row[0] for row in rows}) / 20)
        connection.execute(f"DROP TABLE {TABLE}")

    print(f"pgvector HNSW for {args.rows:,} {args.model} vectors, halfvec({dims}), m=16, ef_construction=64, "
          f"maintenance_work_mem={args.maintenance_work_mem} ({machine()})\n")
    print(table(
        ["rows", "dims", "bytes/vector (stored value)", "table MB", "HNSW index MB", "index bytes/row", "load s",
         "build s", "top-20 p50 ms", "recall@20"],
        [[f"{args.rows:,}", dims, f"{float(value_bytes):.0f}", f"{table_bytes / 1e6:.0f}", f"{index_bytes / 1e6:.0f}",
          f"{index_bytes / args.rows:.0f}", f"{load_seconds:.0f}", f"{build_seconds:.1f}",
          f"{1000 * np.median(latencies):.2f}", f"{np.mean(recalls):.3f}"]],
    ))  # fmt: skip
    assert dims == VECTOR_DIMENSIONS


if __name__ == "__main__":
    main()
