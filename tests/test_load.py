"""Bounded load: 32 concurrent clients search by photo for 10 s against the demo catalog, with and without a reindex.

The site runs as docker-compose runs it (gunicorn, three sync workers) on the test database; the load comes from a
second process on loopback (bench.loadgen), fixed in client count and duration. Every answer must be a 200 whose
results contain the product the photo belongs to; the p50/p95/p99 go to the terminal (and docs/reliability.md).
LOAD_SECONDS=60 runs each load for a minute, as docs/reliability.md's figures were measured.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
from contextlib import ExitStack

import pytest
from django.conf import settings
from django.core.management import call_command
from django.db import connection
from django.db.models import Count
from django.test import override_settings

from catalog.demo import DemoSourceUnavailable, demo_products_collect
from catalog.models import EmbeddingStatus, ProductImage
from search.models import ImageEmbedding
from search.selectors import search_space_model
from search.services import images_embed
from tests.services_support import ROOT, Service, django_env, gunicorn_site
from tests.support import database_url

pytestmark = [pytest.mark.system, pytest.mark.network]  # the demo catalog comes from the package registries once

CLIENTS = 32
# Long enough for every client to get many answers while a whole-catalog reindex (three views per photo: 15-25 s
# beside the load on 2 cores) overlaps the load from its start; each added second costs two in every test run.
SECONDS = int(os.environ.get("LOAD_SECONDS", "10"))
WEB_WORKERS = 3  # docker-compose.yml's WEB_CONCURRENCY default
QUERY_SKU = "VEN-runx-running-shoe"  # a 1600x1067 demo photo; its own product must be among the results


def _flush(django_db_blocker) -> None:
    """Empty the tables, as a transactional test leaves them: the next module starts from an empty catalog."""
    with django_db_blocker.unblock():
        call_command("flush", interactive=False, verbosity=0)


@pytest.fixture(scope="module")
def demo_site(django_db_setup, django_db_blocker, tmp_path_factory):
    """The demo catalog, embedded, served by gunicorn and warmed up: once for the module, its tests share it.

    The rows are committed outside the tests (which use `db`, so their own writes roll back) and flushed at the end.
    """
    directory = tmp_path_factory.mktemp("load")
    media_root = directory / "media"
    with ExitStack() as cleanup:
        cleanup.callback(_flush, django_db_blocker)
        with django_db_blocker.unblock(), override_settings(MEDIA_ROOT=str(media_root)):
            try:  # fetch first: load_demo reports an unreachable registry as a CommandError like any other
                demo_products_collect()
            except DemoSourceUnavailable as error:
                pytest.skip(f"demo packages unavailable: {error}")
            call_command("load_demo", "--no-fetch", verbosity=0, stdout=io.StringIO())
            images_embed(image_ids=list(ProductImage.objects.values_list("pk", flat=True)))
            env = django_env(database_url=database_url(connection.settings_dict), redis_url=settings.REDIS_URL,
                             media_root=media_root)
            site = gunicorn_site(env=env, log_path=directory / "site.log", workers=WEB_WORKERS)
            cleanup.callback(site.stop)
            site.env = env
            photo = ProductImage.objects.filter(product__sku=QUERY_SKU).first()
            assert photo is not None and (photo.width, photo.height) == (1600, 1067)
            site.photo = media_root / photo.file.name
        # Warm-up, not measured: each gunicorn worker loads the model on its first search.
        _load(site, clients=WEB_WORKERS, seconds=30, max_requests=3 * WEB_WORKERS, out=directory / "warmup.json")
        yield site


def _load(site, *, clients: int, seconds: float, out, max_requests: int | None = None) -> dict:
    command = [sys.executable, "-m", "bench.loadgen", "--base", site.url, "--post", "/api/v1/search/",
               "--photo", str(site.photo), "--clients", str(clients), "--duration", str(seconds),
               "--expect", f'"sku":"{QUERY_SKU}"', "--json", str(out)]
    if max_requests:
        command += ["--max-requests", str(max_requests)]
    subprocess.run(command, cwd=ROOT, check=True, timeout=seconds + 120)
    return json.loads(out.read_text())


def _summary_line(title: str, summary: dict) -> str:
    return (f"{title}: {summary['requests']} searches in {summary['seconds']:.0f} s ({summary['throughput']:.1f}/s), "
            f"{summary['errors']} errors, p50 {summary['p50_ms']:.0f} ms, p95 {summary['p95_ms']:.0f} ms, "
            f"p99 {summary['p99_ms']:.0f} ms")


def _assert_clean(summary: dict, site) -> None:
    assert summary["errors"] == 0, summary["error_samples"]
    assert summary["requests"] >= CLIENTS  # every client got answers, not just a few
    assert "Traceback" not in site.service.log()


@pytest.mark.worker
def test_32_clients_search_by_photo_without_errors(db, demo_site, measured, tmp_path):
    summary = _load(demo_site, clients=CLIENTS, seconds=SECONDS, out=tmp_path / "load.json")

    measured(_summary_line(f"photo search, {CLIENTS} clients, {SECONDS} s", summary))
    _assert_clean(summary, demo_site)


@pytest.mark.worker
def test_32_clients_search_by_photo_while_a_reindex_runs_without_errors(db, demo_site, measured, tmp_path):
    # Reindex the whole catalog over and over for as long as the load lasts.
    done = threading.Event()
    reindexes: list[int] = []

    def reindex_until_done():
        while not done.is_set():
            log = tmp_path / f"reindex-{len(reindexes)}.log"
            reindex = Service([sys.executable, "manage.py", "reindex"], env=demo_site.env, log_path=log)
            reindexes.append(reindex.process.wait(timeout=300))

    reindexing = threading.Thread(target=reindex_until_done)
    reindexing.start()
    try:
        summary = _load(demo_site, clients=CLIENTS, seconds=SECONDS, out=tmp_path / "load.json")
    finally:
        done.set()
        reindexing.join(timeout=300)

    measured(_summary_line(f"photo search, {CLIENTS} clients, {SECONDS} s, during {len(reindexes)} reindexes", summary))
    _assert_clean(summary, demo_site)
    assert len(reindexes) >= 1 and set(reindexes) == {0}  # the first starts with the load and ends after it or within
    # The catalog is whole afterwards: every image ready, with exactly one vector in the searched space.
    images = ProductImage.objects.count()
    assert not ProductImage.objects.exclude(embedding_status=EmbeddingStatus.READY).exists()
    vectors = ImageEmbedding.objects.filter(model=search_space_model())
    assert vectors.count() == images
    assert not vectors.values("image_id").annotate(n=Count("id")).filter(n__gt=1).exists()
