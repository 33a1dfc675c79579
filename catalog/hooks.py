"""Features of catalog pages that an app built on the catalog provides: it registers them here from its
``AppConfig.ready()`` (search: "More like this"), so the catalog shows them without importing that app."""

from __future__ import annotations

from collections.abc import Callable

_similar_products: Callable | None = None


def similar_products_register(provider: Callable) -> None:
    """``provider(*, product, limit, category_ids)`` returns results with a ``.product`` each, best first."""
    global _similar_products
    _similar_products = provider


def similar_products(*, product, limit: int, category_ids) -> list | None:
    """Products that look like ``product``; None when no app provides the feature."""
    if _similar_products is None:
        return None
    return _similar_products(product=product, limit=limit, category_ids=category_ids)
