"""Reads for image search: nearest products by vector, in SQL with pgvector."""

from __future__ import annotations

import logging
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal

from django.conf import settings
from django.core.cache import cache
from django.db import connections, router, transaction
from django.db.models import CharField, Exists, OuterRef
from django.db.models.functions import MD5, Cast

from catalog.models import Category, Product, ProductImage
from catalog.page_cache import kept_per_catalog_version
from catalog.selectors import (
    category_cards,
    category_descendant_ids,
    category_parents,
    kept_category_cards,
    kept_category_parents,
    kept_product_currencies,
    lineage,
    product_cards,
    shop_currency,
)
from search import details
from search.calibration import MATCH_THRESHOLD, default_cutoff, match_score, space_cutoff
from search.embeddings import active_embedder
from search.models import EmbeddingSpace, ImageEmbedding
from search.nearest import (
    Hit,
    VectorRows,
    count_statement,
    nearest_newer_unflagged_statement,
    nearest_older_statement,
    nearest_statement,
)
from search.query import Box, KeptQuery, QueryImage, query_embedding, query_image_read
from search.refine import DEFAULT_SORT, NO_REFINE, Refine, duplicate_folding, sorted_matches

logger = logging.getLogger(__name__)

# How many image hits to read per wanted product: several images of one product collapse into one result.
OVERFETCH = 4
# When the rows read hold fewer products than wanted (many close photos of each), twice as many are read, this many
# times at most: up to 32 rows per product.
OVERFETCH_DOUBLINGS = 3
FOLDED_POOL_DOUBLINGS = 3  # at most 8x the pool read again when folding near-duplicates left too few to show
# How many of the best matches a photo search counts by category and re-orders when asked for another sort: the
# matches beyond these are too many to read for every search, and rarely what a shopper sorts for.
MATCH_POOL = 48
# Another order than the best match sorts this many of the best matches, whatever the limit: at least the largest
# limit a caller may ask (the API's 100, the page's 96), so that "Show more" keeps the first ones in place. Sorted
# within max(limit, MATCH_POOL), a larger limit sorted more matches, and a cheaper one moved to the top.
SORTED_POOL = 100
# pgvector refuses a larger hnsw.ef_search; the iterative scan still reads on past it when more rows are wanted.
HNSW_EF_SEARCH_MAX = 1000
# The cache entries where the embedding sweep (search/sweep.py) records when it last ran, and which of its steps failed
# then, for /healthz (config/health.py).
SWEEP_RAN_AT_KEY = "search:sweep-ran-at"
SWEEP_FAILED_KEY = "search:sweep-failed"


def embedding_sweep_last_run() -> tuple[float | None, list[str]]:
    """Seconds since the embedding sweep last ran, anywhere (None when it never has), and the names of the steps that
    failed in that run. A sweep runs only where beat sent it and a worker took it: a recent one says both are alive.
    Raises where the cache cannot be read."""
    kept = cache.get_many([SWEEP_RAN_AT_KEY, SWEEP_FAILED_KEY])
    ran_at = kept.get(SWEEP_RAN_AT_KEY)
    age = None if ran_at is None else max(0.0, time.time() - ran_at)  # clocks of two hosts may disagree a little
    return age, list(kept.get(SWEEP_FAILED_KEY) or [])


@kept_per_catalog_version
def _active_space() -> tuple[str, float | None] | None:
    """The active space's model and stored calibration; None on a new install. Every search reads it."""
    return EmbeddingSpace.objects.filter(state=EmbeddingSpace.State.ACTIVE).values_list("model", "min_score").first()


def indexed_space_models() -> list[str]:
    """The spaces whose large categories get their own index (search/category_indexes.py): the searched one, then
    the build processes last worked on (of a model changed twice, the second), whose indexes are then ready when
    search switches to it."""
    active = search_space_model()
    building = (EmbeddingSpace.objects.filter(state=EmbeddingSpace.State.BUILDING).exclude(model=active)
                .order_by("-configured_seen_at", "-pk").values_list("model", flat=True).first())
    return [active, building] if building else [active]


def search_space_model() -> str:
    """The embedder id whose vectors searches compare: the active space, or on a new install the configured model."""
    active = _active_space()
    return active[0] if active else active_embedder().id


def search_cutoff(model: str) -> float:
    """The cosine similarity below which nothing counts as similar enough in space ``model``: the operator's
    ``SEARCH_MIN_SCORE`` when set, else the space's own calibration (search/calibration.py)."""
    if settings.SEARCH_MIN_SCORE is not None:
        return settings.SEARCH_MIN_SCORE
    active = _active_space()
    if active and active[0] == model:
        return _cutoff(active[1])
    # Another space: a kept query's, moments after a switch.
    return _cutoff(EmbeddingSpace.objects.filter(model=model).values_list("min_score", flat=True).first())


def _cutoff(stored: float | None) -> float:
    """The cut-off for a space whose stored calibration is ``stored``: the operator's pin first."""
    if settings.SEARCH_MIN_SCORE is not None:
        return settings.SEARCH_MIN_SCORE
    return space_cutoff(stored, default=default_cutoff())


def search_space_and_cutoff() -> tuple[str, float]:
    """``search_space_model()`` and its ``search_cutoff`` from one kept read: what every photo search needs."""
    active = _active_space()
    if active is None:  # a new install: no space yet
        model = search_space_model()
        return model, search_cutoff(model)
    return active[0], _cutoff(active[1])


@dataclass(frozen=True)
class SimilarProduct:
    product: Product
    score: float  # the match score shown to shoppers: 0.5 at the catalog's cut-off, 1 for the same photo
    similarity: float  # cosine similarity of the best-matching image, clipped to [0, 1]
    image_id: int | None = None  # that best-matching image
    colour: str = ""  # that image's main colour family ("" until computed)
    # Lower-ranked matches whose best image is a near-duplicate of this one's (search.refine.fold_duplicates).
    duplicates: tuple[SimilarProduct, ...] = ()


@dataclass(frozen=True)
class CategoryFacet:
    category: Category
    count: int  # matches in this category or below it


@dataclass(frozen=True)
class ColourFacet:
    colour: str
    count: int


@dataclass(frozen=True)
class Matches:
    results: list[SimilarProduct]  # at most ``limit``, in the asked order
    categories: list[CategoryFacet] = field(default_factory=list)  # over all the pool's matches, best match first
    colours: list[ColourFacet] = field(default_factory=list)  # likewise, by the main colours of matching photos
    more: bool = False  # more matches than ``results`` pass the threshold: a larger limit shows more


@dataclass(frozen=True)
class PhotoSearch:
    results: list[SimilarProduct]
    model: str
    took_ms: float
    threshold: float  # the least match score a result needed
    cutoff: float  # the cosine similarity that match score 0.5 stands for
    category: Category | None = None
    categories: list[CategoryFacet] = field(default_factory=list)
    colours: list[ColourFacet] = field(default_factory=list)
    refine: Refine = NO_REFINE
    more: bool = False  # a larger limit shows more matches
    vector: object = None  # the query vector (numpy), for keeping it (search.kept_queries.query_vector_keep)
    details: tuple | None = None  # the query photo's detail descriptors and weights, kept with it


def similar_products_to_vector(
    *,
    vector,
    limit: int = 12,
    category_ids: list[int] | None = None,
    exclude_product_id: int | None = None,
    model: str | None = None,
    threshold: float = 0.0,
    cutoff: float | None = None,
) -> list[SimilarProduct]:
    """The ``limit`` active products whose best image is nearest to ``vector``, best first, with a match score
    (search/calibration.py) of at least ``threshold``; ``cutoff`` is the space's, read here unless given."""
    return vector_matches(
        vector=vector, limit=limit, category_ids=category_ids, exclude_product_id=exclude_product_id, model=model,
        threshold=threshold, cutoff=cutoff,
    ).results


def vector_matches(
    *,
    vector,
    limit: int = 12,
    category_ids: list[int] | None = None,
    exclude_product_id: int | None = None,
    model: str | None = None,
    threshold: float = 0.0,
    cutoff: float | None = None,
    refine: Refine = NO_REFINE,
    pool: int = 0,
    fold: bool = False,
    query_details: tuple | None = None,
) -> Matches:
    """The active products whose best image is nearest to ``vector`` with a match score of at least ``threshold``:
    the best ``max(limit, pool)`` of them are counted by category and colour; those (or, in another order than the
    best match, the best SORTED_POOL) are put in ``refine.sort`` order, and the first ``limit`` returned. Sorting only
    ever re-orders matches: the cut-off comes first. With ``fold``, a match
    whose best image is a near-duplicate (NEAR_DUPLICATE_MIN_SCORE, the admin's flag) of a higher-ranked one's is
    folded into that one's ``duplicates`` and does not count towards ``limit`` (in the best-match order, a larger
    pool is read when folding leaves fewer than ``limit`` of a full pool; another order keeps to SORTED_POOL, so
    that "Show more" leaves the matches shown in place). With ``query_details`` (a photo's,
    search/details.py), the first matches of the best-match order are put in order by their details as well.

    Filters (category, price, colour) run in SQL. Filters over few vectors are searched exactly (cheaper than walking
    the graph, and exact); others use the HNSW index with iterative scans, so a filter still yields the pool's
    products when they exist.
    """
    model = model or search_space_model()
    refine = _in_one_currency(refine)
    rows = VectorRows(
        model=model, category_ids=None if category_ids is None else tuple(category_ids), refine=refine,
        exclude_product_id=exclude_product_id,
    )
    cutoff = search_cutoff(model) if cutoff is None else cutoff
    counted = max(limit, pool)
    # One match past ``limit`` at least, to know whether a larger limit shows more.
    pool = max(counted, limit + 1) if refine.sort == DEFAULT_SORT else max(counted, SORTED_POOL)
    for _ in range(FOLDED_POOL_DOUBLINGS + 1):
        candidates = _pool_candidates(rows, vector, pool, cutoff=cutoff, threshold=threshold)
        if query_details is not None and settings.SEARCH_DETAIL_ORDER and refine.sort == DEFAULT_SORT:
            candidates = _in_detail_order(model, candidates, query_details)
        products = {}
        if refine.sort == "newest":  # the one order no vector row carries: read every card to know it
            products = _products_for_cards(candidates)
            candidates = [replace(c, created_at=products[c.product_id].created_at) for c in candidates
                          if c.product_id in products]
        ordered = sorted_matches(candidates, refine.sort, currency=refine.currency)
        folded = None  # the matches of a chip's click as they are shown: near-duplicates folded
        if fold and len(ordered) > 1:
            minimum = settings.NEAR_DUPLICATE_MIN_SCORE
            pairs = _near_duplicate_pairs(model, [c.image_id for c in ordered], min_similarity=minimum)
            folded = duplicate_folding(pairs, min_similarity=minimum)
            ordered = folded(ordered)
        if len(ordered) > limit or len(candidates) < pool or refine.sort != DEFAULT_SORT:
            break  # more than enough to show, no more matches, or an order that re-orders only the best SORTED_POOL
        pool *= 2  # folding took some of the first ``limit``: a larger pool, so that it does not shorten the page
    return Matches(
        # Counted over the best ``counted`` in the best-match order, whatever the order shown: the same chips for
        # every order and every page of "Show more" up to MATCH_POOL.
        results=_with_cards(ordered[:limit], products), categories=_category_facets(candidates[:counted], folded),
        colours=_colour_facets(candidates[:counted], folded), more=len(ordered) > limit,
    )


def _in_one_currency(refine: Refine) -> Refine:
    """``refine`` with the currency its prices are compared in: the one asked, else the shop's (the one most active
    products are priced in); None where every product is priced in it, so that nothing needs to tell them apart."""
    if not refine.by_price:
        return replace(refine, currency=None)
    currency = refine.currency or shop_currency()
    return replace(refine, currency=None if kept_product_currencies() in ([], [currency]) else currency)


def _pool_candidates(rows: VectorRows, vector, pool: int, *, cutoff: float, threshold: float) -> list[_Candidate]:
    """The best ``pool`` products by their best image's vector whose match score is at least ``threshold``."""
    wanted = pool * OVERFETCH
    for doubling in range(OVERFETCH_DOUBLINGS + 1):
        if rows.filtered and _few_rows(rows):
            hits = _exact_hits(rows, vector, wanted)
        else:
            hits = _hnsw_hits(rows, vector, wanted)
            if len(hits) < wanted and (rows.filtered or _few_rows(rows)):
                # The iterative scan gave up (hnsw.max_scan_tuples, or its memory cap when the graph holds many dead
                # entries) before finding enough: read the filter's rows, or a small space's, exactly.
                hits = _exact_hits(rows, vector, wanted)
        if len(hits) < wanted or len({hit[0] for hit in hits}) >= pool or doubling == OVERFETCH_DOUBLINGS:
            break
        wanted *= 2  # every row there is was not read, and those read are photos of too few products
    best: dict[int, Hit] = {}
    colours: dict[int, set[str]] = defaultdict(set)  # of each product's photos that are matches themselves
    # Relaxed order: re-sort, ties (one photo listed twice) by image, so that the same listing leads on every page
    for hit in sorted(hits, key=lambda hit: (hit[1], hit[2])):
        best.setdefault(hit[0], hit)
        if hit[3] and match_score(_similarity(hit[1]), cutoff) >= threshold:
            colours[hit[0]].add(hit[3])
    candidates = []
    for product_id, distance, image_id, colour, category_id, price, currency in best.values():
        similarity = _similarity(distance)
        if (score := match_score(similarity, cutoff)) >= threshold:
            candidates.append(_Candidate(product_id, similarity, score, image_id, colour, category_id, price,
                                         currency, colours=frozenset(colours[product_id])))
            if len(candidates) == pool:
                break
    return candidates


def _in_detail_order(model: str, candidates: list[_Candidate], query_details: tuple) -> list[_Candidate]:
    """The first ``details.CANDIDATES`` candidates re-ordered by their best photos' details too (search/details.py);
    all as they were if any of those photos has none stored."""
    head = candidates[: details.CANDIDATES]
    if len(head) < 2:
        return candidates
    stored = dict(ImageEmbedding.objects.filter(model=model, image_id__in=[c.image_id for c in head])
                  .values_list("image_id", "details"))
    if any(stored.get(c.image_id) is None for c in head):
        return candidates
    matched = details.similarities(query_details, [details.decode(bytes(stored[c.image_id])) for c in head])
    return [head[index] for index in details.order([c.similarity for c in head], matched)] + candidates[len(head):]


@dataclass(frozen=True)
class _Candidate:
    """A product's best hit in a search's pool, before its card is read: what its order, folding and the facets need
    (the vector row carries the product's category and price). Only the products shown get a card."""

    product_id: int
    similarity: float
    score: float
    image_id: int
    colour: str
    category_id: int
    price: Decimal
    currency: str
    # The main colours of the product's photos that match (its best photo's and others'): a colour filter finds
    # the product by any of them, so its colour chips count it under each.
    colours: frozenset[str] = frozenset()
    created_at: datetime | None = None  # read for the newest-first order only
    duplicates: tuple[_Candidate, ...] = ()


def _with_cards(shown: list[_Candidate], products: dict[int, Product]) -> list[SimilarProduct]:
    """The shown candidates (with their folded duplicates) as results with their products' cards, read in one
    statement unless given; a product gone since its vector was read is left out."""
    wanted = [c for match in shown for c in (match, *match.duplicates) if c.product_id not in products]
    products = {**products, **_products_for_cards(wanted)}

    def result(candidate: _Candidate) -> SimilarProduct:
        return SimilarProduct(
            product=products[candidate.product_id], score=candidate.score, similarity=candidate.similarity,
            image_id=candidate.image_id, colour=candidate.colour,
            duplicates=tuple(result(c) for c in candidate.duplicates if c.product_id in products),
        )

    return [result(match) for match in shown if match.product_id in products]


def _near_duplicate_pairs(model: str, image_ids: list[int], *, min_similarity: float) -> dict[tuple[int, int], float]:
    """The pairs of these images (lower id first) whose vectors have a cosine similarity of at least
    ``min_similarity``, with it. PostgreSQL compares the up to MATCH_POOL^2 / 2 pairs in C and returns the few close
    ones, where reading every vector into Python to compare them there cost more than the ANN statement."""
    table = ImageEmbedding._meta.db_table
    with connections[_read_alias()].cursor() as cursor:
        cursor.execute(
            f"""SELECT a.image_id, b.image_id, 1 - (a.vector <=> b.vector)
                FROM {table} a JOIN {table} b ON b.model = a.model AND b.image_id > a.image_id
                WHERE a.model = %s AND a.image_id = ANY(%s) AND b.image_id = ANY(%s)
                  AND a.vector <=> b.vector <= %s""",
            [model, image_ids, image_ids, 1.0 - min_similarity],
        )
        return {(first, second): similarity for first, second, similarity in cursor.fetchall()}


def _category_facets(candidates: list[_Candidate], folded: Callable[[list], list] | None) -> list[CategoryFacet]:
    """A chip for each category the candidates are in, counting those in it or below it: what its click, which
    searches below it too, finds among them, near-duplicates ``folded`` as its answer folds them. In the order of
    their best matches (the candidates come best first): by count, six weak matches of cameras came before the
    two T-shirts a photo of a T-shirt found first."""
    if not candidates:
        return []
    direct = {candidate.category_id for candidate in candidates}
    categories, parents = kept_category_cards(), kept_category_parents()
    if not direct <= categories.keys():  # kept from before a category was added, had its version been lost
        categories, parents = category_cards(), category_parents()
    found: dict[int, list[_Candidate]] = defaultdict(list)  # in the order of each category's best match
    for candidate in candidates:
        for ancestor in lineage(parents, candidate.category_id):
            if ancestor in direct:
                found[ancestor].append(candidate)
    return [CategoryFacet(category=categories[category_id], count=count)
            for category_id, count in _counted(found, folded).items()]


def _colour_facets(candidates: list[_Candidate], folded: Callable[[list], list] | None) -> list[ColourFacet]:
    """A swatch for each colour of the candidates' matching photos, counting the candidates with a photo of it: what
    its click finds. Near-duplicates are folded among the candidates whose best photo has the colour (the click
    represents the others by another photo, of whose near-duplicates nothing was read)."""
    found: dict[str, list[_Candidate]] = defaultdict(list)
    others: Counter = Counter()
    for candidate in candidates:
        for colour in candidate.colours:
            if colour == candidate.colour:
                found[colour].append(candidate)
            else:
                others[colour] += 1
    counts = Counter(_counted(found, folded)) + others
    return [ColourFacet(colour=c, count=n) for c, n in sorted(counts.items(), key=lambda item: (-item[1], item[0]))]


def _counted(found: dict, folded: Callable[[list], list] | None) -> dict:
    """How many results each chip's matches make: one per group of near-duplicates where the answer folds them."""
    return {key: len(folded(matches) if folded else matches) for key, matches in found.items()}


def _few_rows(rows: VectorRows) -> bool:
    """Whether ``rows`` number at most SEARCH_EXACT_MAX_VECTORS, so that reading them all is cheaper than walking the
    graph. A category filter's answer is kept per catalog version: counting a large category's first vectors cost as
    much as searching it (2 ms at 1M vectors, docs/performance.md)."""
    limit = settings.SEARCH_EXACT_MAX_VECTORS
    if rows.category_ids is not None and not rows.refine.filtered:  # a product left out (More like this) or not
        return _category_rows_at_most(rows.model, rows.category_ids, limit)
    return _rows_at_most(rows, limit)


@kept_per_catalog_version
def _category_rows_at_most(model: str, category_ids: tuple[int, ...], limit: int) -> bool:
    return _rows_at_most(VectorRows(model=model, category_ids=category_ids), limit)


def _rows_at_most(rows: VectorRows, limit: int) -> bool:
    with connections[_read_alias()].cursor() as cursor:
        cursor.execute(*count_statement(rows, limit))
        return cursor.fetchone()[0] <= limit


def _few_vectors(model: str, category_ids: list[int]) -> bool:
    """Whether the categories hold at most SEARCH_EXACT_MAX_VECTORS searchable vectors (see ``_few_rows``)."""
    return _few_rows(VectorRows(model=model, category_ids=tuple(category_ids)))


def _exact_hits(rows: VectorRows, vector, wanted: int) -> list[Hit]:
    sql, params = nearest_statement(rows, vector, wanted, exact=True)
    with connections[_read_alias()].cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


def _hnsw_hits(rows: VectorRows, vector, wanted: int) -> list[Hit]:
    sql, params = nearest_statement(rows, vector, wanted, exact=False)
    ef_search = min(HNSW_EF_SEARCH_MAX, max(settings.SEARCH_HNSW_EF_SEARCH, wanted))
    with connections[_read_alias()].cursor() as cursor:
        # Keep scanning the index until enough rows pass the filters (pgvector >= 0.8). The settings and the query go
        # in one message, which PostgreSQL runs as one transaction (SET LOCAL lasts for it): one round trip, where
        # BEGIN, the settings, the query and COMMIT took four (Django's cursors bind client-side, which allows it).
        cursor.execute(
            f"SET LOCAL hnsw.iterative_scan = relaxed_order; SET LOCAL hnsw.ef_search = {int(ef_search)}; {sql}", params
        )
        while cursor.nextset():  # past the two SETs' empty results
            pass
        return cursor.fetchall()


def _read_alias() -> str:
    """The server the router picks for a read of vectors (a replica where the request may use one)."""
    return router.db_for_read(ImageEmbedding)


def _products_for_cards(candidates: list[_Candidate]) -> dict[int, Product]:
    """The candidates' products, each card showing the photo that matched (of the colour asked, in the box drawn)."""
    if not candidates:
        return {}
    return product_cards(product_ids=[c.product_id for c in candidates],
                         shown_images={c.product_id: c.image_id for c in candidates})


def _similarity(cosine_distance: float) -> float:
    return max(0.0, min(1.0, 1.0 - cosine_distance))


def similar_products_to_product(
    *,
    product: Product,
    limit: int = 12,
    category_ids: list[int] | None = None,
    refine: Refine = NO_REFINE,
    fold: bool = False,
) -> list[SimilarProduct]:
    """More like this: uses the product's stored vectors (no model call); never lists the product itself."""
    return product_matches(product=product, limit=limit, category_ids=category_ids, refine=refine, fold=fold).results


def product_matches(
    *,
    product: Product,
    limit: int = 12,
    category_ids: list[int] | None = None,
    refine: Refine = NO_REFINE,
    fold: bool = True,
) -> Matches:
    """More like this with its facets. In the default order every nearest product is listed, however weak (a
    product page always has neighbours); another order, or a price filter, keeps only real matches (match score
    0.5 or more) so that the cheapest or newest is never a poor lookalike."""
    model = search_space_model()
    first = _first_photo_vector(product=product, model=model)
    if first is None:
        return Matches(results=[])
    refined = refine.narrows_or_reorders
    return vector_matches(
        vector=first[0], limit=limit, category_ids=category_ids, exclude_product_id=product.pk, model=model,
        threshold=MATCH_THRESHOLD if refined else 0.0, refine=refine, pool=MATCH_POOL if refined or fold else 0,
        fold=fold,
    )


def other_colour_products(*, product: Product, limit: int = 8) -> list[SimilarProduct]:
    """"Same look, other colours": close matches (match score 0.5 or more) in the product's category tree whose
    best photo's main colour differs from that of the product's first photo; best first, one per colour family
    first so that the row shows the colours there are."""
    model = search_space_model()
    first = _first_photo_vector(product=product, model=model)
    if first is None or not first[1]:
        return []
    vector, colour = first
    matches = vector_matches(
        vector=vector, limit=MATCH_POOL, category_ids=category_descendant_ids(category=product.category),
        exclude_product_id=product.pk, model=model, threshold=MATCH_THRESHOLD,
    ).results
    others = [match for match in matches if match.colour and match.colour != colour]
    seen: set[str] = set()
    firsts = [m for m in others if m.colour not in seen and not seen.add(m.colour)]
    return (firsts + [m for m in others if m not in firsts])[:limit]


# A product's first photo: the one its page shows first, and the one its More like this starts from.
FIRST_PHOTO_ORDER = ("image__position", "image_id")


def _first_photo_vector(*, product: Product, model: str) -> tuple | None:
    """(vector, main colour) of the product's first photo that has a vector in space ``model``; None if none has."""
    return (ImageEmbedding.objects.filter(product=product, model=model).order_by(*FIRST_PHOTO_ORDER)
            .values_list("vector", "colour").first())


def nearest_older_images(*, vectors: dict[int, object], model: str) -> dict[int, tuple[int, float]]:
    """The most similar image added before it (a lower id) in space ``model``, and its score, for several images
    (image id -> its vector), in one transaction: a near-duplicate's original is always the earlier photo, so an
    original embedded again (re-embed, a reindex, or a worker that stored it after its copy) is never flagged as a
    copy of its copy. Images with nothing older in the space are left out."""
    return _nearest_each(vectors, lambda vector, image_id: nearest_older_statement(model, vector, image_id))


def nearest_newer_unflagged_images(*, vectors: dict[int, object], model: str) -> dict[int, tuple[int, float]]:
    """The most similar image added after it (a higher id) in space ``model`` that is flagged as no photo's copy, and
    its score, for several images: a copy whose original was stored after it."""
    return _nearest_each(vectors, lambda vector, image_id: nearest_newer_unflagged_statement(model, vector, image_id))


def _nearest_each(vectors: dict[int, object], statement) -> dict[int, tuple[int, float]]:
    """For each image (id -> vector), the (image id, score) ``statement(vector, image_id)`` finds, in one transaction."""
    alias = _read_alias()  # SET LOCAL tunes the server the statements run on
    nearest = {}
    with transaction.atomic(using=alias), connections[alias].cursor() as cursor:
        cursor.execute("SET LOCAL hnsw.iterative_scan = relaxed_order")
        for image_id, vector in vectors.items():
            cursor.execute(*statement(vector, image_id))
            if hit := cursor.fetchone():
                nearest[image_id] = (hit[0], _similarity(hit[1]))
    return nearest


def nearest_other_category_similarities(*, model: str, sample: int) -> list[float]:
    """For up to ``sample`` active products of space ``model``, the similarity of the product's first vector to the
    nearest vector of an active product in another category: what the calibration (search/calibration.py) reads.
    Products whose category is the only one give nothing.

    The products are spread over the catalog by a hash of their id: the same sample each time for the same catalog.
    """
    searchable = ImageEmbedding.objects.filter(model=model, active=True)
    product_ids = list(
        searchable.annotate(spread=MD5(Cast("product_id", output_field=CharField())))
        .order_by("spread", "product_id")
        .values_list("product_id", flat=True)
        .distinct()[:sample]
    )
    firsts = (
        searchable.filter(product_id__in=product_ids)
        .order_by("product_id", *FIRST_PHOTO_ORDER)
        .distinct("product_id")
        .values_list("category_id", "vector")
    )
    similarities = []
    for category_id, vector in firsts:
        hits = _hnsw_hits(VectorRows(model=model, exclude_category_id=category_id), vector, 1)
        if hits:
            similarities.append(_similarity(hits[0][1]))
    return similarities


def photo_search(
    *,
    image: QueryImage | None = None,
    file=None,
    kept: KeptQuery | None = None,
    category: Category | None = None,
    limit: int = 12,
    threshold: float | None = None,
    box: Box | None = None,
    refine: Refine = NO_REFINE,
) -> PhotoSearch:
    """Products that look like an uploaded photo (or a region of it), optionally within a category tree.

    ``image``: the photo as the form or serializer decoded it while checking it; or ``file``, read here; or
    ``kept``, the vector of an earlier search (query_vector_kept), for refining it without the photo.
    ``threshold``: the least match score; by default the catalog's cut-off (match score 0.5).
    """
    started = time.perf_counter()
    threshold = MATCH_THRESHOLD if threshold is None else threshold
    if kept is not None:
        model, cutoff = kept.model, search_cutoff(kept.model)
    else:
        model, cutoff = search_space_and_cutoff()
    if kept is not None:
        vector, query_details = kept.vector, kept.details
    else:
        query = query_embedding(image=image or query_image_read(file), model=model, box=box)
        # Ordered by the details as a refinement will keep them (int8, search/kept_queries.py): with the full floats
        # here, "Show more" or a chip could swap two look-alikes the first page showed the other way round.
        vector, query_details = query.vector, details.decode(details.encode(*query.details))
    category_ids = category_descendant_ids(category=category) if category is not None else None
    matches = vector_matches(
        vector=vector, limit=limit, category_ids=category_ids, model=model, threshold=threshold, cutoff=cutoff,
        refine=refine, pool=MATCH_POOL, fold=True, query_details=query_details,
    )
    took_ms = (time.perf_counter() - started) * 1000
    return PhotoSearch(
        results=matches.results, model=model, took_ms=took_ms, threshold=threshold, cutoff=cutoff, category=category,
        categories=matches.categories, colours=matches.colours, refine=refine, more=matches.more, vector=vector,
        details=query_details,
    )


def no_vector_in(model: str, *, image: str = "pk"):
    """A filter: the image (the row's ``image`` field) has no vector in space ``model``. NOT EXISTS, an anti-join,
    where NOT IN over a million ids outgrows work_mem and compares row by row."""
    return ~Exists(ImageEmbedding.objects.filter(model=model, image_id=OuterRef(image)))


# --- Photos to embed (manage.py reindex) ---------------------------------------------------------------------------


def image_ids_selected(*, category_ids: list[int] | None = None, statuses: set[str] | None = None) -> list[int]:
    """The ids of the photos of products in ``category_ids`` (every category when None) whose embedding status is
    one of ``statuses`` (any when None), in id order."""
    images = ProductImage.objects.all()
    if category_ids is not None:
        images = images.filter(product__category_id__in=category_ids)
    if statuses is not None:
        images = images.filter(embedding_status__in=statuses)
    return list(images.order_by("pk").values_list("pk", flat=True))


def images_count(*, image_ids: list[int], status: str) -> int:
    """How many of these photos have this embedding status."""
    return ProductImage.objects.filter(pk__in=image_ids, embedding_status=status).count()
