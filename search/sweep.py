"""Writes of the periodic sweep (Celery beat) and of the embedding spaces it keeps: building a new model's space
beside the searched one and switching to it when complete, recalibrating the "nothing similar enough" cut-off,
freeing retired vectors and filling in the colours of older photos."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import timedelta
from typing import TypeVar

from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.db.models import Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from catalog.models import EmbeddingStatus, Product, ProductImage
from catalog.page_cache import catalog_changed
from search import calibration
from search.colours import dominant_colours
from search.embeddings import active_embedder
from search.locks import held_unless_taken
from search.models import EmbeddingSpace, ImageEmbedding
from search.preprocessing import load_rgb
from search.selectors import SWEEP_FAILED_KEY, SWEEP_RAN_AT_KEY, nearest_other_category_similarities, no_vector_in
from search.services import (
    PERMANENT_ERRORS,
    TRANSIENT_OS_ERRORS,
    model_unavailable_retry,
    pending_images_requeue,
    photos_update,
)

logger = logging.getLogger(__name__)

# Photos whose colours one sweep fills in (each is decoded at about COLOUR_DRAFT_SIZE px: a few ms).
COLOUR_BACKFILL_BATCH = 200
COLOUR_DRAFT_SIZE = 256
COLOUR_BACKFILL_AFTER_KEY = "sweep:colour-backfill-after"
# The advisory lock (search.locks) a running sweep holds.
SWEEP_LOCK = 0x4C4B_5357  # "LKSW"
T = TypeVar("T")


def embedding_space_sync() -> EmbeddingSpace:
    """Reconcile the stored spaces with ``EMBEDDING_MODEL``; returns the space search reads afterwards.

    - Nothing active yet (new install): the configured model's space is active at once.
    - The configured model differs from the active one: its space is created as *building* and every image is
      marked pending for it (the sweep queues them in bounded batches); search stays on the active space.
    - The building space has every image processed, and a vector of every image searchable in the active one: it
      becomes active and the old one retired, in one transaction. Images that failed in it keep it building;
      images another model's worker marked ready (a rolling deploy) are pending for it again.
    - The configured model is the active one again before a build was complete: that build is retired, once no
      process configured for its model has synced for ``_build_abandoned_after`` (a rolling deploy is not over).
      Likewise a process configured for the model search switched from within that time starts no build.
    """
    configured, now = active_embedder().id, timezone.now()
    with transaction.atomic():
        spaces = {space.model: space for space in EmbeddingSpace.objects.select_for_update().order_by("pk")}
        active = next((space for space in spaces.values() if space.state == EmbeddingSpace.State.ACTIVE), None)
        target = spaces.get(configured)
        if active is not None and active.model == configured:
            # A build given up (the model set back before its space was complete) frees its vectors in the sweep;
            # set again later, it starts over. Not while processes configured for it still sync: a rolling deploy's
            # old workers took the build for given up at each of their sweeps, and its new ones started it over.
            if EmbeddingSpace.objects.filter(state=EmbeddingSpace.State.BUILDING,
                                             configured_seen_at__lt=now - _build_abandoned_after()).update(
                    state=EmbeddingSpace.State.RETIRED):
                _statuses_restore(model=active.model)
            return active
        if active is None:
            # First sync: the vectors already stored (if any) define the space search can use right now.
            stored = ImageEmbedding.objects.values_list("model", flat=True).first()
            active = _space_activate(model=stored or configured, previous=None)
            if active.model == configured:
                return active
            target = None
        if (target is not None and target.state == EmbeddingSpace.State.RETIRED and target.activated_at is not None
                and active.activated_at and active.activated_at > now - _build_abandoned_after()):
            # Search switched from this model (it was active) moments ago: a worker of the deploy before, not a
            # model set back.
            return active
        if target is None or target.state != EmbeddingSpace.State.BUILDING:
            EmbeddingSpace.objects.update_or_create(model=configured, defaults={
                "state": EmbeddingSpace.State.BUILDING, "activated_at": None, "configured_seen_at": now})
            photos_update(ProductImage.objects.all(),
                          embedding_status=EmbeddingStatus.PENDING, embedding_error="", embedding_queued_at=None)
            logger.info("embedding model changed to %s: building its space beside %s", configured, active.model)
            return active
        EmbeddingSpace.objects.filter(pk=target.pk).update(configured_seen_at=now)
        if ProductImage.objects.filter(embedding_status=EmbeddingStatus.PENDING).exists():
            return active
        if requeued := _unembedded_requeue(model=configured):
            # Marked ready by a worker still running another model (a rolling deploy), with that model's vector.
            logger.info("space %s: %d images marked ready by another model's worker are pending again",
                        configured, requeued)
            return active
        left_out = _vectors_missing_from(model=configured, searchable_in=active.model)
        if left_out:
            # A switch now would drop these photos out of search and the retired vectors would then be deleted: a
            # model that could not load, or a worker that died mid-batch, must not cost the shop its catalog.
            logger.warning("space %s not switched to: %d images searchable in %s failed in it (the admin lists "
                           "them; `reindex --only failed` retries)", configured, left_out, active.model)
            return active
        logger.info("space %s complete: search switches from %s", configured, active.model)
        return _space_activate(model=configured, previous=active)


def _build_abandoned_after() -> timedelta:
    """How long a build goes on with no process configured for its model syncing: ten sweeps, at least 15 minutes."""
    return timedelta(seconds=max(15 * 60, 10 * settings.EMBEDDING_SWEEP_SECONDS))


def _unembedded_requeue(*, model: str) -> int:
    """Mark pending again the images, not failed, that have no vector in ``model``; returns how many."""
    unembedded = ProductImage.objects.exclude(embedding_status=EmbeddingStatus.FAILED).filter(no_vector_in(model))
    return photos_update(unembedded, embedding_status=EmbeddingStatus.PENDING, embedding_error="",
                         embedding_queued_at=None)


def _statuses_restore(*, model: str) -> None:
    """After a build given up, a photo's status says what it is in the searched space ``model`` again: one the
    build's worker marked ready with its vector there only (an upload whose vector in ``model`` could not be
    made then) is pending, where it stayed out of search with "ready" for good; one that failed in the build only
    is ready."""
    requeued = _unembedded_requeue(model=model)
    restored = photos_update(
        ProductImage.objects.filter(embedding_status=EmbeddingStatus.FAILED).exclude(no_vector_in(model)),
        embedding_status=EmbeddingStatus.READY, embedding_error="", embedding_model=model,
        embedded_at=Coalesce("embedded_at", Value(timezone.now())))
    if requeued or restored:
        logger.info("build given up: %d photos without a vector in %s pending again, %d failed only in the build "
                    "ready again", requeued, model, restored)


def _vectors_missing_from(*, model: str, searchable_in: str) -> int:
    """How many images that have a vector in ``searchable_in`` have none in ``model``."""
    return ImageEmbedding.objects.filter(model=searchable_in).filter(no_vector_in(model, image="image_id")).count()


def _space_activate(*, model: str, previous: EmbeddingSpace | None) -> EmbeddingSpace:
    if previous is not None:
        previous.state = EmbeddingSpace.State.RETIRED
        previous.save(update_fields=["state"])
    space, _ = EmbeddingSpace.objects.update_or_create(
        model=model, defaults={"state": EmbeddingSpace.State.ACTIVE, "activated_at": timezone.now()}
    )
    return space


def retired_vectors_delete(*, limit: int = 10_000) -> int:
    """Free the vectors of retired spaces, a bounded batch at a time. Rows another transaction holds (a product's
    update passes its price on to every space's rows) are left for the next sweep: waiting for them, in whatever
    order, could meet that writer halfway through the same rows."""
    retired = list(EmbeddingSpace.objects.filter(state=EmbeddingSpace.State.RETIRED).values_list("model", flat=True))
    with transaction.atomic():
        batch = list(ImageEmbedding.objects.select_for_update(skip_locked=True).filter(model__in=retired)
                     .values_list("pk", flat=True)[:limit])
        deleted, _ = ImageEmbedding.objects.filter(pk__in=batch).delete()
    return deleted


def embedding_space_calibrate(*, space: EmbeddingSpace, force: bool = False) -> EmbeddingSpace:
    """Compute the space's "nothing similar enough" cut-off from its vectors (search/calibration.py) when the
    catalog has changed enough since the last time and no ``SEARCH_MIN_SCORE`` pins it, or when ``force``d. Returns
    the space as stored afterwards."""
    if settings.SEARCH_MIN_SCORE is not None and not force:
        return space  # the operator's pin is what search uses: recomputing would only retire every cached page
    vectors = ImageEmbedding.objects.filter(model=space.model, active=True).count()
    if not force and not calibration.needs_calibration(calibrated_vectors=space.calibrated_vectors, vectors=vectors,
                                                       changed=lambda: _catalog_changes_since(space)):
        return space
    similarities = nearest_other_category_similarities(model=space.model, sample=calibration.SAMPLE_PRODUCTS)
    enough = len(similarities) >= calibration.MIN_PRODUCTS
    space.min_score = calibration.cutoff_from_neighbours(
        similarities, quantile=calibration.neighbour_quantile(), highest=calibration.default_cutoff()
    ) if enough else None
    space.calibrated_vectors = vectors
    space.calibrated_at = timezone.now()
    space.save(update_fields=["min_score", "calibrated_vectors", "calibrated_at"])
    logger.info("space %s calibrated on %d products: cut-off %s", space.model, len(similarities), space.min_score)
    catalog_changed()  # cached pages show match scores made with the old cut-off
    return space


def _catalog_changes_since(space: EmbeddingSpace) -> int:
    """Vectors added to the space and products edited (moved to another category, among others) since its last
    calibration."""
    if space.calibrated_at is None:
        return 0
    added = ImageEmbedding.objects.filter(model=space.model, created_at__gt=space.calibrated_at).count()
    return added + Product.objects.filter(updated_at__gt=space.calibrated_at).count()


class SweepIncomplete(RuntimeError):
    """Steps of the sweep failed (each logged with its traceback); the others ran."""


def embedding_sweep() -> dict[str, int | str | float | None]:
    """The periodic maintenance run (Celery beat): switch spaces when due, re-queue pending work, recalibrate the
    cut-off when the catalog has changed enough, free old vectors, fill in the colours of older photos.

    Each step runs whatever became of the others: a space sync that failed on every run (a reduction file gone, say)
    skipped the re-queueing of lost photos with it. Raises ``SweepIncomplete`` at the end when any failed, so that
    the task is reported as failed.

    One sweep at a time: a sweep takes longer than its interval now and then (a model switch marks every photo, a
    calibration), and a second one beside it took the photo the first was reading colours from for one that had
    stopped a sweep, and gave it no colours for good. A sweep that finds another running leaves the work to it.
    """
    with held_unless_taken(SWEEP_LOCK) as taken:
        if not taken:
            logger.info("embedding sweep: another sweep is running")
            return {"skipped": "another sweep is running"}
        return _sweep()


def _sweep() -> dict[str, int | str | float | None]:
    failed: list[tuple[str, Exception]] = []

    def step(name: str, work: Callable[[], T], *, otherwise: T) -> T:
        try:
            return work()
        except Exception as error:
            logger.exception("embedding sweep: %s failed; the other steps go on", name)
            failed.append((name, error))
            return otherwise

    synced = step("space sync", embedding_space_sync, otherwise=None)
    space = step("calibration", lambda: _searched_space_calibrate(synced), otherwise=synced)
    outcome = {
        "space": space.model if space else None,
        "min_score": space.min_score if space else None,
        "retried": step("retrying what the model failed", model_unavailable_retry, otherwise=0),
        "requeued": step("re-queueing", pending_images_requeue, otherwise=0),
        "deleted": step("freeing retired vectors", retired_vectors_delete, otherwise=0),
        "coloured": step("colour backfill", image_colours_backfill, otherwise=0),
    }
    _sweep_ran_record([name for name, _ in failed])
    if failed:
        raise SweepIncomplete(f"embedding sweep: {', '.join(name for name, _ in failed)} failed (logged); "
                              f"the other steps gave {outcome}") from failed[0][1]
    return outcome


def _photo_colours(image: ProductImage) -> list[str]:
    """The photo's colours; none for a file that cannot be read (not retried for ever). A transient error raises."""
    try:
        with image.file.open("rb") as file:
            return dominant_colours(load_rgb(file, draft_size=COLOUR_DRAFT_SIZE))
    except TRANSIENT_OS_ERRORS:
        raise
    except PERMANENT_ERRORS:
        return []


def _colour_backfill_place() -> tuple[int, bool]:
    """The photo after which the colour backfill goes on, and whether the run reading it stopped there; (0, False)
    (from the first) without the cache, as it began before it kept a place."""
    try:
        place = cache.get(COLOUR_BACKFILL_AFTER_KEY, (0, False))
    except Exception:
        logger.warning("could not read the colour backfill's place", exc_info=True)
        return 0, False
    return place if isinstance(place, tuple) else (place, False)  # a place kept by a release before this one


def _colour_backfill_place_keep(image_id: int, *, reading: bool) -> None:
    try:
        cache.set(COLOUR_BACKFILL_AFTER_KEY, (image_id, reading), None)
    except Exception:
        logger.warning("could not keep the colour backfill's place", exc_info=True)


def _sweep_ran_record(failed: list[str]) -> None:
    """Record when the sweep ran and which steps failed, for /healthz: a dead worker or beat otherwise went unnoticed
    while photos stayed pending, and a step failing every minute (a reduction file gone: no model switch) showed only
    in the worker's log. Without an expiry, so that a capped Redis (volatile-lru) never evicts them."""
    try:
        cache.set_many({SWEEP_RAN_AT_KEY: time.time(), SWEEP_FAILED_KEY: failed}, None)
    except Exception:  # the cache being down must not fail the sweep; /healthz then reports the broker down anyway
        logger.warning("could not record the sweep's run", exc_info=True)


def _searched_space_calibrate(space: EmbeddingSpace | None) -> EmbeddingSpace | None:
    """Calibrate ``space``, or where the sync failed, the space search reads as stored (None on a new install)."""
    space = space or EmbeddingSpace.objects.filter(state=EmbeddingSpace.State.ACTIVE).first()
    return embedding_space_calibrate(space=space) if space else None


def image_colours_backfill(*, limit: int = COLOUR_BACKFILL_BATCH) -> int:
    """Compute the colours of up to ``limit`` photos that have none (embedded before colours existed); returns
    how many were done. A file that cannot be read gets an empty list, so the sweep does not retry it forever. A
    failed photo is left alone: it is never shown by its colours, and reading it may be what failed it.

    Each photo's place is kept, as being read, before it is read (``COLOUR_BACKFILL_AFTER_KEY``): a photo that stopped
    the last run in any way (its file's storage did not answer, the sweep's time limit, a decoder that killed the
    worker) gets an empty list too, as an unreadable file does, and the run goes on after it, rounding again to the
    first. Begun from the first photo each time, one such file stopped the backfill of every photo after it for good,
    and one that killed the worker killed it every minute, and again at once when the killed sweep's message came
    back."""
    done = 0
    after, stopped = _colour_backfill_place()
    if stopped:
        ProductImage.objects.filter(pk=after, colours__isnull=True).update(colours=[])
    uncoloured = (ProductImage.objects.filter(colours__isnull=True).exclude(embedding_status=EmbeddingStatus.FAILED)
                  .order_by("pk").only("pk", "file"))
    photos = list(uncoloured.filter(pk__gt=after)[:limit])
    if after and len(photos) < limit:  # round again to the first
        photos += uncoloured.filter(pk__lte=after)[: limit - len(photos)]
    try:
        for image in photos:
            _colour_backfill_place_keep(image.pk, reading=True)
            colours = _photo_colours(image)
            # Only if still uncoloured: an embedding that finished meanwhile wrote colours from the same pixels.
            done += ProductImage.objects.filter(pk=image.pk, colours__isnull=True).update(colours=colours)
        if photos:
            _colour_backfill_place_keep(photos[-1].pk, reading=False)
    finally:
        if done:
            catalog_changed()  # the colours reach the vectors' rows: pages show "other colours" and colour facets
    return done
