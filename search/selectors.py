"""Reads for image search: nearest products by vector, in SQL with pgvector."""

from __future__ import annotations

from dataclasses import dataclass

from django.db import connection, transaction
from pgvector.django import CosineDistance

from catalog.models import Product
from search.embeddings import active_embedder
from search.models import EmbeddingSpace, ImageEmbedding

# How many image hits to read per wanted product: several images of one product collapse into one result.
OVERFETCH = 4


def search_space_model() -> str:
    """The embedder id whose vectors searches compare: the active space, or on a new install the configured model."""
    active = EmbeddingSpace.objects.filter(state=EmbeddingSpace.State.ACTIVE).values_list("model", flat=True).first()
    return active or active_embedder().id


@dataclass(frozen=True)
class SimilarProduct:
    product: Product
    score: float  # cosine similarity mapped to [0, 1]; 1 is identical


def similar_products_to_vector(
    *,
    vector,
    limit: int = 12,
    category_ids: list[int] | None = None,
    exclude_product_id: int | None = None,
    model: str | None = None,
) -> list[SimilarProduct]:
    """The ``limit`` active products whose best image is nearest to ``vector`` (a vector of space ``model``)."""
    queryset = ImageEmbedding.objects.filter(model=model or search_space_model(), product__active=True)
    if category_ids is not None:
        queryset = queryset.filter(product__category_id__in=category_ids)
    if exclude_product_id is not None:
        queryset = queryset.exclude(product_id=exclude_product_id)
    hits = (
        queryset.annotate(distance=CosineDistance("vector", vector))
        .order_by("distance")
        .values_list("product_id", "distance")[: limit * OVERFETCH]
    )
    with transaction.atomic():
        with connection.cursor() as cursor:
            # Keep scanning the HNSW index until enough rows pass the filters (pgvector >= 0.8).
            cursor.execute("SET LOCAL hnsw.iterative_scan = relaxed_order")
        hits = list(hits)
    best: dict[int, float] = {}
    for product_id, distance in sorted(hits, key=lambda hit: hit[1]):  # relaxed order: re-sort
        best.setdefault(product_id, distance)
    ranked = list(best.items())[:limit]
    products = Product.objects.select_related("category").prefetch_related("images").in_bulk([p for p, _ in ranked])
    return [SimilarProduct(product=products[p], score=_similarity(d)) for p, d in ranked if p in products]


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
