"""The embedding task: real model, real database; dispatch, idempotence, failures; and a real worker end to end."""

import numpy as np
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from catalog import services as catalog_services
from catalog.models import EmbeddingStatus, ProductImage
from search import services
from search.embeddings import VECTOR_DIMENSIONS, active_embedder
from search.models import ImageEmbedding
from tests.factories import ProductFactory, uploaded_image

pytestmark = pytest.mark.django_db


def _add_image(product, **kwargs):
    return catalog_services.product_image_add(product=product, file=uploaded_image(**kwargs))


def test_embed_stores_a_unit_vector_and_marks_ready(product):
    image = _add_image(product)
    assert services.image_embed(image_id=image.pk) == "embedded"
    image.refresh_from_db()
    assert image.embedding_status == EmbeddingStatus.READY
    assert image.embedding_model == active_embedder().id
    assert image.embedded_at is not None
    stored = ImageEmbedding.objects.get(image=image)
    assert stored.product_id == product.pk
    vector = np.asarray(stored.vector, dtype=np.float32)
    assert vector.shape == (VECTOR_DIMENSIONS,)
    assert abs(float(vector @ vector) - 1.0) < 1e-2


def test_embed_is_idempotent(product):
    image = _add_image(product)
    services.image_embed(image_id=image.pk)
    first = ImageEmbedding.objects.get(image=image)
    assert services.image_embed(image_id=image.pk) == "skipped"
    assert ImageEmbedding.objects.get(image=image).pk == first.pk
    assert ImageEmbedding.objects.count() == 1


def test_embed_of_deleted_image_is_a_no_op(product):
    image = _add_image(product)
    image_id = image.pk
    image.delete()
    assert services.image_embed(image_id=image_id) == "missing"
    assert not ImageEmbedding.objects.exists()


def test_unreadable_file_is_recorded_as_a_permanent_failure(product):
    image = _add_image(product)
    image.file.storage.delete(image.file.name)  # the file vanished from storage
    assert services.image_embed(image_id=image.pk) == "failed"
    image.refresh_from_db()
    assert image.embedding_status == EmbeddingStatus.FAILED
    assert "FileNotFoundError" in image.embedding_error


def test_corrupted_file_is_recorded_as_a_permanent_failure(product):
    image = _add_image(product)
    with image.file.storage.open(image.file.name, "wb") as handle:  # damaged on disk after upload
        handle.write(b"\xff\xd8\xff\xe0 garbage")
    assert services.image_embed(image_id=image.pk) == "failed"
    image.refresh_from_db()
    assert image.embedding_status == EmbeddingStatus.FAILED
    assert image.embedding_error


def test_mark_pending_drops_old_vectors_and_requeues(product, django_capture_on_commit_callbacks):
    image = _add_image(product)
    services.image_embed(image_id=image.pk)
    with django_capture_on_commit_callbacks() as callbacks:
        assert services.image_embedding_mark_pending(image_ids=[image.pk]) == 1
    image.refresh_from_db()
    assert image.embedding_status == EmbeddingStatus.PENDING
    assert not ImageEmbedding.objects.filter(image=image).exists()
    assert len(callbacks) == 1


@pytest.fixture
def broker_unreachable(settings):
    from config.celery_app import app

    app.conf.broker_url = "redis://127.0.0.1:1/0"  # nothing listens there
    app.pool.force_close_all()
    yield
    app.conf.broker_url = settings.CELERY_BROKER_URL
    app.pool.force_close_all()
    app._pool = None  # drop the pool built for the unreachable URL


def test_dispatch_with_broker_down_keeps_the_upload(product, broker_unreachable, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        image = _add_image(product)
    image.refresh_from_db()
    assert image.embedding_status == EmbeddingStatus.PENDING  # the sweep picks it up later


def test_pending_sweep_requeues_only_old_pending_images(product, django_capture_on_commit_callbacks):
    from django.utils import timezone

    old = _add_image(product)
    fresh = _add_image(product, color=(0, 90, 0))
    ProductImage.objects.filter(pk=old.pk).update(created_at=timezone.now() - timezone.timedelta(hours=1))
    assert services.pending_images_requeue(older_than_seconds=600) == 1
    assert ProductImage.objects.get(pk=fresh.pk).embedding_status == EmbeddingStatus.PENDING
