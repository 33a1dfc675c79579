import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.conf import settings

from tests.factories import CategoryFactory, ProductFactory
from tests.support import database_url

ROOT = Path(__file__).resolve().parent.parent
TEST_IMAGES = Path(__file__).resolve().parent / "images"
MEASURED = pytest.StashKey[list]()


def pytest_configure(config):
    config.stash[MEASURED] = []


def pytest_terminal_summary(terminalreporter, config):
    if config.stash[MEASURED]:
        terminalreporter.section("measured")
        for line in config.stash[MEASURED]:
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup, django_db_blocker):
    """Every run starts from empty tables. --reuse-db keeps the test database between runs, and with it whatever a
    run left committed: a worker or site process that wrote after its test's tables were truncated. Such a row (an
    embedding space of an earlier model version, say) made the next run's searches read the wrong space."""
    from django.core.management import call_command

    with django_db_blocker.unblock():
        call_command("flush", interactive=False, verbosity=0)


@pytest.fixture(autouse=True)
def fresh_page_cache():
    """Each test starts with no cached pages: a page cached by an earlier test's rolled-back catalog is not this one's."""
    from django.core.cache import cache

    from catalog.page_cache import VERSION_KEY, _version_at

    cache.set(VERSION_KEY, _version_at("0/0"), None)  # as _new_version would, but with no query: any test may run


@pytest.fixture(autouse=True)
def live_vector_graph(request):
    """Each database test's approximate searches walk a graph of live vectors only. The HNSW graph keeps earlier
    tests' rolled-back vectors as dead entries until a vacuum, which cannot run inside a test's transaction; walking
    them, a search may miss a live neighbour that a catalog's own graph would give, so what a test found depended
    on which tests ran before it. Rebuilt here, inside the test's transaction, from the live rows (none or a few)."""
    marker = request.node.get_closest_marker("django_db")
    if marker is None or marker.kwargs.get("transaction") or "transactional_db" in request.fixturenames:
        return  # no database, or a transactional test: it starts from truncated tables
    request.getfixturevalue("db")
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("REINDEX INDEX imageembedding_vector_hnsw")


@pytest.fixture
def measured(request):
    """Call with a line of figures to print after the run (test output is captured, this is not)."""
    return request.config.stash[MEASURED].append


@pytest.fixture(autouse=True)
def media_root(settings, tmp_path_factory):
    """Every test writes uploads into its own temporary MEDIA_ROOT."""
    settings.MEDIA_ROOT = str(tmp_path_factory.mktemp("media"))
    return Path(settings.MEDIA_ROOT)


@pytest.fixture
def category(db):
    return CategoryFactory()


@pytest.fixture
def product(db, category):
    return ProductFactory(category=category)


@pytest.fixture
def test_images() -> Path:
    return TEST_IMAGES


@pytest.fixture
def celery_worker_process(transactional_db, media_root):
    """A real `celery worker` process on the test database and the test Redis; stopped after the test.

    The test must use `transactional_db` semantics (committed rows) so the worker can see them.
    """
    from django.db import connection

    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings.test",
        "DATABASE_URL": database_url(connection.settings_dict),
        "REDIS_URL": settings.REDIS_URL,
        "MEDIA_ROOT": str(media_root),
    }
    celery = Path(sys.executable).parent / "celery"
    subprocess.run([str(celery), "-A", "config", "purge", "-f"], env=env, cwd=ROOT, check=True, capture_output=True)
    log_path = media_root / "worker.log"
    log = open(log_path, "w")
    process = subprocess.Popen(
        [str(celery), "-A", "config", "worker", "--pool=solo", "--loglevel=INFO", "--without-mingle",
         "--without-gossip", "--without-heartbeat"],
        env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while "ready." not in log_path.read_text():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"celery worker did not start:\n{log_path.read_text()}")
        time.sleep(0.2)
    yield process
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
    log.close()



@pytest.fixture
def catalog(test_images):
    """Chairs, shoes and a T-shirt from real photos, embedded with the real model; returns products by SKU."""
    from catalog import services as catalog_services
    from catalog.models import EmbeddingStatus, Product, ProductImage
    from search.services import images_embed
    from search.sweep import embedding_sweep
    from tests.factories import uploaded_file

    photos = {
        "CHAIR-1": ("Home > Chairs", "chair-armchair-blue.jpg", "120.00"),
        "CHAIR-2": ("Home > Chairs", "chair-shell-black.jpg", "80.00"),
        "RUN-1": ("Clothing > Shoes", "shoe-running-1.jpg", "60.00"),
        "RUN-3": ("Clothing > Shoes", "shoe-running-3.jpg", "65.00"),
        "TEE-1": ("Clothing > Tops", "tshirt-turquoise-front.jpg", "15.00"),
    }
    for sku, (path, photo, price) in photos.items():
        category = catalog_services.category_get_or_create_path(path=path)
        product = catalog_services.product_create(sku=sku, title=f"Title of {sku}", category=category, price=price)
        catalog_services.product_image_add(product=product, file=uploaded_file(test_images / photo))
    images_embed(image_ids=list(ProductImage.objects.values_list("pk", flat=True)))
    assert not ProductImage.objects.exclude(embedding_status=EmbeddingStatus.READY).exists()
    embedding_sweep()  # calibrates the cut-off, as the beat schedule does
    return {product.sku: product for product in Product.objects.all()}
