"""The category tree: the lookup by slug and the walks up and down (the check that keeps it a tree, which
Category.clean needs, is catalog.models.category_is_below).

The database refuses a cycle as well (the trigger of migration 0005), so no write path can make one; the walks
are bounded anyway, because a walk that loops holds a worker and a database backend until something kills it.
Reads of the tree are re-exported by catalog.selectors, where views and the API look for them.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.db import connections, router
from django.db.models import QuerySet

from catalog.models import CATEGORY_PATH_DISPLAY_SEPARATOR, Category
from catalog.page_cache import kept_per_catalog_version
from config.text import postgresql_refuses

_TABLE = Category._meta.db_table
# The longest slug a category can have (its column's length): a longer one is unknown without a query, and is cut
# where an error shows it.
SLUG_MAX_LENGTH = Category._meta.get_field("slug").max_length


class UnknownCategory(LookupError):
    """No category has this slug. ``str()`` is the message every form, serializer and command shows."""

    def __init__(self, slug: str):
        # A lone surrogate written as its escape: an answer (JSON, a page) that echoed it could not be encoded. A
        # slug longer than any can be is cut: an answer echoing megabytes of it would cost the server as much again.
        shown = slug[:SLUG_MAX_LENGTH].encode("utf-8", "backslashreplace").decode("utf-8")
        if len(slug) > SLUG_MAX_LENGTH:
            shown += "…"
        super().__init__(f"Unknown category '{shown}'.")
        self.slug = slug


def category_by_slug(*, slug: str) -> Category:
    """The category with this slug; ``UnknownCategory`` otherwise (also for a slug PostgreSQL cannot hold: NUL, a
    lone surrogate)."""
    refused = len(slug) > SLUG_MAX_LENGTH or postgresql_refuses(slug)  # too long to be one: no query of megabytes
    category = None if refused else Category.objects.filter(slug=slug).select_related("parent").first()
    if category is None:
        raise UnknownCategory(slug)
    return category


def category_tree_roots() -> list[Category]:
    return list(Category.objects.filter(parent__isnull=True).order_by("name"))


def category_children(*, category: Category) -> list[Category]:
    return list(Category.objects.filter(parent=category).order_by("name", "pk"))


def category_list(*, parent: Category | None = None, root: bool | None = None) -> QuerySet[Category]:
    """Categories by name, optionally only the children of ``parent``, or only roots (True) or non-roots (False)."""
    categories = Category.objects.select_related("parent").order_by("name", "pk")
    if parent is not None:
        categories = categories.filter(parent=parent)
    if root is not None:
        categories = categories.filter(parent__isnull=root)
    return categories


def category_ancestors(*, category: Category) -> list[Category]:
    """The category's ancestors, root first, without the category itself (one query).

    The walk carries the ids it has passed and never revisits one, so it ends even on a cycle made by hand.
    """
    sql = f"""
        WITH RECURSIVE up(id, parent_id, depth, path) AS (
            SELECT id, parent_id, 0, ARRAY[id] FROM {_TABLE} WHERE id = %s
            UNION ALL
            SELECT c.id, c.parent_id, up.depth + 1, up.path || c.id
            FROM {_TABLE} c JOIN up ON c.id = up.parent_id
            WHERE c.id <> ALL(up.path)
        )
        SELECT c.* FROM {_TABLE} c JOIN up ON c.id = up.id WHERE up.depth > 0 ORDER BY up.depth DESC
    """
    return list(Category.objects.raw(sql, [category.pk]))


def category_descendant_ids(*, category: Category) -> list[int]:
    """The category's id and those of all categories below it (one query; UNION drops repeats, so it ends)."""
    sql = f"""
        WITH RECURSIVE down(id) AS (
            SELECT id FROM {_TABLE} WHERE id = %s
            UNION
            SELECT c.id FROM {_TABLE} c JOIN down ON c.parent_id = down.id
        )
        SELECT id FROM down ORDER BY id
    """
    with connections[router.db_for_read(Category)].cursor() as cursor:  # a shopper's read: a replica's
        cursor.execute(sql, [category.pk])
        return [row[0] for row in cursor.fetchall()]


# --- Whole-tree walks, in memory: pages that need every category's path load the small tree once ---


def category_parents() -> dict[int, int | None]:
    """Every category's parent id (one query)."""
    return dict(Category.objects.values_list("id", "parent_id"))


# The same, read once per catalog version: search facets walk it on every search.
kept_category_parents = kept_per_catalog_version(category_parents)


def lineage(parents: dict[int, int | None], category_id: int) -> list[int]:
    """``category_id`` and its ancestors' ids, nearest first, from a ``category_parents()`` map; ends on a cycle."""
    ids: list[int] = []
    seen: set[int] = set()
    current: int | None = category_id
    while current is not None and current not in seen:
        seen.add(current)
        ids.append(current)
        current = parents.get(current)
    return ids


def category_cards() -> dict[int, Category]:
    """Every category by id, with what a facet or a card shows (slug, name, parent), in one query."""
    return {category.pk: category for category in Category.objects.only("id", "slug", "name", "parent_id")}


# The same, read once per catalog version: search facets show some on every search. The instances are shared: read
# them, never change them.
kept_category_cards = kept_per_catalog_version(category_cards)


def category_paths() -> dict[int, str]:
    """Each category's display path, root first ("Home > Furniture > Sofas"), in one query."""
    rows = {pk: (name, parent) for pk, name, parent in Category.objects.values_list("id", "name", "parent_id")}
    parents = {pk: parent for pk, (_, parent) in rows.items()}
    return {
        pk: CATEGORY_PATH_DISPLAY_SEPARATOR.join(rows[i][0] for i in reversed(lineage(parents, pk))) for pk in rows
    }


# The same, read once per catalog version: search answers show one for every result and facet.
kept_category_paths = kept_per_catalog_version(category_paths)


class CategoryPaths:
    """Display paths of all categories, looked up on first use.

    One instance lives in a serializer's context, so a page of products from many categories costs one
    lookup instead of one ancestors query per category (the tree is small next to the products).
    """

    def __init__(self):
        self._paths: dict[int, str] | None = None

    def __getitem__(self, category_id: int) -> str:
        if self._paths is None:
            self._paths = kept_category_paths()
        if category_id not in self._paths:  # kept from before the category was added, had its version been lost
            self._paths = category_paths()
        return self._paths[category_id]


def category_tree() -> list[tuple[Category, int]]:
    """Every category with its depth, in tree order (a parent before its children, siblings by name); one query.

    A category caught in a cycle is reachable from no root, so it is left out rather than walked forever.
    """
    children: dict[int | None, list[Category]] = {}
    for category in Category.objects.order_by("name", "pk"):
        children.setdefault(category.parent_id, []).append(category)
    ordered: list[tuple[Category, int]] = []
    stack: list[tuple[Category, int]] = _pushed(children.get(None, []), 0)
    seen: set[int] = set()
    while stack:
        category, depth = stack.pop()
        if category.pk in seen:
            continue
        seen.add(category.pk)
        ordered.append((category, depth))
        stack.extend(_pushed(children.get(category.pk, []), depth + 1))
    return ordered


def _pushed(categories: Iterable[Category], depth: int) -> list[tuple[Category, int]]:
    return [(category, depth) for category in reversed(list(categories))]
