"""Celery tasks: thin wrappers that take ids and call services."""

from celery import shared_task
from django.db import InterfaceError, OperationalError


@shared_task(
    autoretry_for=(OperationalError, InterfaceError, ConnectionError, TimeoutError),
    retry_backoff=2,
    retry_backoff_max=120,
    max_retries=8,
    acks_late=True,
)
def embed_images(image_ids: list[int], force: bool = False) -> dict[str, int]:
    from search.services import images_embed

    return images_embed(image_ids=image_ids, force=force)


@shared_task
def embedding_sweep() -> dict:
    from search.services import embedding_sweep as sweep

    return sweep()
