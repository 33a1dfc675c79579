"""End-to-end HTTP at N products: the site as docker-compose runs it, the load from a second process on loopback.

    LOOKALIKE_STATE_DIR=/tmp/state-bench .venv/bin/python -m bench.http [--products 200000] [--seconds 10] [--quick]

The bench catalog of bench/catalog.py (built on first use) is served by gunicorn with ``--workers`` sync workers
and production settings (HTTPS redirect off: there is no proxy in front), the embedded PostgreSQL and Valkey.
``bench.loadgen`` sends, at 1, 8 and 32 concurrent clients for ``--seconds`` each:

- photo search: POST /api/v1/search/ with a 1600x1067 JPEG (a Vendure demo photo);
- More like this: GET /api/v1/products/<sku>/similar/;
- product page: GET /p/<sku>/ (it runs More like this too);
- category page: GET /c/<slug>/ and its later pages.

The GET pages cycle over a working set of ``--working-set`` products (the popular ones a shop serves most),
warmed up first. Everything is measured with the shipped settings (page cache on, persistent database connections,
the workers sharing the cores for the model: config/gunicorn.py), then side by side: photo search with every core
for each worker's model (the setting before 2026-12-06), the GET pages with the page cache off (every request
renders: what a product outside the working set costs) and with neither (a new database connection per request).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.catalog import QUICK_PRODUCTS, ROOT, ensure_catalog
from bench.common import machine, table
from bench.datasets import vendure_photos

BIN = Path(sys.executable).parent
BENCH_REDIS_DB = 3  # flushed at the start: no page cached by an earlier run's catalog
CLIENTS = (1, 8, 32)
PHOTO, PAGES = "photo search", ("More like this", "product page", "category page")
# Settings compared side by side: (environment, endpoints measured). The first is what ships.
VARIANTS = {
    "shipped": ({}, (PHOTO, *PAGES)),
    # Before 2026-12-06 each worker ran the model on every core; now the workers share them (config/gunicorn.py).
    "every core for each worker": ({"EMBEDDING_THREADS": str(os.cpu_count())}, (PHOTO,)),
    # Before 2026-12-06 evening a search running alone kept its worker's share too (search/lone_search.py).
    "each worker's share, alone too": ({"SEARCH_EVERY_CORE_WHEN_ALONE": "false"}, (PHOTO,)),
    "no page cache": ({"PAGE_CACHE_SECONDS": "0"}, PAGES),
    "no page cache, no connection reuse": ({"PAGE_CACHE_SECONDS": "0", "CONN_MAX_AGE": "0"}, PAGES),
}
TARGETS = {
    "photo search p50 at 1 client": "<= 50 ms",
    "photo search throughput": ">= 50/s, 0 errors",
    "More like this": ">= 300 req/s",
    "product page": ">= 300 req/s",
}


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def query_photo() -> Path:
    from PIL import Image

    return next(path for path in sorted(vendure_photos()) if Image.open(path).size == (1600, 1067))


class Site:
    """gunicorn as docker-compose.yml's web service runs it (production settings, sync workers)."""

    def __init__(self, *, database_url: str, redis_url: str, media_root: str, static_root: str, workers: int,
                 env: dict, log: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        environment = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "config.settings.production",
            "SECRET_KEY": secrets.token_urlsafe(50),
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "MEDIA_ROOT": media_root,
            "SECURE_SSL_REDIRECT": "false",
            "STATIC_ROOT": static_root,
            # One client address sends all the load: the per-address limit on anonymous searches would refuse it.
            "SEARCH_THROTTLE_RATE": "1000000/min",
            "API_THROTTLE_RATE": "1000000/min",
            "PAGE_THROTTLE_RATE": "",  # no limit: one client measures
            **env,
        }
        self.log = log
        # As the Dockerfile does at build time: production serves hashed static files from STATIC_ROOT. Once per
        # folder: a benchmark that restarts gunicorn for each setting reuses what it collected (4 s a time).
        if not (Path(static_root) / "staticfiles.json").exists():
            subprocess.run([sys.executable, "manage.py", "collectstatic", "--noinput", "-v", "0"], cwd=ROOT,
                           env=environment, check=True)
        with open(log, "w") as output:
            self.process = subprocess.Popen(
                [str(BIN / "gunicorn"), "config.wsgi:application", "--config", "python:config.gunicorn",
                 "--bind", f"127.0.0.1:{self.port}",
                 "--workers", str(workers), "--access-logfile", "-", "--timeout", "60"],
                cwd=ROOT, env=environment, stdout=output, stderr=subprocess.STDOUT, start_new_session=True,
            )
        self._wait_until_up()

    def _wait_until_up(self) -> None:
        import urllib.request

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited:\n{self.log.read_text()[-3000:]}")
            try:
                urllib.request.urlopen(self.url + "/healthz", timeout=5).read()
                return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("gunicorn did not answer in 60 s")

    def worker_rss_mb(self) -> list[float]:
        import psutil

        return [child.memory_info().rss / 2**20 for child in psutil.Process(self.process.pid).children()]

    def stop(self) -> None:
        import signal

        os.killpg(self.process.pid, signal.SIGTERM)
        self.process.wait(timeout=30)


def load(site: Site, *, clients: int, seconds: float, paths: Path | None = None, photo: Path | None = None,
         fields: dict[str, str] | None = None, max_requests: int | None = None, scratch: Path) -> dict:
    """One bench.loadgen run in its own process; returns its summary."""
    out = scratch / f"load-{time.monotonic_ns()}.json"
    command = [sys.executable, "-m", "bench.loadgen", "--base", site.url, "--clients", str(clients),
               "--duration", str(seconds), "--json", str(out)]
    if photo:
        command += ["--post", "/api/v1/search/", "--photo", str(photo), "--expect", '"results"']
        command += [argument for name, value in (fields or {}).items() for argument in ("--field", f"{name}={value}")]
    else:
        command += ["--paths", str(paths)]
    if max_requests:
        command += ["--max-requests", str(max_requests)]
    subprocess.run(command, cwd=ROOT, check=True, timeout=seconds + 300)
    return json.loads(out.read_text())


def working_set_paths(database_url: str, *, products: int, scratch: Path) -> dict[str, Path]:
    """Path files for the GET endpoints: ``products`` random products, and the categories with their pages."""
    import psycopg

    with psycopg.connect(database_url) as connection:
        connection.execute("SELECT setseed(0.5)")  # the same working set every run
        skus = [row[0] for row in connection.execute(
            "SELECT sku FROM catalog_product ORDER BY random() LIMIT %s", [products]
        )]
        slugs = [row[0] for row in connection.execute("SELECT slug FROM catalog_category ORDER BY id")]
    files = {
        "More like this": [f"/api/v1/products/{sku}/similar/" for sku in skus],
        "product page": [f"/p/{sku}/" for sku in skus],
        "category page": [f"/c/{slug}/?page={page}" if page > 1 else f"/c/{slug}/" for slug in slugs
                          for page in range(1, 6)],
    }
    paths = {}
    for name, lines in files.items():
        paths[name] = scratch / f"{name.replace(' ', '-')}.txt"
        paths[name].write_text("\n".join(lines) + "\n")
    return paths


def bench_redis_url(server_url: str) -> str:
    """Database BENCH_REDIS_DB on the given server: the bench flushes it, so never the one the project uses."""
    from urllib.parse import urlsplit, urlunsplit

    return urlunsplit(urlsplit(server_url)._replace(path=f"/{BENCH_REDIS_DB}"))


def flush_page_cache(redis_url: str) -> None:
    import redis

    redis.Redis.from_url(redis_url).flushdb()


def run(args) -> dict:
    from config.embedded import redis_url as embedded_redis_url

    catalog = ensure_catalog(args.products)
    redis_url = bench_redis_url(os.environ.get("REDIS_URL") or embedded_redis_url())
    scratch = Path(tempfile.mkdtemp(prefix="bench-http-"))
    paths = working_set_paths(catalog.database_url, products=args.working_set, scratch=scratch)
    photo = query_photo()
    results: dict = {"products": args.products, "workers": args.workers, "seconds": args.seconds, "rows": []}

    # The smoke run checks that every endpoint works at two client counts; the side-by-side variants are for real runs.
    variants = dict(list(VARIANTS.items())[:1]) if args.quick else VARIANTS
    for variant, (env, endpoints) in variants.items():
        flush_page_cache(redis_url)
        site = Site(database_url=catalog.database_url, redis_url=redis_url, media_root=catalog.media_root,
                    static_root=str(scratch / "static"), workers=args.workers, env=env,
                    log=scratch / f"gunicorn-{len(results['rows'])}.log")
        try:
            # Warm-up, not measured: each worker loads the model and opens its connections; the working set is
            # requested once (and so cached, where the page cache is on).
            if PHOTO in endpoints:
                load(site, clients=args.workers, seconds=60, photo=photo, max_requests=4 * args.workers,
                     scratch=scratch)
            for name in [name for name in endpoints if name != PHOTO]:
                count = len(paths[name].read_text().split())
                load(site, clients=8, seconds=120, paths=paths[name], max_requests=count, scratch=scratch)
            for name in endpoints:
                for clients in args.clients:
                    summary = load(site, clients=clients, seconds=args.seconds, paths=paths.get(name),
                                   photo=photo if name == PHOTO else None, scratch=scratch)
                    results["rows"].append({"variant": variant, "endpoint": name, **summary})
                    print(f"{variant:>34} | {name:>14} | {clients:>2} clients: {summary['throughput']:7.1f}/s "
                          f"p50 {summary['p50_ms']:7.1f} ms p95 {summary['p95_ms']:7.1f} ms "
                          f"errors {summary['errors']} {summary['error_samples'][:1]}", file=sys.stderr, flush=True)
            if variant == "shipped":
                results["web_worker_rss_mb"] = site.worker_rss_mb()
        finally:
            site.stop()
    return results


def verdicts(results: dict) -> list[list[str]]:
    rows = [row for row in results["rows"] if row["variant"] == "shipped"]

    def best(endpoint: str) -> dict:
        return max((row for row in rows if row["endpoint"] == endpoint), key=lambda row: row["throughput"])

    photo_one = next(row for row in rows if row["endpoint"] == "photo search" and row["clients"] == 1)
    photo_best = best("photo search")
    photo_errors = sum(row["errors"] for row in rows if row["endpoint"] == "photo search")
    lines = [
        ["photo search p50 at 1 client", TARGETS["photo search p50 at 1 client"], f"{photo_one['p50_ms']:.0f} ms",
         _met(photo_one["p50_ms"] <= 50)],
        ["photo search throughput", TARGETS["photo search throughput"],
         f"{photo_best['throughput']:.1f}/s at {photo_best['clients']} clients, {photo_errors} errors",
         _met(photo_best["throughput"] >= 50 and photo_errors == 0)],
    ]
    for endpoint in ("More like this", "product page"):
        top = best(endpoint)
        lines.append([endpoint, TARGETS[endpoint], f"{top['throughput']:.0f} req/s at {top['clients']} clients",
                      _met(top["throughput"] >= 300)])
    return lines


def _met(ok: bool) -> str:
    return "met" if ok else "missed"


def report(results: dict, command: str) -> str:
    rows = [
        [row["variant"], row["endpoint"], row["clients"], row["requests"], f"{row['throughput']:.1f}",
         f"{row['p50_ms']:.1f}", f"{row['p95_ms']:.1f}", f"{row['p99_ms']:.1f}", row["errors"]]
        for row in results["rows"]
    ]
    rss = results.get("web_worker_rss_mb") or [0]
    return "\n\n".join([
        f"## End-to-end HTTP at {results['products']:,} products\n\nCommand: `{command}` ({machine()})",
        f"gunicorn, {results['workers']} sync workers, production settings; load from bench.loadgen in a second "
        f"process on loopback, {results['seconds']:g} s per row; GET pages over a warmed working set.",
        table(["check", "target", "measured", ""], verdicts(results)),
        table(["settings", "endpoint", "clients", "requests", "req/s", "p50 ms", "p95 ms", "p99 ms", "errors"], rows),
        f"Web worker RSS after the run: {', '.join(f'{mb:.0f}' for mb in rss)} MB (max {max(rss):.0f} MB).",
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--products", type=int, default=200_000)
    parser.add_argument("--workers", type=int, default=3, help="gunicorn workers (docker-compose's default: 3)")
    parser.add_argument("--seconds", type=float, default=10.0, help="per endpoint and client count")
    parser.add_argument("--clients", type=int, nargs="+", default=list(CLIENTS))
    parser.add_argument("--working-set", type=int, default=500, help="distinct products the GET load cycles over")
    parser.add_argument("--quick", action="store_true", help=f"smoke test: {QUICK_PRODUCTS} products, 1 s per row")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    if args.quick:
        args.products, args.seconds, args.clients, args.working_set, args.workers = QUICK_PRODUCTS, 1.0, [1, 8], 20, 2
    results = run(args)
    command = "python -m bench.http " + " ".join(sys.argv[1:])
    print(report(results, command.strip()))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    if any(row["errors"] for row in results["rows"]):
        sys.exit("errors: see the table")


if __name__ == "__main__":
    main()
