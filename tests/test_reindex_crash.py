"""A reindex killed in the middle (SIGKILL, no cleanup) resumes with `--only pending` and finishes the rest once."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

from catalog import services as catalog_services
from catalog.models import EmbeddingStatus, ProductImage
from search.models import ImageEmbedding
from tests.factories import uploaded_image
from tests.support import database_url, wait_for

pytestmark = pytest.mark.django_db(transaction=True)

IMAGES = 120
ROOT = Path(__file__).resolve().parent.parent


def _reindex(*args, media_root):
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings.test",
        "DATABASE_URL": database_url(connection.settings_dict),
        "REDIS_URL": settings.REDIS_URL,
        "MEDIA_ROOT": str(media_root),
    }
    return subprocess.Popen(
        [sys.executable, str(ROOT / "manage.py"), "reindex", "--batch-size", "1", *args],
        env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )


def test_killed_reindex_resumes_where_it_stopped(media_root):
    category = catalog_services.category_get_or_create_path(path="Test > Colours")
    for n in range(IMAGES):
        product = catalog_services.product_create(sku=f"C-{n}", title=f"Colour {n}", category=category, price="1")
        catalog_services.product_image_add(product=product, file=uploaded_image(color=(n * 2, 255 - n * 2, n)))
    ready = ProductImage.objects.filter(embedding_status=EmbeddingStatus.READY)

    first = _reindex(media_root=media_root)
    wait_for(lambda: ready.count() >= 10, timeout=120, message="the first reindex to store some vectors")
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    done_before = dict(ready.values_list("pk", "embedded_at"))
    assert 10 <= len(done_before) < IMAGES, "the reindex should be stopped in the middle"
    assert ProductImage.objects.filter(embedding_status=EmbeddingStatus.PENDING).count() == IMAGES - len(done_before)

    resumed = _reindex("--only", "pending", media_root=media_root)
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read().decode()

    assert ready.count() == IMAGES
    after = dict(ready.values_list("pk", "embedded_at"))
    assert all(after[pk] == when for pk, when in done_before.items())  # not redone
    assert ImageEmbedding.objects.count() == IMAGES  # one vector per image: nothing lost, nothing twice
