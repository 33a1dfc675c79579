"""Read replicas (config/db_router.py): shopper reads go to a replica, writes and what follows them to the primary,
and a replica that cannot be reached costs the site nothing but the replica.

The first tests run in process, with the alias ``replica_1`` pointing at the test database itself: they tell which
alias each query took (Django records queries per alias), fast. The last one starts a real streaming standby of the
test server (pg_basebackup) and a gunicorn site on both, and asks each server what it served.
"""

from __future__ import annotations

import logging
import os
import re

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
from tests.support import wait_for

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
    chairs, home = chair.category.slug, chair.category.parent.slug  # read here: the test's own reads are the primary's
    photo = test_images / "chair-cafe-pair.jpg"
    reads = {
        "product page with More like this": lambda: client.get(f"/p/{chair.sku}/"),
        "category page": lambda: client.get(f"/c/{chairs}/"),
        "More like this (API)": lambda: client.get(f"/api/v1/products/{chair.sku}/similar/"),
        "product (API)": lambda: client.get(f"/api/v1/products/{chair.sku}/"),
        "photo search (API)": lambda: client.post("/api/v1/search/", {"image": uploaded_file(photo)}),
        "photo search (page)": lambda: client.post("/search/photo/", {"photo": uploaded_file(photo)}),
        # Raw SQL too: the category tree's walk, and the text search's spelling corrections.
        "photo search in a category (API)": lambda: client.post(
            "/api/v1/search/", {"image": uploaded_file(photo), "category": home}),
        "text search with a typo": lambda: client.get("/search/", {"q": "chiar"}),
    }
    for name, read in reads.items():
        with Queries() as queries:
            response = read()
        assert response.status_code == 200, name
        assert queries.on(REPLICA, '"catalog_product"'), name
        assert not queries.on("default"), (name, queries.on("default"))
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
    # A refused write wrote nothing: it is no reason to stick to the primary (a way past the page cache for anyone).
    refused = APIClient().post("/api/v1/products/", {"sku": "NEW-2"}, format="json")
    assert refused.status_code in (401, 403) and "lookalike_primary" not in refused.cookies

    # A script with the token and no cookie jar (curl), reading what it just wrote: the primary too.
    script = APIClient()
    script.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.get(user=admin_user).key}")
    with Queries() as queries:
        assert script.get("/api/v1/products/NEW-1/").status_code == 200
    assert queries.on("default", '"catalog_product"') and not queries.on(REPLICA)


def test_an_authorization_header_that_is_no_api_token_reads_the_replica(replica_alias, catalog, no_page_cache):
    """Any Authorization header sent every read to the primary: anyone could aim the shop's reads at it with a
    made-up one. Only an API call with a token (staff's program, which reads what it just wrote) goes there."""
    replica_alias()
    chair = catalog["CHAIR-1"]
    for path, header in ((f"/p/{chair.sku}/", "Token 0123456789abcdef"), ("/api/v1/products/", "Basic Zm9vOmJhcg=="),
                         (f"/api/v1/products/{chair.sku}/similar/", "Bearer made-up")):
        with Queries() as queries:
            assert APIClient().get(path, HTTP_AUTHORIZATION=header).status_code == 200, path
        assert queries.on(REPLICA) and not queries.on("default"), (path, queries.on("default"))
    with Queries() as queries:  # a made-up token is refused, by the primary that holds the tokens
        assert APIClient().get("/api/v1/products/", HTTP_AUTHORIZATION="Token made-up").status_code == 401
    assert queries.on("default") and not queries.on(REPLICA)


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


# --- A real standby, the site as production runs it ---------------------------------------------------------------

APP = "lookalike-replica-test"  # the site's connections, told apart from this test's own
MAX_CLUSTER_BYTES = 2 * 2**30  # the standby copies the whole test server: bounded, so the test stays short
TABLES = ("catalog_product", "search_imageembedding")


def _standby_or_skip(settings_dict: dict):
    """A started standby of the test server, or a skip that says why one cannot be made from this server."""
    import psycopg

    from tests.services_support import Standby
    from tests.support import database_url

    host = settings_dict["HOST"] or ""
    if not (host.startswith("/") or host in ("localhost", "127.0.0.1", "::1")):
        pytest.skip(f"DATABASE_URL's server ({host}) is not on this machine: no standby of it can be started here")
    with psycopg.connect(database_url(settings_dict), autocommit=True) as primary:
        version, may_replicate, wal_level, size = primary.execute(
            "SELECT current_setting('server_version_num')::int / 10000,"
            " (SELECT rolsuper OR rolreplication FROM pg_roles WHERE rolname = current_user),"
            " current_setting('wal_level'), (SELECT sum(pg_database_size(datname)) FROM pg_database)"
        ).fetchone()
    if version != 18:
        pytest.skip(f"the test server runs PostgreSQL {version}; the bundled pg_basebackup copies only 18")
    if not may_replicate:
        pytest.skip(f"role {settings_dict['USER']} has no REPLICATION permission on the test server")
    if wal_level not in ("replica", "logical"):
        pytest.skip(f"the test server's wal_level is {wal_level}: it cannot feed a standby")
    if size > MAX_CLUSTER_BYTES:
        pytest.skip(f"the test server holds {size / 2**30:.1f} GB: copying it for a standby takes too long for a test")
    standby = Standby(primary_host=host, primary_port=settings_dict["PORT"] or None, user=settings_dict["USER"])
    try:
        return standby.start()
    except Exception as error:
        standby.destroy()
        if os.environ.get("DATABASE_URL"):  # an external server may refuse replication connections (pg_hba.conf)
            pytest.skip(f"the test server would not feed a standby: {error}")
        raise


class Server:
    """What one server tells about the site's work on it: reads per table, whether it is a standby."""

    def __init__(self, url: str):
        import psycopg

        self.connection = psycopg.connect(url, autocommit=True)

    def scans(self) -> dict[str, int]:
        """Reads of each table (sequential and index scans), once the site's connections are closed.

        The site runs with CONN_MAX_AGE=0; a backend writes its counters as it exits, before it leaves
        pg_stat_activity.
        """
        wait_for(lambda: not self.connection.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", [APP]).fetchone()[0],
            timeout=30, message="the site's connections to close")
        rows = self.connection.execute(
            "SELECT relname, coalesce(seq_scan, 0) + coalesce(idx_scan, 0) FROM pg_stat_user_tables"
            " WHERE relname = ANY(%s)", [list(TABLES)]).fetchall()
        return dict(rows)

    def lsn(self, function: str) -> str:
        return self.connection.execute(f"SELECT {function}()").fetchone()[0]

    def close(self) -> None:
        self.connection.close()


def _delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {table: after[table] - before[table] for table in TABLES}


@pytest.mark.system
@pytest.mark.django_db(transaction=True)
def test_a_real_standby_serves_searches_until_it_stops_and_the_site_keeps_answering(
    catalog, admin_user, media_root, test_images, settings, tmp_path
):
    import json

    from django.db import connection

    from tests.services_support import django_env, get, gunicorn_site, post_multipart, request
    from tests.support import database_url

    standby = _standby_or_skip(connection.settings_dict)
    name = connection.settings_dict["NAME"]
    primary_url = database_url(connection.settings_dict)
    replica_url = standby.url(name)
    primary, replica = Server(primary_url), None
    site = None
    try:
        replica = Server(replica_url)
        assert replica.connection.execute("SELECT pg_is_in_recovery()").fetchone()[0]
        caught_up = primary.lsn("pg_current_wal_lsn")
        wait_for(lambda: replica.connection.execute(
            "SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", [caught_up]).fetchone()[0],
            timeout=60, message="the standby to replay the catalog")
        env = django_env(
            database_url=f"{primary_url}{'&' if '?' in primary_url else '?'}application_name={APP}",
            redis_url=settings.REDIS_URL, media_root=media_root,
            DATABASE_REPLICA_URLS=f"{replica_url}&application_name={APP}", CONN_MAX_AGE="0",
        )
        site = gunicorn_site(env=env, log_path=tmp_path / "site.log")
        with connection.cursor() as cursor:  # this process's reads (the catalog fixture's) counted before, not after
            cursor.execute("SELECT pg_stat_force_next_flush()")
        photo = test_images / "chair-cafe-pair.jpg"

        def shop(sku: str) -> list[int]:
            """Product page, More like this, photo search; ``sku`` not asked for before, so no page is cached."""
            return [
                get(f"{site.url}/p/{sku}/?scope=all").status,
                get(f"{site.url}/api/v1/products/{sku}/similar/").status,
                post_multipart(f"{site.url}/api/v1/search/", fields={}, files={"image": photo}).status,
            ]

        def page(sku: str, **headers) -> tuple[str, str]:
            response = get(f"{site.url}/p/{sku}/", headers=headers)
            assert response.status == 200, response.text
            title = re.search(r"<h1[^>]*>(.*?)</h1>", response.text, re.S).group(1).strip()
            return title, response.headers.get("X-Cache", "")

        # Product page, More like this and photo search: every product and vector read on the standby.
        before = (primary.scans(), replica.scans())
        assert shop("CHAIR-1") == [200, 200, 200], site.service.log()[-3000:]
        on_primary, on_replica = _delta(before[0], primary.scans()), _delta(before[1], replica.scans())
        assert on_replica["search_imageembedding"] > 0 and on_replica["catalog_product"] > 0, on_replica
        assert on_primary == {"catalog_product": 0, "search_imageembedding": 0}, on_primary

        # With the standby's replay paused, a change exists only on the primary: what a page shows tells who served it.
        replica.connection.execute("SELECT pg_wal_replay_pause()")
        token = Token.objects.create(user=admin_user).key
        changed = request(f"{site.url}/api/v1/products/CHAIR-2/", headers={
            "Authorization": f"Token {token}", "Content-Type": "application/json"},
            data=json.dumps({"title": "Renamed chair"}).encode(), method="PATCH")
        assert changed.status == 200, changed.text  # a standby cannot write: the primary took it
        sticky = re.search(r"lookalike_primary=[^;]+", changed.headers.get("Set-Cookie", "")).group(0)
        # Another shopper reads the lagging standby; its page is served but not cached under the new version.
        assert page("CHAIR-2") == ("Title of CHAIR-2", "miss")
        assert page("CHAIR-2") == ("Title of CHAIR-2", "miss")
        # The writer reads the primary (its cookie), and that page may be cached: it is the present.
        assert page("CHAIR-2", Cookie=sticky) == ("Renamed chair", "miss")
        assert page("CHAIR-2") == ("Renamed chair", "hit")
        replica.connection.execute("SELECT pg_wal_replay_resume()")
        caught_up = primary.lsn("pg_current_wal_lsn")
        wait_for(lambda: replica.connection.execute(
            "SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", [caught_up]).fetchone()[0],
            timeout=60, message="the standby to catch up")
        # A standby that has caught up renders pages that are cached again.
        assert page("RUN-3") == ("Title of RUN-3", "miss")
        assert page("RUN-3") == ("Title of RUN-3", "hit")

        # The standby goes away: the site answers from the primary.
        replica.close()
        replica = None
        standby.stop("immediate")
        before = primary.scans()
        assert shop("RUN-1") == [200, 200, 200], site.service.log()[-3000:]
        assert shop("TEE-1") == [200, 200, 200]  # and again, now without trying the standby
        assert _delta(before, primary.scans())["search_imageembedding"] > 0
        assert "read replica replica_1 cannot be reached" in site.service.log()
    finally:
        if site is not None:
            site.stop()
        if replica is not None:
            replica.close()
        primary.close()
        standby.destroy()


def test_a_replica_that_catches_up_during_a_render_does_not_get_its_stale_page_kept(
    replica_alias, catalog, client, monkeypatch
):
    """The page was read from a replica still behind the catalog's change, and the check before keeping it asked how
    far the replica had replayed by then: caught up meanwhile, it said yes, and the stale page was kept under the new
    version. The replica's replay position is stood in for here (the test database is no standby): behind the
    change when the request picks it, past it from then on."""
    from catalog import page_cache

    replica_alias()
    change = db_router._wal_number(db_router.primary_wal_position())
    answers = iter([change - 1])  # at the pick; any later question would hear "caught up"
    monkeypatch.setattr(db_router, "_replayed_position", lambda alias: next(answers, change + 1))
    monkeypatch.setattr(page_cache, "_position", lambda version: db_router.primary_wal_position())
    chair = catalog["CHAIR-1"]
    served = [client.get(f"/p/{chair.sku}/")["X-Cache"] for _ in range(3)]
    # The first from a replica behind at its pick: not kept. The second from one caught up: kept, and served.
    assert served == ["miss", "miss", "hit"]
