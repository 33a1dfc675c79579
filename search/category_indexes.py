"""Per-category HNSW indexes: a large category filter searched as an unfiltered search of a small graph.

A filtered HNSW search with iterative scans walks the whole catalog's graph until enough rows pass the filter:
about 1/share of the graph, 20x the work for a category holding 1 in 20 vectors (docs/performance.md). A partial
HNSW index ``WHERE model = ... AND active AND category_id IN (the category and its descendants)`` holds that
category's vectors alone; PostgreSQL's planner picks it by itself for any search whose filter implies its
predicate (the same category, or one below it), with no change to the statement.

Which categories get one: those whose subtree holds more active vectors of the searched space than an exact
search reads (SEARCH_EXACT_MAX_VECTORS) and at most SEARCH_CATEGORY_INDEX_MAX_SHARE of them (a larger share walks
little more of the whole graph than an unfiltered search). ``category_indexes_sync`` (Celery beat, and
``manage.py category_indexes``) creates the missing ones (CONCURRENTLY: writes go on) and drops those no longer
wanted, including ones whose category gained a descendant since: their predicate no longer covers the filter,
so the planner had stopped using them anyway. The indexes are named after the category and a digest of the
predicate, so a changed predicate is a new name. Builds use the server's ``maintenance_work_mem``.

The space being built (a new model) gets its indexes beside the searched one's, so that they are there when search
switches to it: built only after the switch, one a run, large categories were searched through the whole graph for
hours.
"""

from __future__ import annotations

import hashlib
import logging
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence

from django.conf import settings
from django.db import connection
from django.db.models import Count
from pgvector.django import HnswIndex

from catalog.categories import category_parents, lineage
from search.locks import held_unless_taken
from search.models import ImageEmbedding

logger = logging.getLogger(__name__)

NAME_PATTERN = r"^imageembedding_c[0-9]+_[0-9a-f]{8}_hnsw$"


def wanted_category_indexes(*, model: str) -> dict[str, str]:
    """Index name -> its CREATE INDEX statement (without CONCURRENTLY), for every category that should have one
    in space ``model``, the largest category first."""
    counts = dict(
        ImageEmbedding.objects.filter(model=model, active=True)
        .order_by()
        .values_list("category_id")
        .annotate(vectors=Count("id"))
    )
    total = sum(counts.values())
    parents = category_parents()
    subtree_ids: dict[int, list[int]] = defaultdict(list)
    subtree_vectors: dict[int, int] = defaultdict(int)
    for category_id in parents:
        for ancestor in lineage(parents, category_id):
            subtree_ids[ancestor].append(category_id)
            subtree_vectors[ancestor] += counts.get(category_id, 0)
    most = settings.SEARCH_CATEGORY_INDEX_MAX_SHARE * total
    chosen = [c for c, n in subtree_vectors.items() if settings.SEARCH_EXACT_MAX_VECTORS < n <= most]
    # Each category's graph is built as the whole catalog's is.
    graph = next(index for index in ImageEmbedding._meta.indexes if isinstance(index, HnswIndex))
    statements = {}
    for category_id in sorted(chosen, key=lambda c: (-subtree_vectors[c], c)):
        ids = ", ".join(str(int(i)) for i in sorted(subtree_ids[category_id]))
        predicate = f"model = {_literal(model)} AND active AND category_id IN ({ids})"
        digest = hashlib.sha1(predicate.encode()).hexdigest()[:8]
        name = f"imageembedding_c{category_id}_{digest}_hnsw"
        statements[name] = (
            f"CREATE INDEX IF NOT EXISTS {name} ON {ImageEmbedding._meta.db_table}"
            f" USING hnsw (vector {graph.opclasses[0]}) WITH (m = {graph.m}, ef_construction = {graph.ef_construction})"
            f" WHERE {predicate}"
        )
    return statements


def existing_category_indexes() -> dict[str, bool]:
    """Index name -> whether it is valid (a failed CONCURRENTLY build leaves an invalid one behind)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname, i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
            " WHERE i.indrelid = %s::regclass AND c.relname ~ %s",
            [ImageEmbedding._meta.db_table, NAME_PATTERN],
        )
        return dict(cursor.fetchall())


# A session-level advisory lock (pg_try_advisory_lock's key) held while a sync runs.
SYNC_LOCK = 0x4C4B_4349  # "LKCI"


def category_indexes_sync(*, models: Sequence[str], limit: int | None = 1,
                          progress: Callable[[list[str]], Iterable[str]] = iter) -> dict[str, list[str]]:
    """Drop the category indexes the spaces ``models`` no longer want (and invalid ones), then build up to ``limit``
    missing ones (all of them with ``None``), the first space's first, largest first, going through their names by
    ``progress`` (a command's progress bar). Outside a transaction both run CONCURRENTLY, so searches and writes go
    on; inside one (tests) they run plainly.

    One sync at a time: a build still running is an invalid index to everyone else, and a second sync (the next beat
    run on another worker slot, while a large build takes longer than its interval) would drop it and start it over.
    A sync that finds another one running does nothing."""
    with held_unless_taken(SYNC_LOCK) as taken:
        if not taken:
            logger.info("category indexes: another sync is running")
            return {"created": [], "dropped": []}
        return _sync(models=models, limit=limit, progress=progress)


def _sync(*, models: Sequence[str], limit: int | None, progress: Callable[[list[str]], Iterable[str]]
          ) -> dict[str, list[str]]:
    wanted = {name: statement for model in models for name, statement in wanted_category_indexes(model=model).items()}
    existing = existing_category_indexes()
    concurrently = "" if connection.in_atomic_block else " CONCURRENTLY"
    if not concurrently:
        with connection.cursor() as cursor:
            # Deferred foreign-key checks of this transaction's writes would block the index build: run them now.
            cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
    dropped, created = [], []
    for name, valid in existing.items():
        if name not in wanted or not valid:
            with connection.cursor() as cursor:
                cursor.execute(f"DROP INDEX{concurrently} IF EXISTS {name}")
            dropped.append(name)
    missing = [name for name in wanted if not existing.get(name)]
    for name in progress(missing[:limit]):
        logger.info("building the category index %s", name)
        with connection.cursor() as cursor:
            cursor.execute(wanted[name].replace("CREATE INDEX", f"CREATE INDEX{concurrently}", 1))
        created.append(name)
    return {"created": created, "dropped": dropped}


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"
