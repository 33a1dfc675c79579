"""Relevance across product domains, measured through the public API of a running instance, as a new shop sees it.

    LOOKALIKE_STATE_DIR=/tmp/state-bench .venv/bin/python -m bench.relevance [--quick] [--domains NAME ...]
        [--write docs/relevance.md]

For each domain of bench/domains.py:

1. **Split.** Every fourth group (by name) is held out of the catalog: photos of things the shop does not sell.
2. **Fit without the domain.** The reduction (learned whitening, its shrinkage chosen among those domains) and the
   calibration's two constants are fitted on the other domains only, the domain's family left out too
   (bench/fit_reduction.py); the instance gets them through EMBEDDING_REDUCTION_FILE, SEARCH_CUTOFF_QUANTILE and
   SEARCH_CUTOFF_DEFAULT. ``--quick`` uses the shipped ones (in-sample figures: a smoke test). The queries are the
   "report" set (bench/splits.py); ``--query-set explore`` measures the other set, the one to choose designs on.
3. **A new shop.** A fresh database; ``manage.py import_catalog`` imports the catalog, a Celery worker embeds it,
   ``manage.py calibrate`` computes the cut-off (what the beat sweep does by itself); gunicorn serves it.
4. **Queries, through the API**, one client:
   - instance: a shopper-style snapshot (bench/shopper.py) of a catalog photo, ``POST /api/v1/search/`` with
     ``threshold=0``: R@1 and R@10 of its product, and the top score;
   - absent: a snapshot of a held-out photo, the same way: its top score;
   - at the defaults (no threshold): found = the right product is among the results; absent-empty = no result;
   - class: ``GET /api/v1/products/<sku>/similar/?scope=all&limit=10``: the share of the same group (P@10);
   - AUC: how well the top score tells instance from absent queries.
   Results are read in the order a shopper sees them: each result, then the near-duplicate listings folded under
   it (its ``duplicates``), then the next result; ranks and P@10 count the first ten products of that order.
5. **The baseline in the same run**: raw pretrained features (EfficientNet-Lite0 average-pooled, the photo padded to
   a square, one view, 1280-d cosine) on the same photos and snapshots, computed in numpy.

On the same instance, gunicorn restarted with ``SEARCH_DETAIL_ORDER=false``, the instance queries are asked again:
R@1 by the vectors alone, beside the shipped order (search/details.py). Photo search latency at one client is
measured in the same run, for the shipped search and, side by side on the same instance, for a one-view query by the
vectors alone (``SEARCH_QUERY_VIEWS=1``, ``SEARCH_DETAIL_ORDER=false``), which is what a search cost before.
"""

from __future__ import annotations

import argparse
import csv
import http.client
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from bench.common import machine, table
from bench.datasets import CACHE_DIR
from bench.domains import DOMAINS, Item
from bench.fit_reduction import fit_calibration, fit_reduction, without_family
from bench.retrieval import auc, class_precision, query_scores
from bench.splits import (
    DEFAULT_SIZES, QUERY_SETS, QUICK_DOMAINS, QUICK_SIZES, SNAPSHOT_VERSION, DomainSplit, cached, decoded,
    domain_features, prepare_domains,
)

ROOT = Path(__file__).resolve().parent.parent
DATABASE = "lookalike_bench_relevance"
REDIS_DB = 6


TARGETS = {"R@1": 0.95, "AUC": 0.93, "found": 0.93, "absent-empty": 0.60}
CURVE_THRESHOLDS = (0.3, 0.4, 0.45, 0.5, 0.55, 0.6, 0.7)

class Baseline:
    """Raw pretrained features, the 2017 way: average-pooled EfficientNet-Lite0, padded to a square, one view."""

    name = "raw pretrained features"

    def __init__(self):
        from search.onnx_runtime import OnnxFeatures, export_features, file_sha256

        from search.embeddings import EfficientNetLite0

        self.model = EfficientNetLite0(cache_dir=CACHE_DIR / "models")
        path = CACHE_DIR / "models" / f"baseline-average-pool-{file_sha256(self.model.weights_path())[:16]}.onnx"
        if not path.exists():
            export_features(pooled_module=_average_pooled(self.model.torch_model()), input_size=224, path=path,
                            outputs=("features",))
        self.network = OnnxFeatures(path, threads=0)

    def features(self, split: DomainSplit, kind: str) -> np.ndarray:
        from search.preprocessing import load_rgb, to_model_input

        def compute():
            images = decoded(split, kind, load_rgb)
            inputs = [to_model_input(image, 224, fit="pad", trim=False) for image in images]
            return np.concatenate([self.network(np.stack(inputs[i : i + 16])) for i in range(0, len(inputs), 16)])

        from search.onnx_runtime import file_sha256
        from search.preprocessing import PREPROCESSING_VERSION

        paths = [str(item.path) for item in getattr(split, kind)]
        weights = file_sha256(self.model.weights_path())[:16]
        version = f"{weights}p{PREPROCESSING_VERSION}-{kind}-s{SNAPSHOT_VERSION}{split.query_set}"
        return cached(f"baseline-{version}-{paths}", compute)

    def measure(self, split: DomainSplit) -> dict:
        catalog = self.features(split, "catalog")
        products = np.array([item.product for item in split.catalog])
        groups = np.array([item.group for item in split.catalog])
        scores = query_scores(catalog=catalog, products=products, instance=self.features(split, "instance"),
                              instance_products=np.array([item.product for item in split.instance]),
                              absent=self.features(split, "absent"))
        index = {str(item.path): position for position, item in enumerate(split.catalog)}
        queries = np.array([index[str(item.path)] for item in split.class_queries])
        return {
            "R@1": float((scores.instance_rank == 0).mean()),
            "R@10": float((scores.instance_rank < 10).mean()),
            "P@10": class_precision(catalog, products, groups, queries=queries),
            "AUC": auc(scores.instance_top, scores.absent_top),
        }


def _average_pooled(model):
    import torch

    class AveragePooled(torch.nn.Module):
        def __init__(self, network):
            super().__init__()
            self.network = network

        def forward(self, images):
            return self.network.extract_features(images).mean(dim=(2, 3))

    return AveragePooled(model).eval()


# --- The instance -------------------------------------------------------------------------------------------


def fresh_services() -> tuple[str, str]:
    """(database URL, broker URL) of an empty database and an empty Redis database for one domain's shop."""
    import redis

    from config import embedded

    if os.environ.get("DATABASE_URL"):
        sys.exit("bench.relevance uses the embedded services: unset DATABASE_URL and REDIS_URL")
    embedded.postgres_url()
    server = embedded._pgserver().get_server(embedded.PG_DATA, cleanup_mode=None)
    server.psql(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE);")
    server.psql(f"CREATE DATABASE {DATABASE};")
    broker = embedded.redis_url(db=REDIS_DB)
    redis.Redis.from_url(broker).flushdb()
    return f"postgres://postgres@/{DATABASE}?host={server.get_postmaster_info().socket_dir}", broker


def write_catalog_csv(path: Path, split: DomainSplit) -> dict[str, Item]:
    """One product per row, its group as the category; returns sku -> the product's first item."""
    by_product: dict[str, list[Item]] = {}
    for item in split.catalog:
        by_product.setdefault(item.product, []).append(item)
    rows = {}
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["sku", "title", "category", "price", "description", "images"])
        for index, (product, items) in enumerate(sorted(by_product.items())):
            sku = f"R{index:05d}"
            rows[sku] = items[0]
            writer.writerow([sku, product[:200], f"{split.name} > {items[0].group}", "10.00", "",
                             "|".join(str(item.path) for item in items)])
    return rows


class Shop:
    """One domain's catalog behind gunicorn: imported, embedded by a real worker, calibrated."""

    def __init__(self, split: DomainSplit, *, work: Path, env: dict[str, str]):
        from bench.http import Site
        from bench.ingest import project_env, start_worker, stop_worker

        database_url, broker_url = fresh_services()
        self.env = project_env(database_url=database_url, broker_url=broker_url, media_root=work / "media", extra=env)
        self.work = work
        run = lambda *args: subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=self.env,  # noqa: E731
                                           check=True, capture_output=True, text=True)
        run("migrate", "-v", "0")
        rows = write_catalog_csv(work / "catalog.csv", split)
        self.groups = {sku: item.group for sku, item in rows.items()}
        self.sku_of_product = {item.product: sku for sku, item in rows.items()}
        worker = start_worker(env=self.env, concurrency=1, pool="solo", log_path=work / "worker.log", project=ROOT)
        try:
            run("import_catalog", str(work / "catalog.csv"), "-v", "0")  # a failed row fails the run (exit 1)
            counts = self._wait_embedded(database_url, timeout=1800)
        finally:
            stop_worker(worker)
        if counts != {"ready": len(split.catalog)}:  # the baseline is measured on every catalog photo: so must the shop
            sys.exit(f"{split.name}: the shop holds {counts} photos, not the {len(split.catalog)} of its catalog")
        self.calibration = run("calibrate").stdout.strip()
        self.site_env = dict(env)
        self.database_url, self.broker_url = database_url, broker_url
        self.site = Site(database_url=database_url, redis_url=broker_url, media_root=str(work / "media"),
                         static_root=str(work / "static"), workers=1, env=env, log=work / "gunicorn.log")

    @staticmethod
    def _rows(database_url: str, sql: str) -> list[tuple]:
        import psycopg

        with psycopg.connect(database_url.replace("postgres://", "postgresql://"), autocommit=True) as connection:
            return connection.execute(sql).fetchall()

    def _wait_embedded(self, database_url: str, *, timeout: float) -> dict[str, int]:
        """The catalog's photos by embedding status, once none is pending."""
        deadline = time.monotonic() + timeout
        while True:
            counts = dict(self._rows(database_url, "SELECT embedding_status, count(*) FROM catalog_productimage "
                                                   "GROUP BY 1"))
            if not counts.get("pending"):
                return counts
            if time.monotonic() > deadline:
                sys.exit(f"not embedded after {timeout:.0f} s: {counts}")
            time.sleep(0.5)

    def request(self, method: str, path: str, *, photo: bytes | None = None, fields: dict | None = None, site=None):
        """One request to the shop's site (or ``site``, another on the same shop): (the JSON answer, seconds)."""
        connection = http.client.HTTPConnection("127.0.0.1", (site or self.site).port, timeout=120)
        headers, body = {}, None
        if photo is not None:
            boundary = "lookalike-bench-boundary"
            parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
                     for name, value in (fields or {}).items()]
            parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="q.jpg"\r\n'
                         f"Content-Type: image/jpeg\r\n\r\n".encode() + photo + b"\r\n")
            body = b"".join(parts) + f"--{boundary}--\r\n".encode()
            headers["Content-Type"] = f"multipart/form-data; boundary={boundary}"
        started = time.perf_counter()
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        payload = response.read()
        elapsed = time.perf_counter() - started
        connection.close()
        if response.status != 200:
            raise RuntimeError(f"{method} {path}: {response.status} {payload[:300]!r}")
        return json.loads(payload), elapsed

    def stop(self) -> None:
        self.site.stop()


def shown(answer: dict, count: int = 10) -> list[dict]:
    """The first ``count`` products of an answer in the order a shopper sees them: each result, then the
    near-duplicate listings folded under it ("+N similar listings"), then the next result."""
    listed = []
    for result in answer["results"]:
        listed += [result, *result.get("duplicates", ())]
    return listed[:count]


def top_score(answer: dict) -> float:
    """The best match score of an answer: what decides "nothing similar enough". Not always the first result's: the
    detail order (search/details.py) can put a product with a lower score first."""
    return max((listing["score"] for result in answer["results"] for listing in (result, *result.get("duplicates", ()))),
               default=0.0)


def measure_shop(shop: Shop, split: DomainSplit) -> dict:
    sku_of_product = shop.sku_of_product
    ranks, instance_top, right_scores, found, latencies = [], [], [], [], []
    for item, photo in zip(split.instance, split.snapshots["instance"], strict=True):
        answer, elapsed = shop.request("POST", "/api/v1/search/", photo=photo, fields={"threshold": "0", "limit": "10"})
        latencies.append(elapsed)
        listed = shown(answer)
        skus = [result["product"]["sku"] for result in listed]
        right = sku_of_product[item.product]
        ranks.append(skus.index(right) if right in skus else 10)
        instance_top.append(top_score(answer))
        right_scores.append(listed[ranks[-1]]["score"] if ranks[-1] < 10 else 0.0)
        default, _ = shop.request("POST", "/api/v1/search/", photo=photo, fields={"limit": "10"})
        found.append(right in [result["product"]["sku"] for result in shown(default)])
    absent_top, empty = [], []
    for photo in split.snapshots["absent"]:
        answer, _ = shop.request("POST", "/api/v1/search/", photo=photo, fields={"threshold": "0", "limit": "10"})
        absent_top.append(top_score(answer))
        default, _ = shop.request("POST", "/api/v1/search/", photo=photo, fields={"limit": "10"})
        empty.append(not default["results"])
    shares = []
    for item in split.class_queries:
        answer, _ = shop.request("GET", f"/api/v1/products/{sku_of_product[item.product]}/similar/?scope=all&limit=10")
        same = [shop.groups[result["product"]["sku"]] == item.group for result in shown(answer)]
        shares.append(float(np.mean(same)) if same else 0.0)
    ranks = np.array(ranks)
    return {
        "R@1": float((ranks == 0).mean()),
        "R@10": float((ranks < 10).mean()),
        "P@10": float(np.mean(shares)),
        "AUC": auc(instance_top, absent_top),
        "found": float(np.mean(found)),
        "absent-empty": float(np.mean(empty)),
        "latency_ms": 1000 * float(np.median(latencies)),
        # The trade-off at other match thresholds than the default 0.5, from the same answers.
        "curve": {f"{m:.2f}": [float((np.array(right_scores) >= m).mean()), float((np.array(absent_top) < m).mean())]
                  for m in CURVE_THRESHOLDS},
    }


# The site ordering its matches by their vectors alone, without the detail order (search/details.py).
VECTORS_ALONE = {"SEARCH_DETAIL_ORDER": "false"}
# Settings of the site whose photo search latency is measured: the shipped search, and the search before issue 10.
LATENCY_SETTINGS = {"shipped": {}, "vectors alone": VECTORS_ALONE,
                    "before": {**VECTORS_ALONE, "SEARCH_QUERY_VIEWS": "1"}}


def restart(shop: Shop, name: str, settings: dict[str, str]) -> None:
    """gunicorn restarted on the same shop with ``settings`` added to its environment."""
    shop.site.stop()
    shop.site = _site(shop, name, settings)


def _site(shop: Shop, name: str, settings: dict[str, str]):
    from bench.http import Site

    return Site(database_url=shop.database_url, redis_url=shop.broker_url, media_root=str(shop.work / "media"),
                static_root=str(shop.work / "static"), workers=1, env={**shop.site_env, **settings},
                log=shop.work / f"gunicorn-{name}.log")


def vector_order_first(shop: Shop, split: DomainSplit) -> float:
    """R@1 of the instance queries by the vectors alone (SEARCH_DETAIL_ORDER=false), on the same shop."""
    restart(shop, "vectors-alone", VECTORS_ALONE)
    firsts = []
    for item, photo in zip(split.instance, split.snapshots["instance"], strict=True):
        answer, _ = shop.request("POST", "/api/v1/search/", photo=photo, fields={"threshold": "0", "limit": "10"})
        skus = [result["product"]["sku"] for result in answer["results"]]
        firsts.append(skus[:1] == [shop.sku_of_product[item.product]])
    return float(np.mean(firsts))


def query_latencies(shop: Shop, photos: list[bytes], *, repeats: int) -> dict[str, float]:
    """Median photo search latency at one client (ms) with each of LATENCY_SETTINGS, and the median of the rounds'
    ratios of the shipped search to the one before issue 10 ("ratio").

    Each setting has its own gunicorn on the shop, and every round asks each in turn, which one goes first rotating:
    a slow spell of a shared machine then falls on all of them alike, where one block of requests after another
    compared settings measured minutes apart."""
    sites = {name: _site(shop, f"latency-{index}", settings)
             for index, (name, settings) in enumerate(LATENCY_SETTINGS.items())}
    names, timings = list(sites), {name: [] for name in sites}
    try:
        for site in sites.values():
            shop.request("POST", "/api/v1/search/", photo=photos[0], site=site)  # loads the model
        for turn in range(repeats):
            for name in names[turn % len(names):] + names[: turn % len(names)]:
                photo = photos[turn % len(photos)]
                timings[name].append(shop.request("POST", "/api/v1/search/", photo=photo, site=sites[name])[1])
    finally:
        for site in sites.values():
            site.stop()
    latencies = {name: 1000 * float(np.median(values)) for name, values in timings.items()}
    latencies["ratio"] = float(np.median(np.array(timings["shipped"]) / np.array(timings["before"])))
    return latencies


# --- The run ----------------------------------------------------------------------------------------------


def run(args) -> dict:
    from search.embeddings import get_embedder
    from search.reduction import reduction_path

    sizes = QUICK_SIZES if args.quick else DEFAULT_SIZES
    names = args.domains or (QUICK_DOMAINS if args.quick else list(DOMAINS))
    every = list(DOMAINS) if not args.quick else names
    print("Preparing domains and snapshots", file=sys.stderr, flush=True)
    splits = {split.name: split for split in prepare_domains(sizes=sizes, names=every, query_set=args.query_set)}
    embedder = get_embedder(args.model)
    features = {name: domain_features(embedder, split) for name, split in
                tqdm(splits.items(), desc="Shipped pipeline, offline", unit="domain")}
    baseline = Baseline()
    results: dict = {"model": args.model, "sizes": sizes.__dict__, "query_set": args.query_set, "domains": {}}
    work_root = Path(tempfile.mkdtemp(prefix="lookalike-bench-relevance-"))
    try:
        for name in names:
            work = work_root / name
            work.mkdir()
            env = {"EMBEDDING_MODEL": args.model, "EMBEDDING_SWEEP_SECONDS": "3600"}
            fitted = "shipped"
            if not args.quick:
                others = without_family(list(features.values()), name)
                reduction = fit_reduction(others, provenance={"model": args.model, "without": name})
                reduction.save(work / "reduction.npz")
                quantile, default = fit_calibration(others, reduction)
                env |= {"EMBEDDING_REDUCTION_FILE": str(work / "reduction.npz"),
                        "SEARCH_CUTOFF_QUANTILE": str(quantile), "SEARCH_CUTOFF_DEFAULT": str(default)}
                fitted = f"{reduction.id}, quantile {quantile}, default cut-off {default}"
            print(f"{name}: shop with the reduction and quantile fitted {fitted}", file=sys.stderr, flush=True)
            split = splits[name]
            shop = Shop(split, work=work, env=env)
            try:
                shipped = measure_shop(shop, split)
                shipped["R@1 vectors alone"] = vector_order_first(shop, split)
                if name == names[0]:
                    photos = split.snapshots["instance"][:10]
                    repeats = 5 if args.quick else 40
                    results["latency"] = query_latencies(shop, photos, repeats=repeats)
                    results["latency"]["domain"] = name
            finally:
                shop.stop()
            results["domains"][name] = {
                "describe": DOMAINS[name].describe,
                "catalog": len(split.catalog), "instance": len(split.instance), "absent": len(split.absent),
                "fitted": fitted, "calibration": shop.calibration,
                "baseline": baseline.measure(split), "shipped": shipped,
            }
            print(json.dumps({name: results["domains"][name]}, default=str), file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(work_root, ignore_errors=True)
    results["shipped_reduction"] = reduction_path(model_name=args.model, dimensions=embedder.dimensions).name
    return results


def report(results: dict, command: str) -> str:
    rows, misses = [], []
    for name, domain in results["domains"].items():
        base, shipped = domain["baseline"], domain["shipped"]
        rows.append([name, domain["catalog"], f"{domain['instance']}/{domain['absent']}",
                     f"{base['R@1']:.3f} → {shipped['R@1 vectors alone']:.3f} → **{shipped['R@1']:.3f}**",
                     *(f"{base[key]:.3f} → **{shipped[key]:.3f}**" for key in ("R@10", "P@10", "AUC")),
                     f"{shipped['found']:.3f}", f"{shipped['absent-empty']:.3f}",
                     domain["calibration"].rsplit("cut-off ", 1)[-1].split(" ")[0]])
        for key, target in TARGETS.items():
            if shipped[key] < target:
                misses.append(f"{name}: {key} {shipped[key]:.3f} < {target} (by {target - shipped[key]:.3f})")
        for key in ("R@1", "P@10"):
            if shipped[key] < base[key]:
                misses.append(f"{name}: {key} {shipped[key]:.3f} below the baseline's {base[key]:.3f}")
    curve_rows = [[name, *(f"{found:.2f} / {empty:.2f}" for found, empty in domain["shipped"]["curve"].values())]
                  for name, domain in results["domains"].items()]
    latency = results.get("latency", {})
    lines = [
        f"## Relevance across domains, through the API\n\nCommand: `{command}` ({machine()}); model "
        f"{results['model']}; sizes per domain: {results['sizes']}.",
        "Each cell of R@10, P@10 and AUC reads *baseline → shipped*, R@1 *baseline → the shipped vectors alone → "
        "shipped* (the first ten matches put in order by their details too, search/details.py, or by the vectors "
        "alone, `SEARCH_DETAIL_ORDER=false`, on the same instance): the baseline is raw pretrained features "
        "(average-pooled, padded to a square, one view, 1280-d cosine) on the same photos, in numpy; the shipped "
        "pipeline is measured through `POST /api/v1/search/` and `GET .../similar/` of a running instance whose "
        + ("reduction and calibration constants were fitted without the domain and its family. "
           if any(domain["fitted"] != "shipped" for domain in results["domains"].values()) else
           "reduction and calibration constants are the shipped ones, fitted on every domain (the smoke mode): "
           "in-sample figures. ")
        + f"Queries: the {results['query_set']} set. Found and absent-empty are at the defaults.",
        table(["domain", "catalog photos", "instance/absent queries", "R@1", "R@10", "class P@10", "AUC", "found",
               "absent-empty", "cut-off"], rows),
    ]
    lines.append("Found / absent-empty at other match thresholds (the API's `threshold`; 0.50 is the default, the "
                 "catalog's calibrated cut-off), from the same answers:")
    lines.append(table(["domain", *(f"match ≥ {m:.2f}" for m in CURVE_THRESHOLDS)], curve_rows))
    if latency:
        shipped, alone, before = latency["shipped"], latency["vectors alone"], latency["before"]
        lines.append(f"Photo search latency at one client ({latency['domain']}'s snapshots; medians, one gunicorn "
                     f"per setting on the same shop, asked in turn round by round): shipped (three query views, detail "
                     f"order) {shipped:.1f} ms, three views by the vectors alone {alone:.1f} ms, as before issue 10 "
                     f"(one view, vectors alone) {before:.1f} ms: {latency['ratio']:.2f}x (the median of the rounds' "
                     f"ratios).")
    lines.append("Targets missed:\n\n" + ("\n".join(f"- {miss}" for miss in misses) if misses else "- none"))
    return "\n\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="efficientnet-lite0")
    parser.add_argument("--domains", nargs="+", choices=sorted(DOMAINS))
    parser.add_argument("--quick", action="store_true", help="smoke test: one small domain, shipped fits")
    parser.add_argument("--query-set", choices=QUERY_SETS, default="report",
                        help="which queries (bench/splits.py): report (default), or explore, to choose a design on")
    parser.add_argument("--write", type=Path, help="also write the report to this markdown file")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    results = run(args)
    command = ("python -m bench.relevance " + " ".join(sys.argv[1:])).strip()
    text = report(results, command)
    print(text)
    if args.write:
        args.write.write_text(text + "\n")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
