"""Reads for image search: nearest products by vector, in SQL with pgvector."""

from __future__ import annotations

import time
from dataclasses import dataclass

from django.conf import settings
from django.db import connections, transaction
from django.db.models import CharField, F
from django.db.models.functions import MD5, Cast
from pgvector.django import CosineDistance

from catalog.models import Category, Product
from catalog.selectors import category_descendant_ids
from search.calibration import MATCH_THRESHOLD, default_cutoff, match_score, space_cutoff
from search.embeddings import active_embedder
from search.models import EmbeddingSpace, ImageEmbedding
from search.query import Box, QueryImage, query_image_read, query_vector

# How many image hits to read per wanted product: several images of one product collapse into one result.
OVERFETCH = 4


def search_space_model() -> str:
    """The embedder id whose vectors searches compare: the active space, or on a new install the configured model."""
    active = EmbeddingSpace.objects.filter(state=EmbeddingSpace.State.ACTIVE).values_list("model", flat=True).first()
    return active or active_embedder().id


def search_cutoff(model: str) -> float:
    """The cosine similarity below which nothing counts as similar enough in space ``model``: the operator's
    ``SEARCH_MIN_SCORE`` when set, else the space's own calibration (search/calibration.py)."""
    if settings.SEARCH_MIN_SCORE is not None:
        return settings.SEARCH_MIN_SCORE
    stored = EmbeddingSpace.objects.filter(model=model).values_list("min_score", flat=True).first()
    return space_cutoff(stored, default=default_cutoff())


@dataclass(frozen=True)
class SimilarProduct:
    product: Product
    score: float  # the match score shown to shoppers: 0.5 at the catalog's cut-off, 1 for the same photo
    similarity: float  # cosine similarity of the best-matching image, clipped to [0, 1]


@dataclass(frozen=True)
class PhotoSearch:
    results: list[SimilarProduct]
    model: str
    took_ms: float
    threshold: float  # the least match score a result needed
    cutoff: float  # the cosine similarity that match score 0.5 stands for
    category: Category | None = None


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
    (search/calibration.py) of at least ``threshold``; ``cutoff`` is the space's, read here unless given.

    Filters over few vectors are searched exactly (cheaper than walking the graph, and exact); others use the
    HNSW index with iterative scans, so a category filter still yields ``limit`` products when they exist.
    """
    model = model or search_space_model()
    # Category and active are copies of the product's on the vector row: no join (see ImageEmbedding).
    queryset = ImageEmbedding.objects.filter(model=model, active=True)
    if category_ids is not None:
        queryset = queryset.filter(category_id__in=category_ids)
    if exclude_product_id is not None:
        queryset = queryset.exclude(product_id=exclude_product_id)
    queryset = queryset.annotate(distance=CosineDistance("vector", vector))
    wanted = limit * OVERFETCH
    if category_ids is not None and _few_vectors(model, category_ids):
        hits = _exact_hits(queryset, wanted)
    else:
        hits = _hnsw_hits(queryset, wanted)
        if category_ids is not None and len({product_id for product_id, _ in hits}) < limit:
            # The iterative scan gave up (hnsw.max_scan_tuples) before finding enough: read the filter's rows.
            hits = _exact_hits(queryset, wanted)
    best: dict[int, float] = {}
    for product_id, hit_distance in sorted(hits, key=lambda hit: hit[1]):  # relaxed order: re-sort
        best.setdefault(product_id, hit_distance)
    cutoff = search_cutoff(model) if cutoff is None else cutoff
    scored = ((p, _similarity(d)) for p, d in best.items())
    ranked = [(p, sim, match) for p, sim in scored if (match := match_score(sim, cutoff)) >= threshold][:limit]
    products = _products_for_cards([p for p, _, _ in ranked])
    return [
        SimilarProduct(product=products[p], score=match, similarity=sim) for p, sim, match in ranked if p in products
    ]


def _few_vectors(model: str, category_ids: list[int]) -> bool:
    """Whether the categories hold at most SEARCH_EXACT_MAX_VECTORS searchable vectors.

    Counted in the partial (category, model) index alone and stopped at the limit, so deciding costs at most that
    many index entries.
    """
    limit = settings.SEARCH_EXACT_MAX_VECTORS
    matching = ImageEmbedding.objects.filter(category_id__in=category_ids, model=model, active=True)
    return matching.order_by().values("category_id")[: limit + 1].count() <= limit


def _exact_hits(queryset, wanted: int) -> list[tuple[int, float]]:
    # "+ 0" keeps the HNSW index from serving the order, so PostgreSQL reads only the filter's rows (one range of
    # the category index) and sorts them: exact, and never a scan of the whole table.
    return list(queryset.order_by(F("distance") + 0).values_list("product_id", "distance")[:wanted])


def _hnsw_hits(queryset, wanted: int) -> list[tuple[int, float]]:
    alias = queryset.db  # the server the router picked for this read (a replica or the primary): set it there
    hits = queryset.using(alias).order_by("distance").values_list("product_id", "distance")[:wanted]
    with transaction.atomic(using=alias), connections[alias].cursor() as cursor:
        # Keep scanning the index until enough rows pass the filters (pgvector >= 0.8); settings in one round trip.
        cursor.execute(
            "SELECT set_config('hnsw.iterative_scan', 'relaxed_order', true), set_config('hnsw.ef_search', %s, true)",
            [str(max(settings.SEARCH_HNSW_EF_SEARCH, wanted))],
        )
        return list(hits)


def _products_for_cards(product_ids: list[int]) -> dict[int, Product]:
    # The full-text document is large (a tsvector of title and description) and no card shows it.
    queryset = Product.objects.defer("search_document").select_related("category").prefetch_related("images")
    return queryset.in_bulk(product_ids)


def _similarity(cosine_distance: float) -> float:
    return max(0.0, min(1.0, 1.0 - cosine_distance))


def similar_products_to_product(
    *, product: Product, limit: int = 12, category_ids: list[int] | None = None
) -> list[SimilarProduct]:
    """More like this: uses the product's stored vectors (no model call); never lists the product itself."""
    model = search_space_model()
    vectors = list(
        ImageEmbedding.objects.filter(product=product, model=model)
        .order_by("image__position", "image_id")
        .values_list("vector", flat=True)[:1]
    )
    if not vectors:
        return []
    return similar_products_to_vector(
        vector=vectors[0], limit=limit, category_ids=category_ids, exclude_product_id=product.pk, model=model
    )


def nearest_other_image(*, image_id: int, model: str, vector) -> tuple[int, float] | None:
    """The most similar other image in space ``model`` and its score: a near-duplicate candidate."""
    queryset = ImageEmbedding.objects.filter(model=model)
    alias = queryset.db  # SET LOCAL tunes the server the query runs on
    with transaction.atomic(using=alias), connections[alias].cursor() as cursor:
        cursor.execute("SET LOCAL hnsw.iterative_scan = relaxed_order")
        hit = (
            queryset.using(alias)
            .exclude(image_id=image_id)
            .annotate(distance=CosineDistance("vector", vector))
            .order_by("distance")
            .values_list("image_id", "distance")
            .first()
        )
    return (hit[0], _similarity(hit[1])) if hit else None


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
        .order_by("product_id", "image__position", "image_id")
        .distinct("product_id")
        .values_list("category_id", "vector")
    )
    similarities = []
    for category_id, vector in firsts:
        others = searchable.exclude(category_id=category_id).annotate(distance=CosineDistance("vector", vector))
        hits = _hnsw_hits(others, 1)
        if hits:
            similarities.append(_similarity(hits[0][1]))
    return similarities


def photo_search(
    *,
    image: QueryImage | None = None,
    file=None,
    category: Category | None = None,
    limit: int = 12,
    threshold: float | None = None,
    box: Box | None = None,
) -> PhotoSearch:
    """Products that look like an uploaded photo (or a region of it), optionally within a category tree.

    ``image``: the photo as the form or serializer decoded it while checking it; or ``file``, read here.
    ``threshold``: the least match score; by default the catalog's cut-off (match score 0.5).
    """
    started = time.perf_counter()
    threshold = MATCH_THRESHOLD if threshold is None else threshold
    model = search_space_model()
    cutoff = search_cutoff(model)
    vector = query_vector(image=image or query_image_read(file), model=model, box=box)
    category_ids = category_descendant_ids(category=category) if category is not None else None
    results = similar_products_to_vector(
        vector=vector, limit=limit, category_ids=category_ids, model=model, threshold=threshold, cutoff=cutoff
    )
    took_ms = (time.perf_counter() - started) * 1000
    return PhotoSearch(
        results=results, model=model, took_ms=took_ms, threshold=threshold, cutoff=cutoff, category=category
    )
