"""Large categories get their own partial HNSW index, which searches of them (or below them) use by themselves."""

import pytest
from django.core.management import call_command
from django.db import connection

from catalog.models import Category, Product
from search.category_indexes import category_indexes_sync, existing_category_indexes
from search.nearest import VectorRows, nearest_statement
from search.selectors import similar_products_to_vector
from tests.factories import CategoryFactory, clustered_catalog

pytestmark = [pytest.mark.django_db, pytest.mark.servers]


@pytest.fixture
def clustered(settings):
    """300 products in 10 categories of 30; a category of more than 20 vectors is too large for exact search."""
    settings.SEARCH_EXACT_MAX_VECTORS = 20
    settings.SEARCH_CATEGORY_INDEX_MAX_SHARE = 0.25
    return clustered_catalog(products=300, categories=10, clusters=6, seed=11)


def _exact_top(products, vectors, query, category_ids, k=12):
    scored = [(float(v @ query), p.pk) for p, v in zip(products, vectors) if p.category_id in category_ids]
    return [pk for _, pk in sorted(scored, reverse=True)[:k]]


def _index_used(model, vector, category_ids) -> str:
    """The index the plan of a search's own statement reads."""
    sql, params = nearest_statement(VectorRows(model=model, category_ids=tuple(category_ids)), vector, 48, exact=False)
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN {sql}", params)
        plan = [row[0] for row in cursor.fetchall()]
    return next((line.split(" using ")[1].split()[0] for line in plan if " using " in line), "")


def _no_sorting():
    with connection.cursor() as cursor:
        # Undone with the test's transaction. A table this small would otherwise be sorted, not walked.
        cursor.execute("SET enable_sort = off")


def test_each_large_category_gets_an_index_that_its_searches_use(clustered):
    model, categories, products, vectors = clustered
    done = category_indexes_sync(models=[model], limit=None)
    assert len(done["created"]) == 10 and done["dropped"] == []
    assert all(existing_category_indexes().values())
    _no_sorting()
    used = _index_used(model, vectors[1], [categories[3].pk])
    assert used.startswith(f"imageembedding_c{categories[3].pk}_")
    found = similar_products_to_vector(vector=vectors[1], limit=12, category_ids=[categories[3].pk], model=model)
    assert [r.product.pk for r in found] == _exact_top(products, vectors, vectors[1], {categories[3].pk})


def test_a_parent_category_is_indexed_with_its_descendants(clustered, settings):
    model, categories, products, vectors = clustered
    parent = CategoryFactory()
    Category.objects.filter(pk__in=[categories[0].pk, categories[1].pk]).update(parent=parent)
    settings.SEARCH_EXACT_MAX_VECTORS = 40  # single categories (30) are searched exactly; the parent (60) is not
    done = category_indexes_sync(models=[model], limit=None)
    assert [name.split("_")[1] for name in done["created"]] == [f"c{parent.pk}"]
    _no_sorting()
    subtree = [parent.pk, categories[0].pk, categories[1].pk]
    assert _index_used(model, vectors[5], subtree) == done["created"][0]
    found = similar_products_to_vector(vector=vectors[5], limit=12, category_ids=subtree, model=model)
    assert [r.product.pk for r in found] == _exact_top(products, vectors, vectors[5], set(subtree))


def test_one_build_per_run_largest_first_and_unwanted_indexes_are_dropped(clustered, settings):
    model, categories, products, vectors = clustered
    Product.objects.filter(pk__in=[p.pk for p in products[:20] if p.category_id != categories[7].pk]).update(
        category=categories[7]
    )  # the vector rows follow (a trigger): category 7 is now the largest
    first = category_indexes_sync(models=[model])
    assert [name.split("_")[1] for name in first["created"]] == [f"c{categories[7].pk}"]
    assert len(category_indexes_sync(models=[model])["created"]) == 1
    settings.SEARCH_CATEGORY_INDEX_MAX_SHARE = 0  # turned off: every category index goes
    assert len(category_indexes_sync(models=[model])["dropped"]) == 2
    assert existing_category_indexes() == {}


def test_a_new_descendant_replaces_the_index_of_its_parent(clustered, settings):
    model, categories, products, vectors = clustered
    settings.SEARCH_EXACT_MAX_VECTORS = 25
    category_indexes_sync(models=[model], limit=None)
    before = {name for name in existing_category_indexes() if name.startswith(f"imageembedding_c{categories[2].pk}_")}
    CategoryFactory(parent=categories[2])  # the index's predicate no longer covers the category's filter
    done = category_indexes_sync(models=[model], limit=None)
    assert done["dropped"] == list(before)
    assert len(done["created"]) == 1 and done["created"][0].startswith(f"imageembedding_c{categories[2].pk}_")


def test_the_command_builds_them_concurrently_outside_a_transaction(transactional_db, settings):
    settings.SEARCH_EXACT_MAX_VECTORS = 20
    settings.SEARCH_CATEGORY_INDEX_MAX_SHARE = 0.25
    clustered_catalog(products=120, categories=4, clusters=3, seed=3)
    try:
        call_command("category_indexes")
        indexes = existing_category_indexes()
        assert len(indexes) == 4 and all(indexes.values())
    finally:
        settings.SEARCH_CATEGORY_INDEX_MAX_SHARE = 0
        call_command("category_indexes")  # other tests reuse this database
    assert existing_category_indexes() == {}


def test_a_sync_while_another_one_runs_does_nothing(clustered):
    """The other sync's build in progress is an invalid index to this one, which must not drop it or build twice."""
    import psycopg

    from search.category_indexes import SYNC_LOCK
    from tests.support import database_url

    model = clustered[0]
    with psycopg.connect(database_url(connection.settings_dict), autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(%s)", [SYNC_LOCK])  # another worker's sync, mid-build
        assert category_indexes_sync(models=[model], limit=None) == {"created": [], "dropped": []}
        assert existing_category_indexes() == {}
        other.execute("SELECT pg_advisory_unlock(%s)", [SYNC_LOCK])
    assert len(category_indexes_sync(models=[model], limit=None)["created"]) == 10


def test_a_space_being_built_gets_its_indexes_before_search_switches_to_it(clustered):
    """Only the searched space's were wanted: after a switch every large category was searched through the whole
    graph until its index was built, one a run, every 15 minutes."""
    from search.models import EmbeddingSpace, ImageEmbedding
    from search.selectors import indexed_space_models

    model = clustered[0]
    ImageEmbedding.objects.bulk_create([  # the new model's vectors of the same photos
        ImageEmbedding(image_id=row.image_id, product_id=row.product_id, model="next-model", vector=row.vector)
        for row in ImageEmbedding.objects.filter(model=model)
    ])
    EmbeddingSpace.objects.update_or_create(model=model, defaults={"state": EmbeddingSpace.State.ACTIVE})
    EmbeddingSpace.objects.create(model="next-model", state=EmbeddingSpace.State.BUILDING)
    assert indexed_space_models() == [model, "next-model"]
    assert len(category_indexes_sync(models=indexed_space_models(), limit=None)["created"]) == 20

    EmbeddingSpace.objects.filter(model=model).update(state=EmbeddingSpace.State.RETIRED)  # the switch
    EmbeddingSpace.objects.filter(model="next-model").update(state=EmbeddingSpace.State.ACTIVE)
    done = category_indexes_sync(models=indexed_space_models(), limit=None)
    assert (len(done["dropped"]), done["created"]) == (10, [])
