"""Candidate nearest-vector statements side by side on one bench catalog: latency and recall@12, interleaved.

    LOOKALIKE_STATE_DIR=/tmp/state-bench .venv/bin/python -m bench.ann_candidates --rows 1000000 [--queries 200]
        [--candidate NAME ...]

Each held-out query runs through every candidate in turn (the order rotates per query), so a noisy machine slows
all of them alike; medians and p95 of the statement alone (psycopg, no prepares, its settings in one round trip in
the same transaction), recall@12 against exact numpy search. The experimental indexes a candidate needs are built
on first use and kept (timed, with their size); ``--drop`` removes them again.

Candidates (all return the 48 nearest rows, like the app's statement for 12 products):

- ``hnsw ef=E``: the shipped statement, the halfvec HNSW index, iterative scan, ef_search E (``... off``: no
  iterative scan; ``... 1rt``: settings and statement in one message instead of BEGIN, set_config, it, COMMIT);
- ``bq C``: HNSW over ``binary_quantize(vector)::bit(384)`` (Hamming), its C nearest re-ranked by the halfvec;
- ``sub D C``: HNSW over the first D of the (PCA, variance-ordered) dimensions, C nearest re-ranked by all 384;
- ``partial ef=E``: (1-in-20 category only) a partial halfvec HNSW index holding that category's rows alone.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from bench.ann import LIMIT, exact_top, percentile_ms
from bench.catalog import catalog_vectors, ensure_catalog, query_vectors
from bench.common import machine, table

WANTED = LIMIT * 4  # the app reads 4 rows per wanted product
INDEXES = {
    "bq": "CREATE INDEX IF NOT EXISTS bench_bq_hnsw ON search_imageembedding"
    " USING hnsw ((binary_quantize(vector)::bit(384)) bit_hamming_ops) WITH (m = 16, ef_construction = 64)",
    "sub128": "CREATE INDEX IF NOT EXISTS bench_sub128_hnsw ON search_imageembedding"
    " USING hnsw ((subvector(vector, 1, 128)::halfvec(128)) halfvec_cosine_ops) WITH (m = 16, ef_construction = 64)",
    "partial": "CREATE INDEX IF NOT EXISTS bench_partial_hnsw ON search_imageembedding"
    " USING hnsw (vector halfvec_cosine_ops) WITH (m = 16, ef_construction = 64)"
    " WHERE category_id = {category} AND active",
}


def statement(kind: str, filtered: bool, candidates: int) -> str:
    # "+ 0" hides the category from the planner's proof that a partial index covers the filter: the whole catalog's.
    category = "(category_id + 0)" if kind == "hnsw" else "category_id"
    where = "model = %(model)s AND active" + (f" AND {category} = %(category)s" if filtered else "")
    if kind in ("hnsw", "partial"):
        return (f"SELECT product_id, vector <=> %(q)s FROM search_imageembedding WHERE {where}"
                f" ORDER BY vector <=> %(q)s LIMIT {WANTED}")  # fmt: skip
    if kind == "bq":
        order = "binary_quantize(vector)::bit(384) <~> binary_quantize(%(q)s)::bit(384)"
    else:
        dims = int(kind.removeprefix("sub"))
        order = f"subvector(vector, 1, {dims})::halfvec({dims}) <=> subvector(%(q)s, 1, {dims})::halfvec({dims})"
    return (f"SELECT product_id, vector <=> %(q)s AS distance FROM (SELECT product_id, vector FROM"
            f" search_imageembedding WHERE {where} ORDER BY {order} LIMIT {candidates}) AS near"
            f" ORDER BY distance LIMIT {WANTED}")  # fmt: skip


def run(connection, sql: str, ef_search: int, params: dict, iterative: bool = True, one_trip=None):
    if one_trip is not None:  # the settings and the statement in one message (client-side binding), no BEGIN/COMMIT
        cursor = one_trip.cursor()
        mode = "relaxed_order" if iterative else "off"
        cursor.execute(f"SET LOCAL hnsw.iterative_scan = {mode}; SET LOCAL hnsw.ef_search = {int(ef_search)}; {sql}",
                       params)  # fmt: skip
        while cursor.nextset():
            pass
        return cursor.fetchall()
    with connection.transaction():
        connection.execute("SELECT set_config('hnsw.iterative_scan', %s, true),"
                           " set_config('hnsw.ef_search', %s, true)",
                           ["relaxed_order" if iterative else "off", str(ef_search)])  # fmt: skip
        return connection.execute(sql, params).fetchall()


def parse(name: str) -> tuple[str, int, int]:
    """(kind, ef_search, candidates) of a candidate's name ("hnsw ef=100 off": without iterative scans)."""
    parts = name.split()
    if parts[0] in ("hnsw", "partial"):
        return parts[0], int(parts[1].removeprefix("ef=")), 0
    if parts[0] == "bq":
        candidates = int(parts[1])
        return "bq", min(1000, candidates), candidates
    return f"sub{parts[1]}", min(1000, int(parts[2])), int(parts[2])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--candidate", action="append", help="unfiltered candidates (default: a spread)")
    parser.add_argument("--filtered", action="append", help="1-in-20 candidates (default: a spread)")
    parser.add_argument("--drop", action="store_true", help="drop the experimental indexes and exit")
    args = parser.parse_args()
    import psycopg
    from pgvector.psycopg import register_vector

    catalog = ensure_catalog(args.rows)
    connection = psycopg.connect(catalog.database_url, autocommit=True, prepare_threshold=None)
    register_vector(connection)
    client = psycopg.connect(catalog.database_url, autocommit=True, cursor_factory=psycopg.ClientCursor)
    register_vector(client)
    if args.drop:
        for name in ("bench_bq_hnsw", "bench_sub128_hnsw", "bench_partial_hnsw"):
            connection.execute(f"DROP INDEX IF EXISTS {name}")
        return
    unfiltered = args.candidate or ["hnsw ef=100", "hnsw ef=100 1rt", "hnsw ef=100 off 1rt", "hnsw ef=200 1rt",
                                    "bq 200", "bq 400", "bq 800"]  # fmt: skip
    filtered = args.filtered if args.filtered is not None else ["hnsw ef=100", "partial ef=100", "partial ef=100 1rt",
                                                                "bq 400"]  # fmt: skip
    needed = {parse(name)[0] for name in unfiltered + filtered} - {"hnsw"}
    built = []
    connection.execute("SET maintenance_work_mem = '2GB'")
    for kind in sorted(needed):
        started = time.perf_counter()
        connection.execute(INDEXES[kind].format(category=int(catalog.clearance_category_id)))
        name = f"bench_{kind}_hnsw"
        size = connection.execute("SELECT pg_relation_size(%s)", [name]).fetchone()[0]
        built.append([name, f"{time.perf_counter() - started:.1f}", f"{size / 1e6:.0f}"])
        print(f"  {name}: {built[-1]}", file=sys.stderr)
    connection.execute("ANALYZE search_imageembedding")

    vectors, _ = catalog_vectors(catalog.products)
    matrix = vectors.astype(np.float32)
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    categories = np.array([row[0] for row in connection.execute("SELECT category_id FROM catalog_product ORDER BY id")])
    queries, _ = query_vectors(args.queries + args.warmup)
    from pgvector import HalfVector

    rows = []
    for case, names in (("no filter", unfiltered), ("1 in 20 category", filtered)):
        mask = None if case == "no filter" else categories == catalog.clearance_category_id
        plans = [(name, *parse(name)) for name in names]
        times = {name: [] for name in names}
        recalls = {name: [] for name in names}
        counts = {name: [] for name in names}
        for number, query in enumerate(queries):
            truth = set(exact_top(matrix, query, mask).tolist())
            params = {"q": HalfVector(query), "model": catalog.model, "category": catalog.clearance_category_id}
            for step in range(len(plans)):
                name, kind, ef_search, candidates = plans[(number + step) % len(plans)]
                sql = statement(kind, mask is not None, candidates)
                started = time.perf_counter()
                found = run(connection, sql, ef_search, params, iterative=" off" not in name,
                            one_trip=client if name.endswith(" 1rt") else None)  # fmt: skip
                elapsed = time.perf_counter() - started
                if number < args.warmup:
                    continue
                times[name].append(elapsed)
                top = [product_id - 1 for product_id, _ in found[:LIMIT]]
                recalls[name].append(len(set(top) & truth) / LIMIT)
                counts[name].append(len(found))
        for name, kind, ef_search, candidates in plans:
            sql = statement(kind, mask is not None, candidates)
            plan = connection.execute("EXPLAIN " + sql, params).fetchall()
            index = next((line[0].split(" using ")[1].split()[0] for line in plan if " using " in line[0]), "seq")
            rows.append([
                case, name, index, f"{percentile_ms(times[name], 50):.2f}", f"{percentile_ms(times[name], 95):.2f}",
                f"{np.mean(recalls[name]):.3f}", f"{np.min(recalls[name]):.2f}", min(counts[name]),
            ])  # fmt: skip
            print(f"  {rows[-1]}", file=sys.stderr)
    print(f"## ANN candidates side by side, {catalog.products:,} rows\n")
    print(f"`LOOKALIKE_STATE_DIR=... .venv/bin/python -m bench.ann_candidates {' '.join(sys.argv[1:])}`\n")
    print(f"{machine()}; {args.queries} held-out queries after {args.warmup} warm-up ones, candidates interleaved.\n")
    print(table(["case", "candidate", "index used", "p50 ms", "p95 ms", "recall@12", "min recall", "min rows"], rows))
    if built:
        print()
        print(table(["index", "build s", "MB"], built))


if __name__ == "__main__":
    main()
