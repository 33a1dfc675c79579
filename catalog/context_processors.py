"""Template context shared by every shopper page."""

from catalog.page_cache import kept_per_catalog_version
from catalog.selectors import category_tree_roots


def navigation(request):
    """Top-level categories for the header."""
    return {"navigation_categories": _navigation_items()}


@kept_per_catalog_version  # kept until the catalog changes, as the cached pages that show it are
def _navigation_items() -> list[dict]:
    return [
        {"name": category.name, "slug": category.slug, "url": category.get_absolute_url()}
        for category in category_tree_roots()
    ]
