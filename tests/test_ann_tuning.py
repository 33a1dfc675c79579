"""The filtered vector search picks exact or HNSW by the filter's size and always returns the k nearest products."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from search.selectors import similar_products_to_vector
from tests.factories import clustered_catalog

pytestmark = [pytest.mark.django_db, pytest.mark.servers]


@pytest.fixture
def clustered():
    """300 products with clustered vectors in 10 categories (30 each)."""
    return clustered_catalog(products=300, categories=10, clusters=6, seed=11)


# Few enough that the rows read for them (OVERFETCH a product) are fewer than a category's 30: with 12, the HNSW scan
# could never find them all in a category, and the exact fallback answered every "HNSW" test.
K = 5
# What marks the exact statement (search.nearest: the order kept outside, where the index cannot serve it).
EXACT = "OFFSET 0"


def _exact_top(products, vectors, query, category, k=K):
    scored = [(float(v @ query), p.pk) for p, v in zip(products, vectors) if p.category_id == category.pk]
    return [pk for _, pk in sorted(scored, reverse=True)[:k]]


def _search(model, query, category):
    with CaptureQueriesContext(connection) as queries:
        results = similar_products_to_vector(vector=query, limit=K, category_ids=[category.pk], model=model)
    return [r.product.pk for r in results], [q["sql"] for q in queries.captured_queries]


def test_a_small_category_is_searched_exactly_without_the_hnsw_order(settings, clustered):
    settings.SEARCH_EXACT_MAX_VECTORS = 30  # the category holds exactly 30 products
    model, categories, products, vectors = clustered
    found, sql = _search(model, vectors[1], categories[0])
    assert found == _exact_top(products, vectors, vectors[1], categories[0])
    # No iterative-scan settings: the exact path, whose order the HNSW index cannot serve even when sorting is the
    # last thing the planner would choose.
    assert not any("hnsw.iterative_scan" in statement for statement in sql)
    (nearest,) = [statement for statement in sql if "<=>" in statement]
    with connection.cursor() as cursor:
        cursor.execute("SET enable_sort = off")  # undone with the test's transaction
        cursor.execute(f"EXPLAIN {nearest}")
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "hnsw" not in plan and "Sort" in plan


def test_a_category_over_the_limit_goes_through_hnsw(settings, clustered):
    settings.SEARCH_EXACT_MAX_VECTORS = 29
    model, categories, products, vectors = clustered
    found, sql = _search(model, vectors[1], categories[0])
    assert any("hnsw.iterative_scan" in statement for statement in sql)
    assert not any(EXACT in statement for statement in sql)  # the index found them: no exact fallback
    assert found == _exact_top(products, vectors, vectors[1], categories[0])


def test_an_iterative_scan_that_gives_up_early_falls_back_to_exact(settings, clustered):
    """When hnsw.max_scan_tuples stops the scan before k products pass the filter, the k nearest still come back."""
    settings.SEARCH_EXACT_MAX_VECTORS = 0  # force the HNSW path
    settings.SEARCH_HNSW_EF_SEARCH = 1  # the first batch no larger than the rows wanted: the scan must go on, and stop
    model, categories, products, vectors = clustered
    with connection.cursor() as cursor:
        # Both undone with the test's transaction. A table this small would otherwise be sorted, not walked.
        cursor.execute("SET enable_sort = off")
        cursor.execute("SET hnsw.max_scan_tuples = 1")
    found, sql = _search(model, vectors[1], categories[0])
    assert any(EXACT in statement for statement in sql)
    assert found == _exact_top(products, vectors, vectors[1], categories[0])


@pytest.mark.parametrize("exact_max", [0, 1_000_000], ids=["hnsw", "exact"])
def test_products_with_many_close_photos_still_fill_the_limit(settings, exact_max):
    """Four rows were read per product wanted: when each product has more photos than that, all close together,
    the rows held too few products, the page came out short and lost its "Show more"."""
    import numpy as np

    from catalog.models import ProductImage
    from search.models import ImageEmbedding
    from search.selectors import search_space_model
    from tests.factories import CategoryFactory, ProductFactory

    settings.SEARCH_EXACT_MAX_VECTORS = exact_max
    model, rng = search_space_model(), np.random.default_rng(5)
    dims = ImageEmbedding._meta.get_field("vector").dimensions
    query = rng.normal(size=dims)
    query /= np.linalg.norm(query)
    category = CategoryFactory()
    products = [ProductFactory(category=category) for _ in range(8)]
    rows = []
    for rank, product in enumerate(products):  # each product a little further from the query than the one before
        away = rng.normal(size=dims)
        look = query + 0.1 * (rank + 1) * away / np.linalg.norm(away)
        for photo in range(6):  # six shots of it, nearly alike
            image = ProductImage.objects.create(product=product, file=f"x/{product.pk}-{photo}.jpg", width=1,
                                                height=1, content_hash="a" * 64, position=photo)
            vector = look + rng.normal(scale=1e-3, size=dims)
            vector /= np.linalg.norm(vector)
            rows.append(ImageEmbedding(image=image, product=product, model=model, vector=vector))
    ImageEmbedding.objects.bulk_create(rows)

    found = similar_products_to_vector(vector=query, limit=5, category_ids=[category.pk], model=model)
    assert [result.product.pk for result in found] == [product.pk for product in products[:5]]
