"""Features of catalog pages that an app built on the catalog provides: it registers them here from its
``AppConfig.ready()`` (search: "More like this"), so the catalog shows them without importing that app."""

from __future__ import annotations

from collections.abc import Callable

_similar_products: Callable | None = None
_similar_products_form: Callable | None = None
_other_colours: Callable | None = None


def similar_products_register(
    provider: Callable, *, form: Callable | None = None, other_colours: Callable | None = None
) -> None:
    """``provider(*, product, limit, category_ids, form=None)`` returns results with a ``.product`` each, best
    first. ``form(data)``, if given, builds the form of the shopper's refinements (price, order) from a query
    string: the product page shows its fields and hands the bound form back to ``provider``.
    ``other_colours(*, product, limit)``, if given, lists close lookalikes in other colours ("Same look, other
    colours")."""
    global _similar_products, _similar_products_form, _other_colours
    _similar_products = provider
    _similar_products_form = form
    _other_colours = other_colours


def similar_products_form(data):
    """The refinements form for "More like this", bound to ``data`` (the page's query string); None if none."""
    return _similar_products_form(data) if _similar_products_form is not None else None


def similar_products_parameters() -> list[str]:
    """The query parameters the refinements form reads (its fields' names)."""
    return list(_similar_products_form(None).fields) if _similar_products_form is not None else []


def similar_products(*, product, limit: int, category_ids, form=None) -> list | None:
    """Products that look like ``product``, refined by ``form`` (from similar_products_form); None when no app
    provides the feature."""
    if _similar_products is None:
        return None
    if form is None:
        return _similar_products(product=product, limit=limit, category_ids=category_ids)
    return _similar_products(product=product, limit=limit, category_ids=category_ids, form=form)


def other_colours(*, product, limit: int) -> list:
    """Close lookalikes of ``product`` in other colours, each with ``.product``; empty when no app provides them."""
    return _other_colours(product=product, limit=limit) if _other_colours is not None else []
