"""Read replicas (config/db_router.py): shopper reads go to a replica, writes and what follows them to the primary,
and a replica that cannot be reached costs the site nothing but the replica.

The first tests run in process, with the alias ``replica_1`` pointing at the test database itself: they tell which
alias each query took (Django records queries per alias), fast. The last one starts a real streaming standby of the
test server (pg_basebackup) and a gunicorn site on both, and asks each server what it served.
"""

from __future__ import annotations

import logging

import pytest
from django.db import connections, router
from django.db.utils import load_backend
from django.test.utils import CaptureQueriesContext
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from config import db_router
from search.models import ImageEmbedding
from search.selectors import similar_products_to_product
from tests.factories import uploaded_file

REPLICA = "replica_1"
pytestmark = pytest.mark.filterwarnings("ignore:Overriding setting DATABASES")


@pytest.fixture
def replica_alias(settings, transactional_db):
    """Declare ``replica_1`` with the given connection settings (the test database's own by default)."""
    added = []

    def declare(**overrides):
        config = {**connections["default"].settings_dict, **overrides}
        settings.DATABASES = {**settings.DATABASES, REPLICA: config}
        # Made here rather than by name: Django's test case refuses connections to aliases it was not told about.
        wrapper = load_backend(config["ENGINE"]).DatabaseWrapper(config, REPLICA)
        setattr(connections._connections, REPLICA, wrapper)
        added.append(wrapper)
        return REPLICA

    db_router._down_until.clear()
    yield declare
    for wrapper in added:
        wrapper.close()
        delattr(connections._connections, REPLICA)
    db_router._down_until.clear()


@pytest.fixture
def no_page_cache(settings):
    settings.PAGE_CACHE_SECONDS = 0  # every request renders, so every request reads


class Queries:
    """The SQL each alias ran while the block ran."""

    def __enter__(self):
        self.contexts = {alias: CaptureQueriesContext(connections[alias]) for alias in ("default", REPLICA)}
        for context in self.contexts.values():
            context.__enter__()
        return self

    def __exit__(self, *exc):
        for context in self.contexts.values():
            context.__exit__(*exc)

    def on(self, alias: str, table: str = "") -> list[str]:
        return [query["sql"] for query in self.contexts[alias].captured_queries if table in query["sql"]]


# --- Which alias, in process ------------------------------------------------------------------------------------


def test_shopper_pages_searches_and_the_read_api_read_the_replica(
    replica_alias, catalog, client, no_page_cache, test_images
):
    replica_alias()
    chair = catalog["CHAIR-1"]
    photo = test_images / "chair-cafe-pair.jpg"
    reads = {
        "product page with More like this": lambda: client.get(f"/p/{chair.sku}/"),
        "category page": lambda: client.get(f"/c/{chair.category.slug}/"),
        "More like this (API)": lambda: client.get(f"/api/v1/products/{chair.sku}/similar/"),
        "product (API)": lambda: client.get(f"/api/v1/products/{chair.sku}/"),
        "photo search (API)": lambda: client.post("/api/v1/search/", {"image": uploaded_file(photo)}),
        "photo search (page)": lambda: client.post("/search/photo/", {"photo": uploaded_file(photo)}),
    }
    for name, read in reads.items():
        with Queries() as queries:
            response = read()
        assert response.status_code == 200, name
        assert queries.on(REPLICA, '"catalog_product"'), name
        assert not queries.on("default", '"catalog_product"'), name
        assert not queries.on("default", '"search_imageembedding"'), name
        assert "lookalike_primary" not in response.cookies, name  # reading is no reason to stick to the primary
    with Queries() as queries:  # all categories: the HNSW index, not an exact scan of one category
        assert client.get(f"/p/{chair.sku}/?scope=all").status_code == 200
    # The ANN statement and the settings that tune it ran together, on the replica (search/selectors.py).
    replica_sql = "\n".join(queries.on(REPLICA))
    assert "hnsw.iterative_scan" in replica_sql and '"search_imageembedding"' in replica_sql


def test_a_write_goes_to_the_primary_and_so_do_that_clients_next_reads(replica_alias, catalog, admin_user,
                                                                      no_page_cache):
    replica_alias()
    staff = APIClient()
    staff.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=admin_user).key}")
    chair = catalog["CHAIR-1"]
    with Queries() as queries:
        created = staff.post("/api/v1/products/", {"sku": "NEW-1", "title": "New", "price": "9.00",
                                                   "category": chair.category.slug}, format="json")
    assert created.status_code == 201, created.content
    assert queries.on("default", "INSERT INTO")
    assert not queries.on(REPLICA)  # the write, and the read of what it wrote, on the primary
    assert created.cookies["lookalike_primary"]["max-age"] > 0

    with Queries() as queries:  # the same client, right after: its cookie keeps it on the primary
        assert staff.get("/p/NEW-1/").status_code == 200
    assert queries.on("default", '"catalog_product"') and not queries.on(REPLICA)

    with Queries() as queries:  # another shopper reads the replica
        assert APIClient().get("/p/NEW-1/").status_code == 200
    assert queries.on(REPLICA, '"catalog_product"')


def test_the_admin_reads_the_primary(replica_alias, catalog, admin_client):
    replica_alias()
    with Queries() as queries:
        assert admin_client.get("/admin/catalog/product/").status_code == 200
        assert admin_client.get(f"/admin/catalog/product/{catalog['CHAIR-1'].pk}/change/").status_code == 200
    assert queries.on("default", '"catalog_product"') and not queries.on(REPLICA)


def test_tasks_and_commands_read_the_primary(replica_alias, catalog):
    """Outside a request (a Celery task, a management command, the shell) nothing opts in to the replicas."""
    replica_alias()
    assert router.db_for_read(ImageEmbedding) == "default"
    with Queries() as queries:
        assert similar_products_to_product(product=catalog["CHAIR-1"])
    assert queries.on("default", '"search_imageembedding"') and not queries.on(REPLICA)


def test_a_replica_that_cannot_be_reached_is_skipped_and_the_primary_answers(
    replica_alias, catalog, client, no_page_cache, caplog
):
    replica_alias(HOST="127.0.0.1", PORT=1, OPTIONS={"connect_timeout": 2})  # nothing listens on port 1
    chair = catalog["CHAIR-1"]
    with caplog.at_level(logging.WARNING, logger="config.db_router"):
        first = client.get(f"/p/{chair.sku}/")
        second = client.get(f"/api/v1/products/{chair.sku}/similar/")
    assert first.status_code == second.status_code == 200
    assert catalog["CHAIR-2"].title in first.content.decode()  # More like this was answered, by the primary
    assert [result["product"]["sku"] for result in second.json()["results"]][:1] == ["CHAIR-2"]
    assert db_router.replica_down(REPLICA)
    # Tried once, then skipped: the second request did not wait for a connection attempt.
    assert len([r for r in caplog.records if "cannot be reached" in r.getMessage()]) == 1
