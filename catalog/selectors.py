"""Reads for the shopper pages. Views call these; every list comes with what its template needs prefetched."""

from __future__ import annotations

from django.contrib.postgres.search import SearchQuery, SearchRank
from django.db import connection
from django.db.models import F, Prefetch, QuerySet, Window
from django.db.models.functions import RowNumber

from catalog.models import Category, Product, ProductImage

PRODUCT_SORTS = {"title": ("title", "pk"), "newest": ("-created_at", "-pk")}
DEFAULT_SORT = "title"


def category_tree_roots() -> list[Category]:
    return list(Category.objects.filter(parent__isnull=True).order_by("name"))


def category_ancestors(*, category: Category) -> list[Category]:
    """The category's ancestors, root first, without the category itself (one query)."""
    table = Category._meta.db_table
    sql = f"""
        WITH RECURSIVE up(id, parent_id, depth) AS (
            SELECT id, parent_id, 0 FROM {table} WHERE id = %s
            UNION ALL
            SELECT c.id, c.parent_id, up.depth + 1 FROM {table} c JOIN up ON c.id = up.parent_id
        )
        SELECT c.* FROM {table} c JOIN up ON c.id = up.id WHERE up.depth > 0 ORDER BY up.depth DESC
    """
    return list(Category.objects.raw(sql, [category.pk]))


def category_descendant_ids(*, category: Category) -> list[int]:
    """The category's id and those of all categories below it (one query)."""
    table = Category._meta.db_table
    sql = f"""
        WITH RECURSIVE down(id) AS (
            SELECT id FROM {table} WHERE id = %s
            UNION
            SELECT c.id FROM {table} c JOIN down ON c.parent_id = down.id
        )
        SELECT id FROM down ORDER BY id
    """
    with connection.cursor() as cursor:
        cursor.execute(sql, [category.pk])
        return [row[0] for row in cursor.fetchall()]


def category_cover_images(*, categories: list[Category]) -> dict[int, ProductImage]:
    """For each given category, the first image of its newest active product anywhere below it.

    Two queries whatever the number of categories: the (id, parent) pairs of the whole tree, and one
    image per leaf-most category that has any (DISTINCT ON); the tree walk happens in Python.
    """
    parents = dict(Category.objects.values_list("id", "parent_id"))
    wanted = {category.pk for category in categories}
    images = (
        ProductImage.objects.filter(product__active=True)
        .select_related("product")
        .order_by("product__category_id", "-product__created_at", "product_id", "position", "pk")
        .distinct("product__category_id")
    )
    covers: dict[int, ProductImage] = {}
    for image in sorted(images, key=lambda image: image.product.created_at, reverse=True):
        category_id = image.product.category_id
        seen = set()
        while category_id is not None and category_id not in seen:  # `seen` guards against a cycle
            seen.add(category_id)
            if category_id in wanted:
                covers.setdefault(category_id, image)
            category_id = parents.get(category_id)
    return covers


def _with_card_image(queryset: QuerySet[Product]) -> QuerySet[Product]:
    """Attach ``card_images`` (a list holding the lowest-position image, or nothing) to each product."""
    first_images = ProductImage.objects.annotate(
        rank=Window(RowNumber(), partition_by=[F("product_id")], order_by=[F("position").asc(), F("pk").asc()])
    ).filter(rank=1)
    return queryset.prefetch_related(Prefetch("images", queryset=first_images, to_attr="card_images"))


def product_list(*, category_ids: list[int] | None = None, sort: str = DEFAULT_SORT) -> QuerySet[Product]:
    """Active products, optionally within some categories, each with its card image prefetched."""
    queryset = Product.objects.filter(active=True).select_related("category")
    if category_ids is not None:
        queryset = queryset.filter(category_id__in=category_ids)
    return _with_card_image(queryset.order_by(*PRODUCT_SORTS.get(sort, PRODUCT_SORTS[DEFAULT_SORT])))


def product_search(*, query: str) -> QuerySet[Product]:
    """Full-text search over title (weight A) and description (B), best match first."""
    query = query.strip()
    if not query:
        return Product.objects.none()
    search_query = SearchQuery(query, search_type="websearch", config="english")
    queryset = (
        Product.objects.filter(active=True, search_document=search_query)
        .select_related("category")
        .annotate(rank=SearchRank(F("search_document"), search_query))
        .order_by("-rank", "title", "pk")
    )
    return _with_card_image(queryset)


def product_detail(*, sku: str) -> Product | None:
    """An active product with its category and all its images (in gallery order), or None."""
    return (
        Product.objects.filter(sku=sku, active=True)
        .select_related("category")
        .prefetch_related(Prefetch("images", queryset=ProductImage.objects.order_by("position", "pk")))
        .first()
    )
