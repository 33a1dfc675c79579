"""The JSON of search answers, built as plain dicts.

The shape is the one search/serializers.py declares (SearchResponseSerializer, PhotoSearchResponseSerializer): those
serializers stay as the OpenAPI schema's source, and tests/test_search_responses.py checks that both give the same
JSON. Building it here skips DRF's per-field machinery, which cost about as much as the model on a photo search
(docs/performance.md).
"""

from __future__ import annotations

import math
from decimal import Decimal

from catalog.models import Product
from catalog.selectors import CategoryPaths
from catalog.serializers import absolute_url

# As DRF's DecimalField for Product.price writes it: quantized to the column's places, fixed-point text.
_PRICE_STEP = Decimal(1).scaleb(-Product._meta.get_field("price").decimal_places)


def _price(value: Decimal) -> str:
    return format(value.quantize(_PRICE_STEP), "f")


def product_card(product: Product, *, request, paths) -> dict:
    """ProductSummarySerializer's output for a product from catalog.selectors.product_cards (or any product)."""
    images = getattr(product, "card_images", None)
    if images is None:
        images = product.images.all()
    first = next(iter(images), None)
    category = product.category
    return {
        "id": product.pk,
        "sku": product.sku,
        "title": product.title,
        "url": absolute_url(request, product.get_absolute_url()),
        "image_url": absolute_url(request, first.display_url) if first is not None else None,
        "price": _price(product.price),
        "currency": product.currency,
        "category": {"slug": category.slug, "name": category.name, "path": paths[category.pk]},
    }


def _folded(result, *, request, paths) -> dict:
    # Four decimals: finer differences are below the model's and halfvec's precision.
    return {
        "product": product_card(result.product, request=request, paths=paths),
        # Rounded down: a match just under the cut-off must not read as one at it.
        "score": math.floor(result.score * 10_000) / 10_000,
        "similarity": math.floor(result.similarity * 10_000) / 10_000,
    }


def search_response(matches, *, model: str, took_ms: float, request) -> dict:
    """SearchResponseSerializer's output for ``matches`` (search.selectors.Matches or PhotoSearch)."""
    paths = CategoryPaths()
    return {
        "results": [
            {**_folded(result, request=request, paths=paths),
             "duplicates": [_folded(duplicate, request=request, paths=paths) for duplicate in result.duplicates]}
            for result in matches.results
        ],
        "facets": {
            "categories": [
                {"slug": facet.category.slug, "name": facet.category.name, "path": paths[facet.category.pk],
                 "count": int(facet.count)}
                for facet in matches.categories
            ],
            "colours": [{"colour": facet.colour, "count": int(facet.count)} for facet in matches.colours],
        },
        "model": model,
        "took_ms": float(round(took_ms, 1)),
    }


def photo_search_response(search, *, token: str, request) -> dict:
    """PhotoSearchResponseSerializer's output for a search.selectors.PhotoSearch, in the same key order."""
    data = search_response(search, model=search.model, took_ms=search.took_ms, request=request)
    data.update(query=token, threshold=float(search.threshold), cutoff=float(round(search.cutoff, 4)))
    return data
