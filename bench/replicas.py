"""Throughput with one database server and with two (primary + streaming standby), page cache off.

    LOOKALIKE_STATE_DIR=/tmp/state-bench .venv/bin/python -m bench.replicas [--products 20000] [--seconds 20]

The bench catalog of bench/catalog.py on the embedded PostgreSQL (the primary), a standby of it made with
pg_basebackup (tests/services_support.Standby), and the site as bench/http.py runs it (gunicorn, production
settings) with PAGE_CACHE_SECONDS=0, so every request renders and reads the database: first on the primary alone,
then with DATABASE_REPLICA_URLS naming the standby. For each endpoint the load (bench.loadgen, 8 clients) is
measured with the CPU seconds each part spent: gunicorn's workers, the primary's and the standby's PostgreSQL
processes. On one machine both servers share its cores with the site, so the second server cannot add throughput
here; what the run shows is the routing's cost and each server's share of a request, which docs/scaling.md
extrapolates from.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import psutil

from bench.catalog import ensure_catalog
from bench.common import machine, table
from bench.http import Site, bench_redis_url, flush_page_cache, load, query_photo, working_set_paths

ENDPOINTS = ("More like this", "product page", "photo search")


def _postgres_cpu(data_dir: Path) -> float:
    """User + system CPU seconds of a PostgreSQL server's processes: the postmaster, its live children, and the
    children it has already reaped (a backend whose connection closed)."""
    pid = int((data_dir / "postmaster.pid").read_text().split()[0])
    postmaster = psutil.Process(pid)
    reaped = postmaster.cpu_times()
    return reaped.children_user + reaped.children_system + _cpu_seconds([postmaster, *postmaster.children(True)])


def _site_cpu(site: Site) -> float:
    return _cpu_seconds(psutil.Process(site.process.pid).children(recursive=True))


def _cpu_seconds(processes) -> float:
    """User and system CPU seconds of the processes still alive."""
    total = 0.0
    for process in processes:
        try:
            times = process.cpu_times()
            total += times.user + times.system
        except psutil.NoSuchProcess:
            pass
    return total


def run(args) -> dict:
    from config.embedded import PG_DATA
    from config.embedded import redis_url as embedded_redis_url
    from tests.services_support import Standby

    catalog = ensure_catalog(args.products)
    redis_url = bench_redis_url(os.environ.get("REDIS_URL") or embedded_redis_url())
    scratch = Path(tempfile.mkdtemp(prefix="bench-replicas-"))
    paths = working_set_paths(catalog.database_url, products=args.working_set, scratch=scratch)
    photo = query_photo()
    socket_dir = catalog.database_url.split("host=", 1)[1]
    database = catalog.database_url.split("@/", 1)[1].split("?", 1)[0]
    standby = Standby(primary_host=socket_dir)
    results: dict = {"products": args.products, "workers": args.workers, "seconds": args.seconds,
                     "clients": args.clients, "rounds": args.rounds, "rows": []}
    try:
        started = time.monotonic()
        standby.start()
        results["standby_copy_seconds"] = time.monotonic() - started
        variants = {"primary only": {}, "primary + standby": {"DATABASE_REPLICA_URLS": standby.url(database)}}
        # Alternated, rounds times: on a shared machine the load of others drifts; each variant sees it alike.
        for variant, env in list(variants.items()) * args.rounds:
            flush_page_cache(redis_url)
            site = Site(database_url=catalog.database_url, redis_url=redis_url, media_root=catalog.media_root,
                        static_root=str(scratch / "static"), workers=args.workers,
                        env={"PAGE_CACHE_SECONDS": "0", **env}, log=scratch / f"gunicorn-{variant[:7]}.log")
            try:
                # Warm-up, not measured: the model loads in each worker, connections open, the index is read in.
                load(site, clients=args.workers, seconds=60, photo=photo, max_requests=4 * args.workers,
                     scratch=scratch)
                for name in ENDPOINTS[:2]:
                    load(site, clients=8, seconds=30, paths=paths[name], scratch=scratch,
                         max_requests=len(paths[name].read_text().split()))
                for name in ENDPOINTS:
                    cpu_before = (_site_cpu(site), _postgres_cpu(PG_DATA), _postgres_cpu(standby.data))
                    summary = load(site, clients=args.clients, seconds=args.seconds, paths=paths.get(name),
                                   photo=photo if name == "photo search" else None, scratch=scratch)
                    cpu_after = (_site_cpu(site), _postgres_cpu(PG_DATA), _postgres_cpu(standby.data))
                    per_request = [(after - before) * 1000 / max(1, summary["requests"])
                                   for before, after in zip(cpu_before, cpu_after)]
                    row = {"variant": variant, "endpoint": name, **summary,
                           "cpu_ms_site": per_request[0], "cpu_ms_primary": per_request[1],
                           "cpu_ms_standby": per_request[2]}
                    results["rows"].append(row)
                    print(f"{variant:>18} | {name:>14}: {summary['throughput']:6.1f}/s p50 {summary['p50_ms']:6.1f} "
                          f"ms p95 {summary['p95_ms']:6.1f} ms errors {summary['errors']} | CPU ms per request: "
                          f"site {per_request[0]:.1f}, primary {per_request[1]:.1f}, standby {per_request[2]:.1f}",
                          file=sys.stderr, flush=True)
            finally:
                site.stop()
    finally:
        standby.destroy()
    return results


def report(results: dict, command: str) -> str:
    rows = [
        [row["variant"], row["endpoint"], row["requests"], f"{row['throughput']:.1f}", f"{row['p50_ms']:.1f}",
         f"{row['p95_ms']:.1f}", row["errors"], f"{row['cpu_ms_site']:.1f}", f"{row['cpu_ms_primary']:.1f}",
         f"{row['cpu_ms_standby']:.1f}"]
        for row in results["rows"]
    ]
    return "\n\n".join([
        f"## One and two database servers at {results['products']:,} products\n\n"
        f"Command: `{command}` ({machine()})",
        f"gunicorn, {results['workers']} sync workers, production settings, page cache off; {results['clients']} "
        f"clients for {results['seconds']:g} s per row, variants alternated {results['rounds']} times; "
        f"standby copied in {results['standby_copy_seconds']:.1f} s.",
        table(["servers", "endpoint", "requests", "req/s", "p50 ms", "p95 ms", "errors", "CPU ms: site",
               "primary", "standby"], rows),
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--products", type=int, default=20_000)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=20.0, help="per endpoint and variant")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--working-set", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=2, help="times each variant is measured, alternating")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    results = run(args)
    print(report(results, ("python -m bench.replicas " + " ".join(sys.argv[1:])).strip()))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
