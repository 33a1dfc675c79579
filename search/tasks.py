"""Celery tasks: thin wrappers that take ids and call services (which send them by name, so this module imports
them and never the reverse)."""

from celery import shared_task
from django.db import InterfaceError, OperationalError

from search import services, sweep


@shared_task(
    autoretry_for=(OperationalError, InterfaceError, ConnectionError, TimeoutError),
    retry_backoff=2,
    retry_backoff_max=120,
    max_retries=8,
    acks_late=True,
)
def embed_images(image_ids: list[int], force: bool = False) -> dict[str, int]:
    return services.images_embed(image_ids=image_ids, force=force)


@shared_task
def embedding_sweep() -> dict:
    return sweep.embedding_sweep()


@shared_task(time_limit=3600, soft_time_limit=3500)  # one index build of a large category can take many minutes
def category_indexes_sync() -> dict[str, list[str]]:
    from search.category_indexes import category_indexes_sync
    from search.selectors import search_space_model

    return category_indexes_sync(model=search_space_model())
