"""Writes for image search: queueing embeddings and storing vectors."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from django.db import transaction
from django.utils import timezone

from catalog.models import EmbeddingStatus, ProductImage
from search.embeddings import Embedder, active_embedder
from search.models import ImageEmbedding

logger = logging.getLogger(__name__)

# Errors that no retry can fix: the file is gone or cannot be decoded.
PERMANENT_ERRORS = (FileNotFoundError, IsADirectoryError, ValueError, SyntaxError)


def image_embedding_dispatch(*, image_ids: Iterable[int]) -> None:
    """Queue embedding tasks after the current transaction commits, so the worker sees the rows."""
    for image_id in image_ids:
        transaction.on_commit(lambda image_id=image_id: _enqueue(image_id))


def _enqueue(image_id: int) -> bool:
    """Send one task. With the broker down the row stays pending and the periodic sweep queues it later."""
    from search.tasks import embed_image

    try:
        embed_image.delay(image_id)
    except Exception:  # kombu raises many types for an unreachable broker; none may fail the upload
        logger.warning("could not queue embedding of image %s; the pending sweep will retry", image_id, exc_info=True)
        return False
    return True


def image_embedding_mark_pending(*, image_ids: Iterable[int]) -> int:
    """Ask for fresh vectors (admin "re-embed"): reset status and queue the work."""
    image_ids = list(image_ids)
    with transaction.atomic():
        count = ProductImage.objects.filter(pk__in=image_ids).update(
            embedding_status=EmbeddingStatus.PENDING, embedding_error="", embedded_at=None, embedding_model=""
        )
        ImageEmbedding.objects.filter(image_id__in=image_ids).delete()
        image_embedding_dispatch(image_ids=image_ids)
    return count


def image_embed(*, image_id: int, embedder: Embedder | None = None) -> str:
    """Compute and store one image's vector in the active space. Idempotent; returns what happened.

    Transient errors (database, broker) propagate so the task retries; errors that a retry cannot fix
    are recorded on the row as ``failed``.
    """
    embedder = embedder or active_embedder()
    image = ProductImage.objects.filter(pk=image_id).select_related("product").first()
    if image is None:
        return "missing"
    if _already_embedded(image, embedder):
        return "skipped"
    try:
        with image.file.open("rb") as handle:
            vector = embedder.embed_files([handle])[0]
    except PERMANENT_ERRORS as error:
        image_embedding_fail(image_id=image_id, error=f"{type(error).__name__}: {error}")
        return "failed"
    except OSError as error:  # Pillow reports corrupt and truncated files as OSError
        if isinstance(error, (ConnectionError, TimeoutError)):
            raise
        image_embedding_fail(image_id=image_id, error=f"{type(error).__name__}: {error}")
        return "failed"
    image_embedding_store(image_id=image_id, model=embedder.id, vector=vector)
    return "embedded"


def _already_embedded(image: ProductImage, embedder: Embedder) -> bool:
    return (
        image.embedding_status == EmbeddingStatus.READY
        and image.embedding_model == embedder.id
        and ImageEmbedding.objects.filter(image=image, model=embedder.id).exists()
    )


def image_embedding_store(*, image_id: int, model: str, vector) -> None:
    with transaction.atomic():
        image = ProductImage.objects.select_for_update().filter(pk=image_id).first()
        if image is None:  # deleted while we computed
            return
        ImageEmbedding.objects.update_or_create(
            image=image, model=model, defaults={"vector": vector, "product_id": image.product_id}
        )
        image.embedding_status = EmbeddingStatus.READY
        image.embedding_model = model
        image.embedding_error = ""
        image.embedded_at = timezone.now()
        image.save(update_fields=["embedding_status", "embedding_model", "embedding_error", "embedded_at"])


def image_embedding_fail(*, image_id: int, error: str) -> None:
    logger.warning("embedding of image %s failed: %s", image_id, error)
    ProductImage.objects.filter(pk=image_id).update(
        embedding_status=EmbeddingStatus.FAILED, embedding_error=error[:2000] or "unknown error", embedded_at=None
    )


def pending_images_requeue(*, older_than_seconds: int = 600, limit: int = 500) -> int:
    """Re-queue images left pending (broker was down, worker died). Bounded per run."""
    cutoff = timezone.now() - timezone.timedelta(seconds=older_than_seconds)
    image_ids = list(
        ProductImage.objects.filter(embedding_status=EmbeddingStatus.PENDING, created_at__lt=cutoff)
        .order_by("pk")
        .values_list("pk", flat=True)[:limit]
    )
    return sum(_enqueue(image_id) for image_id in image_ids)
