"""Shopper pages. Thin: parse the request, call selectors, render."""

import dataclasses
import logging

from django.core.paginator import Paginator
from django.http import Http404
from django.shortcuts import render
from django.utils.cache import add_never_cache_headers

from catalog import hooks, selectors
from catalog.models import EmbeddingStatus
from catalog.page_cache import cache_catalog_page
from catalog.page_limit import over_page_limit

logger = logging.getLogger(__name__)

PAGE_SIZE = 24
RECENT_PRODUCTS = 12
SIMILAR_PRODUCTS = 8
OTHER_COLOURS = 6
MAX_QUERY_LENGTH = 200


@cache_catalog_page()
def home(request):
    roots = selectors.category_tree_roots()
    covers = selectors.category_cover_images(categories=roots)
    tiles = [{"category": root, "image": covers.get(root.pk)} for root in roots]
    return render(
        request,
        "catalog/home.html",
        {
            "category_tiles": tiles,
            # One photo from each of the first categories: a more varied hero than the newest products.
            "hero_images": [tile["image"] for tile in tiles if tile["image"]][:3],
            "recent_products": list(selectors.product_list(sort="newest")[:RECENT_PRODUCTS]),
        },
    )


@cache_catalog_page(reads=("sort", "page"))
def category_detail(request, slug):
    try:
        category = selectors.category_by_slug(slug=slug)
    except selectors.UnknownCategory as error:
        raise Http404(str(error)) from None
    sort = request.GET.get("sort")
    if sort not in selectors.PRODUCT_SORTS:
        sort = selectors.DEFAULT_SORT
    products = selectors.product_list(
        category_ids=selectors.category_descendant_ids(category=category), sort=sort
    )
    ancestors = selectors.category_ancestors(category=category)
    return render(
        request,
        "catalog/category.html",
        {
            "category": category,
            "ancestors": ancestors,
            "subcategories": selectors.category_children(category=category),
            "sort": sort,
            "current_root_slug": (ancestors[0] if ancestors else category).slug,
            **_paginate(request, products),
        },
    )


@cache_catalog_page(reads=lambda: ("scope", *hooks.similar_products_parameters()))
def product_detail(request, sku):
    product = selectors.product_detail(sku=sku)
    if product is None:
        raise Http404("No such product.")
    scope_all = request.GET.get("scope") == "all"
    category_ids = selectors.similar_products_category_ids(product=product, whole_catalog=scope_all)
    images = list(product.images.all())
    ancestors = selectors.category_ancestors(category=product.category)
    similar_form = hooks.similar_products_form(request.GET)  # price range and order, when search provides them
    try:
        other_colours = hooks.other_colours(product=product, limit=OTHER_COLOURS)
        # The page shows each product once: those already under "other colours" are left out of More like this.
        shown = {item.product.pk for item in other_colours}
        similar_products = hooks.similar_products(
            product=product, limit=SIMILAR_PRODUCTS + len(shown), category_ids=category_ids, form=similar_form
        )
        if similar_products is not None:
            similar_products = [kept for item in similar_products
                                if (kept := _without(item, shown)) is not None][:SIMILAR_PRODUCTS]
    except Exception:  # a broken vector search must not take the product page down with it
        logger.exception("more-like-this failed for product %s", product.pk)
        similar_products, other_colours = None, []
    response = render(
        request,
        "catalog/product.html",
        {
            "product": product,
            "images": images,
            "breadcrumb": [*ancestors, product.category],
            "current_root_slug": (ancestors[0] if ancestors else product.category).slug,
            "scope_all": scope_all,
            "similar_form": similar_form,
            "similar_keep": [("scope", "all")] if scope_all else [],
            "similar_products": similar_products,
            "other_colours": other_colours,
            "similar_unavailable": similar_products is None,
            # An image is "ready" once it has a vector in the configured space (the images are prefetched already).
            # During a model switch they are pending for the new space while More like this still answers from
            # the old one: its results show the product has vectors there.
            "has_vectors": bool(similar_products)
            or any(image.embedding_status == EmbeddingStatus.READY for image in images),
            # Photos still to be processed: More like this will come. None (all failed): it will not.
            "photos_pending": any(image.embedding_status == EmbeddingStatus.PENDING for image in images),
        },
    )
    if similar_products is None:
        add_never_cache_headers(response)  # "try again later" must not be kept for the next shoppers
    return response


def _without(item, product_ids: set[int]):
    """A More like this result without the listings that the page shows elsewhere, None if nothing is left. A result
    shown elsewhere gives its place to the first near-duplicate listing folded under it, which would otherwise be on
    the page nowhere."""
    kept = [duplicate for duplicate in item.duplicates if duplicate.product.pk not in product_ids]
    if item.product.pk in product_ids:
        return dataclasses.replace(kept[0], duplicates=tuple(kept[1:])) if kept else None
    return item if len(kept) == len(item.duplicates) else dataclasses.replace(item, duplicates=tuple(kept))


def _query_cut(query: str) -> str:
    """``query`` at most MAX_QUERY_LENGTH long, cut at the end of a word: cut inside one ("chair chair ... ch"), its
    start was a word every product had to hold, and nothing was found."""
    if len(query) <= MAX_QUERY_LENGTH:
        return query
    cut = query[:MAX_QUERY_LENGTH]
    inside_a_word = not (query[MAX_QUERY_LENGTH].isspace() or cut[-1].isspace())
    if inside_a_word and len(words := cut.rsplit(None, 1)) == 2:
        cut = words[0]
    return cut.rstrip()


def text_search(request):
    if refused := over_page_limit(request):  # never kept in the page cache: every search runs its query
        return refused
    query = _query_cut(request.GET.get("q", "").strip())
    page = _paginate(request, selectors.product_search(query=query))
    # Products found only through a corrected spelling ("chain" for "chian") come after those that match the words as
    # typed: the page says where they begin, so that a shopper can tell the two apart.
    as_typed = [product for product in page["products"] if product.as_typed]
    close_spellings = [product for product in page["products"] if not product.as_typed]
    return render(request, "catalog/search.html", {
        "query": query, **page, "as_typed": as_typed, "close_spellings": close_spellings,
        # Whether any product matched as typed, on this page or an earlier one (those come first)
        "any_as_typed": bool(as_typed) or (close_spellings and page["page_obj"].number > 1
                                           and page["page_obj"].paginator.object_list[0].as_typed),
    })


def _paginate(request, queryset) -> dict:
    number = request.GET.get("page")
    try:
        if int(number) < 1:
            number = 1  # get_page gives the last page for any number it cannot show, 0 and -3 too
    except (TypeError, ValueError):
        pass  # not a number: get_page gives the first page
    page = Paginator(queryset, PAGE_SIZE).get_page(number)
    return {
        "page_obj": page,
        "products": page.object_list,
        "page_range": page.paginator.get_elided_page_range(page.number, on_each_side=1, on_ends=1),
    }
