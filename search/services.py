"""Writes for image search: queueing photos to embed, storing their vectors, recording failures. The sweep and the
embedding spaces it switches and calibrates are in search/sweep.py."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Literal, NamedTuple

from celery import current_app
from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import QuerySet
from django.utils import timezone
from PIL import Image

from catalog.models import EmbeddingStatus, Product, ProductImage
from catalog.page_cache import catalog_changed
from search import details
from search.colours import dominant_colours
from search.embeddings import Embedder, ModelUnavailable, active_embedder
from search.models import EmbeddingSpace, ImageEmbedding
from search.selectors import no_vector_in

logger = logging.getLogger(__name__)

# Image ids per task: images queued together are embedded by one batched model call (file-to-vector
# throughput reaches ~120 img/s from about 32-64 images per call; docs/embeddings-benchmarks.md).
TASK_BATCH_SIZE = 32
# The sweep keeps at most this many embedding tasks in the broker (about 2.5 minutes of work for two cores).
SWEEP_QUEUE_MAX_TASKS = 200
# The sweep sends pending photos again once their task has gone unanswered this long (and the queue is empty).
PENDING_STALE_SECONDS = 600
FLAG_ATTEMPTS = 3  # near-duplicate flags read and written again when an original is deleted meanwhile
# Errors that no retry can fix: the file is gone, unreadable or not an image.
PERMANENT_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)
TRANSIENT_OS_ERRORS = (ConnectionError, TimeoutError)
EMBED_IMAGES_TASK = "search.tasks.embed_images"
# How the failures of images whose model could not be loaded begin: the sweep retries them once it loads, at most
# once in a while (model_unavailable_retry).
MODEL_UNAVAILABLE = "model unavailable: "
MODEL_RETRY_SECONDS = 600
# A photo is failed once this many runs of its own task have died with their worker (images_embed_after_lost_runs).
LOST_RUNS_BEFORE_FAILING = 2
WORKER_LOST_ERROR = ("the worker died each time it embedded this photo ({runs} times: out of memory, or a crash "
                     "decoding it); re-embed it once it is replaced or the worker has more memory")


def _chunks(items: Sequence[int], size: int):
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


# --- Queueing -------------------------------------------------------------------------------------------

_batching = threading.local()  # .image_ids: committed ids not sent yet, inside image_embedding_batched()


@contextmanager
def image_embedding_batched() -> Iterator[None]:
    """Within this block, images dispatched by many small transactions (an import commits each row) are sent
    TASK_BATCH_SIZE to a task, as they commit, instead of one task each; the rest when the block ends.

    A task of one image pays the per-task costs (message, queries, a model call) for one image: on an import of
    real photos the worker spent 81 ms of CPU per image that way, 21 ms with tasks of 32 (docs/import.md). Ids still
    held when the process dies were committed but never queued: the pending sweep sends them, as after a broker
    outage.
    """
    if getattr(_batching, "image_ids", None) is not None:  # nested: the outer block sends
        yield
        return
    _batching.image_ids = []
    try:
        yield
    finally:
        image_ids, _batching.image_ids = _batching.image_ids, None
        if image_ids:
            image_embedding_enqueue(image_ids=image_ids)


def _batch_add(image_ids: list[int]) -> None:
    held = _batching.image_ids
    held.extend(image_ids)
    if len(held) >= TASK_BATCH_SIZE:
        full = len(held) - len(held) % TASK_BATCH_SIZE
        image_embedding_enqueue(image_ids=held[:full])
        del held[:full]


def image_embedding_dispatch(*, image_ids: Iterable[int], on_not_queued: Callable[[int], None] | None = None) -> None:
    """Queue embedding tasks once the current transaction commits, so the worker sees the rows.

    With the broker down the images stay pending and the sweep sends them later; ``on_not_queued(count)`` is
    then called (after the commit, still within the request) so the admin can say so.
    """
    image_ids = list(image_ids)  # bound now: the callback must not see a later value
    if not image_ids:
        return

    def enqueue():
        if on_not_queued is None and getattr(_batching, "image_ids", None) is not None:
            _batch_add(image_ids)
            return
        not_queued = len(image_ids) - image_embedding_enqueue(image_ids=image_ids)
        if not_queued and on_not_queued is not None:
            on_not_queued(not_queued)

    # Robust: the change is committed whatever happens here (the photos stay pending for the sweep), and a hook that
    # raised skipped the ones after it, such as deleting a replaced photo's old files, and made the save a 500.
    transaction.on_commit(enqueue, robust=True)


def image_embedding_enqueue(*, image_ids: Sequence[int], force: bool = False,
                            batch_size: int = TASK_BATCH_SIZE) -> int:
    """Send tasks now, in batches. With the broker down the images stay pending for the sweep; returns how many went."""
    sent: list[int] = []
    for chunk in _chunks(image_ids, batch_size):
        try:
            # By name: search.tasks imports this module, never the reverse.
            current_app.send_task(EMBED_IMAGES_TASK, args=[chunk], kwargs={"force": force})
        except Exception:  # kombu raises many types for an unreachable broker; none may fail the caller
            logger.warning("could not queue embedding of %d image(s); the pending sweep retries", len(image_ids) - len(sent),
                           exc_info=True)
            break
        sent.extend(chunk)
    if sent:
        photos_update(ProductImage.objects.filter(pk__in=sent), embedding_queued_at=timezone.now())
    return len(sent)


def image_embedding_mark_pending(
    *, image_ids: Iterable[int], on_not_queued: Callable[[int], None] | None = None
) -> int:
    """Ask for fresh vectors (admin "re-embed", replaced files): reset status, drop stale vectors, queue the work.

    ``on_not_queued``: see ``image_embedding_dispatch``.
    """
    image_ids = list(image_ids)
    with transaction.atomic():
        count = photos_update(
            ProductImage.objects.filter(pk__in=image_ids),
            embedding_status=EmbeddingStatus.PENDING, embedding_error="", embedded_at=None, embedding_model="",
            # Queued anew below; should that fail, the sweep sends photos never queued first, even while tasks wait.
            embedding_queued_at=None,
        )
        # Every space's vector of these photos is stale (a replaced file) or unwanted (re-embed); the worker writes
        # the configured model's. Needing no model id, this works even while the model cannot be loaded.
        if ImageEmbedding.objects.filter(image_id__in=image_ids).delete()[0]:
            catalog_changed()  # other products' More like this listed these photos
        image_embedding_dispatch(image_ids=image_ids, on_not_queued=on_not_queued)
    return count


def images_recompute_claim(*, image_ids: Sequence[int]) -> int:
    """Mark photos pending for a recompute the caller does itself (``manage.py reindex``): pending is its to-do
    list, which a resumed run reads. They are marked as queued now, so that for PENDING_STALE_SECONDS the sweep
    does not send them to the workers too, who would do the same work beside the caller. A long run renews the claim
    within that time. Should the run die, the sweep sends what is left: the model mark cleared here tells the
    workers to recompute those photos (``_recompute_claimed``) rather than find their vector and mark them ready."""
    return photos_update(
        ProductImage.objects.filter(pk__in=image_ids),
        embedding_status=EmbeddingStatus.PENDING, embedding_error="", embedding_model="",
        embedding_queued_at=timezone.now()
    )


def images_recompute_claim_renew(*, image_ids: Sequence[int]) -> int:
    """Renew the claim on those of ``image_ids`` still pending (see ``images_recompute_claim``)."""
    return photos_update(ProductImage.objects.filter(pk__in=image_ids, embedding_status=EmbeddingStatus.PENDING),
                         embedding_queued_at=timezone.now())


def model_unavailable_retry() -> int:
    """Once the model loads again, mark pending the images that failed because it could not (a damaged file since
    replaced, memory short for a moment): the sweep then sends them. Returns how many.

    Only images not queued within MODEL_RETRY_SECONDS: the model may load here and still not in the workers (another
    host, less memory), and the images would go from failed to pending and back at every sweep."""
    recently = timezone.now() - timezone.timedelta(seconds=MODEL_RETRY_SECONDS)
    failed = (ProductImage.objects.filter(embedding_status=EmbeddingStatus.FAILED,
                                          embedding_error__startswith=MODEL_UNAVAILABLE)
              .exclude(embedding_queued_at__gte=recently))
    if not failed.exists():
        return 0
    try:
        active_embedder().load()
    except ModelUnavailable:
        return 0
    with transaction.atomic():
        retried = photos_update(failed, embedding_status=EmbeddingStatus.PENDING, embedding_error="",
                                embedding_queued_at=None)
        catalog_changed()  # their product pages say again that More like this is on its way
    return retried


def pending_images_requeue(*, stale_after_seconds: int = PENDING_STALE_SECONDS, limit: int = 5000) -> int:
    """Send pending images that were never queued (broker down, model switch), and, once the queue is empty, those
    not answered in time (a message lost with the broker's memory).

    The database is the backlog, not the broker: a run tops the queue up to SWEEP_QUEUE_MAX_TASKS tasks, at most
    ``limit`` images. Without that bound a rebuild of a large catalog queued 5,000 more images every minute than
    the workers could embed, and once the queue was ten minutes long, sent again images whose task still waited in
    it. The beat schedule runs it every minute.
    """
    queued = _queued_tasks()
    if queued is None:
        return 0  # the broker cannot be asked: nothing could be sent either
    room = min(limit, max(0, SWEEP_QUEUE_MAX_TASKS - queued) * TASK_BATCH_SIZE)
    pending = ProductImage.objects.filter(embedding_status=EmbeddingStatus.PENDING)
    if queued:
        pending = pending.filter(embedding_queued_at__isnull=True)
    else:
        stale = timezone.now() - timezone.timedelta(seconds=stale_after_seconds)
        pending = pending.exclude(embedding_queued_at__gte=stale)
    image_ids = list(pending.order_by("pk").values_list("pk", flat=True)[:room]) if room else []
    return image_embedding_enqueue(image_ids=image_ids) if image_ids else 0


def image_embedding_top_up(*, image_ids: Sequence[int], force: bool = False) -> int | None:
    """Send the first of ``image_ids`` that the queue has room for (up to SWEEP_QUEUE_MAX_TASKS tasks, as the sweep
    keeps it); returns how many went, None when the broker does not answer. A whole reindex sent at once (3,000 tasks
    for 100k photos) queued every beat task behind it, and each expired unrun for the forty minutes it took: no
    sweep, no switch, /healthz late."""
    if (queued := _queued_tasks()) is None:
        return None
    room = max(0, SWEEP_QUEUE_MAX_TASKS - queued) * TASK_BATCH_SIZE
    return image_embedding_enqueue(image_ids=image_ids[:room], force=force, batch_size=TASK_BATCH_SIZE) if room else 0


def _queued_tasks() -> int | None:
    """How many tasks wait in the default queue; None where the broker does not answer."""
    try:
        with current_app.connection_for_write() as connection:
            return connection.default_channel.queue_declare(
                queue=current_app.conf.task_default_queue, durable=True, auto_delete=False
            ).message_count
    except Exception:  # kombu raises many types for an unreachable broker
        logger.warning("cannot count the queued embedding tasks: the broker does not answer; nothing is sent now",
                       exc_info=True)
        return None


# --- Embedding ------------------------------------------------------------------------------------------


class FileVersion(NamedTuple):
    """The file a vector or a failure came from: its name and its content's hash. The name alone can come back: a
    photo replaced twice may get the file name its first replacement freed."""

    file: str
    content_hash: str

    @classmethod
    def of(cls, image: ProductImage) -> FileVersion:
        return cls(image.file.name, image.content_hash)


@dataclass(frozen=True)
class StoredVector:
    image_id: int
    vector: object  # 1-d array of VECTOR_DIMENSIONS floats
    colours: list[str] | None = None
    details: bytes | None = None  # search/details.py ``stored``
    file_version: FileVersion | None = None  # the file it was computed from; not stored if it was replaced since

    def computed_from(self, photo: _LockedPhoto | None) -> bool:
        """Whether ``photo`` (None: deleted) still holds the file this was computed from."""
        return photo is not None and self.file_version in (None, photo.file_version)


class _LockedPhoto(NamedTuple):
    product_id: int
    file_version: FileVersion


def photos_update(photos: QuerySet[ProductImage], **values) -> int:
    """``photos.update(**values)``, the rows locked in pk order first, as every writer locks photos; returns how many.
    A plain UPDATE locks rows in the order its scan meets them, which is not pk order once rows have been updated:
    the sweep's update of every photo met a writer halfway through its own (an admin deleting products), and
    PostgreSQL broke the deadlock by failing one of them."""
    with transaction.atomic():
        locking, params = photos.select_for_update(no_key=True).order_by("pk").values_list("pk").query.sql_with_params()
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT count(*) FROM ({locking}) AS locked", params)
        return photos.update(**values)


def _photos_locked(image_ids: list[int], *, no_key: bool = False) -> dict[int, _LockedPhoto]:
    """The photos that still exist of ``image_ids``, their rows locked (in pk order, as every writer locks them) with
    the product and the file each holds now."""
    return {pk: _LockedPhoto(product_id, FileVersion(file, content_hash))
            for pk, product_id, file, content_hash in ProductImage.objects.select_for_update(no_key=no_key)
            .filter(pk__in=image_ids).order_by("pk").values_list("pk", "product_id", "file", "content_hash")}


def images_embed(*, image_ids: Sequence[int], embedder: Embedder | None = None, force: bool = False) -> dict[str, int]:
    """Compute and store vectors of the configured model for these images, in one batched model call.

    Idempotent: images that already have a vector in this space are only marked ready, unless ``force``
    (reindex) asks to recompute them. Files that cannot be read, and every image when the model cannot be
    loaded, are recorded as failed; database and broker errors propagate so the task retries.
    """
    embedder = embedder or active_embedder()
    outcome = {"embedded": 0, "skipped": 0, "failed": 0, "missing": 0}
    images = ProductImage.objects.filter(pk__in=image_ids).only("pk", "file", "content_hash", "product_id",
                                                                 "embedding_status", "embedding_model")
    images = {image.pk: image for image in images}
    outcome["missing"] = len(set(image_ids) - images.keys())
    done: set[int] = set()
    try:
        if not force:  # the space's id needs the model's reduction: it too may be unavailable
            done = set(ImageEmbedding.objects.filter(image_id__in=images.keys(), model=embedder.id)
                       .values_list("image_id", flat=True)) - _recompute_claimed(images.values())
        todo = [image for image_id, image in images.items() if image_id not in done]
        if todo:
            embedder.load()  # before decoding anything: a broken model fails the batch at once
    except ModelUnavailable as error:
        # Retrying the task at once would meet the same model, so the reason is recorded on each image still
        # pending (the admin shows it); the sweep sends them again once the model loads (model_unavailable_retry).
        todo = [image for image_id, image in images.items() if image_id not in done]
        outcome["failed"] = pending_images_fail(image_ids=[image.pk for image in todo],
                                                error=f"{MODEL_UNAVAILABLE}{error}")
        todo = []
    if unmarked := [image_id for image_id in done if images[image_id].embedding_status != EmbeddingStatus.READY]:
        # Stored by a run that ended before it marked them (a retry, a killed worker): its flags may be unwritten too.
        _photos_flag_and_mark_ready(model=embedder.id, items=[
            StoredVector(image_id=image_id, vector=vector, file_version=FileVersion.of(images[image_id]))
            for image_id, vector in ImageEmbedding.objects.filter(image_id__in=unmarked, model=embedder.id)
            .values_list("image_id", "vector")
        ])
    outcome["skipped"] = len(done)
    stored = []
    if todo:
        decoded, failures = _images_decode(todo, embedder)
        _images_fail(failures)
        outcome["failed"] = len(failures)
        if decoded:
            vectors, detail_maps = embedder.embed_images(list(decoded.values()), details=True)
            stored = image_embeddings_store(model=embedder.id, mark="model", items=[
                StoredVector(image_id=image.pk, vector=vector, colours=dominant_colours(pixels),
                             details=details.stored(detail_map), file_version=FileVersion.of(image))
                for (image, pixels), vector, detail_map in zip(decoded.items(), vectors, detail_maps)
            ])
            _photos_flag_and_mark_ready(items=stored, model=embedder.id)
            outcome["embedded"] = len(stored)
    if filled := [*done, *(item.image_id for item in stored)]:
        # The photos found done too: the run that stored their vectors may have ended (a retry, a killed worker)
        # before it gave them one in the searched space.
        _searched_space_fill(image_ids=filled, building=embedder.id)
    return outcome


def images_embed_after_lost_runs(*, image_ids: Sequence[int], force: bool, lost_runs: int) -> dict[str, int]:
    """Embed these images for a task whose earlier runs died with their worker (search/lost_runs.py): a batch is sent
    again one photo a task, so that the photo that killed it, if one did, goes down alone; a single photo gets
    another run, and is marked failed once LOST_RUNS_BEFORE_FAILING runs of it have died (one death may be another
    process's doing: the OOM killer picks the biggest process, not the guilty one)."""
    if len(image_ids) > 1:
        logger.warning("the worker died embedding images %s: each is sent again in a task of its own", list(image_ids))
        return {"sent_apart": image_embedding_enqueue(image_ids=image_ids, force=force, batch_size=1)}
    if lost_runs >= LOST_RUNS_BEFORE_FAILING:
        return {"failed": pending_images_fail(image_ids=image_ids, error=WORKER_LOST_ERROR.format(runs=lost_runs))}
    return images_embed(image_ids=image_ids, force=force)


def _photos_flag_and_mark_ready(*, items: Sequence[StoredVector], model: str) -> None:
    """Flag the photos' near-duplicates, then mark them ready. Ready only once flagged: a run cut short between
    storing the vectors and writing the flags (a lost connection, a killed worker) leaves the photos pending with
    their vectors, and the run after it, which finds the vectors and computes none, writes the flags."""
    if not items:
        return
    try:
        images_near_duplicate_flag(items=items, model=model)
    except IntegrityError:  # an original deleted under every attempt: the photos are searchable all the same
        logger.warning("near-duplicate flags of images %s not written", [item.image_id for item in items],
                       exc_info=True)
    from search.selectors import search_space_model

    with transaction.atomic():
        if _space_retired(model):
            return
        image_ids = [item.image_id for item in items]
        _photos_locked(image_ids, no_key=True)
        _mark_ready(image_ids=image_ids, model=model)
        if model == search_space_model():
            catalog_changed()  # their product pages said "Similar products appear once ... processed"


def _recompute_claimed(images: Iterable[ProductImage]) -> set[int]:
    """The photos a reindex claimed for a recompute and has not done (it died): pending with no model mark. Every
    other way to pending keeps the mark (a new space's build, whose vectors are not in the space asked about) or
    deletes the vectors with it (a replaced file, the admin's re-embed)."""
    return {image.pk for image in images
            if image.embedding_status == EmbeddingStatus.PENDING and not image.embedding_model}


def _images_decode(images: list[ProductImage], embedder: Embedder
                   ) -> tuple[dict[ProductImage, Image.Image], list[tuple[ProductImage, str]]]:
    """Each image's pixels, decoded in threads, and the images whose file cannot be opened or decoded, with why. A
    transient error (the storage unreachable) or an unexpected one propagates: the task retries."""
    decoded, failures = {}, []
    with ExitStack() as files:
        opened = {}
        for image in images:
            try:
                opened[image] = files.enter_context(image.file.open("rb"))
            except TRANSIENT_OS_ERRORS:
                raise
            except PERMANENT_ERRORS as error:
                failures.append((image, f"{type(error).__name__}: {error}"))
        # A file that cannot be decoded comes back as its exception.
        for image, result in zip(opened, embedder.load_images(opened.values())):
            if isinstance(result, TRANSIENT_OS_ERRORS) or (
                isinstance(result, Exception) and not isinstance(result, PERMANENT_ERRORS)
            ):
                raise result
            if isinstance(result, Exception):
                failures.append((image, f"{type(result).__name__}: {result}"))
            else:
                decoded[image] = result
    return decoded, failures


def _images_fail(failures: list[tuple[ProductImage, str]]) -> None:
    """Record each image's failure in one transaction (the pages that showed them are retired once, not once each),
    only against the file that failed (image_embedding_fail)."""
    with transaction.atomic():
        for image, error in failures:
            image_embedding_fail(image_id=image.pk, error=error, file_version=FileVersion.of(image))


def _searched_space_fill(*, image_ids: list[int], building: str) -> None:
    """While the space ``building`` is built, search reads the active one: photos added or replaced meanwhile get a
    vector there too (by the code that still embeds into it, search.query.embedder_for_model), so that they are
    searchable before the switch, and stay so if a failure holds it. Nothing is marked: the photos' status is the
    configured space's. Best effort: where the active space's model cannot run, they wait for the switch."""
    from search.query import embedder_for_model
    from search.selectors import search_space_model

    active = search_space_model()  # the configured model's on a new install: then nothing is being built
    if active == building:
        return
    images = list(ProductImage.objects.filter(pk__in=image_ids).filter(no_vector_in(active))
                  .only("pk", "file", "content_hash"))
    if not images:
        return
    try:
        searched = embedder_for_model(active)
        searched.load()
        # A photo whose file is gone (deleted or replaced since it was read) is left out alone: it failed the batch.
        readable = list(_images_decode(images, searched)[0].items())
        if not readable:
            return
        vectors, detail_maps = searched.embed_images([pixels for _, pixels in readable], details=True)
    except TRANSIENT_OS_ERRORS:  # the storage unreachable for a moment: the task retries
        raise
    except (LookupError, ModelUnavailable, *PERMANENT_ERRORS):
        logger.warning("photos %s wait for the switch to %s to be searchable", [i.pk for i in images], building,
                       exc_info=True)
        return
    image_embeddings_store(model=active, mark="nothing", items=[
        StoredVector(image_id=image.pk, vector=vector, details=details.stored(detail_map),
                     file_version=FileVersion.of(image))
        for (image, _), vector, detail_map in zip(readable, vectors, detail_maps)
    ])


def images_near_duplicate_flag(*, items: Sequence[StoredVector], model: str) -> None:
    """Record each image's most similar other image when it looks like the same photo (admins see it on upload):
    their nearest neighbours read in one transaction, the flags written in one statement (a task of 32 photos spent
    5 round trips on each one by one)."""
    from search.selectors import nearest_older_images

    if not items:
        return
    for attempt in range(FLAG_ATTEMPTS):
        # Of two copies of a photo, the later one is flagged as the duplicate of the earlier, whichever is stored last.
        nearest = nearest_older_images(vectors={item.image_id: item.vector for item in items}, model=model)
        flags = []
        for item in items:
            hit = nearest.get(item.image_id)
            duplicate = hit if hit and hit[1] >= settings.NEAR_DUPLICATE_MIN_SCORE else (None, None)
            flags.append(ProductImage(pk=item.image_id, near_duplicate_of_id=duplicate[0],
                                      near_duplicate_score=duplicate[1]))
        try:
            with transaction.atomic():
                # Nothing from a picture replaced since, the flagged photo's or its original's: the replacement
                # cleared the flags that named it, and dropped the original's vectors.
                originals = {flag.near_duplicate_of_id for flag in flags} - {None}
                current = _photos_locked([flag.pk for flag in flags] + list(originals), no_key=True)
                embedded = set(ImageEmbedding.objects.filter(image_id__in=originals, model=model)
                               .values_list("image_id", flat=True))
                flags = [flag for flag, item in zip(flags, items) if item.computed_from(current.get(flag.pk))]
                for flag in flags:
                    if flag.near_duplicate_of_id is not None and flag.near_duplicate_of_id not in embedded:
                        flag.near_duplicate_of_id, flag.near_duplicate_score = None, None
                flags = _flags_kept_for_originals_not_embedded_yet(flags, model=model)
                ProductImage.objects.bulk_update(flags, ["near_duplicate_of", "near_duplicate_score"])
            break
        except IntegrityError:  # an image flagged as the original was deleted since it was read: look again
            if attempt == FLAG_ATTEMPTS - 1:
                raise
    originals = {flag.pk for flag in flags if flag.near_duplicate_of_id is None}
    _later_copies_flag(vectors={item.image_id: item.vector for item in items if item.image_id in originals},
                       model=model)


def _later_copies_flag(*, vectors: dict[int, object], model: str) -> None:
    """Flag the copies of these photos (each no photo's copy itself) that were stored before them: two workers, or a
    rebuild, embed a copy first, which then found nothing older, and the original looks only at older photos."""
    from search.selectors import nearest_newer_unflagged_images

    for original_id, (copy_id, score) in nearest_newer_unflagged_images(vectors=vectors, model=model).items():
        if score < settings.NEAR_DUPLICATE_MIN_SCORE:
            continue
        try:
            # Still the picture whose vector was read: a file replaced meanwhile dropped it.
            copy = ProductImage.objects.filter(pk=copy_id, near_duplicate_of__isnull=True).exclude(no_vector_in(model))
            photos_update(copy, near_duplicate_of_id=original_id, near_duplicate_score=score)
        except IntegrityError:  # the original was deleted meanwhile: nothing to be a copy of
            pass


def _flags_kept_for_originals_not_embedded_yet(flags: list[ProductImage], *, model: str) -> list[ProductImage]:
    """A photo found no older one close enough while its flag's original has no vector in ``model`` yet (a rebuild
    or a reindex in two workers embeds the copy first): the flag stays, where it was cleared for good (the original,
    stored afterwards, looks only at older photos). A flag is cleared when its original, embedded, is no longer close."""
    unflagged = [flag.pk for flag in flags if flag.near_duplicate_of_id is None]
    kept = set(ProductImage.objects.filter(pk__in=unflagged, near_duplicate_of__isnull=False)
               .filter(no_vector_in(model, image="near_duplicate_of_id")).values_list("pk", flat=True))
    return [flag for flag in flags if flag.pk not in kept]


def image_embeddings_store(*, model: str, items: Sequence[StoredVector],
                           mark: Literal["ready", "model", "nothing"] = "ready") -> list[StoredVector]:
    """Store the vectors (and colours) of several images in one transaction and ``mark`` them: ready, or with the
    model only (their vector stored, ready once flagged: _photos_flag_and_mark_ready), or not at all (another space's
    vectors); returns the items stored. An image deleted while its vector was computed is skipped, and so is
    one whose file was replaced meanwhile (the replacement queued its own task). A few statements for the whole
    batch, where one at a time cost each image 8 round trips."""
    image_ids = [item.image_id for item in items]
    with transaction.atomic():
        if _space_retired(model):
            return []
        # Products before photos, as every writer locks them (an admin saves the product, then its photos): the
        # photos locked first met an admin's product form halfway, a deadlock.
        owners = dict(ProductImage.objects.filter(pk__in=image_ids).values_list("pk", "product_id"))
        _products_share_lock(product_ids=sorted(set(owners.values())))
        current = _photos_locked(image_ids)
        # Deleted, replaced or moved to another product (not held) meanwhile: skipped. A replaced photo queued its
        # own task; a moved one stays pending, and the sweep sends it again.
        items = [item for item in items if item.computed_from(current.get(item.image_id))
                 and current[item.image_id].product_id == owners.get(item.image_id)]
        products = {item.image_id: current[item.image_id].product_id for item in items}
        if not items:
            return []
        # First: the vector row copies the main colour from the photo (search migration 0006).
        coloured = [ProductImage(pk=item.image_id, colours=item.colours) for item in items if item.colours is not None]
        if coloured:
            ProductImage.objects.bulk_update(coloured, ["colours"])
        ImageEmbedding.objects.bulk_create(
            # category, active, price, currency and colour: the triggers fill them in from the product and the photo.
            [ImageEmbedding(image_id=item.image_id, model=model, vector=item.vector, details=item.details,
                            product_id=products[item.image_id]) for item in items],
            update_conflicts=True, unique_fields=["image", "model"], update_fields=["vector", "details", "product"],
        )
        if mark == "ready":
            _mark_ready(image_ids=[item.image_id for item in items], model=model)
        elif mark == "model":  # not a reindex's claim any more (_recompute_claimed): its vector is done
            ProductImage.objects.filter(pk__in=[item.image_id for item in items]).update(embedding_model=model)
        # Bulk writes send no signals: a product page cached before its photos were embedded says "Similar products
        # appear once ...", and other pages' More like this lists lack the product. The vectors of a space being
        # built change no page: retiring every cached page for each batch left the cache empty for the rebuild.
        from search.selectors import search_space_model

        if model == search_space_model():
            catalog_changed()
    return items


def _space_retired(model: str) -> bool:
    """Whether search has switched from ``model``'s space: a worker of the deploy before (a rolling deploy) then
    stores nothing there and marks nothing ready, which would leave the photo ready with no vector in the space
    searched, for good; it stays pending, and the sweep sends it to a worker of the current model. Until the
    transaction ends a switch waits (the space's row held: spaces first, as the sweep locks them)."""
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT state FROM {EmbeddingSpace._meta.db_table} WHERE model = %s FOR KEY SHARE", [model])
        row = cursor.fetchone()
    return row is not None and row[0] == EmbeddingSpace.State.RETIRED


def _products_share_lock(*, product_ids: list[int]) -> None:
    """Hold these products unchanged until the transaction ends. A vector row copies its product's category, active
    flag, price and currency as it is inserted (search migrations 0002-0008); a product updated meanwhile passes
    its change on to the vector rows already committed only, so a new row would keep a deactivated product in
    search. Under this lock the product's update waits for the new rows, or they for it. In pk order, as every
    loader locks products."""
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT 1 FROM {Product._meta.db_table} WHERE id = ANY(%s) ORDER BY id FOR SHARE",
                       [product_ids])


def _mark_ready(*, image_ids: list[int], model: str) -> None:
    # The callers hold the photos' rows already (``_photos_locked``), in pk order.
    # Only those with a vector in the space: one whose photo was replaced since its vector was seen (the replacement
    # dropped the vector and marked it pending) must not be marked ready without one, out of search for good.
    ProductImage.objects.filter(pk__in=image_ids).exclude(no_vector_in(model)).update(
        embedding_status=EmbeddingStatus.READY, embedding_model=model, embedding_error="", embedded_at=timezone.now()
    )


def image_embedding_fail(*, image_id: int, error: str, file_version: FileVersion | None = None) -> None:
    """Record why an image could not be embedded; with ``file_version``, only while the image still has that file (a
    task that could not read a file replaced since must not fail the replacement)."""
    logger.warning("embedding of image %s failed: %s", image_id, error)
    images = ProductImage.objects.filter(pk=image_id)
    if file_version is not None:
        images = images.filter(file=file_version.file, content_hash=file_version.content_hash)
    _failed(images, error)


def pending_images_fail(*, image_ids: Sequence[int], error: str) -> int:
    """Record why a whole batch could not be embedded (its task failed for good: a bug, a time limit, memory, retries
    run out) on those of its images still pending; returns how many. Left pending, the sweep would send the same
    batch again every ten minutes, for ever, with nothing in the admin to say why; failed, they wait for
    `reindex --only failed` or the admin's re-embed. An image embedded meanwhile (by another task) keeps its state."""
    logger.warning("embedding of %d image(s) failed: %s", len(image_ids), error)
    return _failed(ProductImage.objects.filter(pk__in=image_ids, embedding_status=EmbeddingStatus.PENDING), error)


def _failed(images, error: str) -> int:
    """Mark ``images`` failed with ``error`` (what the admin shows); returns how many."""
    failed = photos_update(
        images, embedding_status=EmbeddingStatus.FAILED, embedding_error=error[:2000] or "unknown error", embedded_at=None
    )
    if failed:
        catalog_changed()  # their product pages no longer say that More like this is on its way
    return failed
