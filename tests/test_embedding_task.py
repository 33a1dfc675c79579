"""The embedding task: real model, real database; dispatch, idempotence, failures; and a real worker end to end."""

import io
from datetime import timedelta

import numpy as np
import pytest
from django.utils import timezone

from catalog import services as catalog_services
from catalog.models import EmbeddingStatus, ProductImage
from search import services
from search.embeddings import VECTOR_DIMENSIONS, ModelUnavailable, active_embedder
from search.models import ImageEmbedding
from tests.factories import copied, uploaded_file, uploaded_image
from tests.support import embedding_dispatches

pytestmark = pytest.mark.django_db


def _add_photo(product, path, copy=0):
    """A photo of tests/images; ``copy``: the same picture in other bytes, which a product may take once more."""
    return catalog_services.product_image_add(product=product, file=copied(uploaded_file(path), copy))


def _add_image(product, copy=0, **kwargs):
    upload = uploaded_image(**kwargs)
    return catalog_services.product_image_add(product=product, file=copied(upload, copy) if copy else upload)


def test_embed_stores_a_unit_vector_and_marks_ready(product):
    image = _add_image(product)
    assert services.images_embed(image_ids=[image.pk])["embedded"] == 1
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
    services.images_embed(image_ids=[image.pk])
    first = ImageEmbedding.objects.get(image=image)
    assert services.images_embed(image_ids=[image.pk])["skipped"] == 1
    assert ImageEmbedding.objects.get(image=image).pk == first.pk
    assert ImageEmbedding.objects.count() == 1


def test_embed_of_deleted_image_is_a_no_op(product):
    image = _add_image(product)
    image_id = image.pk
    image.delete()
    assert services.images_embed(image_ids=[image_id])["missing"] == 1
    assert not ImageEmbedding.objects.exists()


def test_a_photo_replaced_while_its_old_file_is_embedded_keeps_no_vector_of_the_old_file(product, monkeypatch):
    """The admin replaces the file after the task decoded the old one: the old file's vector is not stored (the
    replacement queued a task of its own), and a task that found the old file gone does not fail the new one."""
    image = _add_image(product, color=(200, 40, 40))
    old_version = services.FileVersion.of(image)
    embedder = active_embedder()
    decode = embedder.load_images

    def decode_then_replace(files):
        decoded = list(decode(files))
        catalog_services.product_image_update(image=image, file=uploaded_image(color=(40, 40, 200)))
        return decoded

    monkeypatch.setattr(embedder, "load_images", decode_then_replace)
    assert services.images_embed(image_ids=[image.pk], embedder=embedder)["embedded"] == 0
    monkeypatch.undo()
    image.refresh_from_db()
    assert image.file.name != old_version.file and image.embedding_status == EmbeddingStatus.PENDING
    assert not ImageEmbedding.objects.filter(image=image).exists()

    services.image_embedding_fail(image_id=image.pk, error="FileNotFoundError: the old file", file_version=old_version)
    image.refresh_from_db()
    assert image.embedding_status == EmbeddingStatus.PENDING
    assert services.images_embed(image_ids=[image.pk])["embedded"] == 1  # the replacement's own task
    assert ImageEmbedding.objects.filter(image=image).count() == 1


def test_a_photo_replaced_twice_under_its_old_file_name_keeps_no_vector_of_the_old_file(
    product, monkeypatch, django_capture_on_commit_callbacks
):
    """Replaced twice while the task embeds its first file, the second time under the file name the first
    replacement freed: the name matches again, the content does not. Neither the old file's vector nor its failure
    is recorded against the new file."""
    image = _add_image(product, color=(200, 40, 40))
    old_version = services.FileVersion.of(image)
    embedder = active_embedder()
    decode = embedder.load_images

    def decode_then_replace_twice(files):
        decoded = list(decode(files))
        for name, colour in (("other.jpg", (40, 200, 40)), ("photo.jpg", (40, 40, 200))):
            with django_capture_on_commit_callbacks(execute=True):  # the replaced file is deleted: its name is free
                catalog_services.product_image_update(image=image, file=uploaded_image(name, color=colour))
        return decoded

    monkeypatch.setattr(embedder, "load_images", decode_then_replace_twice)
    assert services.images_embed(image_ids=[image.pk], embedder=embedder)["embedded"] == 0
    monkeypatch.undo()
    image.refresh_from_db()
    assert image.file.name == old_version.file and image.embedding_status == EmbeddingStatus.PENDING
    assert not ImageEmbedding.objects.filter(image=image).exists()

    services.image_embedding_fail(image_id=image.pk, error="OSError: the first file was damaged", file_version=old_version)
    image.refresh_from_db()
    assert image.embedding_status == EmbeddingStatus.PENDING


def test_unreadable_file_is_recorded_as_a_permanent_failure(product):
    image = _add_image(product)
    image.file.storage.delete(image.file.name)  # the file vanished from storage
    assert services.images_embed(image_ids=[image.pk])["failed"] == 1
    image.refresh_from_db()
    assert image.embedding_status == EmbeddingStatus.FAILED
    assert "FileNotFoundError" in image.embedding_error


class _ModelThatCannotLoad:
    """The configured model, as a worker meets it while its files are damaged or memory is short."""

    def __init__(self):
        self.id = active_embedder().id

    def load(self):
        raise ModelUnavailable("cannot load efficientnet-lite0: MemoryError")


def test_a_model_that_cannot_load_fails_the_pending_images_and_the_sweep_retries_them_once_it_loads(
    product, monkeypatch
):
    """They stayed failed until an operator ran `reindex --only failed`, even after a moment's shortage of memory;
    and a photo another task had made ready was marked failed with them."""
    waiting, ready = _add_image(product, color=(200, 0, 0)), _add_image(product, color=(0, 0, 200))
    services.images_embed(image_ids=[ready.pk])
    ImageEmbedding.objects.filter(image=ready).delete()  # ready without this space's vector (another model's worker)

    services.images_embed(image_ids=[waiting.pk, ready.pk], embedder=_ModelThatCannotLoad())

    waiting.refresh_from_db()
    assert (waiting.embedding_status, waiting.embedding_error) == (
        EmbeddingStatus.FAILED, "model unavailable: cannot load efficientnet-lite0: MemoryError")
    assert ProductImage.objects.get(pk=ready.pk).embedding_status == EmbeddingStatus.READY
    monkeypatch.setattr(services, "active_embedder", _ModelThatCannotLoad)
    assert services.model_unavailable_retry() == 0  # still broken: left as they are
    monkeypatch.undo()
    ProductImage.objects.filter(pk=waiting.pk).update(embedding_queued_at=timezone.now())
    assert services.model_unavailable_retry() == 0  # sent moments ago: not again at every sweep
    ProductImage.objects.filter(pk=waiting.pk).update(
        embedding_queued_at=timezone.now() - timedelta(seconds=services.MODEL_RETRY_SECONDS + 1))
    assert services.model_unavailable_retry() == 1
    waiting.refresh_from_db()
    assert (waiting.embedding_status, waiting.embedding_error) == (EmbeddingStatus.PENDING, "")


def test_a_missing_reduction_file_fails_the_photos_as_the_model_does_and_they_wait_until_it_is_back(
    product, monkeypatch, tmp_path
):
    """Loading read the network only: with the reduction file gone, a reindex's run failed its photos without the
    reason the sweep retries by, and the sweep took the model for loadable and sent them back every ten minutes."""
    active = active_embedder()
    gone = type(active)(runtime=active.runtime, cache_dir=active.cache_dir, reduction_file=tmp_path / "gone.npz")
    image = _add_image(product)

    services.images_embed(image_ids=[image.pk], embedder=gone, force=True)

    image.refresh_from_db()
    assert image.embedding_status == EmbeddingStatus.FAILED
    assert image.embedding_error.startswith(f"{services.MODEL_UNAVAILABLE}cannot load the {active.name} reduction")
    ProductImage.objects.filter(pk=image.pk).update(
        embedding_queued_at=timezone.now() - timedelta(seconds=services.MODEL_RETRY_SECONDS + 1))
    monkeypatch.setattr(services, "active_embedder", lambda: gone)
    assert services.model_unavailable_retry() == 0  # still gone: left failed
    monkeypatch.undo()
    assert services.model_unavailable_retry() == 1


def test_corrupted_file_is_recorded_as_a_permanent_failure(product):
    image = _add_image(product)
    with image.file.storage.open(image.file.name, "wb") as handle:  # damaged on disk after upload
        handle.write(b"\xff\xd8\xff\xe0 garbage")
    assert services.images_embed(image_ids=[image.pk])["failed"] == 1
    image.refresh_from_db()
    assert image.embedding_status == EmbeddingStatus.FAILED
    assert image.embedding_error.startswith(("UnidentifiedImageError:", "OSError:")), image.embedding_error


def test_mark_pending_drops_old_vectors_and_requeues(product, django_capture_on_commit_callbacks):
    image = _add_image(product)
    services.images_embed(image_ids=[image.pk])
    with django_capture_on_commit_callbacks() as callbacks:
        assert services.image_embedding_mark_pending(image_ids=[image.pk]) == 1
    image.refresh_from_db()
    assert image.embedding_status == EmbeddingStatus.PENDING
    assert not ImageEmbedding.objects.filter(image=image).exists()
    assert len(embedding_dispatches(callbacks)) == 1


@pytest.fixture
def broker_unreachable(settings):
    """Point the app at a port where nothing listens, then back; pools built for either URL are dropped."""
    from config.celery_app import app

    def forget_connections():
        # Celery's own reset of its connection and producer pools (pools are not closed: kombu's
        # process-wide producer registry may hand the same pool out again).
        app._after_fork()

    forget_connections()
    app.conf.broker_url = "redis://127.0.0.1:1/0"
    yield
    forget_connections()
    app.conf.broker_url = settings.CELERY_BROKER_URL


def test_dispatch_with_broker_down_keeps_the_upload_and_says_so(
    product, broker_unreachable, django_capture_on_commit_callbacks
):
    told = []
    with django_capture_on_commit_callbacks(execute=True):
        image = catalog_services.product_image_add(product=product, file=uploaded_image(), on_not_queued=told.append)
    image.refresh_from_db()
    assert told == [1]  # the admin's "embedding will start when the queue is back"
    # Never queued, so the sweep sends it first once the broker answers; not while it does not.
    assert (image.embedding_status, image.embedding_queued_at) == (EmbeddingStatus.PENDING, None)
    assert services.pending_images_requeue() == 0


def test_a_photo_re_embedded_with_the_broker_down_counts_as_never_queued(
    product, broker_unreachable, django_capture_on_commit_callbacks
):
    """It kept the time its upload was queued: while any task waited, the sweep sent it no more (only photos never
    queued), and it stayed out of search, its vectors deleted, until the queue ran dry (hours, during an import)."""
    from django.utils import timezone

    image = _add_image(product)
    services.images_embed(image_ids=[image.pk])
    ProductImage.objects.filter(pk=image.pk).update(embedding_queued_at=timezone.now() - timezone.timedelta(hours=1))
    told = []
    with django_capture_on_commit_callbacks(execute=True):
        services.image_embedding_mark_pending(image_ids=[image.pk], on_not_queued=told.append)
    image.refresh_from_db()
    assert told == [1]
    assert (image.embedding_status, image.embedding_queued_at) == (EmbeddingStatus.PENDING, None)


def test_pending_sweep_resends_never_queued_and_stale_images_only(product, settings):
    from django.utils import timezone

    from tests.support import embedding_queue

    embedding_queue(settings.CELERY_BROKER_URL)  # nothing waiting in the queue
    never_queued = _add_image(product)  # the broker was down: no queued_at
    stale = _add_image(product, color=(0, 90, 0))
    recent = _add_image(product, color=(0, 0, 90))
    ProductImage.objects.filter(pk=stale.pk).update(embedding_queued_at=timezone.now() - timezone.timedelta(hours=1))
    ProductImage.objects.filter(pk=recent.pk).update(embedding_queued_at=timezone.now())
    assert services.pending_images_requeue(stale_after_seconds=600) == 2
    resent = ProductImage.objects.filter(pk__in=[never_queued.pk, stale.pk], embedding_queued_at__isnull=False)
    assert resent.count() == 2


def test_the_sweep_tops_the_queue_up_and_leaves_tasks_still_waiting_in_it_alone(product, settings, monkeypatch):
    """The database is the backlog: the sweep keeps the broker at most SWEEP_QUEUE_MAX_TASKS deep, and while tasks
    wait in it, it sends only never-queued images, not again those whose task may be among them."""
    from django.utils import timezone

    from tests.support import embedding_queue

    monkeypatch.setattr(services, "SWEEP_QUEUE_MAX_TASKS", 2)
    sent = embedding_queue(settings.CELERY_BROKER_URL)
    never_queued = [_add_image(product, color=(60 * n, 0, 0)).pk for n in range(3)]
    stale = _add_image(product, color=(0, 90, 0)).pk
    ProductImage.objects.filter(pk=stale).update(embedding_queued_at=timezone.now() - timezone.timedelta(hours=1))
    services.image_embedding_enqueue(image_ids=[10**9])  # a task still waiting in the queue
    sent()  # (read: from here on only what the sweep sends)

    assert services.pending_images_requeue() == 3  # room for one more task: the never-queued ones, not the stale
    assert never_queued in sent()
    assert services.pending_images_requeue() == 0  # the queue is full
    assert ProductImage.objects.get(pk=stale).embedding_queued_at < timezone.now() - timezone.timedelta(minutes=59)

    embedding_queue(settings.CELERY_BROKER_URL)  # the workers took every task
    assert services.pending_images_requeue() == 1  # and, the queue empty, the stale one (its task was lost)


def test_one_bad_file_in_a_batch_does_not_spoil_the_others(product, test_images):
    from tests.factories import uploaded_file

    good = catalog_services.product_image_add(product=product, file=uploaded_file(test_images / "chair-cafe-pair.jpg"))
    bad = _add_image(product)
    with bad.file.storage.open(bad.file.name, "wb") as handle:
        handle.write(b"GIF89a truncated")
    outcome = services.images_embed(image_ids=[good.pk, bad.pk])
    assert outcome == {"embedded": 1, "skipped": 0, "failed": 1, "missing": 0}
    assert ProductImage.objects.get(pk=good.pk).embedding_status == EmbeddingStatus.READY
    assert ProductImage.objects.get(pk=bad.pk).embedding_status == EmbeddingStatus.FAILED


def test_a_duplicate_flag_from_a_file_replaced_since_is_not_written(product):
    """The flag was written after the vectors' transaction, from the old picture: on the replaced photo it stayed."""
    original, copy = _add_image(product), _add_image(product, copy=1)  # the same picture twice
    services.images_embed(image_ids=[original.pk, copy.pk])
    assert ProductImage.objects.get(pk=copy.pk).near_duplicate_of_id == original.pk
    ProductImage.objects.filter(pk=copy.pk).update(near_duplicate_of=None, near_duplicate_score=None)  # replaced
    vector = ImageEmbedding.objects.get(image=copy).vector

    services.images_near_duplicate_flag(model=active_embedder().id, items=[services.StoredVector(
        image_id=copy.pk, vector=vector, file_version=services.FileVersion("products/old.jpg", "0" * 64))])

    assert ProductImage.objects.get(pk=copy.pk).near_duplicate_of_id is None


def test_a_duplicate_flag_naming_an_original_replaced_since_is_not_written(product, monkeypatch):
    """The copy's own file was checked, not the original's: replaced meanwhile, it was named from its old picture."""
    from search import selectors

    original, copy = _add_image(product), _add_image(product, copy=1)  # the same picture twice
    services.images_embed(image_ids=[original.pk, copy.pk])
    vector = ImageEmbedding.objects.get(image=copy).vector
    ProductImage.objects.filter(pk=copy.pk).update(near_duplicate_of=None, near_duplicate_score=None)
    nearest = selectors.nearest_older_images

    def then_replaced(**kwargs):
        found = nearest(**kwargs)
        ImageEmbedding.objects.filter(image=original).delete()  # what replacing the original's file does
        return found

    monkeypatch.setattr(selectors, "nearest_older_images", then_replaced)
    services.images_near_duplicate_flag(model=active_embedder().id, items=[services.StoredVector(
        image_id=copy.pk, vector=vector, file_version=services.FileVersion.of(ProductImage.objects.get(pk=copy.pk)))])

    assert ProductImage.objects.get(pk=copy.pk).near_duplicate_of_id is None


def test_a_run_cut_short_before_the_duplicate_flags_leaves_them_to_its_retry(product, monkeypatch):
    """The vectors were stored and the photos marked ready before the flags were written: a retry found the vectors,
    skipped the photos and never flagged the copy. A photo is ready only once flagged now."""
    from django.db import OperationalError

    from search import selectors

    original, copy = _add_image(product), _add_image(product, copy=1)  # the same picture twice

    def lost_connection(**kwargs):
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(selectors, "nearest_older_images", lost_connection)
    with pytest.raises(OperationalError):
        services.images_embed(image_ids=[original.pk, copy.pk])
    monkeypatch.undo()
    assert ImageEmbedding.objects.filter(image__in=[original, copy]).count() == 2
    assert set(ProductImage.objects.filter(pk__in=[original.pk, copy.pk]).values_list("embedding_status", flat=True)
               ) == {EmbeddingStatus.PENDING}

    assert services.images_embed(image_ids=[original.pk, copy.pk])["skipped"] == 2  # the task's retry
    copy.refresh_from_db()
    assert (copy.near_duplicate_of_id, copy.embedding_status) == (original.pk, EmbeddingStatus.READY)
    assert ProductImage.objects.get(pk=original.pk).embedding_status == EmbeddingStatus.READY


def test_flags_that_cannot_be_written_leave_the_photos_ready_not_failed(product, monkeypatch):
    """An error no retry mends, at the flags (originals deleted under every attempt), failed the task: its photos,
    whose vectors search already read, were marked failed."""
    from django.db import IntegrityError

    def originals_gone(**kwargs):
        raise IntegrityError("insert or update violates foreign key constraint")

    photo = _add_image(product)
    monkeypatch.setattr(services, "images_near_duplicate_flag", originals_gone)
    assert services.images_embed(image_ids=[photo.pk])["embedded"] == 1
    photo.refresh_from_db()
    assert photo.embedding_status == EmbeddingStatus.READY


def test_images_queued_together_travel_in_one_task(product, settings, django_capture_on_commit_callbacks):
    from tests.support import embedding_queue

    with django_capture_on_commit_callbacks():  # uploads: their callbacks are not run, nothing is sent
        ids = [_add_image(product, color=(i * 10, 0, 0)).pk for i in range(3)]
    sent = embedding_queue(settings.CELERY_BROKER_URL)
    with django_capture_on_commit_callbacks(execute=True):
        services.image_embedding_mark_pending(image_ids=ids)
    assert sent() == [ids]


def test_a_batch_flags_the_later_copy_of_a_photo_and_stores_each_photos_colours(product, test_images):
    photo = test_images / "chair-cafe-pair.jpg"
    first, second = (_add_photo(product, photo, copy=n) for n in range(2))
    other = _add_image(product, color=(20, 40, 200))
    assert services.images_embed(image_ids=[first.pk, second.pk, other.pk])["embedded"] == 3
    first, second, other = (ProductImage.objects.get(pk=image.pk) for image in (first, second, other))
    assert first.near_duplicate_of_id is None  # stored in one batch, compared as if one after the other
    assert second.near_duplicate_of_id == first.pk and second.near_duplicate_score > 0.99
    assert other.near_duplicate_of_id is None
    assert "blue" in other.colours and first.colours
    vectors = ImageEmbedding.objects.filter(image__in=[first, second, other])
    assert {(row.image_id, row.product_id, row.colour) for row in vectors} == {
        (image.pk, product.pk, image.colours[0]) for image in (first, second, other)
    }


def test_a_photo_replaced_while_its_batch_runs_is_not_marked_ready_without_a_vector(product, test_images):
    """A batch saw the photo's vector (nothing to compute, only to mark ready); the photo was replaced before the
    mark, which dropped the vector and marked it pending: the batch marked it ready, with no vector, and the sweep
    never sends a ready photo again."""
    from catalog.services import product_image_update
    from search.embeddings import active_embedder
    from tests.factories import uploaded_file

    seen = catalog_services.product_image_add(product=product, file=uploaded_file(test_images / "chair-cafe-pair.jpg"))
    services.images_embed(image_ids=[seen.pk])
    ProductImage.objects.filter(pk=seen.pk).update(embedding_status=EmbeddingStatus.PENDING)  # a reindex's claim
    new = _add_image(product, color=(0, 120, 0))
    embedder = active_embedder()
    load = embedder.load

    def replaced_meanwhile():
        product_image_update(image=seen, file=uploaded_file(test_images / "chair-armchair-blue.jpg"))
        return load()

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(embedder, "load", replaced_meanwhile)
        services.images_embed(image_ids=[seen.pk, new.pk], embedder=embedder)
    seen.refresh_from_db()
    assert seen.embedding_status == EmbeddingStatus.PENDING  # its replacement's task (or the sweep) embeds it
    assert not ImageEmbedding.objects.filter(image=seen).exists()


def test_an_original_embedded_after_its_copy_is_never_flagged_as_the_copy_of_its_copy(product, test_images):
    """An original embedded again (re-embed, a reindex) or stored after its copy (two workers) found the copy as its
    nearest photo: both were flagged, and an admin who deleted what the near-duplicate filter listed lost both."""
    photo = test_images / "chair-cafe-pair.jpg"
    original, copy = (_add_photo(product, photo, copy=n) for n in range(2))
    services.images_embed(image_ids=[copy.pk])  # the copy's worker first: nothing older to be a copy of, then
    copy.refresh_from_db()
    assert copy.near_duplicate_of_id is None
    services.images_embed(image_ids=[original.pk])  # the original finds its copy stored before it, and flags it
    services.images_embed(image_ids=[original.pk], force=True)  # and the admin's re-embed
    original.refresh_from_db()
    copy.refresh_from_db()
    assert original.near_duplicate_of_id is None
    assert (copy.near_duplicate_of_id, copy.near_duplicate_score > 0.9) == (original.pk, True)
    services.images_embed(image_ids=[copy.pk], force=True)
    copy.refresh_from_db()
    assert copy.near_duplicate_of_id == original.pk


def test_a_copy_replaced_while_its_original_looks_for_it_is_not_flagged_from_its_old_picture(
    product, test_images, monkeypatch
):
    """The flag was written from the copy's old vector, read before its file was replaced: the new picture was called
    a near-duplicate of the original until its own embedding ran."""
    from search import selectors

    original, copy = (_add_photo(product, test_images / "chair-cafe-pair.jpg", copy=n) for n in range(2))
    services.images_embed(image_ids=[copy.pk])
    read = selectors.nearest_newer_unflagged_images

    def read_then_replaced(**kwargs):
        found = read(**kwargs)
        catalog_services.product_image_update(image=copy, file=uploaded_file(test_images / "shoe-running-1.jpg"))
        return found

    monkeypatch.setattr(selectors, "nearest_newer_unflagged_images", read_then_replaced)
    services.images_embed(image_ids=[original.pk])
    copy.refresh_from_db()
    assert copy.near_duplicate_of_id is None


def test_a_copy_embedded_again_before_its_original_keeps_its_flag(product, test_images):
    """A rebuild or reindex in two workers embeds the copy first: it found nothing older, its flag was cleared,
    and the original, stored next, looks only at older photos: never flagged again."""
    photo = test_images / "chair-cafe-pair.jpg"
    original, copy = (_add_photo(product, photo, copy=n) for n in range(2))
    services.images_embed(image_ids=[original.pk, copy.pk])
    copy.refresh_from_db()
    assert copy.near_duplicate_of_id == original.pk
    ImageEmbedding.objects.filter(image=original).delete()  # the original's vector not (re)computed yet
    services.images_embed(image_ids=[copy.pk], force=True)
    services.images_embed(image_ids=[original.pk])
    copy.refresh_from_db()
    assert (copy.near_duplicate_of_id, copy.embedding_status) == (original.pk, EmbeddingStatus.READY)


@pytest.mark.django_db(transaction=True)
def test_an_original_deleted_while_its_copy_is_flagged_leaves_the_copy_flagged_afresh(test_images, monkeypatch):
    """The admin deletes a photo just after the task read it as a new photo's nearest: the flag pointing at it was
    refused at commit, and the task failed with the batch's flags unwritten."""
    from search import selectors
    from tests.factories import ProductFactory, uploaded_file

    product = ProductFactory()
    photo = test_images / "chair-cafe-pair.jpg"
    original = catalog_services.product_image_add(product=product, file=uploaded_file(photo))
    services.images_embed(image_ids=[original.pk])
    copy = _add_photo(product, photo, copy=1)
    read = selectors.nearest_older_images

    def read_then_delete_the_original(**kwargs):
        nearest = read(**kwargs)
        if ProductImage.objects.filter(pk=original.pk).exists():
            assert nearest[copy.pk][0] == original.pk
            catalog_services.product_image_delete(image=original)
        return nearest

    monkeypatch.setattr(selectors, "nearest_older_images", read_then_delete_the_original)
    assert services.images_embed(image_ids=[copy.pk])["embedded"] == 1
    copy.refresh_from_db()
    assert copy.near_duplicate_of_id is None and copy.embedding_status == EmbeddingStatus.READY


def test_every_task_sent_by_name_is_one_the_worker_knows_and_the_beat_tasks_run(product, settings):
    """The beat and search.services send tasks by their names: a rename would leave them unknown to the worker,
    and model switches, re-queues, calibration and the category indexes would stop without an error anywhere."""
    from config.celery_app import app

    app.loader.import_default_modules()  # what a worker does at start: autodiscover every app's tasks
    sent_by_name = {entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()} | {services.EMBED_IMAGES_TASK}
    assert sent_by_name <= set(app.tasks)

    image = _add_image(product)
    swept = app.tasks["search.tasks.embedding_sweep"].apply().get()
    assert set(swept) == {"space", "min_score", "retried", "requeued", "deleted", "coloured"}
    assert app.tasks[services.EMBED_IMAGES_TASK].apply(args=[[image.pk]]).get()["embedded"] == 1
    indexes = app.tasks["search.tasks.category_indexes_sync"].apply().get()
    assert indexes == {"created": [], "dropped": []}  # a one-product category needs no index of its own


class _Unreachable(io.RawIOBase):
    """A photo on a network share that stopped answering mid-read."""

    def readable(self):
        return True

    def readinto(self, buffer):
        raise TimeoutError("the file server did not answer")


@pytest.mark.parametrize("fails_at", ["open", "read"])
def test_a_storage_that_does_not_answer_leaves_the_photo_pending_for_a_retry(product, monkeypatch, fails_at):
    """A timeout is no verdict on the photo: the task retries it (search.tasks), the photo is not failed."""
    from django.core.files import File
    from django.core.files.storage import FileSystemStorage

    image = _add_image(product)

    def unreachable(self, name, mode="rb"):
        if fails_at == "open":
            raise TimeoutError("the file server did not answer")
        return File(io.BufferedReader(_Unreachable()), name=name)

    monkeypatch.setattr(FileSystemStorage, "_open", unreachable)
    with pytest.raises(TimeoutError):
        services.images_embed(image_ids=[image.pk])
    image.refresh_from_db()
    assert (image.embedding_status, image.embedding_error) == (EmbeddingStatus.PENDING, "")


@pytest.fixture
def tasks():
    """The project's Celery tasks by name, as a worker knows them."""
    from config.celery_app import app

    app.loader.import_default_modules()  # what a worker does at start: autodiscover every app's tasks
    return app.tasks


def test_a_batch_whose_task_fails_for_good_records_why_on_its_photos_still_pending(product, monkeypatch, tasks):
    """An error no retry is for (a bug, a time limit, memory) left the batch pending with no reason given, and the
    sweep sent it again every ten minutes, for ever. A photo embedded meanwhile by another task keeps its state."""
    embedded_meanwhile, first, second = (_add_image(product, color=(n * 90, 0, 0)) for n in range(3))
    services.images_embed(image_ids=[embedded_meanwhile.pk])
    embedder = active_embedder()

    def crash(*args, **kwargs):
        raise RuntimeError("the network crashed")

    monkeypatch.setattr(embedder, "embed_images", crash)
    ids = [embedded_meanwhile.pk, first.pk, second.pk]
    result = tasks[services.EMBED_IMAGES_TASK].apply(args=[ids], kwargs={"force": True})
    assert result.failed() and isinstance(result.result, RuntimeError)

    statuses = dict(ProductImage.objects.filter(pk__in=ids).values_list("pk", "embedding_status"))
    assert statuses == {embedded_meanwhile.pk: EmbeddingStatus.READY, first.pk: EmbeddingStatus.FAILED,
                        second.pk: EmbeddingStatus.FAILED}
    for image in (first, second):
        image.refresh_from_db()
        assert image.embedding_error == "embedding task failed: RuntimeError: the network crashed"
    assert services.pending_images_requeue(stale_after_seconds=0) == 0  # the sweep leaves them to `reindex`


def test_a_database_error_is_retried_and_records_no_failure(product, monkeypatch, tasks):
    """Retries are not failures: only once the task has failed for good are its photos marked failed."""
    from django.db import OperationalError

    image = _add_image(product)
    embed, calls = services.images_embed, []

    def fails_once(**kwargs):
        calls.append(kwargs)
        if len(calls) == 1:
            raise OperationalError("the server closed the connection unexpectedly")
        return embed(**kwargs)

    monkeypatch.setattr(services, "images_embed", fails_once)
    tasks[services.EMBED_IMAGES_TASK].apply(args=[[image.pk]])  # a retry runs at once when applied here
    image.refresh_from_db()
    assert len(calls) == 2
    assert (image.embedding_status, image.embedding_error) == (EmbeddingStatus.READY, "")


def test_a_database_error_that_outlasts_every_retry_fails_the_batch_with_its_reason(product, monkeypatch, tasks):
    """Retries run out (a database away for longer than the backoff): the photos are failed with the error, not
    left pending for the sweep to send again every ten minutes."""
    from django.db import OperationalError

    image = _add_image(product)
    calls = []

    def always_fails(**kwargs):
        calls.append(kwargs)
        raise OperationalError("the server closed the connection unexpectedly")

    monkeypatch.setattr(services, "images_embed", always_fails)
    result = tasks[services.EMBED_IMAGES_TASK].apply(args=[[image.pk]])
    assert result.failed() and len(calls) == tasks[services.EMBED_IMAGES_TASK].max_retries + 1
    image.refresh_from_db()
    assert image.embedding_status == EmbeddingStatus.FAILED
    assert image.embedding_error.startswith("embedding task failed: OperationalError: the server closed")


@pytest.mark.parametrize("broken", ["embedding_space_sync", "embedding_space_calibrate"])
def test_a_failing_sweep_step_leaves_the_others_to_run_and_fails_the_task(product, settings, monkeypatch, tasks,
                                                                          broken):
    """A space sync failing on every run (a reduction file gone) skipped the re-queueing of lost photos with it."""
    from search import sweep
    from tests.support import embedding_queue

    never_queued = _add_image(product)  # the broker was down when it was uploaded
    sent = embedding_queue(settings.CELERY_BROKER_URL)

    def crash(*args, **kwargs):
        raise RuntimeError(f"{broken} crashed")

    monkeypatch.setattr(sweep, broken, crash)
    result = tasks["search.tasks.embedding_sweep"].apply()
    assert sent() == [[never_queued.pk]]  # re-queued all the same
    assert result.failed() and isinstance(result.result, sweep.SweepIncomplete)  # and the failure reported


# --- Runs whose worker died ----------------------------------------------------------------------------------------


@pytest.fixture
def died():
    """Call with a task id: a run of that task that began and never ended, as when its worker is killed."""
    from search.lost_runs import runs_counted

    never_ended = []  # held until the test ends: a context collected would end its run

    def run_of(task_id: str) -> None:
        run = runs_counted(task_id)
        run.__enter__()
        never_ended.append(run)

    yield run_of
    for run in never_ended:
        run.__exit__(None, None, None)


def test_a_batch_whose_worker_died_is_sent_again_one_photo_a_task(product, settings, tasks, died):
    """The photo that killed the worker, if one did, then goes down alone instead of taking its batch with it."""
    from tests.support import embedding_queue

    ids = [_add_image(product, color=(n * 60, 0, 0)).pk for n in range(3)]
    sent = embedding_queue(settings.CELERY_BROKER_URL)
    died("batch-1")
    result = tasks[services.EMBED_IMAGES_TASK].apply(args=[ids], task_id="batch-1")
    assert result.successful() and result.result == {"sent_apart": 3}
    assert sorted(sent()) == [[pk] for pk in ids]
    assert set(ProductImage.objects.filter(pk__in=ids).values_list("embedding_status", flat=True)) == {
        EmbeddingStatus.PENDING}


def test_a_photo_whose_own_task_died_twice_is_failed_with_why_and_once_is_tried_again(product, tasks, died):
    task = tasks[services.EMBED_IMAGES_TASK]
    tried_again, given_up = _add_image(product, color=(200, 0, 0)), _add_image(product, color=(0, 0, 200))
    died("alone-1")
    assert task.apply(args=[[tried_again.pk]], task_id="alone-1").result["embedded"] == 1
    for _ in range(services.LOST_RUNS_BEFORE_FAILING):
        died("alone-2")
    assert task.apply(args=[[given_up.pk]], task_id="alone-2").result == {"failed": 1}
    given_up.refresh_from_db()
    assert given_up.embedding_status == EmbeddingStatus.FAILED
    assert given_up.embedding_error.startswith("the worker died each time it embedded this photo (2 times")
    assert not ImageEmbedding.objects.filter(image=given_up).exists()
    assert services.pending_images_requeue(stale_after_seconds=0) == 0  # the sweep leaves it to a re-embed

    # A run that ends, however it ends, is no longer counted: the task sent again (a re-embed) runs as a first one.
    assert task.apply(args=[[given_up.pk]], task_id="alone-2").result["embedded"] == 1
