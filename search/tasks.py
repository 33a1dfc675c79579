"""Celery tasks: thin wrappers that take ids and call services (which send them by name, so this module imports
them and never the reverse)."""

import logging

from celery import Task, shared_task
from django.conf import settings
from django.db import InterfaceError, OperationalError, connection

from search import services, sweep
from search.lost_runs import runs_counted

logger = logging.getLogger(__name__)


class EmbedImagesTask(Task):
    def on_failure(self, exc, task_id, args, kwargs, einfo):
        """Called once the task has failed for good (not for a retry): its photos still pending are marked failed
        with the reason, so that the sweep stops re-sending them and the admin says why."""
        image_ids = args[0] if args else kwargs["image_ids"]
        error = f"embedding task failed: {type(exc).__name__}: {exc}".removesuffix(": ")
        try:
            services.pending_images_fail(image_ids=image_ids, error=error)
        except (OperationalError, InterfaceError):
            # A time limit raised in the middle of a query can leave the connection unusable: once more on a fresh
            # one. Should the database itself be down, the images stay pending and the sweep sends them again.
            connection.close()
            try:
                services.pending_images_fail(image_ids=image_ids, error=error)
            except Exception:
                logger.exception("could not record the failure of images %s", image_ids)


@shared_task(
    base=EmbedImagesTask,
    autoretry_for=(OperationalError, InterfaceError, ConnectionError, TimeoutError),
    retry_backoff=2,
    retry_backoff_max=120,
    max_retries=8,
    acks_late=True,
    bind=True,
)
def embed_images(self, image_ids: list[int], force: bool = False) -> dict[str, int]:
    with runs_counted(self.request.id) as lost_runs:
        if lost_runs:
            return services.images_embed_after_lost_runs(image_ids=image_ids, force=force, lost_runs=lost_runs)
        return services.images_embed(image_ids=image_ids, force=force)


@shared_task
def embedding_sweep() -> dict:
    return sweep.embedding_sweep()


# One index build of a large category can take many minutes (the limit: config/settings/base.py).
@shared_task(time_limit=settings.CATEGORY_INDEX_SYNC_TIME_LIMIT,
             soft_time_limit=settings.CATEGORY_INDEX_SYNC_TIME_LIMIT - 100)
def category_indexes_sync() -> dict[str, list[str]]:
    from search.category_indexes import category_indexes_sync
    from search.selectors import indexed_space_models

    return category_indexes_sync(models=indexed_space_models())
