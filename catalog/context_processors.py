"""Template context shared by every shopper page."""

import logging

from django.core.cache import cache

from catalog.selectors import category_tree_roots

logger = logging.getLogger(__name__)

NAVIGATION_CACHE_KEY = "catalog:navigation:v1"
# Short enough that an admin's new top-level category shows up soon without any invalidation wiring.
NAVIGATION_CACHE_SECONDS = 60


def navigation(request):
    """Top-level categories for the header, cached as plain data so most pages skip the query."""
    try:
        items = cache.get_or_set(NAVIGATION_CACHE_KEY, _navigation_items, NAVIGATION_CACHE_SECONDS)
    except Exception:  # the cache server being down must not take every page with it
        logger.warning("navigation cache unavailable", exc_info=True)
        items = _navigation_items()
    return {"navigation_categories": items}


def _navigation_items() -> list[dict]:
    return [
        {"name": category.name, "slug": category.slug, "url": category.get_absolute_url()}
        for category in category_tree_roots()
    ]
