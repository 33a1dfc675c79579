"""Reads that every search repeats (the active space and its cut-off, the category paths, whether a category filter is
small enough to search exactly) are kept in the process while the catalog is unchanged, and never outlive a change (catalog.page_cache.kept_per_catalog_version).

Transactional tests: inside a test's transaction nothing is kept, by design."""

import uuid

import pytest
from django.core.cache import cache
from django.core.signals import request_finished, request_started
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from catalog import services
from catalog.page_cache import VERSION_KEY, kept_per_catalog_version
from catalog.selectors import CategoryPaths
from catalog.models import ProductImage
from search.models import EmbeddingSpace
from search.selectors import _few_vectors, search_cutoff, search_space_model
from search.services import StoredVector, image_embeddings_store
from tests.factories import ProductFactory, clustered_catalog

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.servers]


@pytest.fixture
def counted():
    """A kept read that returns how many times it has really run."""
    runs = []

    @kept_per_catalog_version
    def read():
        runs.append(None)
        return len(runs)

    return read


def test_a_kept_read_runs_once_until_the_catalog_changes(counted):
    assert [counted(), counted(), counted()] == [1, 1, 1]
    services.category_get_or_create_path(path="Home > Lamps")
    assert [counted(), counted()] == [2, 2]


def test_a_request_reads_the_version_once_and_then_sees_only_its_own_writes(counted):
    def another_process_changes_the_catalog():
        cache.set(VERSION_KEY, f"{uuid.uuid4().hex}@{cache.get(VERSION_KEY).partition('@')[2]}", None)

    request_started.send(sender=__name__)
    try:
        assert counted() == 1
        another_process_changes_the_catalog()
        assert counted() == 1  # the request goes on with the version it read first
        services.category_get_or_create_path(path="Home > Lamps")
        assert [counted(), counted()] == [2, 2]  # its own write, seen at once
        another_process_changes_the_catalog()
        assert counted() == 2
    finally:
        request_finished.send(sender=__name__)
    assert counted() == 3  # the next request (or a task) reads the version again
    another_process_changes_the_catalog()
    assert counted() == 4  # outside a request: every read asks the cache server


def test_a_kept_read_keeps_a_value_for_each_set_of_arguments():
    runs = []

    @kept_per_catalog_version
    def doubled(number):
        runs.append(number)
        return 2 * number

    assert [doubled(1), doubled(2), doubled(1), doubled(2)] == [2, 4, 2, 4]
    assert runs == [1, 2]


def test_what_is_read_inside_a_transaction_is_not_kept(counted):
    with transaction.atomic():  # what it reads may be rolled back, while the version written before stays
        assert [counted(), counted()] == [1, 2]
    assert [counted(), counted()] == [3, 3]


def test_a_cache_server_that_lost_the_version_gets_a_new_one(counted):
    counted()
    cache.delete(VERSION_KEY)  # a restarted cache server keeps nothing
    assert [counted(), counted()] == [2, 2]


def test_a_kept_read_runs_every_time_while_the_cache_server_is_down(counted, settings):
    settings.CACHES = {  # a port nothing listens on
        "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": "redis://127.0.0.1:9/0"}
    }
    assert [counted(), counted()] == [1, 2]


def test_searches_see_a_new_space_cut_off_and_category_at_once(settings):
    settings.SEARCH_MIN_SCORE = None
    space = EmbeddingSpace.objects.create(model="space-a", state=EmbeddingSpace.State.ACTIVE, min_score=0.61)
    assert (search_space_model(), search_cutoff("space-a")) == ("space-a", 0.61)
    assert search_space_model() == "space-a"  # kept

    space.min_score = 0.47  # a recalibration
    space.save(update_fields=["min_score"])
    assert search_cutoff("space-a") == 0.47

    space.state = EmbeddingSpace.State.RETIRED
    space.save(update_fields=["state"])
    EmbeddingSpace.objects.create(model="space-b", state=EmbeddingSpace.State.ACTIVE, min_score=0.52)
    assert (search_space_model(), search_cutoff("space-b")) == ("space-b", 0.52)

    sofas = services.category_get_or_create_path(path="Home > Sofas")
    assert CategoryPaths()[sofas.pk] == "Home > Sofas"
    sofas.name = "Couches"
    sofas.save(update_fields=["name"])
    assert CategoryPaths()[sofas.pk] == "Home > Couches"


def test_a_category_is_counted_once_until_its_vectors_change(settings):
    settings.SEARCH_EXACT_MAX_VECTORS = 3
    model, (lamps,), _, vectors = clustered_catalog(products=3, categories=1, clusters=1, seed=3)
    assert _few_vectors(model, [lamps.pk])  # three vectors: searched exactly
    with CaptureQueriesContext(connection) as queries:
        assert _few_vectors(model, [lamps.pk])
    assert not queries.captured_queries

    fourth = ProductFactory(category=lamps)
    image = ProductImage.objects.create(product=fourth, file="x/4.jpg", width=1, height=1, content_hash="b" * 64)
    image_embeddings_store(model=model, items=[StoredVector(image_id=image.pk, vector=vectors[0])])
    assert not _few_vectors(model, [lamps.pk])  # four: past the limit, searched with the index
    settings.SEARCH_EXACT_MAX_VECTORS = 4
    assert _few_vectors(model, [lamps.pk])  # a decision is kept for its limit only
