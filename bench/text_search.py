"""What typo-tolerant text search (catalog.typos) costs against exact full-text search, on N synthetic products.

    .venv/bin/python -m bench.text_search --quick        # 20,000 products, about a minute
    .venv/bin/python -m bench.text_search                # 200,000 products, a few minutes (the load is most of it)
    # on a server with pg_trgm:
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres .venv/bin/python -m bench.text_search

Builds (or reuses) the database ``lookalike_bench_text_<N>`` on the project's PostgreSQL server (the embedded one
unless DATABASE_URL is set): Django migrations, then N products whose titles and descriptions draw on 60 product
nouns, colours, materials, adjectives and 20,000 made-up brand names (a vocabulary the size of a real catalog's),
inserted in batches of 20,000 so the vocabulary triggers run as they do on an import. Then, for 10 product nouns
typed right and with two letters swapped ("chair" -> "chiar"), the median time of:

- the exact full-text search as it was before typo tolerance (a results page: count + first 24, ranked);
- ``product_search`` (the same page) with the words as typed, and with the typo;
- the correction look-up alone (``corrections``), with each strategy the server supports;

and the write cost of the vocabulary: inserting 1,000 more products with the triggers on and off (rolled back).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

from bench.catalog import _migrate, server_url
from bench.common import machine, table

NOUNS = (
    "hoodie sneakers chair jacket lantern blanket trousers cushion mirror kettle sofa table lamp dress shirt sweater "
    "cardigan scarf gloves beanie boots sandals backpack wallet handbag umbrella blender toaster teapot saucepan "
    "skillet candle vase planter bookcase wardrobe dresser nightstand stool bench rug curtain pillow duvet towel "
    "bathrobe slippers sunglasses watch bracelet necklace earrings headphones speaker keyboard monitor charger "
    "notebook"
).split()
COLOURS = "black white grey navy red green blue beige brown pink yellow orange purple olive cream".split()
MATERIALS = "cotton wool leather linen oak walnut steel brass ceramic glass velvet denim bamboo marble".split()
ADJECTIVES = "soft warm classic modern vintage compact sturdy elegant lightweight cosy rustic sleek handmade".split()
QUERIES = ["hoodie", "sneakers", "chair", "jacket", "lantern", "blanket", "trousers", "cushion", "mirror", "kettle"]
BATCH = 20_000
PAGE = 24


def typo(word: str) -> str:
    """The first two different neighbouring letters after the first two swapped, the commonest slip ("chair" ->
    "chiar", "kettle" -> "ketlte")."""
    i = next(i for i in range(2, len(word) - 1) if word[i] != word[i + 1])
    return word[:i] + word[i + 1] + word[i] + word[i + 2 :]


def brands(count: int, rng: np.random.Generator) -> list[str]:
    onsets, vowels = list("bcdfghjklmnprstvz") + ["br", "tr", "st", "gr", "pl"], list("aeiou")
    names: set[str] = set()
    while len(names) < count:
        syllables = rng.integers(2, 4)
        stem = "".join(rng.choice(onsets) + rng.choice(vowels) for _ in range(syllables))
        names.add(stem + rng.choice(["", "n", "x"]))
    return sorted(names)


INSERT = """
INSERT INTO catalog_product (sku, title, description, price, currency, category_id, active, created_at, updated_at)
SELECT 'TXT-' || i,
       initcap(b[(1 + i * 7919 %% cardinality(b))::int]) || ' ' || c[(1 + i * 31 %% cardinality(c))::int] || ' '
           || m[(1 + i * 17 %% cardinality(m))::int] || ' ' || n[(1 + i * 13 %% cardinality(n))::int],
       initcap(a[(1 + i * 11 %% cardinality(a))::int]) || ' ' || n[(1 + i * 13 %% cardinality(n))::int] || ' in '
           || m[(1 + i * 5 %% cardinality(m))::int] || ', by '
           || initcap(b[(1 + i * 104729 %% cardinality(b))::int]) || '. '
           || initcap(a[(1 + i * 3 %% cardinality(a))::int]) || ' and '
           || a[(1 + i * 19 %% cardinality(a))::int] || '.',
       (i %% 500) + 9.99, 'USD', %(category)s, true, now(), now()
FROM (SELECT %(b)s::text[] AS b, %(c)s::text[] AS c, %(m)s::text[] AS m, %(n)s::text[] AS n, %(a)s::text[] AS a)
     AS arrays, generate_series(%(first)s::bigint, %(last)s::bigint) AS i
"""


def ensure_database(products: int, rebuild: bool) -> str:
    import psycopg

    from bench.catalog import urlsplit, urlunsplit

    name = f"lookalike_bench_text_{products}"
    url = urlunsplit(urlsplit(server_url())._replace(path=f"/{name}"))
    with psycopg.connect(server_url(), autocommit=True) as server:
        exists = server.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
        if exists and not rebuild:
            with psycopg.connect(url) as connection:
                done = connection.execute("SELECT to_regclass('bench_text_info') IS NOT NULL").fetchone()[0]
            if done:
                return url
        if exists:
            server.execute(f"DROP DATABASE {name} WITH (FORCE)")
        server.execute(f"CREATE DATABASE {name}")
    _migrate(url)
    rng = np.random.default_rng(0)
    arrays = {"b": brands(20_000, rng), "c": COLOURS, "m": MATERIALS, "n": NOUNS, "a": ADJECTIVES}
    started = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("SET synchronous_commit = off")
        category = connection.execute(
            "INSERT INTO catalog_category (name, slug) VALUES ('Bench', 'bench') RETURNING id"
        ).fetchone()[0]
        for first in range(1, products + 1, BATCH):
            last = min(products, first + BATCH - 1)
            connection.execute(INSERT, {"category": category, "first": first, "last": last, **arrays})
            print(f"  loaded {last:,} products", file=sys.stderr)
        connection.execute("VACUUM ANALYZE")
        connection.execute("CREATE TABLE bench_text_info AS SELECT %s::float AS load_seconds, "
                           "pg_total_relation_size('catalog_searchword')"
                           " + pg_total_relation_size('catalog_searchwordvariant') AS vocabulary_bytes",
                           [time.perf_counter() - started])
    return url


def measure(url: str, repeats: int) -> None:
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")
    import django

    django.setup()
    from django.contrib.postgres.search import SearchQuery, SearchRank
    from django.db import connection, transaction
    from django.db.models import F, Value

    from catalog.models import Product, Unaccented
    from catalog.selectors import _with_card_image, product_search
    from catalog.typos import corrections, text_search_strategy

    def exact_page(query: str):  # product_search as it was before typo tolerance
        search = SearchQuery(Unaccented(Value(query)), search_type="websearch", config="english")
        queryset = (
            Product.objects.filter(active=True, search_document=search)
            .select_related("category")
            .annotate(rank=SearchRank(F("search_document"), search))
            .order_by("-rank", "title", "pk")
        )
        queryset = _with_card_image(queryset)
        return queryset.count(), list(queryset[:PAGE])

    def page(query: str):
        queryset = product_search(query=query)
        return queryset.count(), list(queryset[:PAGE])

    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM catalog_product")
        products = cursor.fetchone()[0]
        cursor.execute("SELECT (SELECT count(*) FROM catalog_searchword),"
                       " (SELECT count(*) FROM catalog_searchwordvariant), vocabulary_bytes, load_seconds"
                       " FROM bench_text_info")
        words, variants, vocabulary_bytes, load_seconds = cursor.fetchone()
    strategies = ["variants"] + (["trigram"] if text_search_strategy() == "trigram" else [])
    typos = [typo(word) for word in QUERIES]
    assert all(page(t)[0] >= page(w)[0] > 0 for t, w in zip(typos, QUERIES)), "a typo missed what was meant"

    strategy = text_search_strategy()
    modes = [
        ("exact full-text page (before), words as typed", exact_page, QUERIES),
        (f"product_search page ({strategy}), words as typed", page, QUERIES),
        (f"product_search page ({strategy}), one swap per word", page, typos),
        *[(f"corrections() alone ({s})", lambda q, s=s: corrections(words=[q], strategy=s), typos) for s in strategies],
    ]
    # Round-robin over modes and queries, so that load from elsewhere on the machine falls on all of them alike.
    timings = {(m, q): [] for m, (_, _, queries) in enumerate(modes) for q in queries}
    for repeat in range(repeats + 1):  # the first round warms the caches and is not counted
        for m, (_, run, queries) in enumerate(modes):
            for query in queries:
                started = time.perf_counter()
                run(query)
                if repeat:
                    timings[m, query].append(1000 * (time.perf_counter() - started))
    rows = []
    for m, (label, _, queries) in enumerate(modes):
        per_query = [float(np.median(timings[m, q])) for q in queries]
        rows.append((label, round(float(np.median(per_query)), 2), round(max(per_query), 2)))

    insert_ms = {}
    for triggers in ("on", "off"):
        with transaction.atomic():
            with connection.cursor() as cursor:
                if triggers == "off":
                    cursor.execute("ALTER TABLE catalog_product DISABLE TRIGGER catalog_product_words_insert")
                cursor.execute("SELECT min(category_id) FROM catalog_product")
                category = cursor.fetchone()[0]
                rng = np.random.default_rng(1)
                arrays = {"b": brands(2_000, rng), "c": COLOURS, "m": MATERIALS, "n": NOUNS, "a": ADJECTIVES}
                sql = INSERT.replace("'TXT-' || i", "'NEW-' || i")
                started = time.perf_counter()
                cursor.execute(sql, {"category": category, "first": 1, "last": 1000, **arrays})
                insert_ms[triggers] = 1000 * (time.perf_counter() - started)
            transaction.set_rollback(True)

    print(f"\n{products:,} products; vocabulary {words:,} words, {variants:,} variants, "
          f"{vocabulary_bytes / 2**20:.1f} MiB; load {load_seconds:.0f} s; {machine()}\n")
    print(table(["query (median over 10 queries of the median of repeats)", "median ms", "worst query ms"], rows))
    print(f"\ninsert 1,000 new products (new words included): {insert_ms['on']:.0f} ms with the vocabulary triggers, "
          f"{insert_ms['off']:.0f} ms without")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--products", type=int, default=200_000)
    parser.add_argument("--quick", action="store_true", help="20,000 products, fewer repeats")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--rebuild", action="store_true", help="rebuild the database even if one is complete")
    args = parser.parse_args()
    products, repeats = (20_000, 5) if args.quick else (args.products, args.repeats)
    measure(ensure_database(products, args.rebuild), repeats)


if __name__ == "__main__":
    main()
