"""A synthetic but realistic Lookalike catalog of N products in its own database, for the ANN and HTTP benchmarks.

    LOOKALIKE_STATE_DIR=/tmp/state-bench .venv/bin/python -m bench.catalog --products 200000

Builds (or reuses, when a previous build completed) the database ``lookalike_bench_<N>`` on the project's
PostgreSQL server (the embedded one unless DATABASE_URL is set): Django migrations, then COPY of

- a category tree: a root per department with a child category per Fashion-MNIST class, each class split in two;
  products go to their visual class's categories (85 %) or to a random one (15 %, mislabelled or ambiguous);
- two categories filled by random sampling, not by look: "Clearance" with 1 in 20 products and
  "Limited edition" with 1 in 500 (the filtered-search cases of bench/ann.py);
- N active products (unique SKU, title, price), one ready ProductImage each (files: a handful of real demo photos
  copied into ``$BENCH_CACHE_DIR/media``, so product pages render), one ImageEmbedding each;
- the active EmbeddingSpace row for the configured embedder, and the HNSW index, rebuilt after the load and timed.

Vectors are shaped like real ones: the shipped embeddings of up to 60,000 real product images (Fashion-MNIST's
training split), then new products between real neighbours (``catalog_vectors``), stored as halfvec. Queries are
the embeddings of Fashion-MNIST's test images, in no catalog. Product, image and embedding ids are all ``row + 1``,
so ``catalog_vectors(N)[id - 1]`` is product ``id``'s vector.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import numpy as np

from bench.datasets import CACHE_DIR, save_array

ROOT = Path(__file__).resolve().parent.parent
MEDIA_ROOT = CACHE_DIR / "media"
INFO_TABLE = "bench_catalog_info"
CLASSES = ["T-shirt", "Trousers", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
DEPARTMENTS = {"Clothing": [0, 1, 2, 3, 4, 6], "Shoes": [5, 7, 9], "Accessories": [8]}
CLEARANCE_SHARE, LIMITED_SHARE = 1 / 20, 1 / 500
MISLABELLED_SHARE = 0.15
PHOTOS = 6  # real photos the image rows point at
TRAIN_IMAGES = 60_000  # Fashion-MNIST's training split
VECTORS = "fm-train-neighbour-mix-v2"  # how the vectors are made; change it when catalog_vectors changes
EPOCH = datetime(2026, 1, 1, tzinfo=timezone.utc)  # every row's timestamps
# The catalog size of every benchmark's smoke mode (--quick): one catalog, built once, that a smoke run of the suite
# shares, with as few real images to embed as will do to show each benchmark runs to the end.
QUICK_PRODUCTS = 500


@dataclass
class BenchCatalog:
    products: int
    database_url: str
    media_root: str
    model: str
    clearance_category_id: int  # 1 in 20 products, random sample
    limited_category_id: int  # 1 in 500 products, random sample
    load_seconds: float
    index_build_seconds: float
    maintenance_work_mem: str
    table_bytes: int  # search_imageembedding without its indexes (incl. TOAST)
    index_bytes: int  # the HNSW index
    vector_bytes: float  # stored size of one vector value
    build: str = ""  # the vectors and the migrations it was built with: a catalog built otherwise (or for another
    # space than ``model``) is rebuilt


def server_url() -> str:
    if os.environ.get("DATABASE_URL"):
        return os.environ["DATABASE_URL"]
    from config.embedded import postgres_url

    return postgres_url()


def database_url(products: int) -> str:
    parts = urlsplit(server_url())
    return urlunsplit(parts._replace(path=f"/lookalike_bench_{products}"))


def catalog_vectors(rows: int) -> tuple[np.ndarray, np.ndarray]:
    """The float16 unit vectors stored for ``rows`` products, and each one's Fashion-MNIST class.

    The first rows are the real embeddings of Fashion-MNIST's training images; the rest are new products between
    two real neighbours: a random point on the segment from a real image to one of its 10 nearest real images,
    plus a little noise. They fill the catalog along the manifold real photos lie on, as more products of the
    same kinds would. (Isotropic noise around a few bases would make clumps whose members all lie at the same
    distance from a query, a near-tie no real catalog has.)
    """
    base, labels = _real_embeddings("train", min(rows, TRAIN_IMAGES, max(1000, rows // 3)))
    extra = rows - len(base)
    if extra <= 0:
        return base[:rows].astype(np.float16), labels[:rows]
    rng = np.random.default_rng(0)
    neighbours = _nearest_real(base)
    origin = rng.integers(0, len(base), size=extra)
    partner = neighbours[origin, rng.integers(0, neighbours.shape[1], size=extra)]
    along = rng.uniform(0.2, 0.8, size=(extra, 1)).astype(np.float32)
    new = np.empty((extra, base.shape[1]), dtype=np.float32)
    for start in range(0, extra, 100_000):  # in blocks: a million rows of float32 temporaries is 1.5 GB each
        part = slice(start, start + 100_000)
        mixed = base[origin[part]] * (1 - along[part]) + base[partner[part]] * along[part]
        mixed += _noise(rng, mixed.shape, 0.1)
        new[part] = mixed / np.linalg.norm(mixed, axis=1, keepdims=True)
    return np.concatenate([base, new]).astype(np.float16), np.concatenate([labels, labels[origin]])


def query_vectors(count: int) -> tuple[np.ndarray, np.ndarray]:
    """Held-out queries: embeddings of Fashion-MNIST *test* images, photos of products that are in no catalog."""
    return _real_embeddings("test", count)


def _noise(rng: np.random.Generator, shape, scale) -> np.ndarray:
    return rng.standard_normal(shape).astype(np.float32) * scale / np.sqrt(shape[1])


def _real_embeddings(split: str, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Shipped (reduced, unit-length, float32) embeddings of the first ``count`` Fashion-MNIST ``split`` images."""
    from bench.common import embedder, unit
    from bench.datasets import fashion_mnist

    model = embedder("efficientnet-lite0")
    images, labels = fashion_mnist(split, limit=count)
    raw = _first_raw_features(model, split, images)
    return unit(model.reduction.project(raw).astype(np.float32)), labels


def _first_raw_features(model, split: str, images: np.ndarray) -> np.ndarray:
    """Raw features of a split's first ``len(images)`` images, from one cache file per split that grows as more are
    asked for: catalogs of different sizes embed each image once (a quick suite run embeds 1,666 images, not
    877 + 1,000 + 1,666)."""
    from bench.common import raw_features_path
    from bench.datasets import fashion_mnist_pil

    path = raw_features_path(model, f"fm-{split}-first")
    done = np.load(path) if path.exists() else np.empty((0, model.raw_dimensions), dtype=np.float32)
    if len(done) < len(images):
        exact = raw_features_path(model, f"fm-{split}-{len(images)}")  # this size's file, as earlier runs cached it
        more = np.load(exact)[len(done):] if exact.exists() else model.raw_features(fashion_mnist_pil(images[len(done):]))
        done = np.concatenate([done, more.astype(done.dtype)])
        save_array(path, done)
    return done[: len(images)]


def _nearest_real(base: np.ndarray, k: int = 10) -> np.ndarray:
    """For each real embedding, its k nearest other real embeddings (cosine): exact, by blocks, cached on disk."""
    path = CACHE_DIR / "features" / f"fm-train-{len(base)}-nearest-{k}.npy"
    if path.exists():
        return np.load(path)
    nearest = np.empty((len(base), k), dtype=np.int64)
    for start in range(0, len(base), 500):
        scores = base[start : start + 500] @ base.T
        scores[np.arange(len(scores)), np.arange(start, start + len(scores))] = -np.inf  # not itself
        nearest[start : start + len(scores)] = np.argpartition(-scores, k, axis=1)[:, :k]
    save_array(path, nearest)
    return nearest


def ensure_catalog(products: int, *, maintenance_work_mem: str = "2GB", rebuild: bool = False) -> BenchCatalog:
    """The bench catalog of ``products`` products, built unless a complete one exists."""
    import psycopg

    url = database_url(products)
    name = f"lookalike_bench_{products}"
    with psycopg.connect(server_url(), autocommit=True) as server:
        exists = server.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
    if exists and not rebuild:
        with psycopg.connect(url) as connection:
            has_info = connection.execute("SELECT to_regclass(%s) IS NOT NULL", [INFO_TABLE]).fetchone()[0]
            info = has_info and connection.execute(f"SELECT info FROM {INFO_TABLE}").fetchone()[0]
            # Built with these vectors and migrations, for the space the embedder now produces (a new reduction
            # file is a new space, with other vectors).
            if info and info.get("build") == _build_id() and info.get("model") == _model_id(url):
                _category_indexes(url)  # as the beat task keeps them: built once, then checked
                return BenchCatalog(**info)
    with psycopg.connect(server_url(), autocommit=True) as server:
        # An incomplete build (interrupted), or one from other vectors, migrations or space, starts again from
        # nothing.
        server.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        server.execute(f"CREATE DATABASE {name}")
    catalog = _build(products, url, maintenance_work_mem)
    with psycopg.connect(url) as connection:
        connection.execute(f"CREATE TABLE {INFO_TABLE} (info jsonb NOT NULL)")
        connection.execute(f"INSERT INTO {INFO_TABLE} VALUES (%s)", [json.dumps(asdict(catalog))])
    _category_indexes(url)
    return catalog


def _category_indexes(url: str) -> None:
    """The large categories' own HNSW indexes (search/category_indexes.py), as the app's beat task builds them."""
    env = {**os.environ, "DATABASE_URL": url}
    subprocess.run([sys.executable, "manage.py", "category_indexes"], cwd=ROOT, env=env, check=True,
                   stdout=sys.stderr)  # fmt: skip


def category_index_sizes(url: str) -> tuple[int, int]:
    """How many per-category HNSW indexes the catalog has, and their bytes."""
    import psycopg

    from search.category_indexes import NAME_PATTERN

    with psycopg.connect(url) as connection:
        count, size = connection.execute(
            "SELECT count(*), coalesce(sum(pg_relation_size(c.oid)), 0) FROM pg_index i"
            " JOIN pg_class c ON c.oid = i.indexrelid WHERE i.indrelid = 'search_imageembedding'::regclass"
            " AND c.relname ~ %s",
            [NAME_PATTERN],
        ).fetchone()
    return int(count), int(size)


def _build_id() -> str:
    migrations = sorted(path.name for app in ("catalog", "search") for path in (ROOT / app / "migrations").glob("0*.py"))
    return hashlib.sha1(" ".join([VECTORS, *migrations]).encode()).hexdigest()[:12]


def _migrate(url: str) -> None:
    env = {**os.environ, "DATABASE_URL": url}
    subprocess.run([sys.executable, "manage.py", "migrate", "--no-input", "-v", "0"], cwd=ROOT, env=env, check=True)


def _model_id(url: str) -> str:
    env = {**os.environ, "DATABASE_URL": url, "DJANGO_SETTINGS_MODULE": "config.settings.local"}
    code = "import django; django.setup(); from search.embeddings import active_embedder; print(active_embedder().id)"
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, check=True, capture_output=True,
                          text=True).stdout.strip().splitlines()[-1]  # fmt: skip


def _photos() -> list[tuple[str, int, int, str]]:
    """(file name relative to MEDIA_ROOT, width, height, sha256) of the real photos the image rows use."""
    from PIL import Image

    from bench.datasets import vendure_photos

    target = MEDIA_ROOT / "bench"
    target.mkdir(parents=True, exist_ok=True)
    photos = []
    for source in vendure_photos()[:PHOTOS]:
        shutil.copyfile(source, target / source.name)
        with Image.open(source) as image:
            width, height = image.size
        photos.append((f"bench/{source.name}", width, height, hashlib.sha256(source.read_bytes()).hexdigest()))
    return photos


def _categories(classes: np.ndarray, rng: np.random.Generator):
    """Rows (id, name, slug, parent_id) of the tree, each product's category, and the two sampled categories."""
    rows, next_id = [], 1
    leaves_by_class: dict[int, list[int]] = {}
    for department, members in DEPARTMENTS.items():
        department_id = next_id
        rows.append((department_id, department, department.lower(), None))
        next_id += 1
        for label in members:
            for variant in ("Classic", "Modern"):
                name = f"{variant} {CLASSES[label].lower()}"
                rows.append((next_id, name, f"{variant}-{CLASSES[label]}".lower().replace(" ", "-"), department_id))
                leaves_by_class.setdefault(label, []).append(next_id)
                next_id += 1
    clearance, limited = next_id, next_id + 1
    rows += [(clearance, "Clearance", "clearance", None), (limited, "Limited edition", "limited-edition", None)]
    leaves = np.array([leaf for label in sorted(leaves_by_class) for leaf in leaves_by_class[label]])
    # Products of one look land in either of its two categories.
    variant = rng.integers(0, 2, size=len(classes))
    pairs = np.array([leaves_by_class[label] for label in range(len(CLASSES))])
    categories = pairs[classes, variant]
    mislabelled = rng.random(len(classes)) < MISLABELLED_SHARE
    categories[mislabelled] = rng.choice(leaves, size=int(mislabelled.sum()))
    order = rng.permutation(len(classes))
    n_clearance = round(len(classes) * CLEARANCE_SHARE)
    n_limited = max(1, round(len(classes) * LIMITED_SHARE))
    categories[order[:n_clearance]] = clearance
    categories[order[n_clearance : n_clearance + n_limited]] = limited
    return rows, categories, clearance, limited


def _build(products: int, url: str, maintenance_work_mem: str) -> BenchCatalog:
    import psycopg
    from pgvector import HalfVector
    from pgvector.psycopg import register_vector
    from tqdm import tqdm

    _migrate(url)
    model = _model_id(url)
    vectors, classes = catalog_vectors(products)
    rng = np.random.default_rng(2)
    category_rows, categories, clearance, limited = _categories(classes, rng)
    photos = _photos()
    prices = rng.integers(500, 50_000, size=products) / 100
    started = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as connection:
        register_vector(connection)
        connection.execute("DROP INDEX imageembedding_vector_hnsw")  # rebuilt once after the load: far faster
        connection.execute("SET synchronous_commit = off")
        with connection.transaction(), connection.cursor() as cursor:
            with cursor.copy("COPY catalog_category (id, name, slug, parent_id) FROM STDIN") as copy:
                for row in category_rows:
                    copy.write_row(row)
            columns = "id, sku, title, description, price, currency, category_id, active, created_at, updated_at"
            with cursor.copy(f"COPY catalog_product ({columns}) FROM STDIN") as copy:
                for row in tqdm(range(products), desc="products", unit_scale=True, file=sys.stderr):
                    look = CLASSES[classes[row]]
                    copy.write_row((row + 1, f"BENCH-{row + 1:07d}", f"{look} no. {row + 1}",
                                    f"A {look.lower()} from the synthetic bench catalog.", f"{prices[row]:.2f}", "USD",
                                    int(categories[row]), True, EPOCH, EPOCH))  # fmt: skip
            columns = ("id, product_id, file, thumbnail, position, width, height, content_hash, embedding_status,"
                       " embedding_error, embedding_model, embedded_at, created_at")  # fmt: skip
            with cursor.copy(f"COPY catalog_productimage ({columns}) FROM STDIN") as copy:
                for row in tqdm(range(products), desc="images", unit_scale=True, file=sys.stderr):
                    file, width, height, digest = photos[row % len(photos)]
                    copy.write_row((row + 1, row + 1, file, "", 0, width, height, digest, "ready", "", model,
                                    EPOCH, EPOCH))  # fmt: skip
            columns = "id, image_id, product_id, model, vector, created_at"
            with cursor.copy(f"COPY search_imageembedding ({columns}) FROM STDIN WITH (FORMAT BINARY)") as copy:
                copy.set_types(["int8", "int8", "int8", "text", "halfvec", "timestamptz"])
                for row in tqdm(range(products), desc="vectors", unit_scale=True, file=sys.stderr):
                    copy.write_row((row + 1, row + 1, row + 1, model, HalfVector(vectors[row]), EPOCH))
            cursor.execute(
                "INSERT INTO search_embeddingspace (model, state, created_at, activated_at, calibrated_vectors)"
                " VALUES (%s, 'active', now(), now(), 0)",
                [model],
            )
            for table in ("catalog_category", "catalog_product", "catalog_productimage", "search_imageembedding"):
                cursor.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))")
        for table in ("catalog_category", "catalog_product", "catalog_productimage", "search_imageembedding"):
            connection.execute(f"VACUUM ANALYZE {table}")
        load_seconds = time.perf_counter() - started
        connection.execute(f"SET maintenance_work_mem = '{maintenance_work_mem}'")
        print(f"building the HNSW index over {products:,} vectors...", file=sys.stderr)
        started = time.perf_counter()
        # The same definition as the migration's (search.ImageEmbedding.Meta.indexes).
        connection.execute(
            "CREATE INDEX imageembedding_vector_hnsw ON search_imageembedding"
            " USING hnsw (vector halfvec_cosine_ops) WITH (m = 16, ef_construction = 64)"
        )
        build_seconds = time.perf_counter() - started
        for table in ("catalog_product", "search_imageembedding"):  # again: index-only counts need the visibility map
            connection.execute(f"VACUUM ANALYZE {table}")
        table_bytes, index_bytes, vector_bytes = connection.execute(
            "SELECT pg_total_relation_size('search_imageembedding') - pg_indexes_size('search_imageembedding'),"
            " pg_relation_size('imageembedding_vector_hnsw'),"
            " (SELECT avg(pg_column_size(vector)) FROM (SELECT vector FROM search_imageembedding LIMIT 1000) sample)"
        ).fetchone()
    return BenchCatalog(
        products=products, database_url=url, media_root=str(MEDIA_ROOT), model=model,
        clearance_category_id=clearance, limited_category_id=limited, load_seconds=round(load_seconds, 1),
        index_build_seconds=round(build_seconds, 1), maintenance_work_mem=maintenance_work_mem,
        table_bytes=int(table_bytes), index_bytes=int(index_bytes), vector_bytes=float(vector_bytes),
        build=_build_id(),
    )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--products", type=int, default=200_000)
    parser.add_argument("--maintenance-work-mem", default="2GB")
    parser.add_argument("--rebuild", action="store_true", help="drop and build again even when complete")
    args = parser.parse_args()
    catalog = ensure_catalog(args.products, maintenance_work_mem=args.maintenance_work_mem, rebuild=args.rebuild)
    print(json.dumps(asdict(catalog), indent=2))


if __name__ == "__main__":
    main()
